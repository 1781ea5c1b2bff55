#!/usr/bin/env bash
# Builds the fuzz targets (libFuzzer + AddressSanitizer) and runs each for a bounded time
# on a temporary copy of its committed corpus (Corpus/<target>/, which stays small).
# A crash fails the run; its input is left in $FUZZ_ARTIFACTS (default /tmp/netbe-fuzz-crashes)
# and belongs, once fixed, in Corpus/<target>/ as a regression seed.
#
# Usage: Fuzz/run.sh [SECONDS_EACH (default 60)] [TARGET...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
[ -x /opt/swift/usr/bin/swift ] && PATH="/opt/swift/usr/bin:$PATH"
seconds=${1:-60}; shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz-spec fuzz-stream fuzz-seqpacket fuzz-slirp-input fuzz-virtio-net fuzz-offload fuzz-virtqueue)
artifacts=${FUZZ_ARTIFACTS:-/tmp/netbe-fuzz-crashes}
mkdir -p "$artifacts"

swift build -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -g 2>&1 | grep -v "Cannot export local symbol '__asan_extra_spill_area'" | tail -n 1
bin=$(swift build -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -g --show-bin-path)

failed=()
for t in "${targets[@]}"; do
    work=$(mktemp -d /tmp/netbe-fuzz.XXXXXX)
    cp -r "Corpus/$t" "$work/corpus"
    # The Swift runtime's backtracer would catch the crash before libFuzzer saves its input.
    if SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0 "$bin/netbe-fuzz" "$t" "$work/corpus" -max_total_time="$seconds" \
           -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/$t-" \
           >"$work/log" 2>&1; then
        execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/log" | grep -o '[0-9]*$' || echo 0)
        rate=$(grep -o 'exec/s: [0-9]*' "$work/log" | tail -n 1 | grep -o '[0-9]*$' || echo 0)
        cov=$(grep -o 'cov: [0-9]*' "$work/log" | tail -n 1 | grep -o '[0-9]*$' || echo 0)
        echo "fuzz: $t: no crash in ${seconds}s: $execs inputs, $rate exec/s, coverage $cov, corpus $(ls "$work/corpus" | wc -l)"
    else
        echo "fuzz: $t: CRASH (input saved under $artifacts/$t-*):"
        grep -E '^(==|SUMMARY|Fatal error|.*precondition|.*: Fatal)' "$work/log" | head -n 20 | sed 's/^/  /'
        tail -n 5 "$work/log" | sed 's/^/  /'
        failed+=("$t")
    fi
    rm -rf "$work"
done
[ ${#failed[@]} -eq 0 ] || { echo "fuzz: crashes in ${failed[*]}" >&2; exit 1; }
