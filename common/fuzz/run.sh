#!/usr/bin/env bash
# Bounded fuzzing run: builds every fuzz target of common/fuzz (cargo-fuzz, libFuzzer, on the
# stable toolchain) and runs each for SECONDS_PER_TARGET seconds (default 20), starting from a
# scratch copy of its seeds in common/fuzz/seeds/<target>/ (the committed seeds never grow).
#
#   common/fuzz/run.sh [SECONDS_PER_TARGET]
#
# Prints one line per target, `fuzz: <target> <s> s, <n> runs, <c> crashes`, then
# `fuzz: <n> targets passed, <m> failed`, and exits 1 when any target failed (a panic, a
# broken invariant, a timeout or running out of memory). The input that failed is kept under
# common/fuzz/artifacts/<target>/ with the run's log beside it; its path is printed.
#
# Stable Rust only: targets are built without a sanitizer (`--sanitizer none`; the address
# sanitizer needs nightly, and the project forbids unsafe code), with debug assertions and
# overflow checks on.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2

seconds="${1:-20}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS_PER_TARGET]  (a whole number of seconds, at least 1)" >&2
    exit 2
fi

fuzz_dir="$(cd "$(dirname "$0")" && pwd)"
manifest="$fuzz_dir/Cargo.toml"
cd "$fuzz_dir/../.."

# --sanitizer none on every call: the default (address) needs nightly, and a call with other
# flags would rebuild.
fuzz_flags=(--fuzz-dir "$fuzz_dir" --sanitizer none)

if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
    if ! cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked; then
        echo "fuzz: cargo-fuzz $CARGO_FUZZ_VERSION cannot be installed" >&2
        echo "fuzz: 0 targets passed, 1 failed"
        exit 1
    fi
fi
echo "== $(cargo --version), $(cargo fuzz --version)"

mapfile -t targets < <(cargo fuzz list --fuzz-dir "$fuzz_dir")
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz: no targets found in $manifest" >&2
    echo "fuzz: 0 targets passed, 1 failed"
    exit 1
fi

give_up() {
    echo "fuzz: $1" >&2
    echo "fuzz: 0 targets passed, ${#targets[@]} failed"
    exit 1
}

# cargo fuzz has no --locked: check the lock file first, and that the build left it alone.
echo "== dependencies (--locked)"
if ! cargo fetch --locked --manifest-path "$manifest"; then
    give_up "common/fuzz/Cargo.lock is out of date (a dependency of fleetgate-common or fleetgate-proto changed?); refresh it with: cargo fetch --manifest-path common/fuzz/Cargo.toml"
fi
lock_before="$(cksum <"$fuzz_dir/Cargo.lock")"

echo "== seeds (the committed agent and coordinator messages are current)"
if ! cargo test --locked --manifest-path "$manifest"; then
    give_up "the seed check failed (after a protocol change: FLEETGATE_WRITE_SEEDS=1 cargo test --manifest-path common/fuzz/Cargo.toml)"
fi

echo "== build (${#targets[@]} targets)"
if ! cargo fuzz build "${fuzz_flags[@]}"; then
    give_up "the fuzz targets do not build"
fi
if [ "$(cksum <"$fuzz_dir/Cargo.lock")" != "$lock_before" ]; then
    give_up "the build changed common/fuzz/Cargo.lock; commit the refreshed lock file"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/fleetgate-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
echo "== fuzz ($seconds s per target)"
for target in "${targets[@]}"; do
    corpus="$work/corpus/$target"
    log="$work/$target.log"
    mkdir -p "$corpus"
    if [ -d "$fuzz_dir/seeds/$target" ]; then
        cp -R "$fuzz_dir/seeds/$target/." "$corpus/"
    fi
    start=$(date +%s)
    status=0
    cargo fuzz run "${fuzz_flags[@]}" "$target" "$corpus" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    elapsed=$(($(date +%s) - start))
    took="$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)"
    runs="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)"
    artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
    if [ "$status" -eq 0 ] && [ -z "$artifact" ]; then
        echo "fuzz: $target ${took:-$elapsed} s, ${runs:-0} runs, 0 crashes"
        passed=$((passed + 1))
        continue
    fi
    failed=$((failed + 1))
    echo "fuzz: $target $elapsed s, ${runs:-0} runs, 1 crashes"
    if [ -n "$artifact" ]; then
        case "$artifact" in /*) ;; *) artifact="$PWD/$artifact" ;; esac
        kind="$(basename "$artifact")"
        kind="${kind%%-*}"
        cp "$log" "$(dirname "$artifact")/$(basename "$artifact").log" 2>/dev/null || true
        echo "fuzz: $target $kind input: $artifact"
        echo "fuzz: $target replay: cargo fuzz run --fuzz-dir common/fuzz --sanitizer none $target $artifact"
    else
        echo "fuzz: $target exited with status $status and left no input; the log ends:"
        tail -n 20 "$log" | sed 's/^/    /'
        continue
    fi
    # The panic message (or libFuzzer's report) and the failing input in base64 (libFuzzer
    # prints it for small inputs only).
    {
        sed -n '/panicked at/,/^stack backtrace:/p' "$log" | sed '/^stack backtrace:/d' | head -n 20
        grep -E '^==[0-9]+== ERROR: libFuzzer|^SUMMARY: libFuzzer' "$log" | head -n 2 || true
        grep -E '^Base64: ' "$log" | head -n 1 | cut -c 1-600 || true
    } | sed 's/^/    /' || true
done

echo "fuzz: $passed targets passed, $failed failed"
[ "$failed" -eq 0 ]
