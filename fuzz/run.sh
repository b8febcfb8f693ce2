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
#
# FUZZ_JOBS harnesses (default: one per processor) run at a time: each is
# one single-threaded process, so each still has a processor of its own for
# its SECONDS, and the run takes SECONDS per FUZZ_JOBS harnesses. One after
# another, make test's smoke run (six harnesses, 9 s each) took 54 s of a
# 2-processor CI machine while the other processor stood idle.
set -u
seconds=$1
max_len=$2
shift 2
out=build/fuzz
njobs=${FUZZ_JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)}
failed=""

start() {
    mkdir -p "$out/corpus/$1"
    "$out/fuzz_$1" -max_total_time="$seconds" -max_len="$max_len" \
        -timeout=30 -print_final_stats=1 -artifact_prefix="$out/$1-" \
        "$out/corpus/$1" "fuzz/corpus/$1" >"$out/$1.log" 2>&1
}

# A batch's results are said in the harnesses' order, each when its batch
# is done (its log is whole then).
report() {
    name=$1 rc=$2 log="$out/$1.log"
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    if [ "$rc" -eq 0 ]; then
        echo "fuzz_$name: ${runs:-?} inputs in ${seconds} s, ok"
    else
        echo "fuzz_$name: FAILED (exit $rc) after ${runs:-?} inputs; log: $log"
        grep -v 'WARNING: AddressSanitizer failed to allocate' "$log" | tail -n 40
        failed="$failed $name"
    fi
}

# (A harness's name is a shell word: fuzz_NAME.c.)
while [ $# -gt 0 ]; do
    batch="" n=0
    while [ $# -gt 0 ] && [ "$n" -lt "$njobs" ]; do
        start "$1" &
        eval "pid_$1=\$!"
        batch="$batch $1" n=$((n + 1))
        shift
    done
    for name in $batch; do
        rc=0; eval "wait \$pid_$name" || rc=$?
        report "$name" "$rc"
    done
done
if [ -n "$failed" ]; then
    echo "fuzzing failed:$failed (reproducers: $out/*-crash-*, *-leak-*, *-timeout-*, *-oom-*)" >&2
    exit 1
fi
