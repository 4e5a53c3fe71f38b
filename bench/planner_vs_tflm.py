"""Greedy-planner arena estimate vs the arena TFLite-Micro really needs, on the bundled example
and its structurally pruned variants (int8, int8 I/O as on Cortex-M).

    .venv/bin/python bench/planner_vs_tflm.py   (writes bench/planner_vs_tflm.md)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgeprune.converter import to_tflite
from edgeprune.model_io import load_model
from edgeprune.pruning import prune_structured
from edgeprune.resources import example_inputs
from edgeprune.runners.tflm import measure_arena
from edgeprune.targets import load_target
from edgeprune.tflite.graph import parse_tflite
from edgeprune.tflite.planner import plan_arena


def main() -> None:
    ex = example_inputs()
    model = load_model(ex["model"])
    calib = np.load(ex["calib"])["x"][:100]
    target = load_target("cortex-m4")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for sparsity in (0.0, 0.25, 0.5, 0.75):
            variant = model if sparsity == 0 else prune_structured(
                model, sparsity=sparsity, channel_multiple=4).model
            blob = to_tflite(variant, "int8", calib, target)
            path = Path(tmp) / f"m{sparsity}.tflite"
            path.write_bytes(blob)
            planned = plan_arena(parse_tflite(blob)).arena_bytes
            measured = measure_arena(path).min_bytes
            rows.append((sparsity, len(blob), planned, measured, (planned - measured) / measured))
    lines = [
        "# Greedy planner vs measured TFLite-Micro arena (bundled example, int8)",
        "",
        "Command: `.venv/bin/python bench/planner_vs_tflm.py`. Variants: structured pruning "
        "(l1, uniform, channel_multiple 4) at the given ratio, no fine-tuning (the arena "
        "depends on shapes, not weights). Measured = smallest arena that allocates and invokes "
        "in the tflite-micro interpreter (method tflm).",
        "",
        "| channels removed | .tflite bytes | planner estimate | measured TFLM arena "
        "| difference |",
        "|---|---|---|---|---|",
        *[f"| {s:.0%} | {b:,} | {p:,} | {m:,} | {d:+.1%} |" for s, b, p, m, d in rows],
        "",
    ]
    out = Path(__file__).with_name("planner_vs_tflm.md")
    out.write_text("\n".join(lines), encoding="utf-8")
    print(out.read_text())


if __name__ == "__main__":
    main()
