import os, random
from common import *
import tensorflow as tf
shard, nshard = int(sys.argv[1]), int(sys.argv[2])
jobs = []
for b in (0.0827, 0.0776):
    jobs += [(b, a) for a, _ in maximal(b)]
mx = maximal(0.1308); random.Random(0).shuffle(mx)
uni50 = (16, 16, 48, 88, 88)
jobs += [(0.1308, a) for a in [uni50] + [a for a, _ in mx if a != uni50][:23]]
fit, score = data.fit_split(data.fit_split(train, 0)[0], 1)
out = open(f"/tmp/exp/grid{shard}.jsonl", "a")
for i, (b, a) in enumerate(jobs):
    if i % nshard != shard: continue
    row = {"budget": b, "alloc": a}
    m = prune(a)
    row["proxy_score"] = evaluate(m, score); row["proxy_val"] = evaluate(m, val)
    for seed in (0, 1):
        m = prune(a, seed)
        row[f"epochs{seed}"] = finetune(m, seed)
        row[f"val{seed}"] = evaluate(m, val)
    out.write(json.dumps(row) + "\n"); out.flush()
