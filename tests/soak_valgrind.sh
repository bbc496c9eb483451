#!/bin/sh
# soak_valgrind.sh - wavelockd's end-to-end tests with the daemon under
# valgrind memcheck (issue 8).
#
#   tests/soak_valgrind.sh BUILDDIR [TEST.py ...]
#
# The tests find their programs through WL_BUILDDIR (tests/wltest.py), so
# this script makes a directory whose wavelockd is a shell script exec'ing
#   valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect
#            --error-exitcode=99 BUILDDIR/wavelockd "$@"
# (exec: the test's process id is the daemon's, so its signals reach it),
# with the other programs linked from BUILDDIR, and runs the tests (default:
# test_daemon_proto.py, test_daemon_e2e.py, test_soak.py) against it.  Each
# daemon writes its own valgrind log; at the end a table lists every daemon
# run with its errors and definitely/indirectly lost bytes.  A daemon killed
# with SIGKILL (the soak does that) has no summary and is listed as killed.
# Exit status 0 only when every test passed and no log has an error or leak.
# Use a build without sanitizers (valgrind and ASan do not mix).
# VALGRIND_ARGS adds valgrind options (e.g. --track-origins=yes);
# WL_SOAK_ARGS is passed on to test_soak.py (e.g. --kills 0, so that every
# daemon of the soak ends with a leak check).  make soak-valgrind runs it.
set -u

[ $# -ge 1 ] || { echo "usage: $0 BUILDDIR [TEST.py ...]" >&2; exit 2; }
builddir=$(cd "$1" && pwd) || exit 2
shift
srcdir=$(cd "$(dirname "$0")/.." && pwd)
command -v valgrind >/dev/null || { echo "$0: valgrind is not installed" >&2; exit 77; }
if ldd "$builddir/wavelockd" 2>/dev/null | grep -q libasan; then
  echo "$0: $builddir/wavelockd is built with AddressSanitizer; use a plain build" >&2
  exit 2
fi
[ $# -gt 0 ] || set -- test_daemon_proto.py test_daemon_e2e.py test_soak.py

wrap=$(mktemp -d "${TMPDIR:-/tmp}/wl-valgrind.XXXXXX") || exit 1
logs="$wrap/logs"
mkdir "$logs"
for p in wavelock-sim wavelock tests; do   # tests/: helper programs (fault_server)
  [ -e "$builddir/$p" ] && ln -s "$builddir/$p" "$wrap/$p"
done
cat > "$wrap/wavelockd" <<WRAP
#!/bin/sh
exec valgrind --tool=memcheck --leak-check=full \\
  --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \\
  --error-exitcode=99 --num-callers=30 --log-file="$logs/vg.%p.log" \\
  ${VALGRIND_ARGS:-} "$builddir/wavelockd" "\$@"
WRAP
chmod +x "$wrap/wavelockd"

status=0
for t in "$@"; do
  echo "=== $t (wavelockd under valgrind)"
  out="$wrap/$(basename "$t" .py).tap"
  WL_BUILDDIR="$wrap" WL_SRCDIR="$srcdir" PYTHONPATH="$srcdir/tests" \
    PYTHONDONTWRITEBYTECODE=1 "${PYTHON3:-python3}" "$srcdir/tests/$t" > "$out" 2>&1
  rc=$?
  grep -E '^(not ok|Bail out)|# SKIP' "$out"
  echo "=== $t: exit $rc, $(grep -c '^ok' "$out") ok, $(grep -c '^not ok' "$out") not ok"
  [ $rc -eq 0 ] || status=1
done

echo
echo "| valgrind log | command | errors | definitely lost | indirectly lost | end |"
echo "| --- | --- | --- | --- | --- | --- |"
runs=0 bad=0 killed=0
for f in "$logs"/vg.*.log; do
  [ -e "$f" ] || continue
  runs=$((runs + 1))
  cmd=$(sed -n 's/^==[0-9]*== Command: //p' "$f" | sed "s|$builddir/||; s|$wrap/||g; s|/tmp/wltest\.[^/]*/||g" | cut -c1-60)
  errs=$(sed -n 's/^==[0-9]*== ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$f")
  def=$(sed -n 's/^==[0-9]*==    definitely lost: \([0-9,]*\) bytes.*/\1/p' "$f")
  ind=$(sed -n 's/^==[0-9]*==    indirectly lost: \([0-9,]*\) bytes.*/\1/p' "$f")
  if [ -z "$errs" ]; then
    end=killed
    killed=$((killed + 1))
  else
    end=exited
  fi
  echo "| $(basename "$f") | $cmd | ${errs:--} | ${def:-0} | ${ind:-0} | $end |"
  if [ -n "$errs" ] && [ "$errs" != 0 ]; then
    bad=$((bad + 1))
  fi
done
echo
echo "$runs daemon runs under valgrind, $killed killed (no summary), $bad with errors or leaks"
[ $bad -eq 0 ] || { status=1; echo "logs kept in $logs"; }
[ $runs -gt 0 ] || status=1
if [ $status -eq 0 ] && [ -z "${WL_KEEP_TMP:-}" ]; then
  rm -rf "$wrap"
else
  echo "wrapper directory kept: $wrap"
fi
exit $status
