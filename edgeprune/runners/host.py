"""LiteRT on this machine: run a .tflite on samples, and time it.

Quantized inputs/outputs are handled here (scale/zero-point), so callers always pass float
samples and get float outputs back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprune import native_output
from edgeprune.errors import ToolError


@dataclass(frozen=True)
class LatencyStats:
    p50_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    warmup: int
    threads: int


def interpreter(model: Path | bytes, threads: int = 1):  # -> ai_edge_litert Interpreter
    from ai_edge_litert.interpreter import Interpreter

    try:
        with native_output.captured("LiteRT"):  # "Created TensorFlow Lite XNNPACK delegate"
            if isinstance(model, bytes):
                interp = Interpreter(model_content=model, num_threads=threads)
            else:
                interp = Interpreter(model_path=str(model), num_threads=threads)
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        name = "<bytes>" if isinstance(model, bytes) else str(model)
        raise ToolError(
            f"LiteRT on {name}",
            f"cannot prepare the model ({exc})",
            "Reproduce with ai_edge_litert.interpreter.Interpreter(model_path=...)"
            ".allocate_tensors()",
        ) from exc
    return interp


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.integer):
        scale, zero = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if np.issubdtype(detail["dtype"], np.integer):
        scale, zero = detail["quantization"]
        return (y.astype(np.float32) - zero) * scale
    return y.astype(np.float32)


def quantize_input(model: Path | bytes, x: np.ndarray) -> np.ndarray:
    """Float samples ``x`` (N, ...) as the model's input tensor type, exactly as ``predict``
    feeds them (so another runtime given these gets bit-comparable outputs)."""
    return _quantize(np.asarray(x), interpreter(model).get_input_details()[0])


def outputs(model: Path | bytes, x: np.ndarray, threads: int = 1,
            raw: bool = False) -> tuple[list[np.ndarray], list[dict]]:
    """Every output for float samples ``x`` (N, ...), one invoke per sample, with the output
    details. Dequantized to float, or with ``raw=True`` as stored (int8 stays int8), for
    bit-exact comparison with another runtime (device, emulator, onnxruntime)."""
    interp = interpreter(model, threads)
    inp = interp.get_input_details()[0]
    details = interp.get_output_details()
    results: list[list[np.ndarray]] = [[] for _ in details]
    for sample in x:
        interp.set_tensor(inp["index"], _quantize(sample[None], inp))
        interp.invoke()
        for i, detail in enumerate(details):
            y = interp.get_tensor(detail["index"])
            results[i].append((y.copy() if raw else _dequantize(y, detail))[0])
    return [np.stack(r) for r in results], details


def predict(
    model: Path | bytes, x: np.ndarray, threads: int = 1, raw: bool = False
) -> np.ndarray:
    """Output 0 for float samples ``x`` (see ``outputs``)."""
    return outputs(model, x, threads, raw)[0][0]


def accuracy(model: Path | bytes, x: np.ndarray, y: np.ndarray, threads: int = 1) -> float:
    return float(np.mean(predict(model, x, threads).argmax(axis=-1) == y))


def benchmark(
    model: Path | bytes,
    sample: np.ndarray,
    threads: int = 1,
    warmup: int = 10,
    runs: int = 100,
) -> LatencyStats:
    """Invoke latency on this machine: ``warmup`` invokes discarded, then p50/p90 of ``runs``."""
    interp = interpreter(model, threads)
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], _quantize(sample[None], inp))
    for _ in range(warmup):
        interp.invoke()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        interp.invoke()
        times[i] = (time.perf_counter() - start) * 1e3
    return LatencyStats(
        p50_ms=float(np.percentile(times, 50)),
        p90_ms=float(np.percentile(times, 90)),
        mean_ms=float(times.mean()),
        runs=runs,
        warmup=warmup,
        threads=threads,
    )
