#!/usr/bin/env bash
# End-to-end test of the rmem CLI against a real rmemd and a real fixture.
#
# Usage: test_cli.sh RMEMD RMEM FIXTURE_TARGET
#
# Starts rmemd on 127.0.0.1 with an automatic port (read back from its port
# file) and fixture_target, then runs rmem commands and checks their output
# and exit status. Prints one line per check and a final count; exits 1 when
# any check failed.
set -u

RMEMD=${1:?usage: test_cli.sh RMEMD RMEM FIXTURE_TARGET}
RMEM=${2:?usage: test_cli.sh RMEMD RMEM FIXTURE_TARGET}
FIXTURE=${3:?usage: test_cli.sh RMEMD RMEM FIXTURE_TARGET}

T=$(mktemp -d "${TMPDIR:-/tmp}/test_cli.XXXXXX")
PIDS=()

cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null
  done
  for p in "${PIDS[@]}"; do
    wait "$p" 2>/dev/null
  done
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0
failed=0

ok() {
  passed=$((passed + 1))
  echo "ok   - $1"
}

# bad NAME WHY...: records a failure and shows the last command's output.
bad() {
  failed=$((failed + 1))
  echo "FAIL - $1"
  shift
  local l
  for l in "$@"; do
    echo "       $l"
  done
  echo "       command: ${last_cmd:-}"
  echo "       exit status: ${rc:-}"
  sed 's/^/       stdout: /' "$T/out" 2>/dev/null | head -20
  sed 's/^/       stderr: /' "$T/err" 2>/dev/null | head -20
}

# run ARGS...: runs rmem with ARGS; sets rc and leaves output in $T/out, $T/err.
run() {
  last_cmd="rmem $*"
  "$RMEM" "$@" >"$T/out" 2>"$T/err"
  rc=$?
}

# expect_rc NAME WANT: checks the exit status of the last run.
expect_rc() {
  if [ "$rc" -eq "$2" ]; then
    ok "$1"
  else
    bad "$1" "expected exit status $2"
  fi
}

die() {
  echo "test_cli: $*" >&2
  exit 1
}

command -v python3 >/dev/null || die "python3 is needed to compute expected bytes"
[ -x "$RMEMD" ] || die "no agent at $RMEMD"
[ -x "$RMEM" ] || die "no CLI at $RMEM"
[ -x "$FIXTURE" ] || die "no fixture at $FIXTURE"

# start_agent PORTFILE [EXTRA ARGS...]: starts rmemd and waits (5 s at most)
# for its port file; sets AGENT_PORT. Not to be run in a subshell, so that
# PIDS keeps the agent for cleanup.
start_agent() {
  local pf=$1
  shift
  AGENT_PORT=
  "$RMEMD" --listen 127.0.0.1 --port 0 --port-file "$pf" --log-level warn "$@" \
    >>"$T/rmemd.log" 2>&1 &
  PIDS+=($!)
  local i
  for i in $(seq 1 100); do
    if [ -s "$pf" ]; then
      AGENT_PORT=$(cat "$pf")
      return 0
    fi
    sleep 0.05
  done
  echo "rmemd did not write $pf within 5 s; its log:" >&2
  cat "$T/rmemd.log" >&2
  return 1
}

## Help and usage errors: no agent needed.

for args in "--help" "-h" "help" "help read"; do
  run $args
  if [ "$rc" -eq 0 ] && grep -q "^Usage: rmem" "$T/out"; then
    ok "rmem $args prints usage and exits 0"
  else
    bad "rmem $args prints usage and exits 0"
  fi
done
run --help
if grep -q "Exit status" "$T/out" && grep -q "partial success" "$T/out"; then
  ok "rmem --help documents the exit statuses"
else
  bad "rmem --help documents the exit statuses"
fi
for cmd in ps map read write info help; do
  run "$cmd" --help
  if [ "$rc" -eq 0 ] && grep -q "^Usage: rmem $cmd" "$T/out"; then
    ok "rmem $cmd --help exits 0"
  else
    bad "rmem $cmd --help exits 0" "expected 'Usage: rmem $cmd' on stdout"
  fi
done
run --version
if [ "$rc" -eq 0 ] && grep -q "^rmem [0-9]" "$T/out"; then
  ok "rmem --version"
else
  bad "rmem --version"
fi

