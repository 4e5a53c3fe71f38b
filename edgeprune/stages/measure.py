"""Measurements every build and ``check`` take, each labelled with its method and where."""

from __future__ import annotations

import dataclasses
import functools
import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeprune.errors import BadInputError
from edgeprune.measurement import Measurement
from edgeprune.runners.device_info import DeviceInfo, mismatch, this_machine
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
                       f"top-1 run with LiteRT on {len(x)} samples of {source}", this_machine())


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
        this_machine(),
    )


def estimates(tflite: bytes, target: TargetProfile) -> TargetEstimate:
    """The target's calibrated latency/RAM estimates (method ``estimate``, where the target).

    Empty for ``host`` (measured) and ``ethos-u`` (Vela), and for a profile without an
    ``[estimator]`` section. ``.per_op``/``.flagged``/``.extra`` hold the per-op breakdown, the
    ops priced by the generic rule and (Edge TPU) the compatibility analysis."""
    from edgeprune.estimate import estimate_target

    return estimate_target(tflite, target)


EDGETPU_DELEGATE = "libedgetpu.so.1"  # Coral's runtime library, as load_delegate names it
MCU_KINDS = ("cortex-m", "ethos-u")


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

    def device_info(self) -> DeviceInfo:
        """What the device says it is; asked once per process and device."""
        return _probe(self.device, self.known_hosts, self.identity, self.remote_python)


@functools.cache
def _probe(device: str, known_hosts: Path | None, identity: Path | None,
           remote_python: str) -> DeviceInfo:
    from edgeprune.runners.ssh import probe_device

    return probe_device(device, known_hosts, identity, remote_python=remote_python)


def device_mismatch(opts: OnTarget, target: TargetProfile) -> str:
    """Why ``--device`` is not ``target``'s machine ("" when it is)."""
    if target.hardware.kind in MCU_KINDS:
        return (f"{target.name} is a microcontroller ({target.hardware.cpu}), which is not "
                "reached over SSH: flash it (edgeprune flash), then measure over its serial "
                "port with --device serial:PORT")
    return mismatch(opts.device_info(), target)


def require_device_fit(opts: OnTarget, targets: Sequence[TargetProfile]) -> None:
    """Before any build: the device must be the machine of at least one target (exit 2
    otherwise, saying what it reported); the others get its figures for reference only."""
    if opts.device is None or not opts.device.startswith("ssh://"):
        return
    reasons = [device_mismatch(opts, t) for t in targets]
    if all(reasons):
        raise BadInputError(
            f"--device {opts.device}",
            "is not the machine of any target given: " + "; ".join(dict.fromkeys(reasons)),
            "Measure on the target's own device, or describe this device in a profile "
            "(inherit = \"<target>\" and set [hardware] arch / cpu; see docs/devices.md)")


def _compiled_edgetpu(tflite: Path, folder: Path | None) -> Path | None:
    """The Edge TPU model: ``tflite`` itself when it was compiled, else the compiler's output
    beside it (``<stem>_edgetpu.tflite`` in the artifacts folder)."""
    if "CUSTOM:edgetpu-custom-op" in parse_tflite(tflite.read_bytes(), str(tflite)).op_types():
        return tflite
    compiled = (folder or tflite.parent) / f"{tflite.stem}_edgetpu.tflite"
    return compiled if compiled.is_file() else None


def device_figures(tflite: Path, target: TargetProfile, opts: OnTarget, sample: np.ndarray,
                   artifacts_dir: Path | None = None) -> tuple[list[Measurement], dict[str, str]]:
    """The device's figures, and per quantity why none stands for ``target`` (if so).

    A figure from a device that is not the target's machine is kept with ``where`` naming the
    device, like the host's figures, so no check can use it. An Edge TPU figure is the TPU's
    only when the compiled model ran through the Edge TPU delegate."""
    from edgeprune.device import parse_ssh
    from edgeprune.runners.ssh import DelegateMissing, measure_on_device

    reason = device_mismatch(opts, target)
    model, delegate = tflite, None
    if target.hardware.kind == "edgetpu":
        compiled = _compiled_edgetpu(tflite, artifacts_dir)
        if compiled is None:
            why = ("no compiled Edge TPU model: edgetpu_compiler was not on this machine's PATH, "
                   "so there is no *_edgetpu.tflite to run on the TPU (install Coral's "
                   "edgetpu-compiler package and rebuild, or check a compiled model)")
            return [], {"latency_ms": why, "ram_bytes": why}
        model, delegate = compiled, EDGETPU_DELEGATE
    try:
        measurements = measure_on_device(
            model, target, opts.device, opts.known_hosts, opts.identity,
            target.runtime.threads, sample, remote_python=opts.remote_python, delegate=delegate)
    except DelegateMissing as exc:
        why = (f"the device cannot load the Edge TPU delegate: {exc.what} {exc.problem} "
               f"({exc.fix})")
        return [], {"latency_ms": why, "ram_bytes": why}
    not_used = {m.quantity: reason for m in measurements} if reason else {}
    if delegate and "ram_bytes" not in not_used:
        not_used["ram_bytes"] = ("the host process's peak RSS is not the Edge TPU's on-chip "
                                 "memory")
    label = parse_ssh(opts.device).label
    return [dataclasses.replace(m, where=f"device {label}",
                                detail=f"{m.detail}; not {target.name}'s figure: "
                                       f"{not_used[m.quantity]}")
            if m.quantity in not_used else m for m in measurements], not_used


def on_target(
    tflite: Path, target: TargetProfile, opts: OnTarget, samples: np.ndarray,
    artifacts_dir: Path | None = None,
) -> tuple[list[Measurement], dict[str, Any]]:
    """Device (method ``device``) and emulator (method ``qemu``) figures, plus report details
    (``device_not_used``: per quantity, why the device's figure is not the target's)."""
    measurements: list[Measurement] = []
    details: dict[str, Any] = {}
    if opts.device is not None:
        details["device"] = opts.device
    if opts.device is not None and opts.device.startswith("serial:"):
        from edgeprune.runners.serial_device import measure_over_serial

        measurements += measure_over_serial(tflite, target, opts.device)
    elif opts.device is not None:
        measurements, not_used = device_figures(tflite, target, opts, samples[0], artifacts_dir)
        if not_used:
            details["device_not_used"] = not_used
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
