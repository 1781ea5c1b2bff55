#!/usr/bin/env bash
# iperf3 (TCP, one stream) between namespace A and namespace B over VXLAN VNI 42 on a veth
# underlay, both directions:
#   netbe          A's tap joined by `netbe connect ... vxlan` (netbe in A's underlay
#                  namespace) to the kernel's vxlan device in B
#   netbe-tso-off  the same with `tso=off`: vxlan offers no TSO, the relay cuts the tap's
#                  super-frames and vxlan queues the segments for UDP GSO one by one
#   netbe-gso-off  the same with `gso=off`: one sendmsg per frame instead of UDP GSO (no TSO)
#   netbe-gro-off  the same with `gro=off`: one recvmsg per datagram instead of UDP GRO
#   kernel         the kernel's vxlan device on both sides (the anchor), same underlay
#                  settings as netbe's row (checksum offload off on B's veth, see below)
#   kernel-default the kernel on both sides with the veth's default offloads
# A veth hands the kernel VTEP's packets on with the inner checksum partial and as GSO
# super-packets; a UDP socket (netbe) cannot finish those, so B's veth has `tx off`, which
# makes B's kernel segment and checksum before the veth, as a real NIC's path would.
# GRO is on on both veth ends (UNDERLAY_GRO=off leaves veth's default, off), as on a NIC:
# only then can the kernel join datagrams for UDP GRO (and for its own vxlan's GRO).
# Inner MTU 1450 (underlay 1500 - 50). Rounds interleaved, median reported.
#
# Usage (root): bench/vxlan/run.sh [ROUNDS=3] [SECONDS=5]
# NETBE=path picks netbe (default: this build's release binary); NETBE_ALT=path adds a row
# for a second build (label NETBE_ALT_LABEL, default alt). Needs iperf3 ethtool python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rounds=${1:-3}
secs=${2:-5}
[ "$(id -u)" = 0 ] || { echo "run as root (namespaces, taps)" >&2; exit 1; }
for t in iperf3 ethtool python3; do command -v $t >/dev/null || { echo "$t missing: apt-get install $t" >&2; exit 1; }; done
netbe=${NETBE:-$(swift build -c release --show-bin-path)/netbe}
[ -x "$netbe" ] || { echo "build netbe first: swift build -c release" >&2; exit 1; }
alt=${NETBE_ALT:-}
altlabel=${NETBE_ALT_LABEL:-alt}

p=nbvx$$
A=${p}a UA=${p}u B=${p}b
out=$(mktemp -d)
relay=
cleanup() {
    set +e   # every step runs, whatever failed before (or fails here)
    [ -n "$relay" ] && kill "$relay" 2>/dev/null && wait "$relay" 2>/dev/null
    for n in "$A" "$UA" "$B"; do ip netns del "$n" 2>/dev/null || true; done
    rm -rf "$out"
}
trap cleanup EXIT

