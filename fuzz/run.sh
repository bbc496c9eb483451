#!/bin/sh
# run.sh - build wavelock's fuzz targets with clang and libFuzzer
# (AddressSanitizer + UndefinedBehaviorSanitizer) and run them one at a time.
# `make fuzz` calls this with the build's flags; see mk/fuzz.am for the knobs
# and RELIABILITY.md for the figures of past runs.
#
# Environment:
#   FUZZ_SRCDIR        top of the source tree
#   FUZZ_WORK          working directory (objects, binaries, corpora, logs)
#   FUZZ_CC            clang (14 or later, with libclang-rt-dev)
#   FUZZ_CPPFLAGS      include paths and defines of the build
#   FUZZ_SYSCONFDIR, FUZZ_LOCALSTATEDIR  the build's directories
#   FUZZ_CFLAGS        warning flags and library cflags
#   FUZZ_LIBS          libraries to link
#   FUZZ_LIB_SOURCES   the sources of libwavelock (relative to FUZZ_SRCDIR)
#   FUZZ_TARGETS       targets to run, in order
#   FUZZ_SECONDS       time limit per target (libFuzzer -max_total_time)
#   FUZZ_RUNS          execution limit per target (-runs; -1 no limit)
#   FUZZ_FLAGS         more libFuzzer flags, e.g. -max_len=512
#   FUZZ_JOBS          parallel fuzzing processes per target (default 1); each
#                      runs FUZZ_RUNS executions on the shared corpus, and
#                      the summary counts the executions of all of them
#   FUZZ_MODE          run (default), build (only build), merge (minimize
#                      each working corpus into fuzz/corpus/<target>/)
set -eu

: "${FUZZ_CC:=clang}" "${FUZZ_SECONDS:=60}" "${FUZZ_RUNS:=-1}" "${FUZZ_FLAGS:=}" "${FUZZ_JOBS:=1}"
: "${FUZZ_MODE:=run}" "${FUZZ_CPPFLAGS:=}" "${FUZZ_CFLAGS:=}" "${FUZZ_LIBS:=}"
: "${FUZZ_SYSCONFDIR:=/etc}" "${FUZZ_LOCALSTATEDIR:=/var}"
: "${FUZZ_TARGETS:=units url wmline statefile srvline conf proto http}"
src=$FUZZ_SRCDIR
work=$FUZZ_WORK
san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
cflags="-std=gnu11 -g -O1 -pthread $FUZZ_CPPFLAGS $FUZZ_CFLAGS"
# The library is built by gcc normally: clang's warnings about it are shown
# but do not stop the fuzzing; the fuzz targets themselves keep -Werror.
libflags="$cflags -Wno-error"
dirs1="-DSYSCONFDIR=\"$FUZZ_SYSCONFDIR\""
dirs2="-DLOCALSTATEDIR=\"$FUZZ_LOCALSTATEDIR\""

mkdir -p "$work/obj" "$work/log"

# Sources of each target besides fuzz/fuzz_<target>.c and fuzz/fuzz_util.c.
extra_sources() {
  case $1 in
    proto) echo "fuzz/fuzz_proto_daemon.c src/cmds.c src/params.c src/http.c src/jsonfmt.c src/metrics.c src/mqtt.c" ;;
    *) echo "" ;;
  esac
}

# Largest input per target (libFuzzer -max_len; FUZZ_FLAGS may override).
max_len() {
  case $1 in
    units) echo 128 ;;
    url) echo 600 ;;
    wmline) echo 300 ;;
    srvline) echo 2048 ;;
    http) echo 2048 ;;
    proto) echo 4096 ;;
    *) echo 8192 ;;
  esac
}

# Per-target libFuzzer flags.  conf: libconfig 1.5 leaks a token on many
# syntax errors (fuzz.h), which would make libFuzzer run a full leak check
# after most inputs; leaks are checked instead when make check replays the
# corpus under AddressSanitizer (each input in its own process).
target_flags() {
  case $1 in
    conf) echo "-detect_leaks=0" ;;
    *) echo "" ;;
  esac
}

