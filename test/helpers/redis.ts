/** The Redis the Redis tests use (`.ci/run` starts one on 127.0.0.1:6379). */
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
