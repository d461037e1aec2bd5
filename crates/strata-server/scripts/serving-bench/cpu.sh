#!/bin/bash
# CPU time per operation of server and client (perf stat task-clock over
# the whole run), for Strata and Redis: robust to other load on the machine.
B=${B:-target/release/strata}
NODE=${NODEPID:-$(cat ${S:-/tmp/s14}/primary.pid)}; RP=$(pgrep -f "redis-server.*:6390")
measure() { # label server_pid n cmd...
  local label=$1 spid=$2 n=$3; shift 3
  perf stat -x, -e task-clock -p $spid -o ${S:-/tmp/s14}/srv.stat &
  local sp=$!
  sleep 0.2
  perf stat -x, -e task-clock -o ${S:-/tmp/s14}/cli.stat "$@" > ${S:-/tmp/s14}/cmd.out 2>/dev/null
  kill -INT $sp; wait $sp 2>/dev/null
  local s=$(grep task-clock ${S:-/tmp/s14}/srv.stat | cut -d, -f1) c=$(grep task-clock ${S:-/tmp/s14}/cli.stat | cut -d, -f1)
  printf "%-28s server %6.1f µs/op  client %6.1f µs/op  | %s\n" "$label" $(echo "$s*1000/$n" | bc -l) $(echo "$c*1000/$n" | bc -l) "$(tail -1 ${S:-/tmp/s14}/cmd.out | cut -c1-90)"
}
for p in 1 16; do n=$((p==1 ? 60000 : 400000))
measure "strata get c=8 P=$p" $NODE $n $B bench --node 127.0.0.1:${PORT:-7401} --workload readrandom --num $n --threads 8 --pipeline $p
measure "redis GET c=8 P=$p" $RP $n redis-benchmark -p 6390 -t get -c 8 -P $p -n $n -d 100 -r 1000000 --csv
measure "strata put c=8 P=$p" $NODE $n $B bench --node 127.0.0.1:${PORT:-7401} --workload overwrite --num $n --threads 8 --pipeline $p
measure "redis SET c=8 P=$p" $RP $n redis-benchmark -p 6390 -t set -c 8 -P $p -n $n -d 100 -r 1000000 --csv
done
