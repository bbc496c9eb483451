#!/bin/sh
# bench/ab.sh - A/B comparison of two wavelockd binaries, interleaved.
#
#   bench/ab.sh BUILDDIR OLD_WAVELOCKD OLD_WIDE NEW_WAVELOCKD NEW_WIDE ONLY REPS [run.py options]
#
# Runs `bench/run.py --only ONLY` REPS times for each binary, alternating
# (old, new, old, new, ...) so that both see the same load from other work on
# a shared machine, and prints every run's table rows tagged old/new.
# WL_AB_ENV_OLD / WL_AB_ENV_NEW add environment settings to one side (e.g.
# WL_AB_ENV_NEW=WL_PRIO=0 to measure the same binary without priorities).
set -e
b=$1 oldd=$2 oldw=$3 newd=$4 neww=$5 only=$6 reps=$7
shift 7
src=$(cd "$(dirname "$0")/.." && pwd)
out=${TMPDIR:-/tmp}/ab.$$
mkdir -p "$out"
i=1
while [ "$i" -le "$reps" ]; do
  for side in old new; do
    if [ $side = old ]; then d=$oldd w=$oldw e=${WL_AB_ENV_OLD:-WL_AB=1}; else d=$newd w=$neww e=${WL_AB_ENV_NEW:-WL_AB=1}; fi
    env "$e" python3 "$src/bench/run.py" --builddir "$b" --srcdir "$src" --only "$only" \
      --wavelockd "$d" --wavelockd-wide "$w" --markdown "$out/$side.$i.md" "$@" >/dev/null 2>"$out/$side.$i.err" || true
    grep '^|' "$out/$side.$i.md" | grep -v -- '---' | sed "s/^/$side $i /"
    grep -i 'load\|other processes' "$out/$side.$i.md" | head -2 | sed "s/^/$side $i # /"
  done
  i=$((i + 1))
done
rm -rf "$out"
