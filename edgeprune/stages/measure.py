"""Measurements every build and ``check`` take, each labelled with its method and where."""

from __future__ import annotations

import numpy as np

from edgeprune.stages.check import Measurement
from edgeprune.targets import TargetProfile


def flash(tflite: bytes, target: TargetProfile, filename: str) -> Measurement:
    return Measurement("flash_bytes", len(tflite), "bytes", "artifact", target.name,
                       f"size of {filename}; runtime code not included")


def accuracy(tflite: bytes, x: np.ndarray, y: np.ndarray, source: str) -> Measurement:
    from edgeprune.runners import host

    return Measurement("accuracy", host.accuracy(tflite, x, y), "fraction", "host", "host",
                       f"top-1 run with LiteRT on {len(x)} samples of {source}")


def host_latency(tflite: bytes, sample: np.ndarray, target: TargetProfile) -> Measurement:
    """LiteRT on this machine: the target's figure only for the ``host`` profile."""
    from edgeprune.runners import host

    on_host = target.hardware.kind == "host"
    threads = target.runtime.threads if on_host else 1
    stats = host.benchmark(tflite, sample, threads=threads)
    return Measurement(
        "latency_ms", stats.p50_ms, "ms", "host", "host",
        f"LiteRT on this machine, {threads} thread(s), p50 of {stats.runs} invokes after "
        f"{stats.warmup} warm-up (p90 {stats.p90_ms:.3f} ms)"
        + ("" if on_host else "; for reference only, not the target's latency"),
    )
