#!/bin/sh
# build.sh - configure and build wavelock in ./build (out of tree).
# Extra configure flags come from WL_CONFIGURE_FLAGS.  Safe to run again:
# an existing build directory is reused when its flags are unchanged.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
flags=${WL_CONFIGURE_FLAGS:-}
if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; then
  autoreconf -fi
fi
mkdir -p build
cd build
if [ ! -f Makefile ] || [ "$(cat .wl-flags 2>/dev/null)" != "$flags" ]; then
  # shellcheck disable=SC2086
  ../configure $flags
  printf '%s' "$flags" > .wl-flags
fi
make -j"$(nproc 2>/dev/null || echo 2)"
