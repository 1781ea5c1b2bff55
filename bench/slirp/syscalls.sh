#!/usr/bin/env bash
# System calls per frame through netbe's slirp backend: one short iperf3 run in each
# direction under `strace -c -f` (netbe and its helper together), divided by the frames
# netbe relayed (its JSON counters at exit). strace slows everything down: the absolute
# throughput means nothing here, only the ratio of calls to frames.
#
# Usage (root): bench/slirp/syscalls.sh [helper=on|off] [SECONDS=3]
# Needs: iperf3 strace python3; NETBE=path picks the binary (default: this build's).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
helper=${1:-on}
secs=${2:-3}
[ "$(id -u)" = 0 ] || { echo "run as root (namespaces, taps)" >&2; exit 1; }
for t in iperf3 strace python3; do command -v $t >/dev/null || { echo "$t missing: apt-get install $t" >&2; exit 1; }; done
netbe=${NETBE:-$(swift build -c release --show-bin-path)/netbe}
ns=nbslirpsys$$
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
out=$(mktemp -d)
relay=
cleanup() {
    [ -n "$relay" ] && kill "$relay" 2>/dev/null && wait "$relay" 2>/dev/null
    [ -n "${server:-}" ] && kill "$server" 2>/dev/null
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$out"
}
trap cleanup EXIT
iperf3 -s -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
server=$!
sleep 0.5

for dir in up down; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    strace -f -c -o "$out/strace" "$netbe" connect "tap0,netns=$ns" "slirp,helper=$helper,ipv6=off" >"$out/relay.out" 2>"$out/relay.err" &
    relay=$!
    for _ in $(seq 200); do grep -qx ready "$out/relay.out" && break; sleep 0.05; done
    ip -n "$ns" addr add 10.0.2.100/24 dev tap0
    ip -n "$ns" link set tap0 up
    ip -n "$ns" route add default via 10.0.2.2
    for _ in $(seq 100); do ip netns exec "$ns" ping -c 1 -W 1 10.0.2.2 >/dev/null 2>&1 && break; sleep 0.1; done
    flag=; [ $dir = down ] && flag=-R
    ip netns exec "$ns" iperf3 -c 10.0.2.2 -p "$port" -t "$secs" $flag >/dev/null
    # SIGTERM to netbe itself (strace's child), which prints its counters and exits.
    kill "$(pgrep -P "$relay" -x netbe || pgrep -P "$relay")"
    wait "$relay" || true
    relay=
    ip netns del "$ns"
    python3 - "$out/relay.out" "$out/strace" "$dir" "$helper" <<'PY'
import json, sys
frames = 0
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        frames += json.loads(line).get("frames", 0)
calls, table = 0, {}
for line in open(sys.argv[2]):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        n = int(f[3]); calls += n; table[f[-1]] = n
top = ", ".join(f"{k} {v/frames:.2f}" for k, v in sorted(table.items(), key=lambda kv: -kv[1])[:6])
print(f"helper={sys.argv[4]} {sys.argv[3]}: {frames} frames (both ways), {calls} syscalls, {calls/frames:.2f} per frame ({top})")
PY
done
