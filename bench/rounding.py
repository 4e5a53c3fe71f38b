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
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from _common import time_ms

from edgeprune import model_io
from edgeprune.drivers.pipeline import BuildRequest, build
from edgeprune.pruning import prune_structured
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


def interleaved(models: dict[str, bytes], rounds: int) -> dict[str, list[float]]:
    """Per model, one latency per round (``_common.time_ms``: one thread, CPU time of the
    invoking thread, so other jobs on this shared machine do not count), the models taking
    turns within each round."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, blob in models.items():
            times[name].append(time_ms(blob, repeats=3))
    return times


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
    times = interleaved(blobs, args.rounds)
    dense_ms = float(np.median(times["dense int8"]))
    variants = {}
    for label, report in rows.items():
        res = report["result"]
        variants[label] = {
            "accuracy": res["accuracy"], "params": res["params"], "macs": res["macs"],
            "tflite_bytes": res["tflite_bytes"],
            "estimated_ms": _estimate(report, args.target),
            "host_ms_rounds": [round(t, 5) for t in times[label]],
            "host_ms": float(np.median(times[label])),
            "host_ratio_vs_dense": float(np.median(times[label])) / dense_ms,
            # The spread of this model's rounds, as ratios to the dense median.
            "host_ratio_range": [min(times[label]) / dense_ms, max(times[label]) / dense_ms],
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
    parser.add_argument("--render", action="store_true",
                        help="only re-render OUT from the .json next to it")
    args = parser.parse_args()
    if args.render:
        payload = json.loads(args.out.with_suffix(".json").read_text())
        args.out.write_text(render(payload), encoding="utf-8")
        return 0
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for example in args.examples.split(","):
            results[example] = run_example(example, args, Path(tmp) / example)
    seconds = time.perf_counter() - start
    command = (f"nice -n 10 .venv/bin/python bench/rounding.py --target {args.target} "
               f"--examples {args.examples} --epochs {args.epochs} --rounds {args.rounds}")
    payload = {"command": command, "commit": _commit(), "seconds": round(seconds),
               "target": args.target,
               "epochs": args.epochs, "rounds": args.rounds, "results": results}
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    args.out.write_text(render(payload), encoding="utf-8")
    print(args.out.read_text())
    return 0


def _commit() -> str:
    """The commit the package code ran at ("+changes" when edgeprune/ differed from it)."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("+changes" if git(
        "status", "--porcelain", "edgeprune") else "")


def render(p: dict) -> str:
    lines = [
        "# Cost-aware rounding to the channel multiple vs half-up",
        "",
        f"Command: `{p['command']}` (one run at commit {p.get('commit', '?')}, "
        f"{p['seconds'] / 60:.0f} min on the shared 2-core machine; raw figures in "
        "`rounding.json`).",
        "",
        f"Target {p['target']} (`channel_multiple = 8`). Each cell is planned both ways on the "
        "input model; cells whose plans keep the same channels are not built (the models "
        "would be identical). Cells that differ are built twice by the pipeline, seed 0, "
        f"{p['epochs']} fine-tuning epochs (early stopping may end sooner: the epochs run are "
        "listed). Accuracy: the emitted int8 .tflite on the example's val.npz (mnist 5,000 "
        "samples, 1 sample = 0.02 points; digits 360, 1 sample = 0.28 points). Estimated "
        f"latency: edgeprune's {p['target']} estimate of the emitted .tflite. Host latency: "
        f"LiteRT on this machine (x86-64, not the target), 1 thread, CPU time of the invoking "
        f"thread (`bench/_common.py` `time_ms`), median over {p['rounds']} interleaved rounds, "
        "as a ratio to the dense int8 build of the same example (lower is faster), with the "
        "range over the rounds. The prune stage's time includes the cost-aware variant's "
        "anchor conversion.",
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
            lo, hi = v["host_ratio_range"]
            lines.append(
                f"| {label} | {sum(kept.get(label, [])) or '—'} | {v['params']:,} | "
                f"{v['macs']:,} | {v['estimated_ms']:.4f} | {v['host_ratio_vs_dense']:.3f} "
                f"({lo:.3f}–{hi:.3f}) | "
                f"{v['accuracy']:.2%} | {ran} | {v['prune_stage_s'] or 0:.1f} |")
        lines += ["", "Cost-aware against half-up, per built cell:", ""]
        n_val = {"mnist": 5000, "digits": 360}.get(example)
        for c in r["cells"]:
            if c["same_plan"]:
                continue
            cell = f"{c['allocation']} {c['sparsity']:.0%}"
            a, b = r["variants"][f"{cell} half_up"], r["variants"][f"{cell} cost_aware"]
            samples = f" ({(b['accuracy'] - a['accuracy']) * n_val:+.0f} samples)" if n_val else ""
            lines.append(
                f"- {cell}: estimated latency {b['estimated_ms'] / a['estimated_ms'] - 1:+.1%}, "
                f"host latency {b['host_ms'] / a['host_ms'] - 1:+.1%}, MACs "
                f"{b['macs'] / a['macs'] - 1:+.1%}, parameters {b['params'] / a['params'] - 1:+.1%}"
                f", accuracy {(b['accuracy'] - a['accuracy']) * 100:+.2f} points{samples}.")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
