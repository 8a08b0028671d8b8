#!/usr/bin/env bash
# The test command: install dependencies, build with ASan and UBSan, run the
# whole suite with ctest. .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh
build=${RMEM_BUILD_DIR:-build-asan}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DRMEM_SANITIZE=ON -DRMEM_WERROR=ON >/dev/null
cmake --build "$build" -j"$(nproc)"
# The agent must leave no leak behind: LeakSanitizer makes it exit non-zero.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$build"
ctest --output-on-failure -j"$(nproc)" "$@"