usage_case() {
  run "$@"
  if [ "$rc" -eq 2 ] && [ -s "$T/err" ]; then
    ok "usage error exits 2: rmem $*"
  else
    bad "usage error exits 2: rmem $*" "expected exit status 2 and a message on stderr"
  fi
}
usage_case
usage_case frobnicate
usage_case read
usage_case read 1 0x1000
usage_case read notapid 0x1000 16
usage_case read 1 0xzz 16
usage_case read 1 0x1000 12q
usage_case read 1 0x1000 0
usage_case map
usage_case map 1 --bogus
usage_case ps --free
usage_case ps extra
usage_case --port 99999 ps
usage_case --timeout soon ps
usage_case write 1 0x1000
usage_case write 1 0x1000 abc
usage_case write 1 0x1000 xyzw
usage_case help nosuchcommand

## A real agent and a real fixture.

start_agent "$T/port" || die "cannot start rmemd"
PORT=$AGENT_PORT

"$FIXTURE" --sleep >"$T/fixture.out" 2>"$T/fixture.err" &
FPID=$!
PIDS+=($FPID)
for i in $(seq 1 600); do
  grep -q '^ready$' "$T/fixture.out" 2>/dev/null && break
  kill -0 "$FPID" 2>/dev/null || die "fixture exited early: $(cat "$T/fixture.err")"
  sleep 0.05
done
grep -q '^ready$' "$T/fixture.out" || die "fixture did not print ready within 30 s"

fx() {
  sed -n "s/^$1=//p" "$T/fixture.out" | head -1
}
PATTERN=$(fx pattern)
GUARD=$(fx guard)
RODATA=$(fx rodata)
SCRATCH=$(fx scratch)
PAGE=$(fx page_size)
PAGE=${PAGE:-4096}
[ -n "$PATTERN" ] && [ -n "$GUARD" ] && [ -n "$SCRATCH" ] && [ -n "$RODATA" ] ||
  die "fixture output lacks pattern/guard/rodata/scratch: $(cat "$T/fixture.out")"

# hex ADDR: the address as lowercase hex without 0x, as the hexdump prints it.
hex() {
  printf '%x' "$(($1))"
}
addhex() {
  printf '0x%x' "$(($1 + $2))"
}

R=(--port "$PORT" --timeout 20000)

run "${R[@]}" info
if [ "$rc" -eq 0 ] && grep -q "rmemd/" "$T/out"; then
  ok "rmem info shows the agent"
else
  bad "rmem info shows the agent"
fi

last_cmd="RMEM_PORT=$PORT rmem info --json"
RMEM_PORT=$PORT "$RMEM" info --json >"$T/out" 2>"$T/err"
rc=$?
if [ "$rc" -eq 0 ] && python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["version"] == 1 and d["agent"].startswith("rmemd/"), d
assert "read" in d["methods"] and d["limits"]["max_read"] > 0, d
' "$T/out" 2>>"$T/err"; then
  ok "RMEM_PORT and info --json"
else
  bad "RMEM_PORT and info --json"
fi

run "${R[@]}" --compress info
if [ "$rc" -eq 0 ] && grep -q "^compression   lz4$" "$T/out"; then
  ok "rmem --compress info shows lz4"
else
  bad "rmem --compress info shows lz4"
fi
last_cmd="RMEM_COMPRESS=1 rmem info --json; rmem info --json"
RMEM_COMPRESS=1 "$RMEM" "${R[@]}" info --json >"$T/out" 2>"$T/err" &&
  "$RMEM" "${R[@]}" info --json >"$T/out2" 2>>"$T/err"
rc=$?
if [ "$rc" -eq 0 ] && python3 -c '
import json, sys
assert json.load(open(sys.argv[1]))["compress"] == "lz4"
assert json.load(open(sys.argv[2]))["compress"] == "none"
' "$T/out" "$T/out2" 2>>"$T/err"; then
  ok "RMEM_COMPRESS=1 and info --json"
else
  bad "RMEM_COMPRESS=1 and info --json"
fi

## ps

run "${R[@]}" ps --json
if [ "$rc" -eq 0 ] && python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
p = [x for x in d["procs"] if x["pid"] == int(sys.argv[2])]
assert len(p) == 1, "pid not listed"
assert p[0]["threads"] >= 4, p[0]
assert p[0]["name"].startswith("fixture_target"[:15]), p[0]
' "$T/out" "$FPID" 2>>"$T/err"; then
  ok "ps --json lists the fixture with its threads"
