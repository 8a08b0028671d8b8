#!/usr/bin/env bash
# The main job: install dependencies, build, start rmemd on 127.0.0.1 with no
# config file, start a small demo target, and print its memory map through
# the rmem CLI. Everything it started is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh
build=${RMEM_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null

tmp=$(mktemp -d)
agent= target=
cleanup() {
  [ -n "$target" ] && kill "$target" 2>/dev/null || true
  [ -n "$agent" ] && kill "$agent" 2>/dev/null && wait "$agent" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# The default port if it is free, any free port otherwise.
port=${RMEM_PORT:-7467}
"$build"/rmemd --listen 127.0.0.1 --port "$port" --port-file "$tmp/port" --log-level warn &
agent=$!
for _ in $(seq 100); do [ -s "$tmp/port" ] && break; kill -0 "$agent" 2>/dev/null || break; sleep 0.05; done
if [ ! -s "$tmp/port" ]; then
  wait "$agent" 2>/dev/null || true
  "$build"/rmemd --listen 127.0.0.1 --port 0 --port-file "$tmp/port" --log-level warn &
  agent=$!
  for _ in $(seq 100); do [ -s "$tmp/port" ] && break; sleep 0.05; done
fi
port=$(cat "$tmp/port")

# A demo target with threads, a guard page and known contents.
"$build"/tests/fixture_target --sleep >"$tmp/out" </dev/null &
target=$!
for _ in $(seq 100); do grep -qx ready "$tmp/out" 2>/dev/null && break; sleep 0.05; done

echo "rmemd on 127.0.0.1:$port; memory map of the demo target, pid $target:"
echo
"$build"/rmem --port "$port" map "$target"
