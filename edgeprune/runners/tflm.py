"""Run a model in the real TFLite-Micro interpreter and measure its smallest tensor arena.

TFLM has no API that returns the arena bytes a model needs, and an arena that is too small
can segfault inside the C++ allocator (seen here at 0 bytes and at some sizes in between),
so every interpreter lives in a child process (``_tflm_probe.py``) and a crash only marks
that size as too small.

What the measurement is: the ``tflite-micro`` Python package's interpreter, i.e. TFLM's
reference kernels built for this 64-bit host. On a device the tensor plan is the same, the
persistent part is somewhat smaller (32-bit pointers), and optimised kernels (CMSIS-NN) may
request extra scratch buffers that the reference kernels do not; hence the margin in
``recommended_bytes``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprune.errors import BadInputError, ToolError
from edgeprune.tflite.graph import TensorInfo, TfliteGraph, parse_tflite
from edgeprune.tflite.planner import plan_arena

log = logging.getLogger(__name__)

_PROBE = Path(__file__).with_name("_tflm_probe.py")

# 16 bytes: TFLM aligns the arena start and every planned buffer to 16
# (MicroArenaBufferAlignment), and devices declare `alignas(16) uint8_t arena[N]`; a finer
# search only finds sizes no one would declare, and sizes off the 16-byte grid do not behave
# monotonically (the tail is aligned down from the arena end).
STEP_BYTES = 16
# recommended = min × 1.10, rounded up to 1 KiB: headroom for a device build's kernels
# (e.g. CMSIS-NN scratch buffers) and TFLM version drift; 1 KiB keeps the number readable.
MARGIN = 0.10
ROUND_BYTES = 1024
_MAX_GROWTH = 6  # doublings of the first arena guess before giving up

_UNSUPPORTED = re.compile(r"Didn't find op for (?:builtin|custom) opcode '([^']+)'")
_REGISTRATION = re.compile(r"Failed to get registration from op code (\S+)")
_NODE_FAILED = re.compile(r"Node (\S+) \(number (\d+)f?\) failed to (prepare|invoke)")
_ARENA_SHORT = re.compile(
    r"Failed to (?:allocate|resize)|Too many buffers|missing: \d+|Unable to allocate|"
    r"Arena allocation failed|Failed to populate|Failed starting model allocation"
)
_RECORDED = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


@dataclass(frozen=True)
class ArenaMeasurement:
    min_bytes: int  # smallest arena (a multiple of step_bytes) that allocates and invokes
    recommended_bytes: int  # min + MARGIN, rounded up to ROUND_BYTES
    step_bytes: int  # resolution: min_bytes works, min_bytes - step_bytes was probed to fail
    probes: int  # interpreter processes started
    head_bytes: int | None = None  # TFLM's own record at a generous arena: tensor plan
    tail_bytes: int | None = None  # ... and persistent structures (the non-tensor overhead)
    seconds: float = 0.0


@dataclass(frozen=True)
class _Probe:
    arena: int
    returncode: int  # negative: killed by a signal (a segfault in TFLM's allocator)
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def measure_arena(
    model_path: str | Path,
    sample: np.ndarray | None = None,
    *,
    step: int = STEP_BYTES,
    workers: int | None = None,
    timeout: float = 120.0,
) -> ArenaMeasurement:
    """Find the smallest TFLM arena that both allocates and runs ``model_path``.

    A first probe at a generous arena records TFLM's own allocation total
    (``print_allocations``); that total, rounded to ``step``, and the size just below it are
    then probed in parallel. If they bracket the minimum (the usual case: 3 processes, about
    1.5 s) the search is done, otherwise it continues as a parallel bisection on the
    ``step`` grid. ``sample`` (one input, any batch of which the first is used; default
    zeros) feeds input 0 of the invoke.
    """
    t0 = time.monotonic()
    if step < 1:
        raise BadInputError(f"step={step}", "must be a positive number of bytes", "Use 16")
    model_path = Path(model_path)
    graph = parse_tflite(model_path)
    workers = workers or max(1, min(2, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="edgeprune-tflm-") as tmp:
        extra: list[str] = []
        if sample is not None:
            x = _prepare_inputs(graph, sample, "sample")[0]
            np.save(Path(tmp) / "sample.npy", x)
            extra = [str(Path(tmp) / "sample.npy")]

        def probe(arena: int, *flags: str) -> _Probe:
            return _run_probe(["probe", str(model_path), str(arena), *extra, *flags], timeout)

        hi, first, probes = _generous_arena(graph, model_path, step, probe)
        recorded = {k: int(v) for k, v in _RECORDED.findall(first.stderr)}
        lo = 0  # an empty arena never works; it is not probed
        hint = _align(recorded["total"], step) if "total" in recorded else None
        if hint is not None and step < hint <= hi:
            candidates = [hint - step, hint]
        else:  # no record (or a strange one): plain bisection from the generous size
            candidates = _split(lo, hi, step, workers)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            while candidates:
                results = list(pool.map(probe, candidates))
                probes += len(results)
                hi = min([hi, *(r.arena for r in results if r.ok)])
                lo = max([lo, *(r.arena for r in results if not r.ok and r.arena < hi)])
                candidates = _split(lo, hi, step, workers)
    min_bytes = hi
    recommended = math.ceil(min_bytes * (1 + MARGIN) / ROUND_BYTES) * ROUND_BYTES
    seconds = time.monotonic() - t0
    log.info("%s: TFLM arena min %d B (%d probes, %.1f s)", model_path, min_bytes, probes, seconds)
    return ArenaMeasurement(
        min_bytes=min_bytes,
        recommended_bytes=recommended,
        step_bytes=step,
        probes=probes,
        head_bytes=recorded.get("head"),
        tail_bytes=recorded.get("tail"),
        seconds=seconds,
    )


def probe_arena(model_path: str | Path, arena_size: int, *, timeout: float = 120.0) -> bool:
    """True when ``model_path`` allocates and invokes in an arena of ``arena_size`` bytes."""
    return _run_probe(["probe", str(model_path), str(arena_size)], timeout).ok


def run_tflm(
    model_path: str | Path,
    inputs: np.ndarray,
    arena_size: int,
    *,
    output_index: int = 0,
    timeout: float = 600.0,
) -> np.ndarray:
    """Run each sample of ``inputs`` through TFLM one by one; returns the stacked outputs.

    ``inputs`` is a batch (N, *input shape without its batch of 1), or a single input. Float
    inputs to an integer model are quantized with the input tensor's scale and zero point.
    The result has shape (N, *output shape without its batch of 1) and the model's output
    dtype (raw int8 for an int8 output).
    """
    model_path = Path(model_path)
    graph = parse_tflite(model_path)
    if arena_size < 1:
        raise BadInputError(
            f"arena_size={arena_size}", "must be a positive number of bytes", "Use measure_arena()"
        )
    if len(graph.inputs) != 1:
        raise BadInputError(
            str(model_path),
            f"has {len(graph.inputs)} inputs; run_tflm feeds exactly one",
            "Run a single-input model, or export one with its inputs concatenated",
        )
    if not 0 <= output_index < len(graph.outputs):
        raise BadInputError(
            f"output_index={output_index}",
            f"is out of range: {model_path} has {len(graph.outputs)} outputs",
            f"Use 0 to {len(graph.outputs) - 1}",
        )
    batch = _prepare_inputs(graph, inputs, "inputs")
    with tempfile.TemporaryDirectory(prefix="edgeprune-tflm-") as tmp:
        src, dst = Path(tmp) / "inputs.npy", Path(tmp) / "outputs.npy"
        np.save(src, batch)
        args = ["run", str(model_path), str(arena_size), str(src), str(dst), str(output_index)]
        result = _run_probe(args, timeout)
        if not result.ok:
            _raise_unsupported(model_path, result)
            if _arena_short(result):
                raise BadInputError(
                    f"arena_size={arena_size}",
                    f"is too small for {model_path} in TFLite-Micro",
                    "Use measure_arena() to find the minimum, or pass a larger arena",
                )
            raise _tool_error(model_path, arena_size, result)
        out = np.load(dst, allow_pickle=False)
    out_shape = graph.tensors[graph.outputs[output_index]].shape
    if out_shape and out_shape[0] == 1 and out.ndim == len(out_shape) + 1:
        out = out.reshape((out.shape[0], *out_shape[1:]))
    return out


def _generous_arena(
    graph: TfliteGraph, model_path: Path, step: int, probe: Callable[..., _Probe]
) -> tuple[int, _Probe, int]:
    """An arena that works (doubling from twice the planner's estimate), its probe, #probes."""
    arena = _align(max(2 * plan_arena(graph).arena_bytes, 64 * 1024), step)
    for attempt in range(1, _MAX_GROWTH + 1):
        result = probe(arena, "--allocations")
        if result.ok:
            return arena, result, attempt
        _raise_unsupported(model_path, result)
        if not _arena_short(result):
            raise _tool_error(model_path, arena, result)
        arena *= 2
    raise ToolError(
        str(model_path),
        f"TFLite-Micro could not allocate the model even with a {arena // 2} B arena",
        f"Reproduce with: {sys.executable} {_PROBE} probe {model_path} {arena // 2}",
    )


def _split(lo: int, hi: int, step: int, parts: int) -> list[int]:
    """Up to ``parts`` step-aligned sizes strictly between lo (fails) and hi (works)."""
    n = (hi - lo) // step - 1  # grid points strictly inside
    if n <= 0:
        return []
    k = min(parts, n)
    return sorted({lo + step * max(1, round((n + 1) * (i + 1) / (k + 1))) for i in range(k)})


def _run_probe(args: list[str], timeout: float) -> _Probe:
    cmd = [sys.executable, str(_PROBE), *args]
    arena = int(args[2])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        log.warning("TFLM probe timed out after %.0f s: %s", timeout, " ".join(cmd))
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        return _Probe(arena, 1, f"{err or ''}\nprobe timed out after {timeout:.0f} s", True)
    if proc.returncode < 0:
        log.debug("TFLM probe at %d B died with signal %d", arena, -proc.returncode)
    return _Probe(arena, proc.returncode, proc.stderr)


def _arena_short(result: _Probe) -> bool:
    # A crash (signal) during allocation is the too-small-arena symptom as well.
    if result.timed_out:
        return False
    return result.returncode < 0 or bool(_ARENA_SHORT.search(result.stderr))


def _raise_unsupported(model_path: Path, result: _Probe) -> None:
    ops = _UNSUPPORTED.findall(result.stderr) or _REGISTRATION.findall(result.stderr)
    if ops:
        names = ", ".join(dict.fromkeys(ops))
        raise BadInputError(
            str(model_path),
            f"uses op {names}, which TFLite-Micro does not support",
            "Replace that layer, or choose a target whose runtime supports it "
            "(TFLite-Micro's op list: tensorflow/lite/micro/kernels/micro_ops.h)",
        )
    node = _NODE_FAILED.search(result.stderr)
    if node and not _arena_short(result):
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        raise BadInputError(
            str(model_path),
            f"op {node.group(1)} (node {node.group(2)}) failed to {node.group(3)} in "
            f"TFLite-Micro: {lines[0] if lines else 'no message'}",
            "TFLite-Micro needs full-integer (int8) or float32 ops; re-quantize with "
            "--quantize int8 or replace that layer",
        )


def _tool_error(model_path: Path, arena: int, result: _Probe) -> ToolError:
    tail = " | ".join(result.stderr.strip().splitlines()[-4:]) or "no output"
    status = "timed out" if result.timed_out else f"exit {result.returncode}"
    return ToolError(
        str(model_path),
        f"TFLite-Micro failed ({status}): {tail}",
        f"Reproduce with: {sys.executable} {_PROBE} probe {model_path} {arena}",
    )


_NP_DTYPES = {
    "float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8,
    "int16": np.int16, "int32": np.int32, "int64": np.int64, "bool": np.bool_,
}  # fmt: skip


def _prepare_inputs(graph: TfliteGraph, x: np.ndarray, what: str) -> np.ndarray:
    """(N, *input_shape) in the input tensor's dtype; float data for an int model is quantized."""
    t: TensorInfo = graph.tensors[graph.inputs[0]]
    x = np.asarray(x)
    shape = t.shape
    if x.shape == shape:
        batch = x[None]
    elif shape and shape[0] == 1 and x.shape == shape[1:]:
        batch = x.reshape((1, *shape))
    elif shape and shape[0] == 1 and x.shape[1:] == shape[1:]:
        batch = x.reshape((x.shape[0], *shape))
    else:
        raise BadInputError(
            what,
            f"has shape {x.shape}, but {graph.name} takes {shape}",
            f"Pass (N, {', '.join(map(str, shape[1:]))}) samples",
        )
    dtype = _NP_DTYPES.get(t.dtype)
    if dtype is None:
        raise BadInputError(graph.name, f"has a {t.dtype} input", "Use a float or int8 model")
    if np.issubdtype(dtype, np.floating) or batch.dtype == dtype:
        return np.ascontiguousarray(batch, dtype=dtype)
    if np.issubdtype(batch.dtype, np.floating) and t.scale:
        info = np.iinfo(dtype)
        q = np.round(batch / t.scale[0]) + (t.zero_point[0] if t.zero_point else 0)
        return np.clip(q, info.min, info.max).astype(dtype)
    if np.issubdtype(batch.dtype, np.integer) and np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if batch.size == 0 or (batch.min() >= info.min and batch.max() <= info.max):
            return batch.astype(dtype)
    raise BadInputError(
        what,
        f"is {batch.dtype}, but {graph.name} takes {t.dtype}",
        f"Pass {t.dtype} data (or float data for a quantized input)",
    )


def _align(n: int, step: int) -> int:
    return -(-n // step) * step
