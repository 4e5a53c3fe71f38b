"""Structured pruning of keras.applications models: size, MACs and int8 host latency, side by side.

For each architecture (weights=None, so it builds offline): prune 50 % of the prunable channels
with edgeprune (l1, uniform), check the pruned model (forward pass, output shape, parameters),
convert the dense and the pruned model to full-int8 TFLite (representative dataset of random
samples) and time both with LiteRT on this host (1 thread, warm-up, median of N invokes).
Writes a Markdown table (default bench/keras_apps_prune.md).

    nice -n 10 .venv/bin/python bench/keras_apps_prune.py [--models ResNet50 …] [--runs 30]

Latency is a host (x86) measurement, not a device figure: read the dense/pruned ratio.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from edgeprune import _tf
from edgeprune.pruning import layer_stats, prune_structured

log = logging.getLogger("bench")

# name -> (constructor name in keras.applications, input shape)
APPS = {
    "MobileNetV2": ("MobileNetV2", (96, 96, 3)),
    "ResNet50": ("ResNet50", (64, 64, 3)),
    "DenseNet121": ("DenseNet121", (64, 64, 3)),
    "EfficientNetB0": ("EfficientNetB0", (64, 64, 3)),
    "MobileNetV3Small": ("MobileNetV3Small", (96, 96, 3)),
}


def int8_tflite(model, samples: np.ndarray) -> bytes:
    tf = _tf.tf()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([samples[i : i + 1]] for i in range(len(samples)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def latency_ms(blob: bytes, warmup: int, runs: int) -> float:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=blob, num_threads=1)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    rng = np.random.default_rng(0)
    it.set_tensor(inp["index"], rng.integers(-128, 128, inp["shape"], dtype=np.int8))
    for _ in range(warmup):
        it.invoke()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        it.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_one(name: str, sparsity: float, warmup: int, runs: int, n_calib: int) -> dict:
    keras = _tf.keras()
    ctor, shape = APPS[name]
    keras.backend.clear_session()
    model = getattr(keras.applications, ctor)(weights=None, input_shape=shape)
    t0 = time.perf_counter()
    result = prune_structured(model, sparsity=sparsity)
    prune_s = time.perf_counter() - t0
    pruned = result.model
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (n_calib, *shape)).astype(np.float32)
    y = np.asarray(pruned(x[:2]))
    checks = {
        "forward": bool(np.all(np.isfinite(y))),
        "output_shape": pruned.output_shape == model.output_shape,
        "params_down_40pct": pruned.count_params() <= 0.6 * model.count_params(),
    }
    dense_macs = sum(r["macs"] or 0 for r in layer_stats(model))
    pruned_macs = sum(r["macs"] or 0 for r in result.layers)
    blobs = {}
    for kind, m in (("dense", model), ("pruned", pruned)):
        t0 = time.perf_counter()
        blobs[kind] = int8_tflite(m, x)
        log.info("%s %s: int8 conversion %.1f s", name, kind, time.perf_counter() - t0)
    lat = {k: latency_ms(b, warmup, runs) for k, b in blobs.items()}
    row = {
        "model": name,
        "input": "×".join(map(str, shape)),
        "params": (model.count_params(), pruned.count_params()),
        "macs": (dense_macs, pruned_macs),
        "bytes": (len(blobs["dense"]), len(blobs["pruned"])),
        "latency": (lat["dense"], lat["pruned"]),
        "prune_s": prune_s,
        "checks": checks,
        "notes": len(result.notes),
    }
    log.info("%s: %s", name, row)
    return row


def to_markdown(rows: list[dict], command: str, args: argparse.Namespace) -> str:
    def pair(v: tuple, fmt: str) -> str:
        return f"{fmt.format(v[0])} → {fmt.format(v[1])}"

    def down(v: tuple) -> str:
        return f"−{100 * (1 - v[1] / v[0]):.0f} %"

    lines = [
        "# Structured pruning of keras.applications models (edgeprune)",
        "",
        f"Command: `{command}`",
        "",
        f"Each model is built with `weights=None`, pruned with `prune_structured(sparsity="
        f"{args.sparsity})` (criterion l1, uniform allocation), converted to full int8 "
        f"(representative dataset: {args.calib} random samples) and timed with LiteRT on this "
        f"host: 1 thread, {args.warmup} warm-up invokes, median of {args.runs}. Host latency is "
        "not a device figure: compare the dense and pruned columns.",
        "",
        "| model | input | params | MACs | int8 .tflite bytes | int8 latency ms (host, 1 thread)"
        " | speed-up | checks | prune time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ok = "✓ forward, output shape, params ≥40 % down"
        ok = ok if all(r["checks"].values()) else f"✗ {r['checks']}"
        lines.append(
            f"| {r['model']} | {r['input']} | {pair(r['params'], '{:,}')} ({down(r['params'])}) "
            f"| {pair(r['macs'], '{:,}')} ({down(r['macs'])}) "
            f"| {pair(r['bytes'], '{:,}')} ({down(r['bytes'])}) "
            f"| {pair(r['latency'], '{:.2f}')} | {r['latency'][0] / r['latency'][1]:.2f}× "
            f"| {ok} | {r['prune_s']:.1f} s |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(APPS), default=list(APPS))
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=30, help="timed invokes (median)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--calib", type=int, default=8, help="representative samples")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".md"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    rows = [bench_one(m, args.sparsity, args.warmup, args.runs, args.calib) for m in args.models]
    command = shlex.join(["python", "bench/keras_apps_prune.py", *(argv or sys.argv[1:])])
    args.out.write_text(to_markdown(rows, command, args), encoding="utf-8")
    log.info("wrote %s", args.out)
    failed = [r["model"] for r in rows if not all(r["checks"].values())]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
