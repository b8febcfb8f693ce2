#!/usr/bin/env bash
# bench/run.sh: what `make bench` runs. One run, one report:
#   1. installs the peers when missing (mimalloc, jemalloc, tcmalloc, gnuplot;
#      Debian packages, as root or through sudo),
#   2. builds beam_alloc (make lib) and the benchmark programs into
#      build/bench/,
#   3. runs the paired groups of bench/paired.c: every allocator of a group
#      in one process, interleaved within each repetition, standalone
#      (bench/standalone/paired_main.c) and inside a BEAM on a normal and a
#      dirty CPU scheduler (bench/nif/); then peak RSS (fresh processes) and
#      the memory held for small live sets,
#   4. writes bench/results/{paired.txt,paired.csv,targets.txt,machine.txt}
#      and prints every target of issue 13 with its paired ratio and spread.
#   5. runs bench-sqlite (SQLite's allocator: malloc, enif_alloc with a
#      header, beam_alloc's GPA, mimalloc) into bench/results/sqlite.md,
#      and bench-sqlite-c (a heavier mix, standalone, GPA against malloc);
#      then bench-nif-call (what BEAM_NIF's glue costs a tiny NIF a call).
#   With BENCH_MATRIX=1 it also runs the full matrix of bench/workloads.c
#   (every allocator x workload, one executable per malloc implementation,
#   cells not interleaved) into results.{md,csv} and chart.png.
#
# Knobs (environment): BENCH_SCALE (default 1: operation counts are
# multiplied by it), BENCH_REPS (paired: repetitions of every group, default
# per group, 3-9; matrix: default 5, at most 16), BENCH_PROCS (paired: fresh
# processes for every group with targets, default 3), BENCH_GROUPS (paired groups
# to run, default all), BENCH_MATRIX, CC, MAKE.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CC=${CC:-cc}
MAKE=${MAKE:-make}
# How the Makefile links a NIF (it passes NIF_LDFLAGS; the bench NIF is linked alike).
NIF_LDFLAGS=${NIF_LDFLAGS:?bench/run.sh: run it through make bench, which passes NIF_LDFLAGS}
SCALE=${BENCH_SCALE:-1}
REPS=${BENCH_REPS:-5}
MATRIX=${BENCH_MATRIX:-0}
GROUPS_ONLY=${BENCH_GROUPS:-}
PROCS=${BENCH_PROCS:-3}
OUT=$ROOT/bench/results
WORK=$ROOT/build/bench
START=$SECONDS

log() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - START)); }

# How busy the machine is apart from this run: busy CPU ticks of the whole
# machine (/proc/stat) minus those of this script's children (/proc/$$/stat
# cutime+cstime). Two-thread numbers are worthless when this is high.
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
child_ticks() { awk '{print $16 + $17}' "/proc/$$/stat"; }
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
BUSY0=$(busy_ticks)
CHILD0=$(child_ticks)
T0=$(date +%s.%N)

# --- 1. dependencies -------------------------------------------------------
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "bench: need root to run: $*" >&2; exit 1
  fi
}

pkg_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

if ! command -v erl >/dev/null 2>&1 || ! command -v erlc >/dev/null 2>&1; then
  log "installing Erlang (scripts/ensure-deps)"
  scripts/ensure-deps
fi
peers=(libmimalloc-dev libjemalloc-dev libgoogle-perftools-dev gnuplot-nox)
missing=()
for p in "${peers[@]}"; do pkg_installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- 2. build ----------------------------------------------------------------
log "building"
$MAKE --no-print-directory lib
mkdir -p "$WORK" "$OUT"

ERTS_INCLUDE_DIR=${ERTS_INCLUDE_DIR:-$(erl -noshell -eval 'io:format("~ts/erts-~ts/include", [code:root_dir(), erlang:system_info(version)]), halt().')}
LIB_SA=build/libbeam_alloc_standalone.a
LIB_NIF=build/libbeam_alloc.a

# The general purpose allocator and the arena are built by others; measure
# whatever the libraries hold and mark the rest "missing".
# (nm's output is captured first: grep -q closing the pipe early would make
# nm die of SIGPIPE and, under pipefail, the test fail.)
has_sym() {
  local syms
  syms=$(nm -g --defined-only "$2" 2>/dev/null) || return 1
  grep -qE " T $1\$" <<<"$syms"
}
OPT=()
for lib in $LIB_SA $LIB_NIF; do
  has_sym beam_gpa_init "$lib" && has_sym beam_gpa_init_ex "$lib" || OPT+=(-DBENCH_NO_GPA)
  has_sym beam_arena_init "$lib" || OPT+=(-DBENCH_NO_ARENA)
