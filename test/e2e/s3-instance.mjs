// One instance of the S3 fleet test (test/e2e/s3-fleet.test.ts), in its own process: the built
// plugin with a stock S3Store on the bucket, its cache and locks on Redis. pino JSON on stdout.
import { S3Store } from '@tus/s3-store'
import { IoRedisKvStore } from '@tus/utils'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import fastifyTus from '../../dist/src/index.js'

const env = process.env
const client = new Redis(env.REDIS_URL)
const app = Fastify({ logger: { level: 'debug' } })
await app.register(fastifyTus, {
  datastore: new S3Store({
    partSize: 5 * 1024 * 1024,
    expirationPeriodInMilliseconds: 3_600_000,
    cache: new IoRedisKvStore(client, `${env.REDIS_PREFIX}s3:`),
    s3ClientConfig: {
      bucket: env.BUCKET,
      endpoint: env.S3_ENDPOINT,
      region: env.S3_REGION,
      forcePathStyle: env.S3_FORCE_PATH_STYLE !== 'false',
      credentials: { accessKeyId: env.S3_ACCESS_KEY_ID, secretAccessKey: env.S3_SECRET_ACCESS_KEY },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    },
  }),
  redis: { client, prefix: env.REDIS_PREFIX, lockTtlMs: 1000 },
  expireAfterMs: Number(env.EXPIRE_AFTER_MS),
  cleanupIntervalMs: Number(env.CLEANUP_INTERVAL_MS),
})
process.on('SIGTERM', () => {
  app.close().then(() => {
    client.disconnect()
    process.exit(0)
  })
})
await app.listen({ host: '127.0.0.1', port: 0 })