else
  bad "ps --json lists the fixture with its threads"
fi

run "${R[@]}" ps
if [ "$rc" -eq 0 ] && head -1 "$T/out" | grep -q "PID.*PPID.*COMMAND" &&
  grep -Eq "^ *$FPID +[0-9]+ .*fixture_target" "$T/out"; then
  ok "ps table has a header and the fixture's row"
else
  bad "ps table has a header and the fixture's row"
fi

## map

run "${R[@]}" map "$FPID"
MAPOUT="$T/map.txt"
cp "$T/out" "$MAPOUT"
if [ "$rc" -eq 0 ]; then
  ok "map exits 0"
else
  bad "map exits 0"
fi
if grep -Eq '  heap$' "$MAPOUT"; then
  ok "map shows the heap"
else
  bad "map shows the heap" "expected a row whose details are 'heap' ([heap])"
fi
if grep -q "main exe $FIXTURE" "$MAPOUT" || grep -q "main exe $(readlink -f "$FIXTURE")" "$MAPOUT"; then
  ok "map shows the fixture's path as the main exe"
else
  bad "map shows the fixture's path as the main exe" "expected 'main exe $FIXTURE'"
fi
if grep -q "stack (main, tid $FPID)" "$MAPOUT"; then
  ok "map labels the main stack"
else
  bad "map labels the main stack"
fi
missing=""
for k in tid1 tid2 tid3; do
  tid=$(fx "$k")
  grep -q "thread stack tid $tid\$" "$MAPOUT" || missing="$missing $k=$tid"
done
if [ -z "$missing" ]; then
  ok "map labels the three thread stacks with their tids"
else
  bad "map labels the three thread stacks with their tids" "missing:$missing"
fi
if tail -1 "$MAPOUT" | grep -Eq '^[0-9]+ regions; committed .*image .*mapped .*private'; then
  ok "map ends with a summary line"
else
  bad "map ends with a summary line"
fi
# The guard page of the fixture's guard block.
if grep -Eq "^0*$(hex "$(addhex "$GUARD" "$PAGE")")-[0-9a-f]+ +4\.0K ---p reserve" "$MAPOUT"; then
  ok "map shows the guard page as a 4.0K ---p reserve region"
else
  bad "map shows the guard page as a 4.0K ---p reserve region"
fi

# The global option after the command.
run map "$FPID" --json "${R[@]}"
cp "$T/out" "$T/map.json"
nmaps=$(wc -l <"/proc/$FPID/maps")
if [ "$rc" -eq 0 ] && python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
n = len(d["regions"])
assert n == int(sys.argv[2]), "%d regions, /proc/PID/maps has %s lines" % (n, sys.argv[2])
assert d["summary"]["regions"] == n
for r in d["regions"]:
    assert r["base"].startswith("0x") and isinstance(r["size"], int)
    assert int(r["end"], 16) - int(r["base"], 16) == r["size"]
' "$T/map.json" "$nmaps" 2>>"$T/err"; then
  ok "map --json has as many regions as /proc/PID/maps ($nmaps)"
else
  bad "map --json has as many regions as /proc/PID/maps ($nmaps)"
fi

run "${R[@]}" map "$FPID" --detail
if [ "$rc" -eq 0 ] && head -1 "$T/out" | grep -q "RSS.*PSS.*Dirty.*Swap" &&
  tail -1 "$T/out" | grep -q "RSS"; then
  ok "map --detail adds smaps columns"
else
  bad "map --detail adds smaps columns"
fi

run "${R[@]}" map "$FPID" --free --json
if [ "$rc" -eq 0 ] && python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
gaps = [r for r in d["regions"] if r["state"] == "free"]
assert gaps and all("type" not in r for r in gaps)
' "$T/out" 2>>"$T/err"; then
  ok "map --free lists free gaps"
else
  bad "map --free lists free gaps"
fi

## read

# The pattern: byte i is (i*7+3) & 0xff. The expected dump in xxd style.
expected_dump() { # ADDR LEN
  python3 -c '
import sys
a, n = int(sys.argv[1], 0), int(sys.argv[2])
w = max(8, len("%x" % (a + n - 1)))
for off in range(0, n, 16):
    b = bytes(((off + i) * 7 + 3) & 0xff for i in range(min(16, n - off)))
    h = " ".join(b[i:i + 2].hex() for i in range(0, len(b), 2))
    h = h.ljust(39)
    s = "".join(chr(c) if 32 <= c < 127 else "." for c in b)
    print("%0*x: %s  %s" % (w, a + off, h, s))
' "$1" "$2"
}

