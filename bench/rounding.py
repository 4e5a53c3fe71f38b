"""Cost-aware rounding against half-up rounding to the channel multiple, side by side in one run.

For each example and (allocation, sparsity) cell, the rounding is first planned both ways on
the input model (no training). Where the two plans keep the same channels the built models
would be identical and the cell is reported as such, not built twice. Where they differ, both
are built by edgeprune's own pipeline for the target (same data, seed and fine-tuning epochs);
"half-up" is the pipeline with the prune stage's pricer replaced by one that prices every
configuration alike, which rounds half-up exactly as before this change (checked against the
offline half-up plan). Then every .tflite of an example, the dense int8 build included, is
timed on this machine interleaved round-robin.

    nice -n 10 .venv/bin/python bench/rounding.py --out bench/rounding.md
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edgeprune import model_io
from edgeprune.drivers.pipeline import BuildRequest, build
from edgeprune.pruning import prune_structured
from edgeprune.runners import host
from edgeprune.search import anchor
from edgeprune.targets import load_target

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {
    name: {"model": ROOT / f"examples/{name}/model.keras",
           "data": ROOT / f"examples/{name}/train.npz",
           "val": ROOT / f"examples/{name}/val.npz",
           "calib": ROOT / f"calib_data/{name}/calib.npz"}
    for name in ("mnist", "digits")
}
# The cells (structured 50 / 75 %), both allocations, and two uniform ratios whose
# kept counts are not multiples of 8 on these power-of-two networks.
CELLS = [("uniform", 0.5), ("uniform", 0.75), ("global", 0.5), ("global", 0.75),
         ("uniform", 0.3), ("uniform", 0.6)]


class _HalfUp(anchor.ChannelPricer):
    """Every configuration costs the same: round_kept then rounds half-up (its tie rule)."""

    def __call__(self, channels: Mapping[str, int]) -> float:
        return 0.0


def plans(example: str, target: str) -> dict[tuple[str, float], dict[str, list[int]]]:
    """Kept channels per prunable group, half-up and cost-aware, for every cell."""
    files = EXAMPLES[example]
    model = model_io.load_model(files["model"])
    calib = np.load(files["calib"])["x"]
    profile = load_target(target)
    out = {}
    for allocation, sparsity in CELLS:
        kept = {}
        for name, cost in (("half_up", None),
                           ("cost_aware", anchor.ChannelPricer(model, profile, "int8", calib))):
            result = prune_structured(model, sparsity=sparsity, allocation=allocation,
                                      channel_multiple=profile.hardware.channel_multiple,
                                      cost=cost)
            kept[name] = [g["kept"] for g in result.groups if g["prunable"]]
        kept["layers"] = [g["layers"][0] for g in result.groups if g["prunable"]]
        out[(allocation, sparsity)] = kept
    return out


def build_one(example: str, target: str, overrides: dict, out: Path,
              half_up: bool) -> tuple[dict, bytes, float]:
    real = anchor.ChannelPricer
    if half_up:
        anchor.ChannelPricer = _HalfUp  # the prune stage imports it at call time
    try:
        start = time.perf_counter()
        files = EXAMPLES[example]
        outcome = build(BuildRequest(model=files["model"], data=files["data"],
                                     val=files["val"], calib=files["calib"],
                                     overrides=overrides, out=out), target)
    finally:
        anchor.ChannelPricer = real
    return (outcome.report, (outcome.folder / "model.tflite").read_bytes(),
            time.perf_counter() - start)


def interleaved(models: dict[str, bytes], sample: np.ndarray, rounds: int,
                runs: int) -> dict[str, float]:
    """Median over rounds of each model's p50, the models taking turns within each round."""
    p50s: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, blob in models.items():
            p50s[name].append(host.benchmark(blob, sample, threads=1, runs=runs).p50_ms)
    return {name: float(np.median(v)) for name, v in p50s.items()}


def _estimate(report: dict, target: str) -> float:
    return next(m["value"] for m in report["measurements"] if m["quantity"] == "latency_ms"
                and m["method"] == "estimate" and m["where"] == target)


