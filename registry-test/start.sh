#!/usr/bin/env bash
# Start an open (no auth, plain HTTP) docker-registry on a free 127.0.0.1 port, for humans.
#   registry-test/start.sh            # state in ${KBUNDLE_REGISTRY_STATE:-${TMPDIR:-/tmp}/kbundle-registry}
#   eval "$(registry-test/start.sh)"  # sets REGISTRY=127.0.0.1:PORT in your shell
# Stop with registry-test/stop.sh (same KBUNDLE_REGISTRY_STATE).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${KBUNDLE_TEST_REGISTRY_BIN:-/usr/bin/docker-registry}
state=${KBUNDLE_REGISTRY_STATE:-${TMPDIR:-/tmp}/kbundle-registry}
mkdir -p "$state"

if [ -f "$state/registry.pid" ] && kill -0 "$(cat "$state/registry.pid")" 2>/dev/null; then
  echo "registry-test/start.sh: already running (pid $(cat "$state/registry.pid")); stop it with registry-test/stop.sh" >&2
  cat "$state/registry.env"
  exit 0
fi
[ -x "$bin" ] || { echo "registry-test/start.sh: $bin missing (apt-get install docker-registry)" >&2; exit 1; }

port=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
storage="$state/storage"
mkdir -p "$storage"
secret=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
sed -e "/^\s*#/d" \
    -e "s|@ADDR@|127.0.0.1:$port|" \
    -e "s|@STORAGE@|$storage|" \
    -e "s|@HTTP_SECRET@|$secret|" \
    "$here/configs/open.yml" > "$state/config.yml"

nohup "$bin" serve "$state/config.yml" </dev/null >"$state/registry.log" 2>&1 &
pid=$!
echo "$pid" > "$state/registry.pid"

for _ in $(seq 1 100); do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "registry-test/start.sh: registry exited; log:" >&2
    cat "$state/registry.log" >&2
    rm -f "$state/registry.pid"
    exit 1
  fi
  if node -e 'require("http").get(process.argv[1],r=>process.exit(r.statusCode===200?0:1)).on("error",()=>process.exit(1))' \
       "http://127.0.0.1:$port/v2/" 2>/dev/null; then
    echo "REGISTRY=127.0.0.1:$port" | tee "$state/registry.env"
    exit 0
  fi
  sleep 0.1
done
echo "registry-test/start.sh: registry on 127.0.0.1:$port did not answer /v2/ within 10 s" >&2
kill "$pid" 2>/dev/null || true
rm -f "$state/registry.pid"
exit 1
