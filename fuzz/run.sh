#!/bin/sh
# Run every libFuzzer harness for a while; nonzero exit when any of them
# finds a crash, a leak, a timeout or a failed check.
#
#   fuzz/run.sh SECONDS MAX_LEN HARNESS...
#
# Each harness runs for SECONDS over its seed corpus (fuzz/corpus/NAME, read
# only) and its working corpus (build/fuzz/corpus/NAME, where new inputs
# go). Its output goes to build/fuzz/NAME.log; a crashing input is saved as
# build/fuzz/NAME-crash-* (rerun it with: build/fuzz/fuzz_NAME FILE).
set -u
seconds=$1
max_len=$2
shift 2
out=build/fuzz
failed=""
for name in "$@"; do
    mkdir -p "$out/corpus/$name"
    log="$out/$name.log"
    "$out/fuzz_$name" -max_total_time="$seconds" -max_len="$max_len" \
        -timeout=30 -print_final_stats=1 -artifact_prefix="$out/$name-" \
        "$out/corpus/$name" "fuzz/corpus/$name" >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    if [ "$rc" -eq 0 ]; then
        echo "fuzz_$name: ${runs:-?} inputs in ${seconds} s, ok"
    else
        echo "fuzz_$name: FAILED (exit $rc) after ${runs:-?} inputs; log: $log"
        grep -v 'WARNING: AddressSanitizer failed to allocate' "$log" | tail -n 40
        failed="$failed $name"
    fi
done
if [ -n "$failed" ]; then
    echo "fuzzing failed:$failed (reproducers: $out/*-crash-*, *-leak-*, *-timeout-*, *-oom-*)" >&2
    exit 1
fi
