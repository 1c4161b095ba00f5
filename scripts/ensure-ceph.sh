#!/usr/bin/env bash
# The S3 tests need a real S3 API (ListMultipartUploads, ListParts, AbortMultipartUpload: the npm
# fakes lack them). This gives them a throwaway one-node Ceph cluster with radosgw on 127.0.0.1.
#
#   scripts/ensure-ceph.sh [start]   install Debian's Ceph if missing (root + apt-get), start a
#                                    cluster unless ours already answers, write its env file
#   scripts/ensure-ceph.sh install   only install the packages when they are missing
#   scripts/ensure-ceph.sh stop      stop the cluster this script started (by its pids) and
#                                    remove its folder
#   scripts/ensure-ceph.sh env       print the env file's path
#   scripts/ensure-ceph.sh status    exit 0 when our cluster is running and answers
#
# With S3_ENDPOINT set, that server is used as it is: nothing is installed or started.
# The cluster: one monitor, one OSD on memstore (RAM, nothing on disk), pool size 1, no auth,
# radosgw (beast) on 127.0.0.1:$CEPH_RGW_PORT (default: the first free port from 7480), and
# one user with fixed keys. Everything lives in $FASTIFY_TUS_CEPH_DIR (default
# ${TMPDIR:-/tmp}/fastify-tus-ceph): config, data, logs, pid files, and `s3.env`, the variables
# the tests read (S3_ENDPOINT, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, S3_REGION,
# S3_FORCE_PATH_STYLE).
set -euo pipefail

DIR="${FASTIFY_TUS_CEPH_DIR:-${TMPDIR:-/tmp}/fastify-tus-ceph}"
ENV_FILE="$DIR/s3.env"
MARK="$DIR/.fastify-tus-ceph" # only a folder with this file is ours to stop and remove
ACCESS_KEY=fastifytustestaccess
SECRET_KEY=fastifytustestsecretkey0123456789
PACKAGES=(ceph-mon ceph-osd radosgw ceph-common)
say() { echo "fastify-tus tests: $*" >&2; }

install_ceph() {
  local missing=()
  for bin in ceph-mon ceph-osd radosgw ceph radosgw-admin monmaptool; do
    command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian's Ceph (${PACKAGES[*]}) for the S3 tests"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >&2
  else
    say "no Ceph (missing: ${missing[*]}) and no way to install it (needs root and apt-get)."
    say "Install ${PACKAGES[*]}, or set S3_ENDPOINT (and S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY) to an S3 server the tests may use."
    exit 1
  fi
}

