#!/usr/bin/env bash
# Builds a Release tree, starts rmemd and the fixtures on 127.0.0.1, and runs
# rmem_bench. Prints figures; it passes or fails nothing.
#   tests/bench/run.sh [--runs N] [--compress]
# RMEM_BENCH_BULK=--bulk-compressible reads heap-like memory that lz4 shrinks
# about 5x instead of the default --bulk words.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${RMEM_BENCH_BUILD:-build-bench}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DRMEM_SANITIZE=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

wait_for() { for _ in $(seq 400); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done; return 1; }
val() { sed -n "s/^$2=//p" "$1" | head -n1; }

"$build"/rmemd --listen 127.0.0.1 --port 0 --port-file "$tmp/port" --log-level error &
pids+=($!)
"$build"/tests/fixture_regions --sleep "${RMEM_BENCH_BULK:---bulk}" 256 >"$tmp/bulk" </dev/null &
pids+=($!)
"$build"/tests/fixture_regions --sleep 10000 >"$tmp/regions" </dev/null &
pids+=($!)
"$build"/tests/fixture_target --sleep >"$tmp/target" </dev/null &
pids+=($!)
wait_for "$tmp/port" . && wait_for "$tmp/bulk" '^ready' && wait_for "$tmp/regions" '^ready'
wait_for "$tmp/target" '^ready'

echo "# rmem_bench on $(uname -m), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
"$build"/tests/rmem_bench --port "$(cat "$tmp/port")" \
  --bulk-pid "$(val "$tmp/bulk" pid)" --bulk-addr "$(val "$tmp/bulk" bulk)" \
  --bulk-len "$(val "$tmp/bulk" bulk_len)" --map-pid "$(val "$tmp/regions" pid)" \
  --chase-pid "$(val "$tmp/target" pid)" --chase-addr "$(val "$tmp/target" chase)" \
  --chase-n "$(val "$tmp/target" chase_n)" "$@"

# The cipher speed on one core bounds one TLS connection's bulk reads.
echo "# tls_cipher_bench"
"$build"/tests/tls_cipher_bench

# The page cache: agent-side cost of a 4 KiB read, hit against live, and the
# same through librmem (it starts its own agents).
echo "# cache_bench"
"$build"/tests/cache_bench --rmemd "$build"/rmemd