run "${R[@]}" read "$FPID" "$PATTERN" 64
expected_dump "$PATTERN" 64 >"$T/expected"
if [ "$rc" -eq 0 ] && diff -q "$T/expected" "$T/out" >/dev/null; then
  ok "read prints the pattern as an xxd-style hexdump"
else
  bad "read prints the pattern as an xxd-style hexdump" "expected:" "$(cat "$T/expected")"
fi

run "${R[@]}" read "$FPID" "$PATTERN" 100 --json
if [ "$rc" -eq 0 ] && python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
want = bytes((i * 7 + 3) & 0xff for i in range(100)).hex()
assert d["data"] == want and d["read"] == 100 and d["holes"] == [], d
assert int(d["addr"], 16) == int(sys.argv[2], 0)
' "$T/out" "$PATTERN" 2>>"$T/err"; then
  ok "read --json gives the data as hex"
else
  bad "read --json gives the data as hex"
fi

python3 -c '
import sys
open(sys.argv[1], "wb").write(bytes((i * 7 + 3) & 0xff for i in range(3 * int(sys.argv[2]))))
' "$T/pattern.expected" "$PAGE"
run "${R[@]}" read "$FPID" "$PATTERN" "$((3 * PAGE))" -o "$T/pattern.bin"
if [ "$rc" -eq 0 ] && cmp -s "$T/pattern.expected" "$T/pattern.bin" && [ ! -s "$T/out" ]; then
  ok "read -o FILE writes the raw pattern bytes"
else
  bad "read -o FILE writes the raw pattern bytes" "$(cmp "$T/pattern.expected" "$T/pattern.bin" 2>&1)"
fi

# Across the guard: pages 0 and 2 are 0xAA, page 1 has no access.
HOLE=$(addhex "$GUARD" "$PAGE")
run "${R[@]}" read "$FPID" "$GUARD" "$((3 * PAGE))"
if [ "$rc" -eq 4 ]; then
  ok "read across the guard page exits 4"
else
  bad "read across the guard page exits 4"
fi
if grep -q "1 hole" "$T/err" && grep -q "$HOLE +0x$(hex "$PAGE") RMEM_EPROT" "$T/err"; then
  ok "read reports the hole on stderr ($HOLE +0x$(hex "$PAGE") RMEM_EPROT)"
else
  bad "read reports the hole on stderr ($HOLE +0x$(hex "$PAGE") RMEM_EPROT)"
fi
if grep -Eq "^0*$(hex "$HOLE"): \?\?\?\? \?\?\?\? " "$T/out" &&
  grep -Eq "^0*$(hex "$GUARD"): aaaa aaaa " "$T/out" &&
  grep -Eq "^0*$(hex "$(addhex "$GUARD" $((2 * PAGE)))"): aaaa aaaa " "$T/out"; then
  ok "hexdump shows ?? for the hole and aa around it"
else
  bad "hexdump shows ?? for the hole and aa around it"
fi

run "${R[@]}" read "$FPID" "$GUARD" "$((3 * PAGE))" -o "$T/guard.bin"
python3 -c '
import sys
p = int(sys.argv[2])
open(sys.argv[1], "wb").write(b"\xaa" * p + bytes(p) + b"\xaa" * p)
' "$T/guard.expected" "$PAGE"
if [ "$rc" -eq 4 ] && cmp -s "$T/guard.expected" "$T/guard.bin"; then
  ok "read -o across the guard zero-fills the hole and exits 4"
else
  bad "read -o across the guard zero-fills the hole and exits 4"
fi

# lz4: the agent compresses these (repetitive, over 4 KiB); the bytes and the hole are the same.
run "${R[@]}" --compress read "$FPID" "$PATTERN" "$((3 * PAGE))" -o "$T/pattern.lz4.bin"
if [ "$rc" -eq 0 ] && cmp -s "$T/pattern.expected" "$T/pattern.lz4.bin"; then
  ok "read --compress gives the same bytes"
else
  bad "read --compress gives the same bytes"
