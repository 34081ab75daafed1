#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time, starting from the seed corpora in
# fuzz/corpus/<target>/ (new inputs go to a scratch copy, so the committed seeds stay as they
# are). Installs cargo-fuzz when it is missing. libFuzzer's nightly-only build flags are
# allowed on a stable toolchain with RUSTC_BOOTSTRAP=1.
#
# Usage: scripts/fuzz.sh [TARGET...]        (default: every target)
# Environment:
#   FUZZ_SECONDS     seconds per target (default 30)
#   FUZZ_SANITIZER   address, leak, memory, thread or none (default none: the crate is safe
#                    Rust, and panics and overflows are what the targets look for)
#   FUZZ_JOBS        parallel fuzzing jobs per target (default 1)
#   CARGO_TARGET_DIR where to build (default fuzz/target)
# A crash leaves its input under fuzz/artifacts/<target>/ and makes the script exit 1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT/fuzz"

SECONDS_EACH=${FUZZ_SECONDS:-30}
SANITIZER=${FUZZ_SANITIZER:-none}
JOBS=${FUZZ_JOBS:-1}
ALL_TARGETS=(reference platform www_authenticate manifest token_response rfc3339)

case "$SECONDS_EACH" in
'' | *[!0-9]*)
    echo "FUZZ_SECONDS must be a whole number of seconds, not '$SECONDS_EACH'" >&2
    exit 2
    ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
target_dir_args=()
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    target_dir_args=(--target-dir "$CARGO_TARGET_DIR/fuzz")
fi

# libFuzzer's -jobs mode logs to files; one job runs in the foreground instead.
jobs_args=()
if [ "$JOBS" != 1 ]; then
    jobs_args=(-jobs="$JOBS" -workers="$JOBS")
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=("${ALL_TARGETS[@]}")
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/docker-pull-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

failed=()
for target in "${targets[@]}"; do
    if [ ! -f "fuzz_targets/$target.rs" ]; then
        echo "no fuzz target '$target' (have: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
    echo "==> fuzzing $target for ${SECONDS_EACH}s"
    corpus="$scratch/$target"
    mkdir -p "$corpus"
    cp -R "corpus/$target/." "$corpus/"
    if ! cargo fuzz run --sanitizer "$SANITIZER" --debug-assertions \
        "${target_dir_args[@]}" "$target" "$corpus" -- \
        -max_total_time="$SECONDS_EACH" "${jobs_args[@]}" \
        -max_len=65536 -timeout=10 -print_final_stats=1; then
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "==> crashes in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "==> no crash in: ${targets[*]}"
