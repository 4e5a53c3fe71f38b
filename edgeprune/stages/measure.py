"""Measurements every build and ``check`` take, each labelled with its method and where."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeprune.errors import BadInputError
from edgeprune.measurement import Measurement
from edgeprune.targets import TargetProfile
from edgeprune.tflite.graph import parse_tflite

if TYPE_CHECKING:
    from edgeprune.estimate import TargetEstimate


def weight_sparsity(model: Any) -> float:
    """Fraction of exact zeros in the kernels of conv/dense layers."""
    zeros = total = 0
    for layer in model.layers:
        for w in layer.weights:
            if "kernel" in w.name:
                values = w.numpy()
                zeros += int(np.count_nonzero(values == 0))
                total += values.size
    return zeros / total if total else 0.0


def gzip_size(blob: bytes) -> int:
    """What a compressed download costs: unstructured zeros show up here, not in the file."""
    return len(gzip.compress(blob, compresslevel=9, mtime=0))


def tflite_macs(tflite: bytes) -> int:
    return parse_tflite(tflite, name="model.tflite").total_macs


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


def estimates(tflite: bytes, target: TargetProfile) -> TargetEstimate:
    """The target's calibrated latency/RAM estimates (method ``estimate``, where the target).

    Empty for ``host`` (measured) and ``ethos-u`` (Vela), and for a profile without an
    ``[estimator]`` section. ``.per_op``/``.flagged``/``.extra`` hold the per-op breakdown, the
    ops priced by the generic rule and (Edge TPU) the compatibility analysis."""
    from edgeprune.estimate import estimate_target

    return estimate_target(tflite, target)


@dataclass(frozen=True)
class OnTarget:
    """Where to run the artifact besides this machine: a real device over SSH or a serial port,
    or QEMU."""

    device: str | None = None  # ssh://user@host[:port] or serial:PORT[@BAUD]
    known_hosts: Path | None = None
    identity: Path | None = None
    remote_python: str = "python3"
    emulate: bool = False

    def __post_init__(self) -> None:
        """Validate the URI and key files now, so a typo fails before the build, not after."""
        if self.device is None:
            return
        from edgeprune.runners.serial_device import check_measured_device

        check_measured_device(self.device)  # ssh:// or serial: (whose /dev port must exist)
        for option, path in (("--known-hosts", self.known_hosts), ("--identity", self.identity)):
            if path is not None and not Path(path).is_file():
                raise BadInputError(f"{option} {path}", "no such file",
                                    "Give an existing file (see `edgeprune build -h`)")

    @property
    def wanted(self) -> bool:
        return self.device is not None or self.emulate


def on_target(
    tflite: Path, target: TargetProfile, opts: OnTarget, samples: np.ndarray
) -> tuple[list[Measurement], dict[str, Any]]:
    """Device (method ``device``) and emulator (method ``qemu``) figures, plus report details."""
    measurements: list[Measurement] = []
    details: dict[str, Any] = {}
    if opts.device is not None and opts.device.startswith("serial:"):
        from edgeprune.runners.serial_device import measure_over_serial

        measurements += measure_over_serial(tflite, target, opts.device)
        details["device"] = opts.device
    elif opts.device is not None:
        from edgeprune.runners.ssh import measure_on_device

        measurements += measure_on_device(
            tflite, target, opts.device, opts.known_hosts, opts.identity,
            target.runtime.threads, samples[0], remote_python=opts.remote_python,
        )
        details["device"] = opts.device
    if opts.emulate:
        from edgeprune.runners.qemu import measure_in_qemu

        result = measure_in_qemu(tflite, target, samples)
        measurements += result.measurements
        details["emulation"] = {
            "bit_identical": result.bit_identical,
            "outputs_compared": result.outputs_compared,
            "max_abs_diff": result.max_abs_diff,
            "instructions_per_inference": result.instructions_per_inference,
            "ipc": result.ipc,
            "detail": result.detail,
        }
    return measurements, details
