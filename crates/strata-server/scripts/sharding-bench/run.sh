#!/usr/bin/env bash
# The whole write path through the sharded client, with one range group
# and with two, on this machine: a 1-member etcd and the four members of
# examples/sharded/ (g1: a1, a2; g2: b1, b2; min_sync_replicas = 1, so
# every write is synced on the primary and confirmed by its replica).
#
#   cargo build --release -p strata-server
#   crates/strata-server/scripts/sharding-bench/run.sh [NUM] [THREADS] [ROUNDS]
#
# Each round runs `strata bench --etcd ... --workload overwrite` with the
# whole key space on g1 (one group), then with [k8, end) moved to g2 (two
# groups; keys are spread evenly over k0..kf), and prints throughput and
# CPU seconds per 1,000 writes: per group (the members' CPU, from
# /proc/PID/stat) and of the client. All processes share this machine's
# cores, so the per-CPU figures are the ones that carry to machines of
# their own. Needs etcd (apt-get install -y etcd-server).
set -euo pipefail
num=${1:-20000}
threads=${2:-16}
rounds=${3:-3}
root=$(cd "$(dirname "$0")/../../../.." && pwd)
bin=$root/target/release/strata
[ -x "$bin" ] || { echo "build first: cargo build --release -p strata-server" >&2; exit 2; }
command -v etcd >/dev/null || { echo "needs etcd: apt-get install -y etcd-server" >&2; exit 2; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cport=$(port); pport=$(port)
etcd --name b --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$cport" \
  --advertise-client-urls "http://127.0.0.1:$cport" --listen-peer-urls "http://127.0.0.1:$pport" \
  --initial-advertise-peer-urls "http://127.0.0.1:$pport" --initial-cluster "b=http://127.0.0.1:$pport" \
  >"$work/etcd.log" 2>&1 &
pids+=($!)
endpoint="http://127.0.0.1:$cport"
sleep 2
declare -A member_pid
i=0
for n in a1 a2 b1 b2; do
  i=$((i + 1))
  gp=$(port); mp=$(port)
  sed -e "s|127.0.0.1:730$i|127.0.0.1:$gp|" -e "s|127.0.0.1:940$i|127.0.0.1:$mp|" \
      -e "s|\"data/$n\"|\"$work/$n\"|" -e "s|http://127.0.0.1:2379|$endpoint|" \
      "$root/examples/sharded/$n.toml" > "$work/$n.toml"
  printf 'controller = false\n' >> "$work/$n.toml"
  "$bin" serve --config "$work/$n.toml" >"$work/$n.log" 2>&1 &
  member_pid[$n]=$!
  pids+=($!)
done
sleep 4
"$bin" cluster ranges init --etcd "$endpoint" --cluster shards --group g1 >/dev/null
"$bin" cluster ranges split --etcd "$endpoint" --cluster shards --at k8 >/dev/null
tck=$(getconf CLK_TCK)
cpu() { local t=0; for n in "$@"; do read -r -a f < "/proc/${member_pid[$n]}/stat"; t=$((t + f[13] + f[14])); done; echo "$t"; }
run() { # label groups
  local g1a g2a g1b g2b out client
  g1a=$(cpu a1 a2); g2a=$(cpu b1 b2)
  out=$(/usr/bin/time -f "CLIENT %U %S" "$bin" bench --etcd "$endpoint" --cluster shards \
        --workload overwrite --num "$num" --threads "$threads" --value-size 100 2>&1 | grep -v '^  ')
  g1b=$(cpu a1 a2); g2b=$(cpu b1 b2)
  client=$(echo "$out" | awk '/^CLIENT/ {print $2 + $3}')
  ops=$(echo "$out" | sed -n 's/.*= \([0-9]*\) ops\/s.*/\1/p')
  p99=$(echo "$out" | sed -n 's/.*p99 \([0-9]*\) µs.*/\1/p')
  awk -v l="$1" -v ops="$ops" -v p99="$p99" -v n="$num" -v t="$tck" -v c="$client" \
      -v g1=$((g1b - g1a)) -v g2=$((g2b - g2a)) 'BEGIN {
    k = n / 1000;
    printf "%-10s %8d writes/s  p99 %6d us  CPU s per 1000 writes: g1 %.3f  g2 %.3f  client %.3f  all %.3f\n",
      l, ops, p99, g1 / t / k, g2 / t / k, c / k, (g1 + g2) / t / k + c / k }'
}
for r in $(seq 1 "$rounds"); do
  echo "round $r"
  run "1 group" 1
  "$bin" cluster move --etcd "$endpoint" --cluster shards --start k8 --to g2 >/dev/null 2>&1
  run "2 groups" 2
  "$bin" cluster move --etcd "$endpoint" --cluster shards --start k8 --to g1 >/dev/null 2>&1
done