# An HTTP answer from radosgw (any status): it is up.
answers() {
  local port=$1
  { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
  printf 'GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  local line=''
  read -r -t 2 line <&3 || true
  exec 3<&- 3>&-
  [[ "$line" == HTTP/* ]]
}

port_busy() { { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null && { exec 3<&- 3>&-; return 0; }; return 1; }

free_port() {
  local port=$1
  while port_busy "$port"; do port=$((port + 1)); done
  echo "$port"
}

running() {
  [[ -f "$ENV_FILE" && -f "$MARK" ]] || return 1
  local port
  port=$(sed -n 's/^CEPH_RGW_PORT=//p' "$ENV_FILE")
  [[ -n "$port" ]] && answers "$port" || return 1
  # Every daemon we started is still alive.
  for pidfile in "$DIR"/run/*.pid; do
    [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null || return 1
  done
}

stop_ceph() {
  [[ -f "$MARK" ]] || return 0
  local pids=()
  for pidfile in "$DIR"/run/*.pid; do
    [[ -f "$pidfile" ]] || continue
    local pid
    pid=$(cat "$pidfile")
    # Only a Ceph daemon of ours: its command line names our config file.
    if [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$DIR/ceph.conf"; then
      kill "$pid" 2>/dev/null && pids+=("$pid")
    fi
  done
  for _ in $(seq 100); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ $alive -eq 0 ]] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$DIR"
}

ceph_cmd() { timeout 60 ceph -c "$DIR/ceph.conf" "$@"; }

start_ceph() {
  local started=$SECONDS
  stop_ceph
  trap 'say "Ceph did not start (logs in $DIR/log; scripts/ensure-ceph.sh stop cleans up)"' ERR
  mkdir -p "$DIR"/{run,log,mon,osd,rgw}
  touch "$MARK"
  local mon_port rgw_port fsid osd_uuid
  mon_port=$(free_port "${CEPH_MON_PORT:-16789}")
  rgw_port=$(free_port "${CEPH_RGW_PORT:-7480}")
  fsid=$(cat /proc/sys/kernel/random/uuid)
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  cat >"$DIR/ceph.conf" <<EOF
[global]
fsid = $fsid
mon initial members = a
mon host = [v2:127.0.0.1:$mon_port]
mon data avail warn = 1
mon data avail crit = 0
public network = 127.0.0.1/32
auth cluster required = none
auth service required = none
auth client required = none
# Without auth there is no session key to sign or encrypt with: daemons default to the
# "secure" mode towards the monitor and then fail with EACCES.
ms mon client mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
ms client mode = crc
ms cluster mode = crc
ms service mode = crc
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
osd objectstore = memstore
memstore device bytes = 4294967296
run dir = $DIR/run
pid file = $DIR/run/\$name.pid
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
mon data = $DIR/mon/\$cluster-\$id
osd data = $DIR/osd/\$cluster-\$id
keyring = $DIR/keyring
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $DIR/rgw
rgw dns name = 127.0.0.1
EOF
  local conf="$DIR/ceph.conf"
  monmaptool --create --addv a "[v2:127.0.0.1:$mon_port]" --fsid "$fsid" "$DIR/monmap" >/dev/null
  touch "$DIR/keyring"
  ceph-mon -c "$conf" -i a --mkfs --monmap "$DIR/monmap" 2>>"$DIR/log/start.log"
  ceph-mon -c "$conf" -i a 2>>"$DIR/log/start.log"
  local osd_id
  osd_id=$(ceph_cmd osd new "$osd_uuid")
  mkdir -p "$DIR/osd/ceph-$osd_id"
  ceph-osd -c "$conf" -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" >/dev/null 2>&1
  ceph-osd -c "$conf" -i "$osd_id" 2>>"$DIR/log/start.log"
  # The bucket pools up front: radosgw creates the others itself, but the first bucket write
  # stalls for seconds while these are made on demand.
  for pool in .rgw.root default.rgw.control default.rgw.meta default.rgw.log \
    default.rgw.buckets.index default.rgw.buckets.data default.rgw.buckets.non-ec; do
    ceph_cmd osd pool create "$pool" 8 >/dev/null 2>&1
    ceph_cmd osd pool application enable "$pool" rgw >/dev/null 2>&1
  done
  radosgw -c "$conf" -n client.rgw.a 2>>"$DIR/log/start.log"
  for _ in $(seq 600); do
    answers "$rgw_port" && break
    sleep 0.1
  done
  answers "$rgw_port" || {
    say "radosgw did not answer on 127.0.0.1:$rgw_port (logs in $DIR/log)"
    exit 1
  }
  timeout 60 radosgw-admin -c "$conf" user create --uid=fastify-tus --display-name=fastify-tus \
    --access-key="$ACCESS_KEY" --secret="$SECRET_KEY" >/dev/null
  cat >"$ENV_FILE.tmp" <<EOF
S3_ENDPOINT=http://127.0.0.1:$rgw_port
S3_ACCESS_KEY_ID=$ACCESS_KEY
S3_SECRET_ACCESS_KEY=$SECRET_KEY
S3_REGION=us-east-1
S3_FORCE_PATH_STYLE=true
CEPH_RGW_PORT=$rgw_port
EOF
  mv "$ENV_FILE.tmp" "$ENV_FILE"
  say "Ceph radosgw ready on 127.0.0.1:$rgw_port in $((SECONDS - started)) s (env in $ENV_FILE)"
}

command=${1:-start}
case "$command" in
  env) echo "$ENV_FILE" ;;
  status) running ;;
  stop) stop_ceph ;;
  install)
    [[ -n "${S3_ENDPOINT:-}" ]] && exit 0
    install_ceph
    ;;
  start)
    [[ -n "${S3_ENDPOINT:-}" ]] && exit 0
    install_ceph
    running && exit 0
    start_ceph
    ;;
  *)
    echo "usage: $0 [start|install|stop|env]" >&2
    exit 2
    ;;
esac
