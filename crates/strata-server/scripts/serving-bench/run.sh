#!/bin/bash
# One run of the serving benchmark: Strata (strata bench --node) beside
# redis-benchmark, each pair back to back. Prints one line per measurement.
B=${B:-target/release/strata}
S=${S:-/tmp/s14}
strata() { # label node extra...
  local label=$1; shift
  local out=$($B bench "$@" --value-size 100 2>/dev/null | tail -1)
  echo "$label | $out"
}
redis() { # label port test clients pipeline n
  local out=$(redis-benchmark -p $2 -t $3 -c $4 -P $5 -n $6 -d 100 -r 1000000 --csv | tail -1)
  echo "$1 | $out"
}
echo "load before: $(cat /proc/loadavg)"
for c in 1 8 64; do
  for p in 1 16; do
    if [ $p = 1 ]; then n=$((c==1 ? 20000 : 60000)); else n=$((c==1 ? 100000 : 400000)); fi
    strata "strata put c=$c P=$p" --node 127.0.0.1:7401 --workload overwrite --num $n --threads $c --pipeline $p
    redis "redis-aof SET c=$c P=$p" 6390 set $c $p $n
    redis "redis-nopersist SET c=$c P=$p" 6391 set $c $p $n
    strata "strata get c=$c P=$p" --node 127.0.0.1:7401 --workload readrandom --num $n --threads $c --pipeline $p
    redis "redis-aof GET c=$c P=$p" 6390 get $c $p $n
    redis "redis-nopersist GET c=$c P=$p" 6391 get $c $p $n
    strata "strata upstream get c=$c P=$p" --node 127.0.0.1:7405 --workload readrandom --num $n --threads $c --pipeline $p
    strata "strata replica get c=$c P=$p" --node 127.0.0.1:7402 --workload readrandom --num $n --threads $c --pipeline $p
    strata "strata get again c=$c P=$p" --node 127.0.0.1:7401 --workload readrandom --num $n --threads $c --pipeline $p
    strata "strata tls put c=$c P=$p" --node 127.0.0.1:7403 --ca $S/certs/ca.pem --server-name primary --workload overwrite --num $n --threads $c --pipeline $p
    strata "strata tls get c=$c P=$p" --node 127.0.0.1:7403 --ca $S/certs/ca.pem --server-name primary --workload readrandom --num $n --threads $c --pipeline $p
  done
done
echo "load after: $(cat /proc/loadavg)"