def run_example(example: str, args: argparse.Namespace, tmp: Path) -> dict:
    planned = plans(example, args.target)
    cells, blobs = [], {}
    dense, blobs["dense int8"], secs = build_one(
        example, args.target, {"prune": "none", "epochs": 0, "seed": 0}, tmp / "dense", False)
    print(f"{example}: dense int8 built in {secs:.0f} s", file=sys.stderr)
    rows = {"dense int8": dense}
    for (allocation, sparsity), kept in planned.items():
        cell = {"allocation": allocation, "sparsity": sparsity, "layers": kept["layers"],
                "kept_half_up": kept["half_up"], "kept_cost_aware": kept["cost_aware"],
                "same_plan": kept["half_up"] == kept["cost_aware"]}
        cells.append(cell)
        if cell["same_plan"]:
            continue
        overrides = {"prune": "structured", "allocation": allocation, "sparsity": sparsity,
                     "epochs": args.epochs, "seed": 0}
        for name in ("half_up", "cost_aware"):
            label = f"{allocation} {sparsity:.0%} {name}"
            report, blobs[label], secs = build_one(
                example, args.target, overrides, tmp / label.replace(" ", "_"),
                name == "half_up")
            built = [g["kept"] for g in report["pruning_groups"] if g["prunable"]]
            if built != kept[name]:  # the pipeline must have rounded as planned
                raise SystemExit(f"{example} {label}: built {built}, planned {kept[name]}")
            rows[label] = report
            print(f"{example}: {label} built in {secs:.0f} s", file=sys.stderr)
    sample = np.load(EXAMPLES[example]["val"])["x"][0].astype(np.float32)
    latency = interleaved(blobs, sample, args.rounds, args.runs)
    variants = {}
    for label, report in rows.items():
        res = report["result"]
        variants[label] = {
            "accuracy": res["accuracy"], "params": res["params"], "macs": res["macs"],
            "tflite_bytes": res["tflite_bytes"],
            "estimated_ms": _estimate(report, args.target),
            "host_p50_ms": latency[label],
            "host_ratio_vs_dense": latency[label] / latency["dense int8"],
            "epochs_run": (report.get("finetune") or {}).get("epochs_run"),
            "prune_stage_s": report.get("timings_s", {}).get("prune"),
        }
    return {"cells": cells, "variants": variants}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/rounding.md"))
    parser.add_argument("--target", default="rpi4")
    parser.add_argument("--examples", default="mnist,digits")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for example in args.examples.split(","):
            results[example] = run_example(example, args, Path(tmp) / example)
    seconds = time.perf_counter() - start
    command = (f"nice -n 10 .venv/bin/python bench/rounding.py --target {args.target} "
               f"--examples {args.examples} --epochs {args.epochs} --rounds {args.rounds} "
               f"--runs {args.runs}")
    payload = {"command": command, "seconds": round(seconds), "target": args.target,
               "epochs": args.epochs, "results": results}
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    args.out.write_text(render(payload), encoding="utf-8")
    print(args.out.read_text())
    return 0


def render(p: dict) -> str:
    lines = [
        "# Cost-aware rounding to the channel multiple vs half-up",
        "",
        f"Command: `{p['command']}` (one run, {p['seconds'] / 60:.0f} min on the shared 2-core "
        f"machine; raw figures in `rounding.json`).",
        "",
        f"Target {p['target']} (`channel_multiple = 8`). Each cell is planned both ways on the "
        "input model; cells whose plans keep the same channels are not built (the models "
        "would be identical). Cells that differ are built twice by the pipeline, seed 0, "
        f"{p['epochs']} fine-tuning epochs (early stopping may end sooner: the epochs run are "
        "listed). Accuracy: the emitted int8 .tflite on the example's val.npz (mnist 5,000 "
        "samples, 1 sample = 0.02 points; digits 360, 1 sample = 0.28 points). Estimated "
        f"latency: edgeprune's {p['target']} estimate of the emitted .tflite. Host latency: "
        "LiteRT on this machine, 1 thread, median over interleaved rounds of p50, as a ratio "
        "to the dense int8 build of the same example (lower is faster). The prune stage's time "
        "includes the cost-aware variant's anchor conversion.",
        "",
    ]
    for example, r in p["results"].items():
        lines += [f"## {example}", "", "Kept channels per prunable group "
                  f"({', '.join(r['cells'][0]['layers'])}):", "",
                  "| cell | half-up | cost-aware | |", "|---|---|---|---|"]
        for c in r["cells"]:
            same = "identical: not built" if c["same_plan"] else "differs: built both"
            lines.append(f"| {c['allocation']} {c['sparsity']:.0%} | {c['kept_half_up']} | "
                         f"{c['kept_cost_aware']} | {same} |")
        lines += ["", "| variant | kept channels | params | MACs | est. ms | host × dense int8 "
                  "| accuracy | epochs run | prune stage s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        kept = {f"{c['allocation']} {c['sparsity']:.0%} {k}": c[f"kept_{k}"]
                for c in r["cells"] for k in ("half_up", "cost_aware")}
        for label, v in r["variants"].items():
            ran = "—" if v["epochs_run"] is None else v["epochs_run"]
            lines.append(
                f"| {label} | {sum(kept.get(label, [])) or '—'} | {v['params']:,} | "
                f"{v['macs']:,} | {v['estimated_ms']:.4f} | {v['host_ratio_vs_dense']:.3f} | "
                f"{v['accuracy']:.2%} | {ran} | {v['prune_stage_s'] or 0:.1f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
