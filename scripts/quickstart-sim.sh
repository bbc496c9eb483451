#!/bin/sh
# quickstart-sim.sh - install what is missing, build, and run wavelock on the
# simulated lab of conf/sim.conf: wavelock-sim plays 14 lasers, a wavemeter and
# four Modbus output modules; wavelockd locks them.  Ctrl-C stops both.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
sh "$top/scripts/deps.sh"
sh "$top/scripts/build.sh"
b="$top/build"
conf="$top/conf/sim.conf"
run=$(mktemp -d /tmp/wavelock-sim.XXXXXX)
sim_pid=""
d_pid=""

stop() {
  trap - INT TERM EXIT
  [ -n "$d_pid" ] && kill "$d_pid" 2>/dev/null && wait "$d_pid" 2>/dev/null
  [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
  echo
  echo "wavelock stopped (logs were in $run; removed)."
  rm -rf "$run"
}
trap stop INT TERM EXIT

"$b/wavelock-sim" -c "$conf" >"$run/sim.log" 2>&1 &
sim_pid=$!
sleep 0.5
if ! kill -0 "$sim_pid" 2>/dev/null; then
  cat "$run/sim.log" >&2
  echo "wavelock-sim did not start (is another one running on its ports?)" >&2
  exit 1
fi
"$b/wavelockd" -f -c "$conf" >"$run/wavelockd.log" 2>&1 &
d_pid=$!
sleep 0.5
if ! kill -0 "$d_pid" 2>/dev/null; then
  cat "$run/wavelockd.log" >&2
  echo "wavelockd did not start (is another one running on port 7470?)" >&2
  exit 1
fi

echo "wavelock-sim (pid $sim_pid) and wavelockd (pid $d_pid) are running; logs in $run"
echo "Waiting for the 14 simulated lasers to lock..."
i=0
while [ $i -lt 120 ]; do
  out=$("$b/wavelock" status 2>/dev/null || true)
  clear 2>/dev/null || true
  echo "$out" | awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    printf "%-12s %-10s %16s %16s %10s %9s\n", v["name"], v["state"], v["setpoint_thz"], v["freq_thz"], v["error_mhz"], v["piezo_v"] }'
  locked=$(echo "$out" | grep -c "state=locked" || true)
  total=$(echo "$out" | grep -c "name=" || true)
  echo
  echo "$locked of $total lasers locked"
  if [ "$total" -gt 0 ] && [ "$locked" -eq "$total" ]; then break; fi
  sleep 1
  i=$((i + 1))
done
cat <<MSG

All running.  Talk to the daemon:
  $b/wavelock status              # the bundled client
  $b/wavelock watch cool780       # stream readings (Ctrl-C to stop)
  nc 127.0.0.1 7470               # or telnet 127.0.0.1 7470; type 'help'
Play with the plant (mode hops, dropouts, outages) on the simulator's port:
  nc 127.0.0.1 7481               # then e.g. 'hop cool780' or 'truth'
Press Ctrl-C here to stop both.
MSG
wait "$d_pid"
