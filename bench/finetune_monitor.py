"""What does the fine-tune's early-stopping monitor read, epoch by epoch (mnist)?

    nice -n 10 .venv/bin/python bench/finetune_monitor.py      # `… md` rewrites the md

A diagnostic for bench/early_stopping.md, where early stopping cost every mnist run 0.2-0.3
points. The fine-tune stage early-stops on ``val_accuracy``, which Keras measures on the
monitor split with the batch norms' *moving* statistics (momentum 0.99), while the shipped
model has its statistics re-estimated after training (pruning/batchnorm.py). This re-runs the
fine-tune stage for all 10 epochs (no early stopping) from the same cached cortex-m7 40 %
pruned models as bench/early_stopping.py (seeds 0-2, auto and uniform), and after every epoch
records: the monitor accuracy Keras reports; the monitor accuracy and loss of a copy with its
statistics re-estimated as the shipped model's are; and that model's accuracy on val.npz (for
this diagnostic only; nothing is chosen on it). Writes bench/finetune_monitor.{json,md}.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from early_stopping import RUNS, SEEDS, _pruned

from edgeprune.training import accuracy_and_loss

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "finetune_monitor"


def _recorder(monitor, val, bn_x, rows: list[dict]):
    """A Keras callback in place of EarlyStopping: records each epoch, never stops."""
    from edgeprune import _tf
    from edgeprune.pruning.batchnorm import recalibrated

    class Record(_tf.keras().callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            with recalibrated(self.model, bn_x):  # scored as shipped, moving stats put back
                m_acc, m_loss = accuracy_and_loss(self.model, monitor.x, monitor.y)
                v_acc, _ = accuracy_and_loss(self.model, val.x, val.y)
            rows.append({"epoch": epoch + 1, "keras_monitor_accuracy": logs["val_accuracy"],
                         "keras_monitor_loss": logs["val_loss"],
                         "recalibrated_monitor_accuracy": m_acc,
                         "recalibrated_monitor_loss": m_loss, "val_accuracy": v_acc})

    return Record()


def _argmax(curve: list[dict], key: str, lower: bool = False) -> int:
    values = [r[key] for r in curve]
    best = min(values) if lower else max(values)
    return values.index(best)  # the first best epoch, as EarlyStopping keeps it


def write_md(runs: list[dict]) -> None:
    lines = ["# The fine-tune's early-stopping monitor, epoch by epoch (mnist, cortex-m7 40 %)",
             "", "Command: `nice -n 10 .venv/bin/python bench/finetune_monitor.py` (see its "
             "docstring), run at 5d88196 (the fine-tune stage as at 4c6e74b; the recorder "
             "takes its early stopping's place). 10 epochs, Adam 1e-3, no early stopping, from "
             "the cached pruned models of bench/early_stopping.py. Per epoch: monitor-split "
             "accuracy as Keras reports it (moving BN statistics) / the same split after "
             "re-estimating the statistics (as the shipped model's are) / val.npz accuracy of "
             "that model (5,000 samples; for this diagnostic only).", "",
             "| run | " + " | ".join(f"epoch {e}" for e in range(1, 11)) + " |",
             "|---|" + "---|" * 10]
    for run in runs:
        lines.append(f"| {run['model']} seed {run['seed']} | " + " | ".join(
            f"{r['keras_monitor_accuracy']:.1%} / {r['recalibrated_monitor_accuracy']:.1%} / "
            f"{r['val_accuracy']:.2%}" for r in run["curve"]) + " |")
    spread = {key: ([r[key] for run in runs for r in run["curve"]],
                    [np.std([r[key] for r in run["curve"]]) for run in runs])
              for key in ("keras_monitor_accuracy", "recalibrated_monitor_accuracy")}
    lines += [""] + [
        f"- {what}: {min(values):.1%}-{max(values):.1%} over every epoch of every run; per "
        f"run, standard deviation {min(stds) * 100:.2f}-{max(stds) * 100:.2f} points."
        for what, (values, stds) in zip(
            ("Monitor accuracy as Keras reports it", "With re-estimated statistics"),
            spread.values(), strict=True)]
    lines += ["", "The epoch each monitor rates best over all 10 (first on ties; the recipe's "
              "early stopping, patience 3, may stop before reaching it: "
              "bench/early_stopping.md has what it kept), and that epoch's val.npz accuracy:",
              "", "| run | best by Keras val_accuracy | best by recalibrated accuracy | best by "
              "recalibrated loss | last epoch |", "|---|---|---|---|---|"]
    gains = {k: [] for k in ("keras", "acc", "loss", "last")}
    for run in runs:
        c = run["curve"]
        picks = {"keras": _argmax(c, "keras_monitor_accuracy"),
                 "acc": _argmax(c, "recalibrated_monitor_accuracy"),
                 "loss": _argmax(c, "recalibrated_monitor_loss", lower=True),
                 "last": len(c) - 1}
        for k, i in picks.items():
            gains[k].append(c[i]["val_accuracy"])
        lines.append(f"| {run['model']} seed {run['seed']} | " + " | ".join(
            f"epoch {i + 1}: {c[i]['val_accuracy']:.2%}" for i in picks.values()) + " |")
    lines.append("| mean | " + " | ".join(f"{np.mean(v):.2%}" for v in gains.values()) + " |")
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> int:
    if sys.argv[1:] == ["md"]:
        write_md(json.loads(OUT.with_suffix(".json").read_text()))
        return 0
    from edgeprune import _tf, data
    from edgeprune.data import fit_split
    from edgeprune.pruning.batchnorm import bn_sample
    from edgeprune.recipe import Recipe
    from edgeprune.stages import finetune

    logging.basicConfig(level=logging.WARNING)
    ex = REPO / "examples" / "mnist"
    train = data.load_labelled(ex / "train.npz", "--data")
    val = data.load_labelled(ex / "val.npz", "--val")
    inputs = data.Inputs(train=train, val=val, calib=None)
    callbacks = _tf.keras().callbacks
    stopper = callbacks.EarlyStopping
    runs = []
    try:
        for seed in SEEDS:
            fit, monitor = fit_split(train, seed)
            for name, run in RUNS.items():
                curve: list[dict] = []
                record = _recorder(monitor, val, bn_sample(fit.x, seed), curve)
                callbacks.EarlyStopping = lambda record=record, **_: record
                finetune.run(_pruned(run.format(seed)), inputs, Recipe(epochs=10, seed=seed),
                             None)
                runs.append({"model": name, "seed": seed, "curve": curve})
                print(json.dumps(runs[-1]), flush=True)
    finally:
        callbacks.EarlyStopping = stopper
    OUT.with_suffix(".json").write_text(json.dumps(runs, indent=1) + "\n")
    write_md(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
