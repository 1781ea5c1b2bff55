#!/usr/bin/env bash
# iperf3 through user-mode networking, namespace -> host and host -> namespace:
# netbe's slirp backend with the helper process and in-process, passt joined by
# netbe's stream backend, netbe's own `passt` kind (netbe starts passt), and pasta
# attached to the namespace directly (`pasta --config-net`, the anchor the field uses),
# against slirp4netns in the same topology (a tap in a namespace, libslirp behind it, the iperf3 server on the
# host's loopback reached through the gateway 10.0.2.2). Rounds are interleaved
# (A, B, C, A, B, C...) and the median is reported, with ratios to slirp4netns.
#
# Usage (root): bench/slirp/run.sh [ROUNDS=3] [SECONDS=5]
# NETBE=path picks netbe (default: this build's); NETBE_ALT=path adds rows for a second
# build (e.g. main's, to compare before/after in the same run), named NETBE_ALT_LABEL
# (default "alt").
# passt (and pasta, and netbe for its passt kind) runs in a namespace of its own (with a
# veth to an upstream namespace, so it has a default route to copy and traffic never
# leaves the machine); its iperf3 server listens on that namespace's loopback, which
# passt maps its gateway address to. pasta as root needs `--runas 0:0` (it would drop
# to nobody and then cannot enter the namespace).
# Needs: iperf3 slirp4netns passt iproute2 python3, and netbe built (swift build -c release).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rounds=${1:-3}
secs=${2:-5}
[ "$(id -u)" = 0 ] || { echo "run as root (namespaces, taps)" >&2; exit 1; }
for t in iperf3 slirp4netns passt pasta python3; do command -v $t >/dev/null || { echo "$t missing: apt-get install $t" >&2; exit 1; }; done
netbe=${NETBE:-$(swift build -c release --show-bin-path)/netbe}
[ -x "$netbe" ] || { echo "build netbe first: swift build -c release" >&2; exit 1; }
alt=${NETBE_ALT:-}
altlabel=${NETBE_ALT_LABEL:-alt}
[ -z "$alt" ] || [ -x "$alt" ] || { echo "NETBE_ALT=$alt is not an executable" >&2; exit 1; }

ns=nbslirpbench$$
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
out=$(mktemp -d)
relay=
passt=
pserver=
gw=10.0.2.2
cleanup() {
    set +e   # every step runs, whatever failed before (or fails here)
    [ -n "$relay" ] && kill "$relay" 2>/dev/null && wait "$relay" 2>/dev/null
    [ -n "$passt" ] && kill -9 "$passt" 2>/dev/null
    [ -n "$pserver" ] && kill "$pserver" 2>/dev/null
    ip netns del "${ns}p" 2>/dev/null || true
    ip netns del "${ns}u" 2>/dev/null || true
    [ -n "${server:-}" ] && kill "$server" 2>/dev/null
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$out"
}
trap cleanup EXIT
iperf3 -s -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
server=$!
sleep 0.5

