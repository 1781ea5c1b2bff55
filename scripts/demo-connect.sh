#!/usr/bin/env bash
# Two network namespaces joined by `netbe connect` through two taps with offloads:
# shows the negotiated offloads, a ping, a 5 s iperf3 run and netbe's counters.
# Needs root (namespaces and taps). Builds netbe in release if needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
NS1=netbe-demo1 NS2=netbe-demo2
say() { printf '\033[1m== %s\033[0m\n' "$*"; }
[ "$(id -u)" = 0 ] || { echo "demo-connect: needs root (it creates namespaces and taps)" >&2; exit 1; }
for t in ip iperf3 ping; do command -v $t >/dev/null || { echo "demo-connect: $t missing: apt-get install -y iproute2 iperf3 iputils-ping" >&2; exit 1; }; done
say "building netbe (release)"
swift build -c release --product netbe 2>&1 | tail -1
NETBE=$(swift build -c release --show-bin-path)/netbe
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  ip netns del $NS1 2>/dev/null || true; ip netns del $NS2 2>/dev/null || true
}
trap cleanup EXIT
say "creating namespaces $NS1 and $NS2"
for n in $NS1 $NS2; do ip netns del $n 2>/dev/null || true; ip netns add $n; ip -n $n link set lo up; done
say "netbe connect tap0,netns=$NS1 tap0,netns=$NS2"
coproc NB { exec "$NETBE" connect "tap0,netns=$NS1" "tap0,netns=$NS2"; }
PID=$NB_PID
read -r line <&"${NB[0]}"; [ "$line" = ready ] || { echo "netbe did not get ready: $line" >&2; exit 1; }
ip -n $NS1 addr add 10.98.0.1/24 dev tap0; ip -n $NS2 addr add 10.98.0.2/24 dev tap0
ip netns exec $NS1 ethtool -k tap0 2>/dev/null | grep -E '^(tx-checksumming|tcp-segmentation-offload):' || true
say "ping $NS1 -> $NS2"
ip netns exec $NS1 ping -c 3 -i 0.2 10.98.0.2 | tail -2
say "iperf3 $NS1 -> $NS2 (5 s)"
ip netns exec $NS2 iperf3 -s -1 -B 10.98.0.2 >/dev/null 2>&1 &
sleep 0.5
ip netns exec $NS1 iperf3 -c 10.98.0.2 -t 5 | grep -E 'sender|receiver'
say "stopping netbe: its counters"
kill -TERM "$PID"; cat <&"${NB[0]}"; wait "$PID" || true; PID=