fi
last_cmd="RMEM_COMPRESS=1 rmem read across the guard -o"
RMEM_COMPRESS=1 "$RMEM" "${R[@]}" read "$FPID" "$GUARD" "$((3 * PAGE))" -o "$T/guard.lz4.bin" \
  >"$T/out" 2>"$T/err"
rc=$?
if [ "$rc" -eq 4 ] && cmp -s "$T/guard.expected" "$T/guard.lz4.bin" &&
  grep -q "$HOLE +0x$(hex "$PAGE") RMEM_EPROT" "$T/err"; then
  ok "RMEM_COMPRESS=1 read across the guard: same bytes, same hole"
else
  bad "RMEM_COMPRESS=1 read across the guard: same bytes, same hole"
fi

run "${R[@]}" read "$FPID" "$HOLE" 16
if [ "$rc" -eq 1 ] && grep -q "RMEM_EFAULT" "$T/err" && [ ! -s "$T/out" ]; then
  ok "read of the guard page alone fails with RMEM_EFAULT, exit 1"
else
  bad "read of the guard page alone fails with RMEM_EFAULT, exit 1"
fi

run "${R[@]}" read "$FPID" "$HOLE" "$PAGE" -o "$T/nothing.bin"
if [ "$rc" -eq 1 ] && grep -q "RMEM_EFAULT" "$T/err" && [ ! -e "$T/nothing.bin" ]; then
  ok "read -o with nothing readable exits 1 and leaves no file"
else
  bad "read -o with nothing readable exits 1 and leaves no file"
fi

run "${R[@]}" read 4194000 0x1000 16
if [ "$rc" -eq 1 ] && grep -q "RMEM_ENOPROC" "$T/err"; then
  ok "read of a nonexistent pid exits 1 with RMEM_ENOPROC"
else
  bad "read of a nonexistent pid exits 1 with RMEM_ENOPROC"
fi

run "${R[@]}" --json read 4194000 0x1000 16
if [ "$rc" -eq 1 ] && python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["error"]["name"] == "RMEM_ENOPROC" and d["error"]["code"] == -5, d
' "$T/out" 2>>"$T/err"; then
  ok "--json errors are a JSON document too"
else
  bad "--json errors are a JSON document too"
fi

## write

run "${R[@]}" write "$FPID" "$SCRATCH" "de ad be ef" 0x0102
if [ "$rc" -eq 0 ] && grep -q "wrote 6 of 6 bytes" "$T/out"; then
  ok "write of hex bytes"
else
  bad "write of hex bytes"
fi
run "${R[@]}" read "$FPID" "$SCRATCH" 8
if [ "$rc" -eq 0 ] && grep -Eq "^0*$(hex "$SCRATCH"): dead beef 0102 0000 " "$T/out"; then
  ok "read shows the written bytes"
else
  bad "read shows the written bytes" "expected 'dead beef 0102 0000'"
fi

printf 'patched by rmem' >"$T/patch.bin"
run "${R[@]}" write "$FPID" "$RODATA" --file "$T/patch.bin" --json
if [ "$rc" -eq 0 ] && python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["written"] == 15 and d["failed"] == [], d
' "$T/out" 2>>"$T/err"; then
  ok "write --file to a read-only page (debugger path)"
else
  bad "write --file to a read-only page (debugger path)"
fi
run "${R[@]}" read "$FPID" "$RODATA" 16 -o "$T/rodata.bin"
printf 'patched by rmemR' >"$T/rodata.expected"
if [ "$rc" -eq 0 ] && cmp -s "$T/rodata.expected" "$T/rodata.bin"; then
  ok "read back the patched read-only page"
else
  bad "read back the patched read-only page"
fi

run "${R[@]}" write "$FPID" "$(addhex "$HOLE" -4)" 0102030405060708
if [ "$rc" -eq 4 ] && grep -q "RMEM_EPROT" "$T/err" && grep -q "wrote 4 of 8" "$T/out"; then
  ok "write into the guard page is partial, exit 4"
else
  bad "write into the guard page is partial, exit 4"
fi

## Long reads split over many requests (an agent with a small max_read).

