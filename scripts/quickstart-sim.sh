#!/bin/sh
# quickstart-sim.sh - install what is missing, build, and run wavelock on the
# simulated lab of conf/sim.conf: wavelock-sim plays 14 lasers, a wavemeter and
# four Modbus output modules; wavelockd locks them.  Ctrl-C stops both.
#
# Every run gets a directory of its own under build/quickstart/ with a copy
# of the config whose state file lives there too (so a run never restores
# what an earlier run, or someone else, left), and the logs of both
# programs; it is kept when the run ends.  `rm -r build/quickstart` deletes
# all runs.
#
# For tests and special cases (not needed for the demo):
#   WL_QUICKSTART_NO_BUILD=1   skip scripts/deps.sh and scripts/build.sh
#   WL_BUILDDIR=DIR            the build directory (default ./build)
#   WL_QUICKSTART_CONF=FILE    the config to run (default conf/sim.conf; its
#                              relative paths must not matter: it is copied)
#   WL_QUICKSTART_RUNS=DIR     where the run directories go
#                              (default $WL_BUILDDIR/quickstart)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
if [ "${WL_QUICKSTART_NO_BUILD:-0}" != 1 ]; then
  sh "$top/scripts/deps.sh"
  sh "$top/scripts/build.sh"
fi
b=${WL_BUILDDIR:-$top/build}
conf=${WL_QUICKSTART_CONF:-$top/conf/sim.conf}
runs=${WL_QUICKSTART_RUNS:-$b/quickstart}
mkdir -p "$runs"
run=$(mktemp -d "$runs/run-$(date +%Y%m%d-%H%M%S)-XXXXXX")
sim_pid=""
d_pid=""

stop() {
  trap - INT TERM EXIT
  [ -n "$d_pid" ] && kill "$d_pid" 2>/dev/null && wait "$d_pid" 2>/dev/null
  [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
  echo
  echo "wavelock stopped.  This run's logs and state file are kept in"
  echo "  $run"
  echo "(wavelockd.log, sim.log, wavelockd.state, sim.conf)."
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT

# The config with this run's state file (an existing state_file line is
# replaced, else one is added).
awk -v sf="$run/wavelockd.state" '
  !done && /^[[:space:]]*state_file[[:space:]]*=/ { print "state_file = \"" sf "\";"; done = 1; next }
  { print }
  END { if (!done) print "state_file = \"" sf "\";" }' "$conf" > "$run/sim.conf"

"$b/wavelock-sim" -c "$run/sim.conf" >"$run/sim.log" 2>&1 &
sim_pid=$!
sleep 0.5
if ! kill -0 "$sim_pid" 2>/dev/null; then
  cat "$run/sim.log" >&2
  echo "wavelock-sim did not start (is another one running on its ports?)" >&2
  exit 1
fi
"$b/wavelockd" -f -c "$run/sim.conf" -P "$run/wavelockd.port" >"$run/wavelockd.log" 2>&1 &
d_pid=$!
i=0
while [ ! -s "$run/wavelockd.port" ] && kill -0 "$d_pid" 2>/dev/null && [ $i -lt 100 ]; do
  sleep 0.1
  i=$((i + 1))
done
if ! kill -0 "$d_pid" 2>/dev/null || [ ! -s "$run/wavelockd.port" ]; then
  cat "$run/wavelockd.log" >&2
  echo "wavelockd did not start (is another one running on port 7470?)" >&2
  exit 1
fi
port=$(cat "$run/wavelockd.port")
WAVELOCK_PORT=$port
export WAVELOCK_PORT
control=$(sed -n 's/^[[:space:]]*control[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$run/sim.conf" | head -n 1)
# The dashboard: the first address of the http group's listen, if any.
http=$(awk '/^[[:space:]]*http[[:space:]]*[:=]/ { g = 1 }
  g && /listen/ { if (match($0, /"[^"]*"/)) { print substr($0, RSTART + 1, RLENGTH - 2); exit } }' \
  "$run/sim.conf")
dashboard=""
[ -n "$http" ] && dashboard="http://$http/"
[ -n "$control" ] || control=127.0.0.1:7481

# One line per laser under a header, from `wavelock status` (key=value).
table() {
  echo "$1" | awk '
    BEGIN { printf "%-12s %-10s %16s %16s %10s %9s\n", "LASER", "STATE", "SETPOINT_THZ", "FREQ_THZ", "ERROR_MHZ", "PIEZO_V" }
    /name=/ { delete v
      for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      printf "%-12s %-10s %16s %16s %10s %9s\n", v["name"], v["state"], v["setpoint_thz"], v["freq_thz"], v["error_mhz"], v["piezo_v"] }'
}

tty=0
[ -t 1 ] && tty=1
echo "wavelock-sim (pid $sim_pid) and wavelockd (pid $d_pid, port $port) are running;"
echo "logs in $run"
[ -n "$dashboard" ] && echo "dashboard: $dashboard  (open it in a browser)"
echo "Waiting for the simulated lasers to lock..."
i=0
last=""
while [ $i -lt 120 ]; do
  out=$("$b/wavelock" status 2>/dev/null || true)
  locked=$(echo "$out" | grep -c "state=locked" || true)
  total=$(echo "$out" | grep -c "name=" || true)
  if [ $tty = 1 ]; then
    # A live table on a terminal; a log file gets one line per change instead.
    clear 2>/dev/null || true
    table "$out"
    echo
    echo "$locked of $total lasers locked"
  elif [ "$locked/$total" != "$last" ]; then
    echo "after ${i} s: $locked of $total lasers locked"
  fi
  last="$locked/$total"
  if [ "$total" -gt 0 ] && [ "$locked" -eq "$total" ]; then break; fi
  sleep 1
  i=$((i + 1))
done
if [ $tty = 0 ]; then
  echo
  table "$out"
fi
cat <<MSG

All running.  Watch and steer the lasers in a browser:
  $dashboard
Talk to the daemon:
  export WAVELOCK_PORT=$port
  $b/wavelock status  # the bundled client
  $b/wavelock watch cool780  # stream readings (Ctrl-C to stop)
  nc 127.0.0.1 $port  # or telnet; type 'help'
Play with the plant (mode hops, dropouts, outages) on the simulator's port:
  nc ${control%:*} ${control##*:}  # then e.g. 'hop cool780' or 'truth'
Press Ctrl-C here to stop both.
MSG
wait "$d_pid"
