#!/bin/sh
# tsan_check.sh - wavelockd's end-to-end and hardware tests with every
# program built with ThreadSanitizer (issue 18).
#
#   tests/tsan_check.sh [BUILDDIR [TEST.py ...]]
#
# BUILDDIR (default: build-tsan/ next to build/ in the source tree) is a
# separate, out-of-tree build configured with --enable-tsan: it is
# configured here when it has no Makefile yet (WL_TSAN_CONFIGURE_FLAGS adds
# configure options), refused when it is configured without --enable-tsan,
# and brought up to date with `make` and `make check TESTS=` (the programs
# and the test doubles: fault_server, mbtool, fake_wlmdata.so).  Then the
# tests (default: the daemon's end-to-end and hardware tests listed below)
# run against it, one after the other, as make check runs them (WL_BUILDDIR,
# WL_SRCDIR, PYTHONPATH=tests).
#
# TSAN_OPTIONS: halt_on_error=0 (a report does not stop the daemon, the test
# goes on and later reports are seen too), exitcode=66 (a program with a
# report exits 66, which the tests' "exits 0" checks also catch) and a
# log_path in a fresh directory, so every report of every program (daemon,
# wavelock-sim, client, fault_server, mbtool) is kept whether or not the test
# looked at its output.  tests/tsan.supp is passed when it has entries.  The
# caller's TSAN_OPTIONS are appended (they win).
#
# Exit status 0 only when every test passed and no ThreadSanitizer report
# was written; the reports are printed at the end, each once per distinct
# SUMMARY line with a count.  WL_JOBS sets make's -j (default 2);
# WL_KEEP_TMP=1 keeps the log directory.  make check-tsan runs it.
set -u

srcdir=$(cd "$(dirname "$0")/.." && pwd)
builddir=${1:-$srcdir/build-tsan}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] || set -- test_daemon_e2e.py test_daemon_reload.py test_daemon_proto.py \
  test_daemon_safety.py test_hw_daemon.py test_hw_daemon_wlm.py test_hw_modbus.py
jobs=${WL_JOBS:-2}
PYTHON3=${PYTHON3:-python3}
t_start=$(date +%s)

# ---- build ----------------------------------------------------------------
mkdir -p "$builddir" || exit 2
builddir=$(cd "$builddir" && pwd) || exit 2
if [ "$builddir" = "$srcdir" ]; then
  echo "$0: the TSan build must be out of tree (give another BUILDDIR)" >&2
  exit 2
fi
if [ ! -f "$builddir/Makefile" ]; then
  if [ ! -x "$srcdir/configure" ]; then
    (cd "$srcdir" && autoreconf -fi) || exit 2
  fi
  echo "=== configuring $builddir with --enable-tsan"
  # shellcheck disable=SC2086
  (cd "$builddir" && "$srcdir/configure" --enable-tsan ${WL_TSAN_CONFIGURE_FLAGS:-} \
     > configure.out 2>&1) || { tail -n 20 "$builddir/configure.out"; exit 2; }
fi
if ! grep -q '^SAN_LDFLAGS = .*-fsanitize=thread' "$builddir/Makefile"; then
  echo "$0: $builddir is not configured with --enable-tsan" >&2
  exit 2
fi
echo "=== building $builddir (make -j$jobs, make check TESTS=)"
(cd "$builddir" && make -j"$jobs" >make.out 2>&1 && make -j"$jobs" check TESTS= >>make.out 2>&1) \
  || { tail -n 30 "$builddir/make.out"; exit 2; }
t_built=$(date +%s)

# ---- run --------------------------------------------------------------------
logs=$(mktemp -d "${TMPDIR:-/tmp}/wl-tsan.XXXXXX") || exit 1
opts="halt_on_error=0 exitcode=66 log_path=$logs/tsan second_deadlock_stack=1"
if grep -q '^[a-z_]*:' "$srcdir/tests/tsan.supp" 2>/dev/null; then
  opts="$opts suppressions=$srcdir/tests/tsan.supp"
fi
TSAN_OPTIONS="$opts ${TSAN_OPTIONS:-}"
export TSAN_OPTIONS

# gcc 12's TSan refuses to start on kernels with more address-space
# randomisation than it knows ("unexpected memory mapping"); the tests then
# run with randomisation off for their process tree.
launch=""
probe=$(TSAN_OPTIONS=exitcode=66 "$builddir/wavelockd" --version 2>&1)
case $probe in
  *"unexpected memory mapping"*|*"FATAL: ThreadSanitizer"*)
    if setarch "$(uname -m)" -R true 2>/dev/null; then
      launch="setarch $(uname -m) -R"
      echo "=== TSan needs address-space randomisation off here: running the tests under $launch"
    else
      echo "$0: ThreadSanitizer cannot start here: $probe" >&2
      exit 2
    fi ;;
esac

status=0
for t in "$@"; do
  echo "=== $t (programs built with ThreadSanitizer)"
  out="$logs/$(basename "$t" .py).tap"
  t0=$(date +%s)
  # shellcheck disable=SC2086
  WL_BUILDDIR="$builddir" WL_SRCDIR="$srcdir" PYTHONPATH="$srcdir/tests" \
    PYTHONDONTWRITEBYTECODE=1 $launch "$PYTHON3" "$srcdir/tests/$t" > "$out" 2>&1
  rc=$?
  grep -E '^(not ok|Bail out)|# SKIP' "$out"
  echo "=== $t: exit $rc, $(grep -c '^ok' "$out") ok, $(grep -c '^not ok' "$out") not ok," \
    "$(( $(date +%s) - t0 )) s"
  [ $rc -eq 0 ] || status=1
done

# ---- reports ------------------------------------------------------------------
reports=0
files=0
for f in "$logs"/tsan.*; do
  [ -e "$f" ] || continue
  n=$(grep -c -E '^(WARNING|ERROR): ThreadSanitizer' "$f")
  [ "$n" -gt 0 ] || continue
  files=$((files + 1))
  reports=$((reports + n))
done
echo
if [ $reports -gt 0 ]; then
  status=1
  echo "=== ThreadSanitizer: $reports reports from $files processes; distinct summaries:"
  cat "$logs"/tsan.* | sed -n 's/^SUMMARY: ThreadSanitizer: //p' | sort | uniq -c | sort -rn
  for f in "$logs"/tsan.*; do
    [ -e "$f" ] || continue
    echo
    echo "=== $(basename "$f")"
    cat "$f"
  done
else
  echo "=== ThreadSanitizer: no report"
fi
echo "=== build $((t_built - t_start)) s, tests $(( $(date +%s) - t_built )) s"
if [ $status -eq 0 ] && [ -z "${WL_KEEP_TMP:-}" ]; then
  rm -rf "$logs"
else
  echo "logs and TAP output kept in $logs"
fi
exit $status
