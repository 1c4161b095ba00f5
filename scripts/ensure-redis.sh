#!/usr/bin/env bash
# Before `npm test`: the Redis tests need a Redis server. With REDIS_URL set, that server is
# used as it is. Otherwise 127.0.0.1:6379 must answer; when it does not, this starts Debian's
# redis-server there (installing the package first when it is missing, as root with apt-get).
set -euo pipefail
[[ -n "${REDIS_URL:-}" ]] && exit 0

ping_redis() {
  # PING over bash's /dev/tcp: no redis-cli needed.
  { exec 3<>/dev/tcp/127.0.0.1/6379; } 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  local answer
  read -r -t 2 answer <&3 || true
  exec 3<&- 3>&-
  [[ "$answer" == "+PONG"* ]]
}

# The Redis-failure tests start and kill throwaway redis-servers of their own: the binary is
# needed even when a Redis already answers.
if ! command -v redis-server >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "fastify-tus tests: installing Debian's redis-server for the Redis tests" >&2
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >&2
  else
    ping_redis && exit 0
    echo "fastify-tus tests: no Redis on 127.0.0.1:6379 and no redis-server to start." >&2
    echo "Install Redis, or set REDIS_URL to a Redis server the tests may use." >&2
    exit 1
  fi
fi
ping_redis && exit 0
echo "fastify-tus tests: starting redis-server on 127.0.0.1:6379 (nothing kept on disk)" >&2
mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
  --dir /var/lib/redis --logfile /var/log/redis/ci.log >&2 ||
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >&2
for _ in $(seq 50); do
  ping_redis && exit 0
  sleep 0.1
done
echo "fastify-tus tests: redis-server did not answer on 127.0.0.1:6379." >&2
exit 1