start() {   # $1 = configuration; leaves the namespace online through 10.0.2.2
    # Emptied here, not by the background job's redirection, which may come after the
    # wait below has already read the previous run's `ready`.
    : >"$out/relay.out"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    case $1 in
        netbe-helper|netbe-inproc|$altlabel-helper|$altlabel-inproc)
            local h=on; [ "${1##*-}" = inproc ] && h=off
            local bin=$netbe; [ "${1%-*}" = "$altlabel" ] && bin=$alt
            "$bin" connect "tap0,netns=$ns" "slirp,helper=$h,ipv6=off" >"$out/relay.out" 2>"$out/relay.err" &
            relay=$!
            for _ in $(seq 400); do grep -qx ready "$out/relay.out" && break; sleep 0.05; done
            grep -qx ready "$out/relay.out" || { echo "$1: netbe not ready" >&2; cat "$out/relay.err" >&2; exit 1; }
            ip -n "$ns" addr add 10.0.2.100/24 dev tap0
            ip -n "$ns" link set tap0 up
            ip -n "$ns" route add default via 10.0.2.2 ;;
        passt|netbe-passt|pasta)
            # passt's own namespace and an upstream one: passt copies 10.98.0.2 and its route.
            local pns=${ns}p ups=${ns}u
            ip netns add "$pns"; ip netns add "$ups"
            ip -n "$pns" link set lo up; ip -n "$ups" link set lo up
            ip link add p0 netns "$pns" type veth peer name u0 netns "$ups"
            ip -n "$pns" addr add 10.98.0.2/24 dev p0; ip -n "$pns" link set p0 up
            ip -n "$ups" addr add 10.98.0.1/24 dev u0; ip -n "$ups" link set u0 up
            ip -n "$pns" route add default via 10.98.0.1
            # passt answers the guest's pings with ping sockets: let every group open them.
            ip netns exec "$pns" sysctl -qw net.ipv4.ping_group_range="0 2147483647"
            ip netns exec "$pns" iperf3 -s -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
            pserver=$!
            case $1 in
                passt)
                    # As root passt drops to nobody before binding: its directory must be writable.
                    chmod 755 "$out"; mkdir -p -m 1777 "$out/passt"; rm -f "$out/passt/sock"
                    ip netns exec "$pns" passt -f -q -s "$out/passt/sock" >"$out/passt.log" 2>&1 &
                    passt=$!
                    for _ in $(seq 400); do [ -S "$out/passt/sock" ] && break; sleep 0.05; done
                    "$netbe" connect "tap0,netns=$ns" "stream,connect=unix:$out/passt/sock" >"$out/relay.out" 2>"$out/relay.err" &
                    relay=$! ;;
                netbe-passt)
                    ip netns exec "$pns" "$netbe" connect "tap0,netns=$ns" passt >"$out/relay.out" 2>"$out/relay.err" &
                    relay=$! ;;
                pasta)
                    ip netns exec "$pns" pasta --config-net -f -q --runas 0:0 --netns "/run/netns/$ns" >"$out/relay.out" 2>&1 &
                    passt=$!
                    gw=10.98.0.1
                    for _ in $(seq 400); do ip -n "$ns" -4 addr show p0 2>/dev/null | grep -q 10.98.0.2 && break; sleep 0.05; done ;;
            esac
            if [ "$1" != pasta ]; then
                for _ in $(seq 400); do grep -qx ready "$out/relay.out" && break; sleep 0.05; done
                grep -qx ready "$out/relay.out" || { echo "$1: netbe not ready" >&2; cat "$out/relay.err" >&2; exit 1; }
                ip -n "$ns" addr add 10.98.0.2/24 dev tap0
                ip -n "$ns" link set tap0 up
                ip -n "$ns" route add default via 10.98.0.1
            fi
            gw=10.98.0.1 ;;
        slirp4netns)
            slirp4netns --configure --mtu=1500 --netns-type=path "/run/netns/$ns" tap0 >"$out/relay.out" 2>&1 &
            relay=$!
            for _ in $(seq 400); do ip -n "$ns" -4 addr show tap0 2>/dev/null | grep -q 10.0.2.100 && break; sleep 0.05; done ;;
    esac
    for _ in $(seq 400); do ip netns exec "$ns" ping -c 1 -W 1 "$gw" >/dev/null 2>&1 && return; sleep 0.1; done
    echo "$1: no connectivity" >&2; exit 1
}
stop() {
    if [ -n "$relay" ]; then kill "$relay" 2>/dev/null; wait "$relay" 2>/dev/null || true; fi
    relay=
    if [ -n "$pserver" ]; then
        [ -n "$passt" ] && { kill -9 "$passt" 2>/dev/null; wait "$passt" 2>/dev/null || true; }
        kill "$pserver" 2>/dev/null; wait "$pserver" 2>/dev/null || true
        passt= pserver=
        ip netns del "${ns}p"; ip netns del "${ns}u"
    fi
    gw=10.0.2.2
    ip netns del "$ns"
}
measure() {   # $1 = extra iperf3 flag (-R for host -> namespace); prints Gbit/s
    ip netns exec "$ns" iperf3 -c "$gw" -p "$port" -t "$secs" $1 -J 2>/dev/null |
        python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}

configs=(netbe-helper netbe-inproc)
[ -n "$alt" ] && configs+=("$altlabel-helper" "$altlabel-inproc")
configs+=(passt netbe-passt pasta slirp4netns)
# CONFIGS="a b" runs only those (the table's ratios need slirp4netns and pasta among them).
[ -n "${CONFIGS:-}" ] && read -r -a configs <<<"$CONFIGS"
for r in $(seq "$rounds"); do
    for c in "${configs[@]}"; do
        start "$c"
        up=$(measure "")
        down=$(measure -R)
        stop
        echo "round $r $c: namespace->host $up Gbit/s, host->namespace $down Gbit/s" >&2
        echo "$c up $up" >>"$out/results"
        echo "$c down $down" >>"$out/results"
    done
done

python3 - "$out/results" "${configs[@]}" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for c, d, v in rows:
    med.setdefault((c, d), []).append(float(v))
med = {k: statistics.median(v) for k, v in med.items()}
print("| configuration | ns -> host Gbit/s | vs slirp4netns | vs pasta | host -> ns Gbit/s | vs slirp4netns | vs pasta |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for c in sys.argv[2:]:
    u, d = med[(c, "up")], med[(c, "down")]
    bu, bd = med[("slirp4netns", "up")], med[("slirp4netns", "down")]
    pu, pd = med[("pasta", "up")], med[("pasta", "down")]
    print(f"| {c} | {u:.2f} | {u/bu:.2f}x | {u/pu:.2f}x | {d:.2f} | {d/bd:.2f}x | {d/pd:.2f}x |")
print(f"(median of {len(rows)//(2*len(sys.argv[2:]))} interleaved rounds)")
PY
