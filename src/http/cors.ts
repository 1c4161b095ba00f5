/**
 * Who decides CORS on the tus routes, and the headers that follow from it:
 *
 * - `tus.allowedOrigins` set: tus' rule decides, and @fastify/cors, if the app has it, keeps out
 *   of these routes (`config.cors: false`). An origin the rule refuses gets no
 *   `Access-Control-Allow-Origin` (tus would answer with its first allowed origin).
 * - unset, with @fastify/cors on the routes: the app's CORS decides the origin and credentials,
 *   as on its other routes, so the tus routes are never more open than the app; tus still answers
 *   the preflights (@fastify/cors' own would not allow PATCH and the tus headers) and lists the
 *   headers browsers may read.
 * - unset, without @fastify/cors: tus' rule, any origin (`*`).
 */
import type { ServerResponse } from 'node:http'
import type { Server } from '@tus/server'
import { TUS_RESUMABLE } from '@tus/utils'
import type { FastifyContextConfig, FastifyInstance } from 'fastify'
import { tusCorsHeaders } from '../tus-internals.js'

const ALLOW_ORIGIN = 'Access-Control-Allow-Origin'
const ALLOW_CREDENTIALS = 'Access-Control-Allow-Credentials'
export const EXPOSE_HEADERS = 'access-control-expose-headers'

export interface CorsLogger {
  warn(obj: object, msg: string): void
}

export class RouteCors {
  readonly #tus: Server
  readonly #log: CorsLogger
  #appDecides = false
  /** The routes' `config`, which @fastify/cors reads on every request it handles on them. */
  readonly routeConfig: FastifyContextConfig

  constructor(tus: Server, log: CorsLogger) {
    this.#tus = tus
    this.#log = log
    // Not a literal of that type: the key is typed only where @fastify/cors is installed.
    const config: Record<string, unknown> = {
      cors: tus.options.allowedOrigins ? false : this.#followingConfig(),
    }
    this.routeConfig = config as FastifyContextConfig
  }

  /**
   * The routes' own options for @fastify/cors: its origin and credentials as the app set them,
   * and no preflight answer of its own (tus answers). @fastify/cors reads them on each request
   * it handles, before the handler: that read is how the routes learn that it handles them,
   * whether it was registered before the plugin or after it (Fastify gives a hook added later
   * to a parent's children too). Another reader of the config could only make the routes send
   * fewer CORS headers, never more.
   */
  #followingConfig(): Record<string, unknown> {
    const follow = () => this.#follow()
    return {
      get preflight() {
        follow()
        return false
      },
    }
  }

  /** At `onReady`: @fastify/cors registered before the plugin is known before any request. */
  ready(routes: FastifyInstance): void {
    if (!this.#tus.options.allowedOrigins && routes.hasPlugin('@fastify/cors')) this.#follow()
  }

  #follow(): void {
    if (this.#appDecides) return
    this.#appDecides = true
    if (this.#tus.options.allowedCredentials === true) {
      this.#log.warn(
        { allowedCredentials: true },
        'fastify-tus: @fastify/cors decides CORS on the tus routes, so tus.allowedCredentials is ignored: set `credentials: true` in @fastify/cors (or set tus.allowedOrigins to let tus decide)',
      )
    }
  }

  /**
   * The headers tus puts on its own answers, for an answer it did not write: the version, and
   * CORS by the rule that decides (without what the app's CORS put on the reply already).
   */
  answerHeaders(origin: string | undefined): Record<string, string> {
    const cors = tusCorsHeaders(this.#tus, origin)
    this.#decide(cors, origin)
    const headers: Record<string, string> = { 'Tus-Resumable': TUS_RESUMABLE }
    for (const [name, value] of cors) headers[name] = value
    if (this.#tus.options.allowedOrigins) headers.Vary = 'Origin'
    return headers
  }

  /**
   * An answer's headers before they are written on `res`, which holds what the app's hooks set:
   * CORS by the rule that decides, and the headers both the app and tus expose.
   */
  settle(res: ServerResponse, origin: string | undefined, headers: Headers): void {
    this.#decide(headers, origin)
    const exposed = headers.get(EXPOSE_HEADERS)
    const appExposed = res.getHeader(EXPOSE_HEADERS)
    if (exposed !== null && appExposed !== undefined) {
      headers.set(EXPOSE_HEADERS, listUnion(appExposed, exposed))
    }
  }

  #decide(headers: Headers, origin: string | undefined): void {
    const allowed = headers.get(ALLOW_ORIGIN)
    // Following the app, its decision is on the reply already (none: refused); tus' rule refuses
    // an origin it does not list by answering another one.
    const drop =
      this.#appDecides ||
      (origin !== undefined && allowed !== null && allowed !== '*' && allowed !== origin)
    if (drop) {
      headers.delete(ALLOW_ORIGIN)
      headers.delete(ALLOW_CREDENTIALS)
    }
  }
}

/** A comma-separated list with the names of `added` it lacks (compared ignoring case). */
export function listUnion(current: unknown, added: string): string {
  const items = (value: unknown) =>
    String(value ?? '')
      .split(',')
      .map((item) => item.trim())
      .filter(Boolean)
  const merged = items(current)
  const seen = new Set(merged.map((item) => item.toLowerCase()))
  for (const item of items(added)) {
    if (!seen.has(item.toLowerCase())) merged.push(item)
    seen.add(item.toLowerCase())
  }
  return merged.join(', ')
}
