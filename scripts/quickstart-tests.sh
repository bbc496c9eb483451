#!/bin/sh
# quickstart-tests.sh - install what is missing, build, and run the test suite.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
sh "$top/scripts/deps.sh"
sh "$top/scripts/build.sh"
cd "$top/build"
make -j"$(nproc 2>/dev/null || echo 2)" check
