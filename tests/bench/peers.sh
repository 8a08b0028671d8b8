#!/usr/bin/env bash
# Bulk read of the same fixture memory through rmem and through the peers
# that are installed (gdbserver + gdb, lldb-server + lldb), all over
# loopback, each server bound to 127.0.0.1 (gdbserver and lldb-server listen
# on every interface whatever they are told, so they run inside a private
# network namespace made with `unshare -n`). Prints medians; passes or fails
# nothing.
#
#   tests/bench/peers.sh [MIB] [RUNS]      (defaults: 256 MiB, 3 runs)
#
# Each figure is (time for MIB) - (time for 4 KiB) with the same command,
# so process start-up, attach and connection set-up are not counted.
set -euo pipefail
cd "$(dirname "$0")/../.."
mib=${1:-256}
runs=${2:-3}
build=${RMEM_BENCH_BUILD:-build-bench}
if [ -z "${RMEM_BENCH_NOBUILD:-}" ]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DRMEM_SANITIZE=OFF >/dev/null
  cmake --build "$build" -j"$(nproc)" >/dev/null
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
wait_for() { for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done; return 1; }
val() { sed -n "s/^$2=//p" "$1" | head -n1; }
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# rate SECONDS_BIG SECONDS_SMALL -> MB/s (10^6 bytes) for $mib MiB
rate() { awk -v b="$1" -v s="$2" -v m="$mib" 'BEGIN { d = b - s; if (d <= 0) d = b; printf "%.1f", m * 1048576 / d / 1e6 }'; }

# One fixture per peer: gdbserver and lldb-server stop (ptrace) their target.
start_fixture() {
  "$build"/tests/fixture_regions --sleep --bulk "$mib" >"$tmp/$1" </dev/null &
  pids+=($!)
  wait_for "$tmp/$1" '^ready'
}

# time_cmd CMD...: prints the seconds CMD took.
time_cmd() {
  local t0 t1
  t0=$(now)
  "$@" >/dev/null 2>&1
  t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", b - a }'
}

# measure NAME FN: runs FN big / FN small $runs times, prints the median rate.
declare -A result
measure() {
  local name=$1 fn=$2 big=() small=()
  for _ in $(seq "$runs"); do
    big+=("$($fn "$len")")
    small+=("$($fn 4096)")
  done
  local b s
  b=$(printf '%s\n' "${big[@]}" | median)
  s=$(printf '%s\n' "${small[@]}" | median)
  result[$name]=$(rate "$b" "$s")
  printf '%-28s %10s MB/s   (%s MiB in %.3f s, 4 KiB in %.3f s, median of %d)\n' \
    "$name" "${result[$name]}" "$mib" "$b" "$s" "$runs"
}

len=$((mib * 1048576))
echo "# bulk read of $mib MiB over loopback, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"

# rmem: the CLI writing the bytes to /dev/null, as the peers' CLIs do.
start_fixture rmem
addr=$(val "$tmp/rmem" bulk)
fpid=$(val "$tmp/rmem" pid)
"$build"/rmemd --listen 127.0.0.1 --port 0 --port-file "$tmp/port" --log-level error &
pids+=($!)
wait_for "$tmp/port" .
port=$(cat "$tmp/port")
rmem_read() { time_cmd "$build"/rmem --port "$port" read "$fpid" "$addr" "$1" -o /dev/null; }
measure "rmem (plaintext)" rmem_read

# rmem over TLS (and with lz4 when this build has it), same fixture.
deploy/make-certs.sh "$tmp/certs" >/dev/null
"$build"/rmemd --listen 127.0.0.1 --port 0 --port-file "$tmp/tport" --log-level error \
  --tls-cert "$tmp/certs/server.crt" --tls-key "$tmp/certs/server.key" &
