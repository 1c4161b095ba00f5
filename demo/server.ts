/**
 * The demo server behind `npm start`: Fastify with fastify-tus, pino logs on stdout, settings
 * from the environment (see README). Bad settings print one clear line and exit with code 1;
 * SIGINT and SIGTERM close the server gracefully (close-with-grace).
 */
import closeWithGrace from 'close-with-grace'
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
  // SIGINT/SIGTERM: close gracefully (the sweep stops, the close marker is written), then exit
  // 0; a second signal, or a close that takes over 10 s, exits at once with 1.
  closeWithGrace({ delay: 10_000 }, async ({ signal, err }) => {
    if (err) app.log.error({ err }, 'closing after an error')
    else app.log.info({ signal }, 'closing')
    await app.close()
  })
}

await main()
