import sys, statistics as st, collections
d=collections.defaultdict(list); lat=collections.defaultdict(list)
for line in open(sys.argv[1]):
    p=line.split()
    if len(p)==3 and p[1].isdigit():
        d[p[0]].append(int(p[1])); lat[p[0]].append(int(p[2]))
for k in d: print(f"{k:26s} median {st.median(d[k]):>9,.0f}  runs {d[k]}  p50 µs {lat[k]}")
m={k:st.median(v) for k,v in d.items()}; l={k:st.median(v) for k,v in lat.items()}
def r(a,b): return f"{m[a]/m[b]:.2f}x" if a in m and b in m else "-"
print("puts P1 vs AOF", r("strata-put-P1","redis-aof-SET-P1"), "| gets P1", r("strata-get-P1","redis-aof-GET-P1"))
print("puts P16 vs AOF", r("strata-put-P16","redis-aof-SET-P16"), "| gets P16", r("strata-get-P16","redis-aof-GET-P16"))
print("gets P16 vs nopersist", r("strata-get-P16","redis-nopersist-GET-P16"), "puts P16 vs nopersist", r("strata-put-P16","redis-nopersist-SET-P16"))
print("p50 get strata/redis", f"{l['strata-get-P1']/l['redis-aof-GET-P1']:.2f}x")
print("replica/primary P1", r("replica-get-P1","upstream-get-P1"), "P16", r("replica-get-P16","upstream-get-P16"))
print("tls/plain put P1", r("tls-put-P1","plain-put-P1"), "get P1", r("tls-get-P1","plain-get-P1"), "get P16", r("tls-get-P16","plain-get-P16"))
