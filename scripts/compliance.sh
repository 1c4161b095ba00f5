#!/usr/bin/env bash
# Runs the public tus compliance suite (github.com/sagikazarmark/tus-compliance-tests, Hurl files)
# against the demo server, built, on a fresh temporary directory. A development tool, not part of
# `npm test`: the suite is not vendored here.
#
#   scripts/compliance.sh [<suite folder with tests/ and hurl-lite.mjs>]   (default ../shared/compliance)
#
# Core, and each extension folder whose extension the server lists in Tus-Extension (an extension
# it does not list is not run: `concatenation-unfinished`, for one, asks the opposite of
# `concatenation`'s ext-concat-007, and only one of the two can hold on a server).
set -euo pipefail
cd "$(dirname "$0")/.."
suite=$(cd "${1:-../shared/compliance}" && pwd)
[[ -f dist/demo/server.js ]] || npm run build >/dev/null

dir=$(mktemp -d)
log=$(mktemp)
PORT=0 UPLOAD_DIR="$dir" LOG_LEVEL=info node dist/demo/server.js >"$log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir" "$log"
}
trap cleanup EXIT
for _ in $(seq 100); do
  port=$(grep -o '"Server listening at http://127.0.0.1:[0-9]*"' "$log" | grep -o '[0-9]*"$' | tr -d '"' || true)
  [[ -n "$port" ]] && break
  sleep 0.1
done
[[ -n "${port:-}" ]] || { echo "the demo server did not start:" >&2; cat "$log" >&2; exit 1; }
base="http://127.0.0.1:$port/files"

extensions=$(curl -s -X OPTIONS -D - -o /dev/null "$base" | tr -d '\r' | sed -n 's/^[Tt]us-[Ee]xtension: //p')
echo "Tus-Extension: $extensions"
folders=("$suite/tests/core")
for folder in "$suite"/tests/extensions/*/; do
  name=$(basename "$folder")
  if [[ ",$extensions," == *",$name,"* ]]; then folders+=("$folder"); else echo "not listed, not run: $name"; fi
done
# shellcheck disable=SC2046
node "$suite/hurl-lite.mjs" --var "base_url=$base" --var tus_version=1.0.0 \
  $(find "${folders[@]}" -name '*.hurl' | sort)
