#!/bin/bash
# Starts what the serving benchmark (docs/benchmarks.md, "Serving: a node
# beside Redis") compares, under $S (default /tmp/s14), all on 127.0.0.1:
# Redis with the AOF synced every second (6390) and without persistence
# (6391); Strata primaries 7401 (alone), 7403 (TLS), 7404 (one runtime
# thread) and 7405 with its replica 7402. $B is the strata binary.
set -e
B=${B:-target/release/strata}
S=${S:-/tmp/s14}
mkdir -p $S/data $S/redis-aof
node() { # name port metrics_port [extra]
  printf 'role = "primary"\ndata_dir = "%s/data/%s"\nlisten = "127.0.0.1:%s"\nmetrics_listen = "127.0.0.1:%s"\n%b' \
    $S $1 $2 $3 "${4:-}" > $S/$1.toml
}
node primary 7401 9401
node upstream 7405 9405
node one 7404 9404 '\n[limits]\nruntime_threads = 1\n'
$B certs --out $S/certs --names primary >/dev/null
node tls 7403 9403 "\n[tls]\ncert = \"$S/certs/primary.pem\"\nkey = \"$S/certs/primary.key\"\n"
printf 'role = "replica"\ndata_dir = "%s/data/replica"\nlisten = "127.0.0.1:7402"\nmetrics_listen = "127.0.0.1:9402"\n\n[replica]\nupstream = "http://127.0.0.1:7405"\nid = "replica-1"\n' $S > $S/replica.toml
redis-server --port 6390 --save '' --appendonly yes --appendfsync everysec --dir $S/redis-aof --daemonize yes --logfile $S/redis-aof.log
redis-server --port 6391 --save '' --appendonly no --daemonize yes --logfile $S/redis-none.log
for n in primary upstream one tls; do
  $B serve --config $S/$n.toml > $S/$n.log 2>&1 & echo $! > $S/$n.pid
done
sleep 1
$B serve --config $S/replica.toml > $S/replica.log 2>&1 & echo $! > $S/replica.pid
sleep 1
for port in 7401 7404 7405; do
  $B bench --node 127.0.0.1:$port --workload fillrandom --num 400000 --threads 8 --pipeline 16 >/dev/null 2>&1
done
$B bench --node 127.0.0.1:7403 --ca $S/certs/ca.pem --server-name primary --workload fillrandom --num 400000 --threads 8 --pipeline 16 >/dev/null 2>&1
# Redis's keys: most of the 1,000,000 that redis-benchmark -r draws from,
# so that its GETs find values as Strata's readrandom does.
for port in 6390 6391; do
  redis-benchmark -p $port -t set -n 2000000 -r 1000000 -d 100 -c 8 -P 16 -q >/dev/null
done
