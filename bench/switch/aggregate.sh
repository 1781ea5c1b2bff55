#!/bin/bash
# bench/switch/aggregate.sh: four VMs (namespaces with taps, ports inside one `netbe
# switch` daemon) talking pairwise, 1->2 and 3->4 at once, against one pair alone, in
# the same run. A learning switch sends each pair's frames to its peer only, so the
# aggregate should hold up; a hub that floods every frame (socket_vmnet without MAC
# learning, issue 10) falls as VMs are added. Needs root, iperf3, python3.
#
#   sudo bash bench/switch/aggregate.sh        # ROUNDS=3 SECS=5; NETBE=/path/netbe
set -u
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NETBE=${NETBE:-}
if [ -z "$NETBE" ]; then
  swift build -c release --package-path "$REPO" --product netbe >&2 || exit 1
  NETBE=$(swift build -c release --package-path "$REPO" --show-bin-path)/netbe
fi
command -v iperf3 >/dev/null || { echo "aggregate: missing iperf3 (apt-get install -y iperf3)" >&2; exit 3; }
TAG=$$
WORK=$(mktemp -d /tmp/netbe-agg.XXXXXX)
PIDS=()
NS=(nba${TAG}1 nba${TAG}2 nba${TAG}3 nba${TAG}4)
cleanup() {
  local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT

ports=()
for i in 0 1 2 3; do ip netns add "${NS[$i]}"; ip -n "${NS[$i]}" link set lo up; ports+=(--port "tap0,netns=${NS[$i]}"); done
"$NETBE" switch vale0 --socket "$WORK/sw.sock" "${ports[@]}" >"$WORK/sw.out" 2>"$WORK/sw.err" &
PIDS+=($!)
for _ in $(seq 200); do grep -qx ready "$WORK/sw.out" && break; sleep 0.05; done
grep -qx ready "$WORK/sw.out" || { cat "$WORK/sw.err" >&2; exit 1; }
for i in 0 1 2 3; do
  ip -n "${NS[$i]}" addr add "10.98.0.$((i + 1))/24" dev tap0
  ip -n "${NS[$i]}" link set tap0 up
done
for i in 0 2; do ip netns exec "${NS[$i]}" ping -c 2 -i 0.2 -W 1 -q "10.98.0.$((i + 2))" >/dev/null || { echo "no ping" >&2; exit 1; }; done

pair() {   # pair FROM TO OUT: one iperf3 TCP run ns FROM -> ns TO, Gbit/s into OUT
  ip netns exec "${NS[$2]}" iperf3 -s -1 -B "10.98.0.$(($2 + 1))" >/dev/null 2>&1 &
  local s=$!
  sleep 0.3
  ip netns exec "${NS[$1]}" iperf3 -c "10.98.0.$(($2 + 1))" -t "$SECS" -J >"$WORK/$3.json" 2>&1
  wait "$s"
  python3 -c 'import json,sys; print("%.3f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9))' "$WORK/$3.json" >"$WORK/$3"
}
: >"$WORK/results"
for r in $(seq "$ROUNDS"); do
  pair 0 1 one
  pair 0 1 a & pa=$!
  pair 2 3 b & pb=$!
  wait "$pa" "$pb"
  echo "$(cat "$WORK/one") $(cat "$WORK/a") $(cat "$WORK/b")" >>"$WORK/results"
  echo "round $r: one pair $(cat "$WORK/one") Gbit/s; two pairs $(cat "$WORK/a") + $(cat "$WORK/b")" >&2
done
python3 - "$WORK/results" "$ROUNDS" "$SECS" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
one = statistics.median(r[0] for r in rows)
agg = statistics.median(r[1] + r[2] for r in rows)
print("\nfour namespaces on one `netbe switch` (tap ports in the daemon), iperf3 TCP, %s rounds x %s s, median" % (sys.argv[2], sys.argv[3]))
print("| traffic | Gbit/s | vs one pair |")
print("| --- | --- | --- |")
print("| one pair (1->2) | %.2f | 1.00x |" % one)
print("| two pairs at once (1->2, 3->4), aggregate | %.2f | %.2fx |" % (agg, agg / one))
PY
