#!/bin/sh
# pyflakes finds nothing in wavelock's Python: the scripts, the Python
# module, the tests and the benchmark driver (an unused import, a name
# never defined, a variable set and never read is often a check lost).
srcdir=${WL_SRCDIR:-$(dirname "$0")/..}
n=0
fail=0
py=${WL_PYTHON3:-$(command -v python3)}
for f in "$srcdir"/scripts/wavelock-* "$srcdir"/python/wavelock/*.py \
         "$srcdir"/python/examples/*.py "$srcdir"/tests/*.py "$srcdir"/bench/*.py; do
  [ -f "$f" ] || continue
  head -n 1 "$f" | grep -q python || case $f in *.py) ;; *) continue ;; esac
  n=$((n + 1))
  name=${f#"$srcdir"/}
  if [ -z "$py" ] || ! "$py" -c 'import pyflakes' 2>/dev/null; then
    echo "ok $n - $name # SKIP python3-pyflakes not installed"
    continue
  fi
  if out=$("$py" -m pyflakes "$f" 2>&1) && [ -z "$out" ]; then
    echo "ok $n - $name: pyflakes reports nothing"
  else
    echo "not ok $n - $name: pyflakes reports problems"
    echo "$out" | sed 's/^/# /'
    fail=1
  fi
done
echo "1..$n"
exit $fail
