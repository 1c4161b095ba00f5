/** Raw HTTP with node:http: what the client sends is exactly what the test wrote. */
import http from 'node:http'

export interface RawResponse {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
}

/** An informational (1xx) answer, as node:http reports it through `'information'`. */
export interface Informational {
  status: number
  headers: http.IncomingHttpHeaders
}

/**
 * One HTTP request with node:http (no client-side header rules, a fresh connection each time).
 * `rawPath` is sent as written, where a URL would normalise `..`, `%2e` and the like;
 * `informational` collects the 1xx answers before the final one.
 */
export function request(
  url: string,
  method: string,
  headers: Record<string, string | string[] | number> = {},
  body?: Buffer | string,
  { rawPath, informational }: { rawPath?: string; informational?: Informational[] } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const options = {
      method,
      headers,
      agent: false,
      ...(rawPath !== undefined && { path: rawPath }),
    }
    const req = http.request(url, options, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
        }),
      )
      res.on('error', reject)
    })
    req.on('information', (info) => {
      informational?.push({ status: info.statusCode, headers: info.headers })
    })
    req.on('error', reject)
    req.end(body)
  })
}