start_agent "$T/port2" --max-read 65536 || die "cannot start a second rmemd"
PORT2=$AGENT_PORT
# The biggest read-only mapping of the fixture (code or constants, which do
# not change under our feet), checked against /proc/PID/mem.
read -r BIG BIGLEN < <(python3 -c '
import sys
best = None
for line in open("/proc/%s/maps" % sys.argv[1]):
    f = line.split()
    a, b = (int(x, 16) for x in f[0].split("-"))
    if f[1][:2] == "r-" and "[v" not in line and b - a <= (8 << 20) and (best is None or b - a > best[1]):
        best = (a, b - a)
print("0x%x %d" % best)
' "$FPID")
python3 -c '
import sys
with open("/proc/%s/mem" % sys.argv[1], "rb") as m:
    m.seek(int(sys.argv[2], 0))
    open(sys.argv[4], "wb").write(m.read(int(sys.argv[3])))
' "$FPID" "$BIG" "$BIGLEN" "$T/big.expected" 2>>"$T/err"
run --port "$PORT2" read "$FPID" "$BIG" "$BIGLEN" -o "$T/big.bin"
if [ "$rc" -eq 0 ] && cmp -s "$T/big.expected" "$T/big.bin"; then
  ok "read of $BIGLEN bytes in 64 KiB requests matches /proc/PID/mem"
else
  bad "read of $BIGLEN bytes in 64 KiB requests matches /proc/PID/mem"
fi

## Slow-link commands: readv, deref, string, fill.

for cmd in readv deref string fill; do
  run "$cmd" --help
  if [ "$rc" -eq 0 ] && grep -q "^Usage: rmem $cmd" "$T/out"; then
    ok "rmem $cmd --help exits 0"
  else
    bad "rmem $cmd --help exits 0"
  fi
done
usage_case readv 1 0x1000
usage_case deref 1 0x1000
usage_case deref 1 0x1000 +zz
usage_case string 1 0x1000 --max 0
usage_case fill 1 0x1000 16
usage_case fill 1 0x1000 16 abc

CHAIN=$(fx chain)
STR8=$(fx str8)
STRNOTERM=$(fx strnoterm)
if [ -n "$CHAIN" ] && [ -n "$STR8" ]; then
  run "${R[@]}" deref "$FPID" "$CHAIN" +0x10 0x8 -0x20
  if [ "$rc" -eq 0 ] && grep -q "^\[2\] " "$T/out" && grep -q "chain-target-ok!" "$T/out"; then
    ok "deref follows a 3-level chain (offsets +0x10 0x8 -0x20)"
  else
    bad "deref follows a 3-level chain (offsets +0x10 0x8 -0x20)"
  fi
  run "${R[@]}" deref "$FPID" "$(addhex "$GUARD" "$PAGE")" 0 --json
  if [ "$rc" -eq 1 ] && grep -q '"broken"' "$T/out" && grep -q "RMEM_EPROT" "$T/out"; then
    ok "deref of a chain that breaks exits 1 with the break in JSON"
  else
    bad "deref of a chain that breaks exits 1 with the break in JSON"
  fi
  run "${R[@]}" readv "$FPID" "$PATTERN:16" "$(addhex "$GUARD" "$PAGE"):16"
  if [ "$rc" -eq 4 ] && grep -q "^$(hex "$PATTERN"): 030a 1118" "$T/out"; then
    ok "readv of a readable and an unreadable range exits 4"
  else
    bad "readv of a readable and an unreadable range exits 4"
  fi
  run "${R[@]}" string "$FPID" "$STR8"
  if [ "$rc" -eq 0 ] && [ "$(cat "$T/out")" = "héllo wörld ✓" ]; then
    ok "string reads a UTF-8 string next to an inaccessible page"
  else
    bad "string reads a UTF-8 string next to an inaccessible page"
  fi
  run "${R[@]}" string "$FPID" "$STRNOTERM" --json
  if [ "$rc" -eq 4 ] && grep -q '"terminated": false' "$T/out" && grep -q '"hole"' "$T/out"; then
    ok "string without a terminator exits 4 with the hole"
  else
    bad "string without a terminator exits 4 with the hole"
  fi
  run "${R[@]}" fill "$FPID" "$(addhex "$SCRATCH" 256)" 8 0x41
  run2_rc=$rc
  run "${R[@]}" read "$FPID" "$(addhex "$SCRATCH" 256)" 8
  if [ "$run2_rc" -eq 0 ] && grep -q "AAAAAAAA" "$T/out"; then
    ok "fill writes its pattern"
  else
    bad "fill writes its pattern"
  fi
  run "${R[@]}" fill "$FPID" "$(addhex "$GUARD" "$PAGE")" 16 90
  if [ "$rc" -eq 1 ] && grep -q "RMEM_EFAULT" "$T/err"; then
    ok "fill of a page with no access exits 1 with RMEM_EFAULT"
  else
    bad "fill of a page with no access exits 1 with RMEM_EFAULT"
  fi
else
  bad "fixture output lacks chain/str8"
fi

## The page cache: rmem cache, read --uncached and --max-age.

start_agent "$T/port3" || die "cannot start a third rmemd"
RC=(--port "$AGENT_PORT" --timeout 20000)
run cache --help
if [ "$rc" -eq 0 ] && grep -q "^Usage: rmem cache" "$T/out"; then
  ok "rmem cache --help exits 0"
else
  bad "rmem cache --help exits 0"
fi
usage_case "${RC[@]}" cache 123
usage_case "${RC[@]}" cache --flush 0
usage_case "${RC[@]}" cache --flush 1 2
usage_case "${RC[@]}" read "$FPID" "$SCRATCH" 16 --uncached --max-age 5
usage_case "${RC[@]}" read "$FPID" "$SCRATCH" 16 --max-age soon
usage_case "${RC[@]}" read "$FPID" "$SCRATCH" 16 --flush
# The fixture executable's first page (its ELF header): a read-only file page.
ELF=$(python3 -c '
import os, sys
exe = os.readlink("/proc/%s/exe" % sys.argv[1])
for line in open("/proc/%s/maps" % sys.argv[1]):
    f = line.split()
    if len(f) >= 6 and f[5] == exe and f[2] == "00000000" and f[1].startswith("r"):
        print("0x" + f[0].split("-")[0])
        break
' "$FPID")
# json_field FILE KEY: prints a top-level field of a JSON document.
json_field() {
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}
cached_case() { # NAME WANT ARGS...
  local name=$1 want=$2
  shift 2
  run "${RC[@]}" read "$FPID" "$@" --json
  if [ "$rc" -eq 0 ] && [ "$(json_field "$T/out" cached 2>>"$T/err")" = "$want" ]; then
    ok "$name"
  else
    bad "$name" "expected \"cached\": $want"
  fi
}
cached_case "a first read of a read-only file page is live" 0 "$ELF" 16
cached_case "a second read comes from the cache" 16 "$ELF" 16
cached_case "read --uncached bypasses the cache" 0 "$ELF" 16 --uncached
cached_case "anonymous memory is read live" 0 "$SCRATCH" 16
cached_case "read --max-age fills the cache" 0 "$SCRATCH" 16 --max-age 60000
cached_case "read --max-age takes a young copy" 16 "$SCRATCH" 16 --max-age 60000
run "${RC[@]}" cache --json
if [ "$rc" -eq 0 ] && python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["size_limit"] == 64 << 20 and d["pages"] == 2 and d["bytes"] == 2 * int(sys.argv[2]), d
assert d["hits"] == 2 and d["misses"] == 2 and "flushed" not in d, d
' "$T/out" "$PAGE" 2>>"$T/err"; then
  ok "rmem cache --json shows the figures"
else
  bad "rmem cache --json shows the figures"
fi
run "${RC[@]}" cache --flush "$FPID" --json
if [ "$rc" -eq 0 ] && [ "$(json_field "$T/out" flushed)" = "$FPID" ] &&
  [ "$(json_field "$T/out" pages)" = 0 ]; then
  ok "rmem cache --flush PID"
else
  bad "rmem cache --flush PID"
fi
cached_case "a flushed page is read live" 0 "$ELF" 16
run "${RC[@]}" cache --flush
if [ "$rc" -eq 0 ] && grep -q "^flushed every process" "$T/out" && grep -q "^hits  *2$" "$T/out" &&
  grep -q "^held  *0B in 0 pages" "$T/out"; then
  ok "rmem cache --flush prints the figures"
else
  bad "rmem cache --flush prints the figures"
fi

## Connection problems.

CLOSED=$(python3 -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
')
run --port "$CLOSED" --timeout 3000 ps
if [ "$rc" -eq 3 ] && grep -q "RMEM_ECONNECT" "$T/err" && grep -q "127.0.0.1:$CLOSED" "$T/err"; then
  ok "connecting to a closed port exits 3 with RMEM_ECONNECT"
else
  bad "connecting to a closed port exits 3 with RMEM_ECONNECT"
fi

echo "test_cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
