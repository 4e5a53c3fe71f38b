"""edgeprune against TF-MOT's documented recipe, side by side in one run, on the bundled example.

Every variant is built by edgeprune's own pipeline (same data, same seed, same fine-tuning
budget for every pruned variant), then all .tflite files are timed on this machine interleaved
round-robin, so machine noise hits every variant alike. Writes a Markdown table.

    .venv/bin/python bench/compare.py --out bench/compare.md
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeprune.drivers.pipeline import BuildRequest, build
from edgeprune.estimate import estimate_target
from edgeprune.resources import example_inputs
from edgeprune.runners import host, tflm
from edgeprune.targets import load_target

EPOCHS = 10  # the fine-tuning budget of every pruned variant

STRUCTURED = (0.25, 0.5, 0.75)  # the sweep of the reports issue's example


def variants() -> dict[str, dict]:
    """Name → recipe overrides of the rpi4 profile. The default build is the profile's
    ``[build]`` as shipped; structured rows keep its other keys (criterion, l1, …)."""
    default = load_target("rpi4").build
    out = {
        "float32": {"prune": "none", "quantize": "none", "epochs": 0},
        "int8 PTQ": {"prune": "none", "quantize": "int8", "epochs": 0},
        "TF-MOT 80 % magnitude + strip + int8": {
            "prune": "magnitude", "sparsity": 0.8, "quantize": "int8", "epochs": EPOCHS},
        "TF-MOT 2:4 + int8": {"prune": "m-by-n", "quantize": "int8", "epochs": EPOCHS},
    }
    shipped = f"prune={default.get('prune')}"
    for ratio in STRUCTURED:
        name = f"edgeprune structured {ratio:.0%}"
        if default.get("prune") == "structured" and default.get("sparsity") == ratio:
            name += f" = default rpi4 build ({shipped})"
        out[name] = {"prune": "structured", "sparsity": ratio, "epochs": EPOCHS}
    if default.get("prune") != "structured":
        out[f"edgeprune default rpi4 build ({shipped})"] = {"epochs": EPOCHS}
    out["edgeprune hybrid (50 % channels, then 50 % weights)"] = {
        "prune": "hybrid", "sparsity": 0.5, "weight_sparsity": 0.5, "quantize": "int8",
        "epochs": EPOCHS}
    return out


def interleaved_latency(models: dict[str, bytes], sample: np.ndarray, rounds: int,
                        runs: int) -> dict[str, float]:
    """Median over rounds of each model's p50, the models taking turns within each round."""
    p50s: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, blob in models.items():
            p50s[name].append(host.benchmark(blob, sample, threads=1, runs=runs).p50_ms)
    return {name: float(np.median(v)) for name, v in p50s.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/compare.md"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rpi4, m7 = load_target("rpi4"), load_target("cortex-m7")
    reports, blobs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, overrides) in enumerate(variants().items()):
            start = time.perf_counter()
            outcome = build(BuildRequest(overrides=overrides, out=Path(tmp) / str(i)), "rpi4")
            reports[name] = outcome.report
            blobs[name] = (outcome.folder / "model.tflite").read_bytes()
            print(f"built {name} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        sample = np.load(example_inputs()["calib"])["x"][0]
        latency = interleaved_latency(blobs, sample, args.rounds, args.runs)
        arenas = {}
        for name, blob in blobs.items():
            path = Path(tmp) / "arena.tflite"
            path.write_bytes(blob)
            arenas[name] = tflm.measure_arena(path).min_bytes

    def estimated(blob: bytes, target) -> float:
        return next(m.value for m in estimate_target(blob, target).measurements
                    if m.quantity == "latency_ms")

    float_acc = reports["float32"]["result"]["accuracy"]
    rows = []
    for name, rep in reports.items():
        res = rep["result"]
        rows.append({
            "variant": name,
            "accuracy": res["accuracy"],
            "Δ vs float (points)": (res["accuracy"] - float_acc) * 100,
            "tflite_bytes": res["tflite_bytes"],
            "gzip_bytes": res["gzip_bytes"],
            "weight zeros": res["sparsity"],
            "tflm_arena_bytes": arenas[name],
            "host_p50_ms": latency[name],
            "rpi4_est_ms": estimated(blobs[name], rpi4),
            "cortex_m7_est_ms": estimated(blobs[name], m7),
        })
    args.out.write_text(render(rows, args), encoding="utf-8")
    print(args.out.read_text())
    json.dump(rows, sys.stderr, indent=1)
    return 0


def render(rows: list[dict], args: argparse.Namespace) -> str:
    dense = next(r for r in rows if r["variant"] == "int8 PTQ")
    f32 = next(r for r in rows if r["variant"] == "float32")
    header = ("variant", ".tflite accuracy", "Δ vs float32 (pt)", ".tflite bytes",
              "gzip bytes", "weight zeros", "TFLM arena (tflm)", "host p50 ms (host, 1 thread)",
              "rpi4 ms (estimate)", "cortex-m7 ms (estimate)", "host speed-up vs int8",
              "bytes vs int8")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["variant"], f"{r['accuracy']:.2%}", f"{r['Δ vs float (points)']:+.2f}",
            f"{r['tflite_bytes']:,}", f"{r['gzip_bytes']:,}", f"{r['weight zeros']:.0%}",
            f"{r['tflm_arena_bytes']:,}", f"{r['host_p50_ms']:.3f}", f"{r['rpi4_est_ms']:.3f}",
            f"{r['cortex_m7_est_ms']:.2f}", f"{dense['host_p50_ms'] / r['host_p50_ms']:.2f}×",
            f"{dense['tflite_bytes'] / r['tflite_bytes']:.2f}× fewer",
        ]) + " |")
    summary = []
    for r in rows:
        if not r["variant"].startswith("edgeprune structured") and "default" not in r["variant"]:
            continue
        within = "within" if r["Δ vs float (points)"] >= -1.0 else "**not** within"
        summary.append(
            f"- {r['variant']}: {dense['host_p50_ms'] / r['host_p50_ms']:.2f}× lower host "
            f"latency and {dense['tflite_bytes'] / r['tflite_bytes']:.2f}× fewer .tflite bytes "
            f"than the dense int8 model, {f32['tflite_bytes'] / r['tflite_bytes']:.1f}× fewer "
            f"than float32; accuracy {r['Δ vs float (points)']:+.2f} points vs float32 "
            f"({within} 1.0 point).")
    return "\n".join([
        "# edgeprune vs TF-MOT's recipe on the bundled digits example",
        "",
        f"Command: `.venv/bin/python bench/compare.py --rounds {args.rounds} --runs "
        f"{args.runs}` (one run; every variant built by the pipeline with seed 0 and "
        f"{EPOCHS} fine-tuning epochs for the pruned ones; accuracy is the emitted .tflite on "
        "examples/digits/val.npz, 360 samples).",
        "",
        "Methods: accuracy and host latency measured on this machine with LiteRT (1 thread; "
        f"median over {args.rounds} interleaved rounds of p50 over {args.runs} invokes); TFLM "
        "arena measured with the tflite-micro interpreter (smallest arena that allocates and "
        "invokes); rpi4 and cortex-m7 latencies are edgeprune's calibrated estimates, not "
        "device measurements.",
        "",
        *lines,
        "",
        *summary,
        "",
    ])


if __name__ == "__main__":
    raise SystemExit(main())
