#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for FUZZ_SECONDS seconds each
# (default 30), starting from the committed seed corpus.
#
#   bash .ci/fuzz.sh                      # all targets
#   FUZZ_SECONDS=300 bash .ci/fuzz.sh     # longer
#   bash .ci/fuzz.sh roundtrip topic_match  # some targets
#
# Needs a nightly toolchain (`rustup toolchain install nightly`).
#
# FUZZ_SANITIZER (default `none`) is passed to `cargo fuzz --sanitizer`. The
# codec is `#![forbid(unsafe_code)]`, so AddressSanitizer finds nothing more
# here and costs about 4x the executions per second and ~30x the memory; set
# FUZZ_SANITIZER=address to use it anyway. Panics, overflow checks and debug
# assertions (kept on in fuzz/Cargo.toml's release profile) are what fail.
#
# The committed corpus is only read: libFuzzer writes new inputs into a
# temporary directory given first. Crash inputs land in fuzz/artifacts/<target>/. Exits non-zero
# if any target fails.
set -uo pipefail

cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-30}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
sanitizer="${FUZZ_SANITIZER:-none}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found; installing it"
    cargo install cargo-fuzz --locked || exit 1
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +"$toolchain" fuzz list)
fi
if [ "${#targets[@]}" -eq 0 ]; then
    echo "no fuzz targets found" >&2
    exit 1
fi

cargo +"$toolchain" fuzz build --sanitizer "$sanitizer" || exit 1

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

failed=()
for target in "${targets[@]}"; do
    echo "=== fuzzing $target for ${seconds}s"
    mkdir -p "$work/$target"
    # New inputs go to the first directory (scratch); the seed corpus is
    # read-only input.
    if ! cargo +"$toolchain" fuzz run --sanitizer "$sanitizer" "$target" "$work/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1; then
        echo "=== $target FAILED; see fuzz/artifacts/$target/" >&2
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz targets that failed: ${failed[*]}" >&2
    exit 1
fi
echo "all fuzz targets ran ${seconds}s without a failure"
