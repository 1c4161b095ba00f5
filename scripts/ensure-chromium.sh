#!/usr/bin/env bash
# Before `npm test`: the browser tests need Chromium. Installs Debian's package when it is
# missing and this machine can (root and apt-get); otherwise says what to do and fails.
set -euo pipefail
if [[ -n "${CHROMIUM_PATH:-}" ]]; then
  [[ -x "$CHROMIUM_PATH" ]] && exit 0
  echo "fastify-tus tests: CHROMIUM_PATH=$CHROMIUM_PATH is not an executable." >&2
  exit 1
fi
[[ -x /usr/bin/chromium ]] && exit 0
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "fastify-tus tests: installing Debian's chromium for the browser tests" >&2
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >&2
  [[ -x /usr/bin/chromium ]] && exit 0
fi
echo "fastify-tus tests: Chromium not found at /usr/bin/chromium." >&2
echo "Install it (Debian: apt-get install chromium) or set CHROMIUM_PATH to a Chromium binary." >&2
exit 1