done
mapfile -t OPT < <(printf '%s\n' "${OPT[@]}" | sort -u | sed '/^$/d')
[ ${#OPT[@]} -eq 0 ] || echo "bench: library lacks parts: ${OPT[*]}"

# Frame pointers, as the guide asks of NIFs: gpa_frames walks them through
# the benchmark's own frames (every allocator is measured with them).
CFLAGS_BENCH=(-O2 -std=c11 -Wall -Wextra -Werror -fno-omit-frame-pointer -Iinclude -pthread)
SA="$CC ${CFLAGS_BENCH[*]} ${OPT[*]:-} -DBEAM_ALLOC_STANDALONE bench/standalone/bench_main.c"
$SA -DBENCH_WITH_MALLOC -DBENCH_WITH_BEAM $LIB_SA -o "$WORK/bench_sa_base"
$SA -DBENCH_WITH_MIMALLOC -o "$WORK/bench_sa_mimalloc" -lmimalloc
$SA -DBENCH_WITH_JEMALLOC -o "$WORK/bench_sa_jemalloc" -ljemalloc
$SA -DBENCH_WITH_TCMALLOC -o "$WORK/bench_sa_tcmalloc" -ltcmalloc_minimal
# Built as a user's NIF is (beam_alloc.mk, the Mix compiler): hidden
# visibility, and the Makefile's NIF_LDFLAGS (--exclude-libs), so its calls
# into its own copy of beam_alloc are direct, not through the PLT.
read -ra NIF_LD <<<"$NIF_LDFLAGS"
$CC "${CFLAGS_BENCH[@]}" ${OPT[@]+"${OPT[@]}"} -fPIC -fvisibility=hidden -I"$ERTS_INCLUDE_DIR" \
  bench/nif/bench_nif.c $LIB_NIF "${NIF_LD[@]}" -ldl -o "$WORK/bench_nif.so"
erlc -o "$WORK" bench/nif/bench_nif.erl
$CC -O2 -std=c11 -Wall -Wextra -Werror bench/report.c -lm -o "$WORK/bench_report"
$CC "${CFLAGS_BENCH[@]}" ${OPT[@]+"${OPT[@]}"} -DBEAM_ALLOC_STANDALONE \
  bench/standalone/paired_main.c $LIB_SA -ldl -o "$WORK/paired"

RAW=$WORK/raw.csv
: >"$RAW"
"$WORK/bench_sa_base" workloads >"$WORK/workloads.tsv"

TUNABLES="glibc.rtld.optional_static_tls=16384${GLIBC_TUNABLES:+:$GLIBC_TUNABLES}"
ERL_FLAGS=(+sbwt none +sbwtdcpu none +sbwtdio none)

# --- 3. paired groups ----------------------------------------------------------
PAIRED=$WORK/paired.out
: >"$PAIRED"
# A group with targets runs in PROCS fresh processes, one after the other:
# a process can be lucky or unlucky as a whole (where its code and heaps
# landed: one run here had mimalloc's small churn at 10.9 ns instead of
# 7-10, every repetition of it, and the GPA "within 1.1x"), which
# alternating inside it cannot show. Its target is then the median of the
# processes' medians (section 4). $1: the command, run with the group last.
paired_procs() {
  local g=${!#} part=$WORK/paired_part.out p
  for ((p = 1; p <= PROCS; p++)); do
    "$@" >"$part" || true
    # (REP lines get the process's number before the repetition's.)
    sed "s/^\(REP,[^,]*,[^,]*,[^,]*,[^,]*\),/\1,$p,/" "$part" |
      tee -a "$PAIRED" | grep -v '^REP,' || true
    grep -q '^TARGET|' "$part" || break
    [ "$p" -lt "$PROCS" ] && log "  $g: process $((p + 1)) of $PROCS"
  done
  return 0
}
SA_GROUPS=$("$WORK/paired" groups)
for g in $SA_GROUPS; do
  if [ -n "$GROUPS_ONLY" ] && ! grep -qw "$g" <<<"$GROUPS_ONLY"; then continue; fi
  log "paired, standalone: $g"
  paired_procs "$WORK/paired" run "$SCALE" "$g"
done
BEAM_GROUPS=$(GLIBC_TUNABLES=$TUNABLES BENCH_NIF_SO="$WORK/bench_nif" \
  erl -noshell -pa "$WORK" -eval \
  '[io:format("~s~n", [G]) || G <- bench_nif:paired_groups()], halt().')
# One BEAM running group $1 (it writes its results to a file): the results.
beam_paired_once() {
  local part=$WORK/paired_beam_$1.out
  : >"$part"
  GLIBC_TUNABLES=$TUNABLES BENCH_NIF_SO="$WORK/bench_nif" \
    erl -noshell "${ERL_FLAGS[@]}" -pa "$WORK" -run bench_nif main paired \
    "$part" "$SCALE" "$1" || echo "bench: the BEAM running $1 failed" >&2
  cat "$part"
}
for g in $BEAM_GROUPS; do
  if [ -n "$GROUPS_ONLY" ] && ! grep -qw "$g" <<<"$GROUPS_ONLY"; then continue; fi
  log "paired, BEAM: $g"
  paired_procs beam_paired_once "$g"
done
if [ -z "$GROUPS_ONLY" ] || grep -qw rss <<<"$GROUPS_ONLY"; then
  log "peak RSS, fresh processes"
  "$WORK/paired" rss 3 "$SCALE" | tee -a "$PAIRED"
fi
if [ -z "$GROUPS_ONLY" ] || grep -qw mem <<<"$GROUPS_ONLY"; then
  log "memory held for small live sets"
  "$WORK/paired" mem | tee -a "$PAIRED"
fi

if [ "$MATRIX" = 1 ]; then
# --- 3a. standalone ----------------------------------------------------------
SA_EXES=(bench_sa_base bench_sa_mimalloc bench_sa_jemalloc bench_sa_tcmalloc)
for exe in "${SA_EXES[@]}"; do
  log "standalone: $exe"
  "$WORK/$exe" run "$SCALE" "$REPS" >>"$RAW"
done

# --- 3b. inside the BEAM -----------------------------------------------------
# jemalloc, dlopen'ed by the NIF, needs more static TLS than glibc keeps
# spare for dlopen by default (see bench/nif/bench_nif.c). The sbwt flags
# stop idle schedulers from busy-waiting on the 2 cores the workloads use.
beam() {
  GLIBC_TUNABLES=$TUNABLES BENCH_NIF_SO="$WORK/bench_nif" \
    erl -noshell "${ERL_FLAGS[@]}" -pa "$WORK" -run bench_nif main "$@"
}
# One BEAM per allocator: each starts from a fresh VM, and one that takes
# the VM down costs its own cells (error rows), not the run.
BEAM_ALLOCS=$(GLIBC_TUNABLES=$TUNABLES BENCH_NIF_SO="$WORK/bench_nif" \
  erl -noshell -pa "$WORK" -eval \
  '[io:format("~s~n", [A]) || A <- bench_nif:allocators()], halt().')
WORKLOADS=$(cut -f1 "$WORK/workloads.tsv")
for a in $BEAM_ALLOCS; do
  log "BEAM: $a on a normal, then a dirty CPU scheduler"
  st=0
  beam run "$RAW" "$SCALE" "$REPS" "$a" || st=$?
  if [ $st -ne 0 ]; then
    echo "bench: the BEAM running $a exited with status $st" >&2
    for sched in normal dirty; do
      for w in $WORKLOADS; do
        grep -q "^beam,$sched,$a,$w," "$RAW" ||
          echo "beam,$sched,$a,$w,error,0,,BEAM exited with status $st" >>"$RAW"
      done
    done
  fi
done

# --- 3c. RSS, one fresh process per allocator --------------------------------
log "RSS (mixed sizes), one process per allocator"
for exe in "${SA_EXES[@]}"; do
  for a in $("$WORK/$exe" list); do
    st=0
    "$WORK/$exe" rss "$a" "$SCALE" >>"$RAW" || st=$?
    [ $st -eq 0 ] ||
      echo "standalone,-,$a,rss_mixed,error,0,,exited with status $st" >>"$RAW"
  done
done
for a in $BEAM_ALLOCS; do
  st=0
  beam rss "$a" "$RAW" "$SCALE" || st=$?
  [ $st -eq 0 ] ||
    echo "beam,dirty,$a,rss_mixed,error,0,,BEAM exited with status $st" >>"$RAW"
done
fi # BENCH_MATRIX

# --- 4. report ---------------------------------------------------------------
log "report"
OTHER=$(awk -v b0="$BUSY0" -v b1="$(busy_ticks)" -v c0="$CHILD0" \
  -v c1="$(child_ticks)" -v t0="$T0" -v t1="$(date +%s.%N)" \
  -v hz="$(getconf CLK_TCK)" \
  'BEGIN { o = ((b1 - b0) - (c1 - c0)) / hz / (t1 - t0); if (o < 0) o = 0; printf "%.2f", o }')
MACHINE=$OUT/machine.txt
{
  echo "date:      $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "cpu:       $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "cores:     $(nproc) online ($(grep -c ^processor /proc/cpuinfo) in /proc/cpuinfo)"
  echo "memory:    $(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
  echo "kernel:    $(uname -srm)"
  echo "os:        $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
  echo "glibc:     $(ldd --version 2>/dev/null | head -1)"
  echo "compiler:  $($CC --version | head -1)"
  echo "otp:       $(erl -noshell -eval 'io:format("OTP ~s, erts ~s, ~p normal + ~p dirty CPU schedulers", [erlang:system_info(otp_release), erlang:system_info(version), erlang:system_info(schedulers_online), erlang:system_info(dirty_cpu_schedulers_online)]), halt().')"
  for p in libmimalloc-dev libjemalloc-dev libgoogle-perftools-dev gnuplot-nox; do
    echo "package:   $p $(dpkg-query -W -f='${Version}' "$p" 2>/dev/null)"
  done
  echo "load:      loadavg $LOAD_START at start; other processes used $OTHER cores on average during the run (0 = quiet machine)"
  echo "settings:  BENCH_SCALE=$SCALE BENCH_REPS=$REPS; erl ${ERL_FLAGS[*]}; GLIBC_TUNABLES=$TUNABLES"
  echo "build:     ${CFLAGS_BENCH[*]} ${OPT[*]:-}"
} >"$MACHINE"

rc=0
if [ "$MATRIX" = 1 ]; then
  "$WORK/bench_report" "$RAW" "$WORK/workloads.tsv" "$MACHINE" "$OUT" "$WORK" || rc=$?
  gnuplot "$WORK/chart.gp"
fi

# --- 5. SQLite's allocator (bench/sqlite/, also `make bench-sqlite`) -------
log "bench-sqlite"
"$MAKE" --no-print-directory bench-sqlite-run || rc=1
log "bench-sqlite-c"
"$MAKE" --no-print-directory bench-sqlite-c || rc=1
log "bench-nif-call"
"$MAKE" --no-print-directory bench-nif-call || rc=1

# The paired results: the text, the repetitions as CSV, and every target.
grep -v '^REP,' "$PAIRED" | grep -v '^TARGET|' >"$OUT/paired.txt"
{
  echo "setting,group,allocator,threads,process,rep,ns_per_op,other_cores"
  grep '^REP,' "$PAIRED" | cut -d, -f2-
} >"$OUT/paired.csv"
{
  echo "Targets of issue 13: paired ratios, each group in $PROCS fresh processes:"
  echo "median of the processes' medians, [least .. greatest repetition of any]"
  echo "($(date -u '+%Y-%m-%d %H:%M UTC'); other processes used $OTHER cores on average)"
  echo
  printf '%-12s %-55s %8s %-16s %-9s %-8s %s\n' setting target median "[min .. max]" \
    goal result "each process's median"
  grep '^TARGET|' "$PAIRED" | awk -F'|' -f bench/targets.awk
} >"$OUT/targets.txt"
echo
cat "$OUT/targets.txt"
echo
if awk -v o="$OTHER" 'BEGIN { exit !(o > 0.25) }'; then
  echo "bench: WARNING: other processes used $OTHER cores on average during the run;"
  echo "bench: the numbers (two-thread ones first) are disturbed. Rerun on a quiet machine."
fi
echo "bench: results in bench/results/ (targets.txt, paired.txt, paired.csv, machine.txt$([ "$MATRIX" = 1 ] && echo ', results.md, results.csv, chart.png')); $((SECONDS - START)) s"
if [ $rc -eq 3 ]; then
  echo "bench: some cells failed (ERROR above)" >&2
  exit 1
fi
exit $rc