start() {   # $1 = configuration
    # Emptied here, not by the background job's redirection, which may come after the
    # wait below has already read the previous run's `ready`.
    : >"$out/relay.out"
    for n in "$A" "$UA" "$B"; do ip netns add "$n"; ip -n "$n" link set lo up; done
    ip link add u0 netns "$UA" type veth peer name b0 netns "$B"
    ip -n "$UA" addr add 10.77.0.1/24 dev u0; ip -n "$UA" link set u0 up
    ip -n "$B" addr add 10.77.0.2/24 dev b0; ip -n "$B" link set b0 up
    [ "$1" = kernel-default ] || ip netns exec "$B" ethtool -K b0 tx off >/dev/null
    if [ "${UNDERLAY_GRO:-on}" = on ]; then
        ip netns exec "$UA" ethtool -K u0 gro on >/dev/null
        ip netns exec "$B" ethtool -K b0 gro on >/dev/null
    fi
    ip -n "$B" link add vx0 type vxlan id 42 dstport 4789 local 10.77.0.2 remote 10.77.0.1 dev b0
    ip -n "$B" link set vx0 mtu 1450
    ip -n "$B" addr add 192.168.42.2/24 dev vx0; ip -n "$B" link set vx0 up
    case $1 in
        kernel|kernel-default)
            ip -n "$UA" link add vx0 type vxlan id 42 dstport 4789 local 10.77.0.1 remote 10.77.0.2 dev u0
            ip -n "$UA" link set vx0 netns "$A"
            ip -n "$A" link set vx0 mtu 1450
            ip -n "$A" addr add 192.168.42.1/24 dev vx0; ip -n "$A" link set vx0 up ;;
        *)
            local bin=$netbe; [ "$1" = "$altlabel" ] && bin=$alt
            local opts=
            case $1 in
                netbe-tso-off) opts=,tso=off ;;
                netbe-gso-off) opts=,gso=off ;;
                netbe-gro-off) opts=,gro=off ;;
            esac
            ip netns exec "$UA" "$bin" connect "tap0,netns=$A,mtu=1450" \
                "vxlan,vni=42,local=udp:10.77.0.1:4789,remote=udp:10.77.0.2:4789$opts" >"$out/relay.out" 2>"$out/relay.err" &
            relay=$!
            for _ in $(seq 400); do grep -qx ready "$out/relay.out" && break; sleep 0.05; done
            grep -qx ready "$out/relay.out" || { echo "$1: netbe not ready" >&2; cat "$out/relay.err" >&2; exit 1; }
            ip -n "$A" addr add 192.168.42.1/24 dev tap0; ip -n "$A" link set tap0 up ;;
    esac
    for _ in $(seq 50); do ip netns exec "$A" ping -c 1 -W 1 192.168.42.2 >/dev/null 2>&1 && return; sleep 0.1; done
    echo "$1: no connectivity" >&2; cat "$out/relay.err" >&2; exit 1
}
stop() {
    if [ -n "$relay" ]; then kill "$relay" 2>/dev/null; wait "$relay" 2>/dev/null || true; relay=; fi
    for n in "$A" "$UA" "$B"; do ip netns del "$n"; done
}
measure() {   # $1 = client namespace, $2 = server namespace, $3 = server address; Gbit/s
    ip netns exec "$2" iperf3 -s -1 -B "$3" >/dev/null 2>&1 &
    local s=$!
    sleep 0.3
    ip netns exec "$1" iperf3 -c "$3" -t "$secs" -J 2>/dev/null |
        python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
    wait $s 2>/dev/null || true
}

configs=(netbe netbe-tso-off netbe-gso-off netbe-gro-off)
[ -n "$alt" ] && configs+=("$altlabel")
configs+=(kernel kernel-default)
for r in $(seq "$rounds"); do
    for c in "${configs[@]}"; do
        start "$c"
        ab=$(measure "$A" "$B" 192.168.42.2)
        ba=$(measure "$B" "$A" 192.168.42.1)
        stop
        echo "round $r $c: A->B $ab Gbit/s, B->A $ba Gbit/s" >&2
        echo "$c ab $ab" >>"$out/results"
        echo "$c ba $ba" >>"$out/results"
    done
done

python3 - "$out/results" "${configs[@]}" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
vals = {}
for c, d, v in rows:
    vals.setdefault((c, d), []).append(float(v))
med = {k: statistics.median(v) for k, v in vals.items()}
print("| configuration | A -> B Gbit/s (min-max) | vs kernel | B -> A Gbit/s (min-max) | vs kernel |")
print("| --- | --- | --- | --- | --- |")
for c in sys.argv[2:]:
    a, b = med[(c, "ab")], med[(c, "ba")]
    ka, kb = med[("kernel", "ab")], med[("kernel", "ba")]
    ra = f"{min(vals[(c,'ab')]):.2f}-{max(vals[(c,'ab')]):.2f}"
    rb = f"{min(vals[(c,'ba')]):.2f}-{max(vals[(c,'ba')]):.2f}"
    print(f"| {c} | {a:.2f} ({ra}) | {a/ka:.2f}x | {b:.2f} ({rb}) | {b/kb:.2f}x |")
print(f"(median of {len(rows)//(2*len(sys.argv[2:]))} interleaved rounds, iperf3 TCP, one stream)")
PY
