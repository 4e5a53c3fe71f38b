"""Does a short fine-tune rank auto's allocation against uniform's like the full fine-tune does?

    nice -n 10 .venv/bin/python bench/proxy_vs_finetune.py

A diagnostic for bench/auto_search_mnist.md. There, at cortex-m7's 40 % level, the
refinement's proxy (loss after a one-shot l1 cut and batch-norm re-estimation, no training)
rated auto's allocation of channels far above uniform's, yet after the build's 10-epoch
fine-tune uniform was more accurate on every seed. This takes the two allocations from that
level's seed-0 builds (bench/auto_search_mnist.json), cuts the mnist example to both the same
way and measures, on examples/mnist/val.npz, the loss and accuracy after the cut (the proxy),
and after short fine-tunes of 0.5 and 2 epochs (Adam 1e-3, batch 32, seeds 0-2; auto's search
gave its kept model about 0.5). Writes bench/proxy_vs_finetune.{json,md}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from edgeprune.training import accuracy_and_loss

REPO = Path(__file__).resolve().parents[1]
BUILDS = json.loads((REPO / "bench" / "auto_search_mnist.json").read_text())
LEVEL = "cortex-m7/40"
CONVS = [f"conv{i}_conv" for i in range(1, 6)]  # channel groups 0-4 of the mnist example
EPOCHS = (0.5, 2.0)
SEEDS = (0, 1, 2)


def main() -> int:
    from edgeprune import data, model_io
    from edgeprune.pruning import prune_structured
    from edgeprune.pruning.batchnorm import recalibrate_bn
    from edgeprune.training import compile_for_training, seed_everything

    ex = REPO / "examples" / "mnist"
    train = data.load_labelled(ex / "train.npz", "--data")
    val = data.load_labelled(ex / "val.npz", "--val")
    dense = model_io.load_model(ex / "model.keras")
    widths = [dense.get_layer(c).filters for c in CONVS]
    allocations = {name: [BUILDS[f"{name}/{LEVEL}/0"]["layers"][c] for c in CONVS]
                   for name in ("auto", "uniform")}
    rows = []
    for name, kept in allocations.items():
        for seed in SEEDS:
            model = prune_structured(
                model_io.load_model(ex / "model.keras"), channel_multiple=4,
                sparsity={g: (w - k) / w
                          for g, (w, k) in enumerate(zip(widths, kept, strict=True)) if k < w},
            ).model
            recalibrate_bn(model, train.x[:512])
            row = {"allocation": name, "seed": seed, "cut": accuracy_and_loss(model, val.x, val.y)}
            seed_everything(seed)
            compile_for_training(model, 1e-3)
            rng = np.random.default_rng(seed)
            # One shuffled stream of samples; each fine-tune continues where the last stopped.
            stream = np.concatenate([rng.permutation(len(train.y))
                                     for _ in range(int(np.ceil(max(EPOCHS))))])
            done = 0
            for epochs in EPOCHS:
                order = stream[done:int(epochs * len(train.y))]
                model.fit(train.x[order], train.y[order], batch_size=32, epochs=1,
                          shuffle=False, verbose=0)
                recalibrate_bn(model, train.x[:512])
                row[f"{epochs:g} ep"] = accuracy_and_loss(model, val.x, val.y)
                done += len(order)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    (REPO / "bench" / "proxy_vs_finetune.json").write_text(json.dumps(rows, indent=1) + "\n")
    cols = ["cut", *(f"{e:g} ep" for e in EPOCHS)]
    full = {name: np.mean([r["accuracy"] for k, r in BUILDS.items()
                           if k.startswith(f"{name}/{LEVEL}/")]) * 100
            for name in allocations}
    lines = ["# Proxy and short fine-tunes against the full fine-tune (mnist, cortex-m7 40 %)", "",
             "Command: `nice -n 10 .venv/bin/python bench/proxy_vs_finetune.py` (see its "
             "docstring). Accuracy / cross-entropy on examples/mnist/val.npz (float model), "
             "mean of seeds 0-2 (the cut is deterministic). Allocations: the seed-0 builds of "
             "bench/auto_search_mnist.json at that level. After the 10-epoch fine-tune of its "
             f"builds (int8, seeds 0-2): auto {full['auto']:.2f} %, uniform "
             f"{full['uniform']:.2f} %.", "",
             "| allocation (conv1..conv5) | " + " | ".join(cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name, kept in allocations.items():
        mine = [r for r in rows if r["allocation"] == name]
        cells = [f"{np.mean([r[c][0] for r in mine]) * 100:.2f} % / "
                 f"{np.mean([r[c][1] for r in mine]):.3f}" for c in cols]
        lines.append(f"| {name} {'/'.join(map(str, kept))} | " + " | ".join(cells) + " |")
    (REPO / "bench" / "proxy_vs_finetune.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
