#!/bin/sh
# quickstart-tests.sh - install what is missing, build, and run the test suite.
# When a test fails, the last lines printed name it and quote its failing
# checks (the whole logs stay in build/test-suite.log and build/tests/*.log),
# so a log that keeps only its end still says what went wrong.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
sh "$top/scripts/deps.sh"
sh "$top/scripts/build.sh"
cd "$top/build"
if make -j"$(nproc 2>/dev/null || echo 2)" check; then
    exit 0
fi
sh "$top/scripts/failed-tests.sh" .
exit 1