# ---- build -----------------------------------------------------------------
# The library is rebuilt when any source, header or this script is newer than
# its archive; a target when its binary is older than the archive or than
# any fuzz/ source.  (A full build takes about a minute.)
lib=$work/libwavelock-fuzz.a
newer() {   # newer FILE DIR...: is a source in DIR... newer than FILE (or no FILE)?
  f=$1
  shift
  [ ! -f "$f" ] || [ -n "$(find "$@" "$0" \( -name '*.c' -o -name '*.h' -o -name '*.sh' \) \
      -newer "$f" 2>/dev/null | head -1)" ]
}
if newer "$lib" "$src/src" "$src/include"; then
  echo "fuzz: building the library with $FUZZ_CC"
  rm -f "$work"/obj/*.o "$lib"
  for s in $FUZZ_LIB_SOURCES; do
    case $s in *.c) ;; *) continue ;; esac
    o=$work/obj/$(echo "$s" | tr / _ | sed 's/\.c$/.o/')
    $FUZZ_CC $libflags "$dirs1" "$dirs2" $san -fsanitize=fuzzer-no-link -c "$src/$s" -o "$o"
  done
  ar rcs "$lib.tmp" "$work"/obj/*.o
  mv "$lib.tmp" "$lib"
fi
for t in $FUZZ_TARGETS; do
  if newer "$work/fuzz_$t" "$src/src" "$src/include" "$src/fuzz" ||
     [ "$lib" -nt "$work/fuzz_$t" ]; then
    echo "fuzz: building fuzz_$t"
    srcs="$src/fuzz/fuzz_$t.c $src/fuzz/fuzz_util.c"
    for e in $(extra_sources "$t"); do srcs="$srcs $src/$e"; done
    if [ "$t" = proto ]; then
      # the dashboard page, compiled in as the daemon has it (mk/http.am)
      { echo 'extern const char HTP_Page[];'; echo 'const char HTP_Page[] ='
        sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$/\\n"/' "$src/www/index.html"
        echo ';'; } > "$work/www_page.c"
      srcs="$srcs $work/www_page.c"
    fi
    $FUZZ_CC $cflags "$dirs1" "$dirs2" $san -fsanitize=fuzzer $srcs "$lib" $FUZZ_LIBS \
      -o "$work/fuzz_$t.tmp"
    mv "$work/fuzz_$t.tmp" "$work/fuzz_$t"
  fi
done
[ "$FUZZ_MODE" = build ] && exit 0

# ---- merge: minimize the working corpora into the source tree ---------------
if [ "$FUZZ_MODE" = merge ]; then
  for t in $FUZZ_TARGETS; do
    [ -d "$work/corpus/$t" ] || continue
    mkdir -p "$src/fuzz/corpus/$t"
    before=$(ls "$src/fuzz/corpus/$t" | wc -l)
    "$work/fuzz_$t" -merge=1 -max_len="$(max_len "$t")" "$src/fuzz/corpus/$t" \
      "$work/corpus/$t" >"$work/log/$t.merge.log" 2>&1
    echo "fuzz: $t: fuzz/corpus/$t has $(ls "$src/fuzz/corpus/$t" | wc -l) files (was $before)"
  done
  exit 0
fi

# ---- run ---------------------------------------------------------------------
summary=$work/summary.txt
status=0
date=$(date -u +%Y-%m-%dT%H:%MZ)
for t in $FUZZ_TARGETS; do
  mkdir -p "$work/corpus/$t" "$work/crashes/$t"
  dirs="$work/corpus/$t"
  for d in "$src/fuzz/corpus/$t" "$src/fuzz/regress/$t"; do
    [ -d "$d" ] && dirs="$dirs $d"
  done
  dict=
  [ -f "$src/fuzz/dict/$t.dict" ] && dict=-dict=$src/fuzz/dict/$t.dict
  echo "fuzz: running fuzz_$t (at most $FUZZ_SECONDS s, runs $FUZZ_RUNS)"
  touch "$work/crashes/$t.start"
  rc=0
  jobs=
  logs=$work/log/$t.log
  if [ "$FUZZ_JOBS" -gt 1 ]; then
    # libFuzzer writes each job's output to fuzz-N.log in the current directory
    rm -rf "$work/log/$t.jobs"
    mkdir -p "$work/log/$t.jobs"
    jobs="-jobs=$FUZZ_JOBS -workers=$FUZZ_JOBS"
    logs=$work/log/$t.jobs/fuzz-*.log
  fi
  # shellcheck disable=SC2086
  (cd "$work/log/${jobs:+$t.jobs}" &&
   UBSAN_OPTIONS=print_stacktrace=1 "$work/fuzz_$t" -max_total_time="$FUZZ_SECONDS" \
    -runs="$FUZZ_RUNS" -max_len="$(max_len "$t")" -print_final_stats=1 $jobs \
    -artifact_prefix="$work/crashes/$t/" $dict $(target_flags "$t") $FUZZ_FLAGS $dirs) \
    >"$work/log/$t.log" 2>&1 || rc=$?
  # Executions and speed: summed over the jobs; time: the longest job.
  runs=0 secs=0 speed=0
  for f in $logs; do
    r=$(sed -n 's/^stat::number_of_executed_units: *//p' "$f" | tail -1)
    [ -n "$r" ] || r=$(sed -n 's/^#\([0-9]*\).*/\1/p' "$f" | tail -1)
    s=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$f" | tail -1)
    v=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$f" | tail -1)
    runs=$((runs + ${r:-0}))
    speed=$((speed + ${v:-0}))
    [ "${s:-0}" -le "$secs" ] || secs=$s
  done
  crashes=$(find "$work/crashes/$t" -type f -newer "$work/crashes/$t.start" | wc -l)
  line="$date $t runs=$runs seconds=$secs exec_per_s=$speed jobs=$FUZZ_JOBS crashes=$crashes exit=$rc"
  echo "fuzz: $line"
  echo "$line" >>"$summary"
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    status=1
    tail -40 $logs
    echo "fuzz: $t: see $work/log/$t.log; reproducers in $work/crashes/$t/"
  fi
done
echo "fuzz: summary appended to $summary"
exit $status
