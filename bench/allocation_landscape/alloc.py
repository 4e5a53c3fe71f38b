"""Experiment: does any allocation beat uniform at equal estimated rpi4 latency?"""
import itertools, json, sys, time
import numpy as np
sys.path.insert(0, "/work/main")
from edgeprune import model_io, data
from edgeprune.resources import example_inputs
from edgeprune.pruning import layer_stats, prune_structured
from edgeprune.search.anchor import AnchoredCostModel
from edgeprune.pruning.graph import build_graph
from edgeprune.search.refine import widths as group_widths
from edgeprune.pruning.batchnorm import bn_sample, recalibrate_bn
from edgeprune.stages.convert import to_tflite
from edgeprune.targets import load_target

ex = example_inputs()
model = model_io.load_model(ex["model"])
train = data.load_labelled(ex["data"], "--data")
val = data.load_labelled(ex["val"], "--val") if "val" in ex else None
calib = np.load(ex["calib"])["x"]
prof = load_target("rpi4")
dense = to_tflite(model, "int8", calib[:50], prof)
cm = AnchoredCostModel(dense, prof, {r["name"]: r["out_channels"] for r in layer_stats(model)})
g = build_graph(model)
groups = g.prunable_groups()
print([(x.id, x.layers, x.size, x.n_prunable) for x in groups])
t = time.time()
widths = [group_widths(x, 8) for x in groups]
allocs = []
for combo in itertools.product(*widths):
    kept = {x.id: k for x, k in zip(groups, combo) if k != x.size}
    lat = cm.predict(g.layer_channels(kept)).latency_ms
    allocs.append((combo, lat))
print(len(allocs), "allocs priced in", time.time() - t)
json.dump({"groups": [x.id for x in groups], "allocs": allocs}, open("/tmp/exp/allocs.json", "w"))
