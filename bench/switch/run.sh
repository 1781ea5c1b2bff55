#!/bin/bash
# bench/switch: frames between two processes through a learning switch: `netbe switch`
# (a generator and a sink, each `netbe switch-traffic` on a vale port) and vde_switch
# (the same traffic from vdegen.c through two vde_plug ends). 60-byte frames per second
# and 1514-byte Gbit/s at the sink; rounds interleaved, median reported. Not run by CI.
#
#   bash bench/switch/run.sh             # ROUNDS=3 SECS=5
#   NETBE=/path/netbe bash bench/switch/run.sh
#   NETBE_ALT=/path/other-netbe bash bench/switch/run.sh   # adds an A/B row (e.g. an older build)
# Needs vde2 (vde_switch, vde_plug, dpipe), gcc, swift. No root needed.
set -u
set -o pipefail
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$(mktemp -d /tmp/netbe-switch-bench.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  [ -f "$WORK/vde.pid" ] && kill "$(cat "$WORK/vde.pid")" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
for t in vde_switch vde_plug dpipe gcc; do
  command -v $t >/dev/null || { echo "switch bench: $t missing (apt-get install vde2 gcc)" >&2; exit 1; }
done
if [ -z "${NETBE:-}" ]; then
  (cd "$REPO" && swift build -c release --product netbe >/dev/null) || { echo "build failed" >&2; exit 1; }
  NETBE=$REPO/.build/release/netbe
fi
gcc -O2 -o "$WORK/vdegen" "$REPO/bench/switch/vdegen.c" || exit 1

# rate FILE: frames and bytes the sink counted, per second of the generator's run.
field() { awk -v k="$2" '{for (i = 1; i < NF; i++) if ($i == k) print $(i + 1)}' "$1" | tail -1; }

run_alt() { NETBE=$NETBE_ALT run_netbe "$1"; }

run_netbe() {   # SIZE -> "frames/s bits/s" at the sink
  local size=$1 sock=$WORK/netbe.sock
  rm -f "$sock"
  "$NETBE" switch vale0 --socket "$sock" --log-level warning >"$WORK/d.out" 2>"$WORK/d.err" & local d=$!
  PIDS+=($d)
  until [ -S "$sock" ]; do sleep 0.05; done
  "$NETBE" switch-traffic "vale0:sink,switch=$sock" --receive --seconds $((SECS + 2)) >"$WORK/sink.out" 2>&1 & local s=$!
  PIDS+=($s)
  until grep -q ready "$WORK/sink.out" 2>/dev/null; do sleep 0.05; done
  "$NETBE" switch-traffic "vale0:gen,switch=$sock" --send --size "$size" --seconds "$SECS" >"$WORK/gen.out" 2>&1
  wait $s
  kill $d; wait $d 2>/dev/null
  report "$WORK/sink.out" "$WORK/gen.out"
}

run_vde() {
  local size=$1 sock=$WORK/vde.ctl
  rm -rf "$sock"
  vde_switch -s "$sock" -d -p "$WORK/vde.pid" >/dev/null 2>&1
  until [ -e "$sock/ctl" ]; do sleep 0.05; done
  dpipe "$WORK/vdegen" recv $((SECS + 2)) = vde_plug "$sock" 2>"$WORK/sink.out" & local s=$!
  PIDS+=($s)
  sleep 0.5
  "$WORK/vdegen" send "$size" "$SECS" 2>"$WORK/gen.out" | vde_plug "$sock" >/dev/null
  wait $s
  kill "$(cat "$WORK/vde.pid")"; rm -f "$WORK/vde.pid"
  report "$WORK/sink.out" "$WORK/gen.out"
}

report() {   # sink-out gen-out
  local frames bytes secs
  [ -n "${VERBOSE:-}" ] && { echo "sink: $(tail -1 "$1")  generator: $(tail -1 "$2")" >&2; }
  frames=$(field "$1" frames); bytes=$(field "$1" bytes); secs=$(field "$2" seconds)
  awk -v f="${frames:-0}" -v b="${bytes:-0}" -v s="${secs:-1}" 'BEGIN { printf "%.0f %.3f\n", f / s, b * 8 / s / 1e9 }'
}

declare -A RESULTS
for r in $(seq 1 "$ROUNDS"); do
  for setup in netbe ${NETBE_ALT:+alt} vde; do
    for size in 60 1514; do
      out=$(run_$setup $size)
      RESULTS[$setup-$size]+="$out;"
      echo "round $r  $setup  ${size}B  $out" >&2
    done
  done
done

median() { tr ';' '\n' | awk -v c="$1" 'NF { print $c }' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
nb60=$(echo "${RESULTS[netbe-60]}" | median 1); vd60=$(echo "${RESULTS[vde-60]}" | median 1)
nb1514=$(echo "${RESULTS[netbe-1514]}" | median 2); vd1514=$(echo "${RESULTS[vde-1514]}" | median 2)
echo
echo "switch bench: $ROUNDS rounds of ${SECS}s, $(nproc) vCPU, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| switch | 60-byte frames/s (median) | 1514-byte Gbit/s (median) |"
echo "|---|---|---|"
echo "| netbe switch (vale ports) | $nb60 | $nb1514 |"
if [ -n "${NETBE_ALT:-}" ]; then
  al60=$(echo "${RESULTS[alt-60]}" | median 1); al1514=$(echo "${RESULTS[alt-1514]}" | median 2)
  echo "| netbe switch, NETBE_ALT | $al60 | $al1514 |"
fi
echo "| vde_switch (vde_plug ends) | $vd60 | $vd1514 |"
awk -v a="$nb60" -v b="$vd60" -v c="$nb1514" -v d="$vd1514" 'BEGIN { printf "| netbe / vde | %.1fx | %.1fx |\n", (b > 0 ? a / b : 0), (d > 0 ? c / d : 0) }'
[ -n "${NETBE_ALT:-}" ] && awk -v a="$nb60" -v b="$al60" -v c="$nb1514" -v d="$al1514" 'BEGIN { printf "| netbe / NETBE_ALT | %.1fx | %.1fx |\n", (b > 0 ? a / b : 0), (d > 0 ? c / d : 0) }'
