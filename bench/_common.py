"""Shared helpers for the calibration and accuracy scripts in bench/ (not part of the package).

Models are built with tf_keras at batch size 1 (static shapes, so the converter folds
SHAPE/PACK ops away, as in deployed models) and converted to float32 or full-integer int8
(float I/O, as edgeprune emits; ``int8io`` also makes the I/O int8 so a one-op model is one op).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
CACHE = Path(os.environ.get("EDGEPRUNE_BENCH_CACHE",
                           Path.home() / ".cache" / "edgeprune-bench"))


def keras():
    from edgeprune import _tf

    return _tf.keras()


def convert(model, kind: str, seed: int = 0, samples: int = 4) -> bytes:
    """float32 (``float``), int8 with float I/O (``int8``) or int8 with int8 I/O (``int8io``)."""
    from edgeprune import _tf

    tf = _tf.tf()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if kind.startswith("int8"):
        rng = np.random.default_rng(seed)
        shapes = [(1, *s[1:]) for s in _input_shapes(model)]

        def representative():
            for _ in range(samples):
                yield [rng.random(s, dtype=np.float32) * 2 - 1 for s in shapes]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if kind == "int8io":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter.convert()


def _input_shapes(model) -> list[tuple]:
    shapes = model.input_shape
    return shapes if isinstance(shapes, list) else [shapes]


def cached(name: str, build: Callable[[], bytes]) -> bytes:
    """Conversions are slow on a shared 2-core machine: keep them between runs."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}.tflite"
    if not path.is_file():
        blob = build()
        tmp = path.with_suffix(".partial")
        tmp.write_bytes(blob)
        tmp.rename(path)
    return path.read_bytes()


def time_ms(tflite: bytes, repeats: int = 7, block_s: float = 0.15) -> float:
    """One-thread LiteRT latency on this machine, in CPU time of the invoking thread.

    The machine is a VM shared with other jobs: wall-clock time includes the slices the
    scheduler gives them (seen here: MobileNet v1 p50 54 ms wall vs 22 ms CPU). With one
    thread XNNPACK computes on the calling thread, so its CPU time is the latency an idle
    machine shows. Each block runs N invokes and takes (CPU time)/N; the result is the lowest
    of ``repeats`` blocks (least disturbed by cache pollution). Fit and evaluation use the
    same statistic."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=tflite, num_threads=1)
    interp.allocate_tensors()
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        if np.issubdtype(d["dtype"], np.floating):
            x = rng.random(d["shape"], dtype=np.float32).astype(d["dtype"])
        else:
            x = rng.integers(-100, 100, d["shape"]).astype(d["dtype"])
        interp.set_tensor(d["index"], x)
    for _ in range(2):
        interp.invoke()
    start = time.thread_time()
    interp.invoke()
    once = max(time.thread_time() - start, 1e-6)
    runs = int(min(max(block_s / once, 3), 2000))
    blocks = []
    for _ in range(repeats):
        start = time.thread_time()
        for _ in range(runs):
            interp.invoke()
        blocks.append((time.thread_time() - start) / runs)
    return min(blocks) * 1e3


def write_block(path: Path, tag: str, text: str) -> None:
    """Replace the lines between ``# >>> <tag>`` and ``# <<< <tag>`` in a target profile.

    The comments around a block say where its numbers come from; the numbers themselves are
    only ever written by the script named in the tag."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"# >>> {tag}")
    end = next(i for i, line in enumerate(lines) if line.strip() == f"# <<< {tag}")
    path.write_text("\n".join([*lines[: start + 1], text.rstrip("\n"), *lines[end:]]) + "\n")
