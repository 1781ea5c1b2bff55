#!/bin/bash
# Socket transports, measured: iperf3 TCP between two namespaces through
#   ns1/tap1 <-> netbe <-> SOCKET <-> netbe <-> tap2/ns2
# for stream (plain and vnet=on) and dgram over unix sockets, against vde_switch with
# two vde_plug2tap and the C tap relay of ../shared/peers (plain, and vnet + offloads).
# Rounds are interleaved (A B C ... A B C ...) and the median is reported, because
# the machine is shared: compare figures only within one run.
# usage (root): bench/socket-relay/run.sh [ROUNDS=3] [SECONDS=5]
# env: NETBE (default .build/release/netbe), PEERS (default ../shared/peers), MODES;
# NETBE_ALT=path makes the modes "stream-alt" etc. use that build (before/after, same run).
set -u
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
SECS=${2:-5}
NETBE=${NETBE:-$PWD/.build/release/netbe}
NETBE_ALT=${NETBE_ALT:-}
BIN=$NETBE
PEERS=${PEERS:-$(cd ../shared/peers 2>/dev/null && pwd)}
W=$(mktemp -d /tmp/nbsr.XXXXXX)
NS1=nbsr$$a; NS2=nbsr$$b
PIDS=()
MODES=(${MODES:-stream stream-vnet dgram vde-plug2tap taprelay-plain taprelay-vnet})

[ -x "$NETBE" ] || { echo "build first: swift build -c release" >&2; exit 1; }
for t in iperf3 vde_switch vde_plug2tap gcc python3; do
  command -v $t >/dev/null || { echo "$t missing (apt-get install iperf3 vde2 gcc python3)" >&2; exit 1; }
done
gcc -O2 -o $W/taprelay "$PEERS/taprelay.c" || exit 1

stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done; done
  PIDS=()
  ip netns del $NS1 2>/dev/null; ip netns del $NS2 2>/dev/null
  rm -rf $W/run; mkdir -p $W/run
}
trap 'stop_all; rm -rf $W' EXIT

wait_line() {  # wait_line FILE TEXT
  for i in $(seq 200); do grep -qx "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "no '$2' in $1: $(cat $1)" >&2; return 1
}

netbe_pair() {  # netbe_pair LEFTSPEC RIGHTSPEC
  "$BIN" connect tap1,netns=$NS1 "$1" >$W/run/l.out 2>$W/run/l.err & PIDS+=($!)
  wait_line $W/run/l.out ready || return 1
  "$BIN" connect "$2" tap2,netns=$NS2 >$W/run/r.out 2>$W/run/r.err & PIDS+=($!)
  wait_line $W/run/r.out ready
}

setup() {
  stop_all
  for n in $NS1 $NS2; do ip netns add $n; ip -n $n link set lo up; done
  local R=$W/run mode=$1
  BIN=$NETBE
  case $mode in *-alt) [ -x "$NETBE_ALT" ] || { echo "$mode needs NETBE_ALT" >&2; return 1; }; BIN=$NETBE_ALT; mode=${mode%-alt} ;; esac
  case $mode in
    stream) netbe_pair stream,listen=unix:$R/s.sock stream,connect=unix:$R/s.sock ;;
    stream-vnet) netbe_pair stream,listen=unix:$R/s.sock,vnet=on stream,connect=unix:$R/s.sock,vnet=on ;;
    dgram) netbe_pair dgram,local=unix:$R/a.sock,remote=unix:$R/b.sock dgram,local=unix:$R/b.sock,remote=unix:$R/a.sock ;;
    vde-plug2tap)
      vde_switch -s $R/sw -M $R/sw.mgmt -d -p $R/sw.pid >/dev/null 2>&1
      for i in $(seq 50); do [ -S $R/sw/ctl ] && [ -s $R/sw.pid ] && break; sleep 0.05; done
      PIDS+=($(cat $R/sw.pid))
      ip netns exec $NS1 vde_plug2tap -s $R/sw tap1 >/dev/null 2>&1 & PIDS+=($!)
      ip netns exec $NS2 vde_plug2tap -s $R/sw tap2 >/dev/null 2>&1 & PIDS+=($!)
      for i in $(seq 50); do ip -n $NS1 link show tap1 >/dev/null 2>&1 && ip -n $NS2 link show tap2 >/dev/null 2>&1 && break; sleep 0.05; done ;;
    taprelay-plain)
      $W/taprelay $NS1:tap1 $NS2:tap2 >$R/t.out 2>&1 & PIDS+=($!)
      wait_line $R/t.out ready ;;
    taprelay-vnet)
      $W/taprelay -v -o $NS1:tap1 $NS2:tap2 >$R/t.out 2>&1 & PIDS+=($!)
      wait_line $R/t.out ready ;;
  esac
  ip -n $NS1 addr add 10.97.0.1/24 dev tap1; ip -n $NS1 link set tap1 up
  ip -n $NS2 addr add 10.97.0.2/24 dev tap2; ip -n $NS2 link set tap2 up
  for i in $(seq 100); do ip netns exec $NS1 ping -c1 -W1 10.97.0.2 >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "$1: no ping" >&2; return 1
}

measure() {  # prints Gbit/s received
  ip netns exec $NS2 iperf3 -s -1 -B 10.97.0.2 >/dev/null 2>&1 & local s=$!
  sleep 0.4
  ip netns exec $NS1 iperf3 -c 10.97.0.2 -t $SECS -J > $W/iperf.json 2>&1
  wait $s 2>/dev/null
  python3 -c "import json,sys; print('%.2f' % (json.load(open('$W/iperf.json'))['end']['sum_received']['bits_per_second']/1e9))" 2>/dev/null || echo nan
}

: > $W/results
for r in $(seq $ROUNDS); do
  for m in "${MODES[@]}"; do
    if setup $m; then g=$(measure); else g=nan; fi
    echo "round $r $m $g Gbit/s" >&2
    echo "$m $g" >> $W/results
  done
done
stop_all

python3 - $W/results <<'PY'
import sys, statistics, collections
runs = collections.OrderedDict()
for line in open(sys.argv[1]):
    m, g = line.split()
    runs.setdefault(m, []).append(float(g))
med = {m: statistics.median([x for x in v if x == x] or [float('nan')]) for m, v in runs.items()}
vde, crelay = med.get('vde-plug2tap', float('nan')), med.get('taprelay-vnet', float('nan'))
print("| path | rounds (Gbit/s) | median | vs vde plug2tap | vs C tap relay (vnet) |")
print("| --- | --- | --- | --- | --- |")
for m, v in runs.items():
    print("| %s | %s | %.2f | %.2fx | %.2fx |" % (m, " ".join("%.2f" % x for x in v), med[m], med[m] / vde, med[m] / crelay))
PY
