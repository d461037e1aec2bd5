#!/bin/bash
# The targets, 8 clients, three interleaved rounds: each Strata
# figure right before/after its Redis one. Prints "label ops/s p50_us".
B=${B:-target/release/strata}
S=${S:-/tmp/s14}
st() { local label=$1; shift; $B bench "$@" --threads 8 --value-size 100 2>/dev/null | tail -1 | sed -E "s/.* = ([0-9]+) ops\/s; latency p50 ([0-9]+) µs.*/$label \1 \2/"; }
rd() { redis-benchmark -p $2 -t $3 -c 8 -P $4 -n $5 -d 100 -r 1000000 --csv | tail -1 | awk -F'"' -v l="$1" '{printf "%s %d %d\n", l, $4, $10*1000}'; }
echo "load before: $(cat /proc/loadavg)"
for round in 1 2 3; do
  st "strata-put-P1" --node 127.0.0.1:7401 --workload overwrite --num 60000
  rd "redis-aof-SET-P1" 6390 set 1 60000
  st "strata-get-P1" --node 127.0.0.1:7401 --workload readrandom --num 60000
  rd "redis-aof-GET-P1" 6390 get 1 60000
  st "strata-put-P16" --node 127.0.0.1:7401 --workload overwrite --num 400000 --pipeline 16
  rd "redis-aof-SET-P16" 6390 set 16 400000
  st "strata-get-P16" --node 127.0.0.1:7401 --workload readrandom --num 400000 --pipeline 16
  rd "redis-aof-GET-P16" 6390 get 16 400000
  rd "redis-nopersist-SET-P1" 6391 set 1 60000
  rd "redis-nopersist-GET-P1" 6391 get 1 60000
  rd "redis-nopersist-SET-P16" 6391 set 16 400000
  rd "redis-nopersist-GET-P16" 6391 get 16 400000
  st "upstream-get-P1" --node 127.0.0.1:7405 --workload readrandom --num 60000
  st "replica-get-P1" --node 127.0.0.1:7402 --workload readrandom --num 60000
  st "upstream-get-P16" --node 127.0.0.1:7405 --workload readrandom --num 400000 --pipeline 16
  st "replica-get-P16" --node 127.0.0.1:7402 --workload readrandom --num 400000 --pipeline 16
  st "plain-put-P1" --node 127.0.0.1:7401 --workload overwrite --num 60000
  st "tls-put-P1" --node 127.0.0.1:7403 --ca $S/certs/ca.pem --server-name primary --workload overwrite --num 60000
  st "plain-get-P1" --node 127.0.0.1:7401 --workload readrandom --num 60000
  st "tls-get-P1" --node 127.0.0.1:7403 --ca $S/certs/ca.pem --server-name primary --workload readrandom --num 60000
  st "plain-get-P16" --node 127.0.0.1:7401 --workload readrandom --num 400000 --pipeline 16
  st "tls-get-P16" --node 127.0.0.1:7403 --ca $S/certs/ca.pem --server-name primary --workload readrandom --num 400000 --pipeline 16
done
echo "load after: $(cat /proc/loadavg)"