pids+=($!)
wait_for "$tmp/tport" .
tport=$(cat "$tmp/tport")
rmem_tls_read() {
  time_cmd "$build"/rmem --port "$tport" --tls --ca "$tmp/certs/ca.crt" read "$fpid" "$addr" "$1" \
    -o /dev/null
}
measure "rmem (TLS)" rmem_tls_read
if "$build"/rmem --help 2>&1 | grep -q -- --compress; then
  # A compressible fixture: lz4 only pays where memory compresses.
  "$build"/tests/fixture_regions --sleep --bulk-compressible "$mib" >"$tmp/zfx" </dev/null &
  pids+=($!)
  wait_for "$tmp/zfx" '^ready'
  zaddr=$(val "$tmp/zfx" bulk)
  zpid=$(val "$tmp/zfx" pid)
  rmem_z_read() { time_cmd "$build"/rmem --port "$port" read "$zpid" "$zaddr" "$1" -o /dev/null; }
  rmem_zc_read() {
    time_cmd "$build"/rmem --port "$port" --compress read "$zpid" "$zaddr" "$1" -o /dev/null
  }
  rmem_tlsz_read() {
    time_cmd "$build"/rmem --port "$tport" --tls --ca "$tmp/certs/ca.crt" --compress \
      read "$zpid" "$zaddr" "$1" -o /dev/null
  }
  measure "rmem compressible, raw" rmem_z_read
  measure "rmem compressible, lz4" rmem_zc_read
  measure "rmem compressible, TLS+lz4" rmem_tlsz_read
fi

# The loopback ceiling: a plain TCP copy of the same size.
if command -v iperf3 >/dev/null; then
  iperf3 -s -B 127.0.0.1 -p 5299 -1 >/dev/null 2>&1 &
  pids+=($!)
  sleep 0.3
  gbps=$(iperf3 -c 127.0.0.1 -p 5299 -n "${mib}M" -f m 2>/dev/null | awk '/receiver/ {print $(NF-2)}')
  printf '%-28s %10s MB/s   (iperf3, one stream)\n' "loopback TCP ceiling" \
    "$(awk -v m="$gbps" 'BEGIN { printf "%.1f", m / 8 * 1.048576 }')"
fi

# gdbserver + gdb, in a private network namespace.
if command -v gdbserver >/dev/null && command -v gdb >/dev/null && command -v unshare >/dev/null; then
  start_fixture gdb
  gaddr=$(val "$tmp/gdb" bulk)
  gpid=$(val "$tmp/gdb" pid)
  gdb_read() {
    local end
    end=$(printf '0x%x' $((gaddr + $1)))
    time_cmd unshare -n sh -c "ip link set lo up
      gdbserver --once --attach 127.0.0.1:2345 $gpid >/dev/null 2>&1 &
      sleep 0.3
      gdb -nx -batch -ex 'set pagination off' -ex 'target remote 127.0.0.1:2345' \
          -ex 'dump binary memory /dev/null $gaddr $end' -ex 'detach' >/dev/null 2>&1
      wait"
  }
  measure "gdbserver + gdb" gdb_read
else
  echo "gdbserver + gdb: not installed (apt-get install gdb gdbserver)"
fi

# lldb-server + lldb, in a private network namespace.
lldb_server=$(command -v lldb-server || ls /usr/bin/lldb-server-* 2>/dev/null | head -n1 || true)
if [ -n "$lldb_server" ] && command -v lldb >/dev/null && command -v unshare >/dev/null; then
  start_fixture lldb
  laddr=$(val "$tmp/lldb" bulk)
  lpid=$(val "$tmp/lldb" pid)
  lldb_read() {
    time_cmd unshare -n sh -c "ip link set lo up
      $lldb_server gdbserver 127.0.0.1:2346 --attach $lpid >/dev/null 2>&1 &
      sleep 0.5
      lldb -b -o 'gdb-remote 127.0.0.1:2346' \
           -o 'memory read --force --binary --outfile /dev/null --count $1 $laddr' \
           -o 'process detach' >/dev/null 2>&1
      wait"
  }
  measure "lldb-server + lldb" lldb_read
else
  echo "lldb-server + lldb: not installed (apt-get install lldb)"
fi

if [ -n "${result[gdbserver + gdb]:-}" ]; then
  echo "ratio rmem / gdbserver: $(awk -v a="${result[rmem (plaintext)]}" -v b="${result[gdbserver + gdb]}" 'BEGIN { printf "%.0fx", a / b }')"
fi
if [ -n "${result[lldb-server + lldb]:-}" ]; then
  echo "ratio rmem / lldb-server: $(awk -v a="${result[rmem (plaintext)]}" -v b="${result[lldb-server + lldb]}" 'BEGIN { printf "%.0fx", a / b }')"
fi
