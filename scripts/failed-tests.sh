#!/bin/sh
# failed-tests.sh [BUILDDIR] - a short digest of the tests that failed in the
# last `make check`: each failed program, its failing checks with the lines
# of diagnostics that follow them, and the end of its log when it stopped
# without a verdict (ERROR).  Read from the .trs/.log files automake writes.
set -u
dir=${1:-.}
echo "==== failed tests (full logs: $dir/test-suite.log) ===="
n=0
for trs in $(find "$dir" -name '*.trs' | sort); do
    bad=$(sed -n 's/^:test-result: \(FAIL\|ERROR\|XPASS\).*/\1/p' "$trs" | sort | uniq -c | awk '{ printf " %s x%s", $2, $1 }')
    [ -n "$bad" ] || continue
    n=$((n + 1))
    log=${trs%.trs}.log
    echo "-- ${log#"$dir"/}:$bad"
    [ -f "$log" ] || continue
    # the failing checks and up to four lines of their diagnostics
    awk '/^not ok/ { show = 5 } /^ok / && show < 5 { show = 0 } show > 0 { print "   " substr($0, 1, 200); show-- }' "$log" | head -n 24
    if grep -q '^:test-result: ERROR' "$trs"; then
        echo "   ... last lines:"
        tail -n 6 "$log" | cut -c1-200 | sed 's/^/   /'
    fi
done
echo "==== $n failed test program(s) ===="
