"""Does the fine-tune's early stopping decide auto against uniform on mnist?

    nice -n 10 .venv/bin/python bench/early_stopping.py

A diagnostic for bench/auto_search_mnist.md. There, at cortex-m7's 40 % level, auto's model
was behind uniform's on every seed; and at 60 %, where a variant of the search with a final
round (bench/auto_search_mnist_final_round.md) kept the uniform allocation itself, the auto
build still ended below the uniform build of the same seed. Both
builds fine-tune with early stopping on the monitor split's accuracy (patience 3, best weights
restored); auto's model arrives already trained by the search, so its monitor accuracy may
peak, and stop the fine-tune, sooner. This re-runs the fine-tune stage (edgeprune's own, 10
epochs, Adam 1e-3, seeds 0-2) from the pruned models those builds cached in
build/bench-auto/ (the runs at 2c96c3a; a later build with the same recipe does not replace a
cache entry. auto: the search's output; uniform: the l1 cut), once as the recipe runs it and
once without early stopping (all 10 epochs, the last epoch's weights), and measures the
float model on examples/mnist/val.npz. Writes bench/early_stopping.{json,md}.

    … early_stopping.py recipe    # re-run only the current recipe's rows (after a change to it)
    … early_stopping.py md        # rewrite the md from the JSON

Rows are labelled by the early stopping they ran with: ``off``; ``val_accuracy``, the recipe
until 4c6e74b (Keras' monitor accuracy, moving batch-norm statistics); ``shipped loss``, the
recipe since (the monitor loss with re-estimated statistics; bench/finetune_monitor.md).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np

from edgeprune.stages.finetune import accuracy_and_loss

REPO = Path(__file__).resolve().parents[1]
BUILDS = REPO / "build" / "bench-auto"
SEEDS = (0, 1, 2)
CURRENT = "shipped loss"  # the recipe's early stopping now (see the docstring)
LABELS = ("val_accuracy", CURRENT, "off")  # the md's order
RESULTS = REPO / "bench" / "early_stopping.json"
RUNS = {"auto": "mnist-cortex-m7-u40pct-epochs10-pruneauto-search_minutes30.0-seed{}",
        "uniform": "mnist-cortex-m7-u40pct-epochs10-prunestructured-seed{}-sparsity0.36"}


class _Epochs(logging.Handler):
    """Counts the epochs the fine-tune ran (its INFO line says how many)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("fine-tuned "):
            self.ran = int(record.getMessage().split()[1])


def _no_stop(**_: object):
    """In place of EarlyStopping: every epoch runs and the last epoch's weights are kept (the
    recipe's callback restores the best monitor epoch's weights even when it never stops)."""
    from edgeprune import _tf

    return _tf.keras().callbacks.Callback()


def _pruned(run: str):
    """The prune stage's output as the build cached it, loaded as ``--resume`` loads it."""
    from edgeprune.stage_cache import CACHE_DIR, StageCache

    folder = next((BUILDS / run / CACHE_DIR).glob("*/prune-*"))
    return StageCache(folder.parent, read=True, seed=0).load_pruned(folder)


def write_md(rows: list[dict]) -> None:
    labels = [label for label in LABELS if any(r["early_stopping"] == label for r in rows)]

    def mean(name: str, stopping: str) -> float:
        return float(np.mean([r["accuracy"] for r in rows
                              if r["model"] == name and r["early_stopping"] == stopping]))

    lines = ["# Early stopping and auto against uniform (mnist, cortex-m7 40 %)", "",
             "Command: `nice -n 10 .venv/bin/python bench/early_stopping.py` (see its "
             "docstring; `val_accuracy` and `off` rows ran at 4c6e74b's code, `shipped loss` rows "
             "with `… early_stopping.py recipe` at aca555b). Float "
             "accuracy on examples/mnist/val.npz (5,000 samples) after the fine-tune stage "
             "(10 epochs, Adam 1e-3), per seed; epochs run in brackets (early stopping "
             "restores the best monitor epoch's weights). Early stopping: `val_accuracy`, "
             "Keras' monitor-split accuracy (moving batch-norm statistics; the recipe until "
             "4c6e74b); `shipped loss`, the monitor-split loss with re-estimated statistics, as "
             "the shipped model is scored (the recipe since); `off`, all epochs, the last "
             "epoch's weights.", "",
             "| model | early stopping | seed 0 | seed 1 | seed 2 | mean |",
             "|---|---|---|---|---|---|"]
    for name in RUNS:
        for stopping in labels:
            got = [r for r in rows if r["model"] == name and r["early_stopping"] == stopping]
            lines.append(f"| {name} | {stopping} | " + " | ".join(
                f"{r['accuracy']:.2%} ({r['epochs_run']})" for r in got)
                + f" | {mean(name, stopping):.2%} |")
    lines.append("")
    for stopping in labels:
        vs_off = "" if stopping == "off" else (
            f"; against `off`: auto {(mean('auto', stopping) - mean('auto', 'off')) * 100:+.2f}"
            f", uniform {(mean('uniform', stopping) - mean('uniform', 'off')) * 100:+.2f}")
        lines.append(f"- `{stopping}`: auto − uniform "
                     f"{(mean('auto', stopping) - mean('uniform', stopping)) * 100:+.2f} points"
                     f"{vs_off}.")
    (REPO / "bench" / "early_stopping.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    if sys.argv[1:] == ["md"]:
        write_md(json.loads(RESULTS.read_text()))
        return 0
    from edgeprune import _tf, data
    from edgeprune.recipe import Recipe
    from edgeprune.stages import finetune

    logging.basicConfig(level=logging.WARNING)
    counter = _Epochs()
    logging.getLogger("edgeprune.stages.finetune").addHandler(counter)
    logging.getLogger("edgeprune.stages.finetune").setLevel(logging.INFO)
    ex = REPO / "examples" / "mnist"
    train = data.load_labelled(ex / "train.npz", "--data")
    val = data.load_labelled(ex / "val.npz", "--val")
    inputs = data.Inputs(train=train, val=val, calib=None)
    callbacks = _tf.keras().callbacks
    stoppers = {CURRENT: callbacks.EarlyStopping, "off": _no_stop}
    if sys.argv[1:] == ["recipe"]:
        del stoppers["off"]
    rows = [r for r in (json.loads(RESULTS.read_text()) if RESULTS.is_file() else [])
            if r["early_stopping"] not in stoppers]
    try:
        for seed in SEEDS:
            for name, run in RUNS.items():
                for stopping, stopper in stoppers.items():
                    callbacks.EarlyStopping = stopper
                    pruned = _pruned(run.format(seed))
                    model = finetune.run(pruned, inputs, Recipe(epochs=10, seed=seed), None)
                    acc, loss = accuracy_and_loss(model, val.x, val.y)
                    rows.append({"model": name, "seed": seed, "early_stopping": stopping,
                                 "epochs_run": counter.ran, "accuracy": acc, "loss": loss})
                    print(json.dumps(rows[-1]), flush=True)
    finally:
        callbacks.EarlyStopping = stoppers[CURRENT]
    rows.sort(key=lambda r: (LABELS.index(r["early_stopping"]), r["model"], r["seed"]))
    RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
    write_md(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
