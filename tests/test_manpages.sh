#!/bin/sh
# Every man page renders without warnings (groff -ww) and passes mandoc's lint.
srcdir=${WL_SRCDIR:-$(dirname "$0")/..}
n=0
fail=0
for page in "$srcdir"/doc/*.[1-8]; do
  name=$(basename "$page")
  for tool in groff mandoc; do
    n=$((n + 1))
    if ! command -v $tool >/dev/null 2>&1; then
      echo "ok $n - $name: $tool # SKIP $tool not installed"
      continue
    fi
    if [ $tool = groff ]; then
      out=$(groff -ww -man -z "$page" 2>&1)
    else
      out=$(mandoc -T lint -W warning "$page" 2>&1)
    fi
    if [ -z "$out" ]; then
      echo "ok $n - $name: $tool reports nothing"
    else
      echo "not ok $n - $name: $tool reports problems"
      echo "$out" | sed 's/^/# /'
      fail=1
    fi
  done
done
echo "1..$n"
exit $fail
