import json, sys, time
import numpy as np
sys.path.insert(0, "/work/main")
from edgeprune import model_io, data, _tf
from edgeprune.resources import example_inputs
from edgeprune.pruning import prune_structured
from edgeprune.pruning.batchnorm import bn_sample, recalibrate_bn
from edgeprune.stages.finetune import compile_for_training, seed_everything, PATIENCE

ex = example_inputs()
model = model_io.load_model(ex["model"])
train = data.load_labelled(ex["data"], "--data")
val = data.load_labelled(ex["val"], "--val")
J = json.load(open("/tmp/exp/allocs.json"))
GIDS, ALLOCS = J["groups"], [(tuple(a), l) for a, l in J["allocs"]]
SIZES = dict(zip(GIDS, ALLOCS[0][0]))

def prune(alloc, seed=0):
    sp = {gid: (SIZES[gid] - k) / SIZES[gid] for gid, k in zip(GIDS, alloc) if k != SIZES[gid]}
    m = prune_structured(model, sparsity=sp, criterion="l1", channel_multiple=8).model
    recalibrate_bn(m, bn_sample(data.fit_split(train, seed)[0].x, seed))
    return m

def evaluate(m, d):
    out = np.asarray(m.predict(d.x, batch_size=256, verbose=0)).reshape(len(d.x), -1)
    p = np.clip(out[np.arange(len(d.y)), d.y], 1e-7, 1)
    return float(np.mean(out.argmax(1) == d.y)), float(-np.mean(np.log(p)))

def finetune(m, seed, epochs=10, lr=1e-3):
    keras = _tf.keras()
    seed_everything(seed)
    compile_for_training(m, lr)
    tr, mon = data.fit_split(train, seed)
    cb = [keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=PATIENCE, restore_best_weights=True)]
    h = m.fit(tr.x, tr.y, batch_size=32, epochs=epochs, validation_data=(mon.x, mon.y), callbacks=cb, shuffle=True, verbose=0)
    recalibrate_bn(m, bn_sample(tr.x, seed))
    return len(h.history["loss"])

def maximal(budget):
    """Allocations within budget that cannot widen any group by one step and stay within."""
    ok = {a: l for a, l in ALLOCS if l <= budget}
    out = []
    for a in ok:
        grow = False
        for i in range(len(a)):
            b = list(a); b[i] += 8 if SIZES[GIDS[i]] - a[i] >= 8 else 0
            if tuple(b) != a and tuple(b) in ok: grow = True; break
        if not grow: out.append((a, ok[a]))
    return out
