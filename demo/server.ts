/**
 * The demo server behind `npm start`: Fastify with fastify-tus, pino logs on stdout, settings
 * from the environment (see README). Bad settings print one clear line and exit with code 1;
 * SIGINT and SIGTERM close the server gracefully.
 */
import { ConfigError, type DemoConfig, readConfig, startDemo } from './app.js'

async function main() {
  let config: DemoConfig
  try {
    config = readConfig(process.env)
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    console.error(`fastify-tus demo: ${error.message}`)
    process.exit(1)
  }
  let app: Awaited<ReturnType<typeof startDemo>>
  try {
    app = await startDemo(config)
  } catch (error) {
    console.error(`fastify-tus demo: cannot start: ${(error as Error).message}`)
    process.exit(1)
  }
  let closing = false
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      if (closing) return
      closing = true
      app.log.info({ signal }, 'closing')
      app.close().then(
        () => process.exit(0),
        (error) => {
          app.log.error({ err: error }, 'close failed')
          process.exit(1)
        },
      )
    })
  }
}

await main()
