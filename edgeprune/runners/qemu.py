"""Emulated ARM: run the artifact on real aarch64 LiteRT kernels under QEMU user mode.

Two things come out of it:

1. A functional check: the raw output tensors on the samples, computed by the aarch64 build of
   LiteRT (XNNPACK's ARM kernels), compared bit for bit with host LiteRT's.
2. Latency from instruction counts: a TCG plugin counts the guest instructions retired between
   two markers the runner sets around N timed invokes (one thread, after a warm-up invoke);
   / N is instructions per inference, and latency = instructions / (effective IPC × clock), with
   the IPC calibrated on published hardware numbers (see ``CALIBRATION``). QEMU's wall time
   says nothing about the device, so it is never used.

Two traps, handled here: QEMU user mode passes the host's x86 /proc/cpuinfo through (LiteRT's
cpuinfo then finds no ARM cores and segfaults), so an ARM cpuinfo for the target's core is put at
ROOT/proc/cpuinfo, which ``qemu-aarch64 -L ROOT`` serves instead; and the default
``QEMU_CPU=max`` makes XNNPACK return wrong int8 results, so ``QEMU_CPU`` is the profile's core.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.errors import BadInputError, ToolError
from edgeprune.measurement import Measurement
from edgeprune.runners import host
from edgeprune.runners.device_info import this_machine
from edgeprune.runners.qemu_provision import ArmRoot, cache_dir, locked, provision
from edgeprune.runners.ssh import RUNNER, parse_report
from edgeprune.targets import TargetProfile

log = logging.getLogger(__name__)

# MIDR part numbers (Arm Ltd, implementer 0x41) and the features the real cores report.
_CORES = {
    "cortex-a35": ("0xd04", "fp asimd evtstrm crc32 cpuid"),
    "cortex-a53": ("0xd03", "fp asimd evtstrm crc32 cpuid"),
    "cortex-a57": ("0xd07", "fp asimd evtstrm crc32 cpuid"),
    "cortex-a72": ("0xd08", "fp asimd evtstrm crc32 cpuid"),
    "cortex-a76": ("0xd0b", "fp asimd evtstrm crc32 atomics fphp asimdhp cpuid asimdrdm "
                            "lrcpc dcpop asimddp"),
    "neoverse-n1": ("0xd0c", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
                             "asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs"),
}

# --- IPC calibration (the numbers and their sources) -----------------------------------------
# Published: MobileNet v1 1.0 224 int8 runs in 24 ms on a Raspberry Pi 4 (4× Cortex-A72 @ 1.5 GHz,
# 4 threads, XNNPACK; google/XNNPACK README). Counted here: that network (keras.applications
# MobileNet, weights=None, converted with edgeprune's int8 path) executes 174.77 M guest
# instructions per inference on one thread (counts of 2–4 invokes on two inputs agree within
# 0.003 %) with LiteRT 2.3.0's aarch64 wheel under QEMU 7.2, QEMU_CPU=cortex-a72 (reproduce with
# ``count_instructions``; tests/runners/test_qemu.py re-counts it).
# Solving 24 ms × 1500 MHz = 174.77 M / IPC gives an *effective* IPC of 4.85 for 4 threads: the
# instructions of one inference retired per clock by the whole 4-core Pi 4. The rpi4 profile runs
# 4 threads, so its figure uses this directly, with no assumption about thread scaling.
# Other thread counts scale by the only published Pi 4 thread table (EfficientDet-Lite0 fp32,
# 1/2/3/4 threads: 328.7/210.2/182.0/175.8 ms), so 1 thread = 1.87× the 4-thread time. That
# table comes from a model with a serial post-processing tail, so it likely understates
# MobileNet-like scaling: treat 1–3-thread figures as rougher than 4-thread ones.
# Cortex-A76 (Pi 5, 2.4 GHz): no published MobileNet figure; the A72's effective IPC is scaled by
# the Pi 5's per-clock advantage in the same EfficientDet-Lite0 tables (4 threads: 175.8 vs
# 62.2 ms at 1.5 vs 2.4 GHz → ×1.77 per clock), with the Pi 5 table for other thread counts.
# Caveat: under QEMU_CPU=cortex-a76 XNNPACK uses dot-product (SDOT) kernels, a different
# instruction mix than the fp32 workload the ratio comes from.
# Other cores have no published anchor, so they get instruction counts but no latency.
# Expect tens of percent of error for models unlike MobileNet; a device run is the real figure.
MOBILENET_V1_INT8_INSTRUCTIONS_A72 = 174.77e6
_PI4_MS = (328.7, 210.2, 182.0, 175.8)
_PI5_MS = (104.0, 72.9, 64.3, 62.2)
_IPC4_A72 = MOBILENET_V1_INT8_INSTRUCTIONS_A72 / (24.0e-3 * 1500e6)
_A76_PER_CLOCK_4T = (_PI4_MS[3] / _PI5_MS[3]) / (2400 / 1500)
CALIBRATION: dict[str, dict[str, Any]] = {
    "cortex-a72": {
        "ipc4": _IPC4_A72,  # effective IPC at 4 threads
        "time_vs_4_threads": tuple(t / _PI4_MS[3] for t in _PI4_MS),
        "how": "effective IPC at 4 threads calibrated on MobileNet v1 int8 (24 ms on a Pi 4, "
               "XNNPACK README) and its 174.77 M instructions counted under QEMU; other thread "
               "counts scaled by the published Pi 4 EfficientDet-Lite0 thread table",
    },
    "cortex-a76": {
        "ipc4": _IPC4_A72 * _A76_PER_CLOCK_4T,
        "time_vs_4_threads": tuple(t / _PI5_MS[3] for t in _PI5_MS),
        "how": "the A72's MobileNet-v1-calibrated effective IPC (Pi 4, 24 ms) × the Pi 5's "
               "per-clock advantage in the published 4-thread EfficientDet-Lite0 figures "
               "(×1.77; from fp32, so it does not cover the dot-product kernels XNNPACK uses on "
               "the A76: treat as optimistic); other thread counts scaled by the Pi 5 table",
    },
}


@dataclass(frozen=True)
class QemuResult:
    measurements: list[Measurement]
    bit_identical: bool
    outputs_compared: int
    detail: str
    instructions_per_inference: float | None = None
    ipc: float | None = None
    max_abs_diff: float = 0.0
    report: dict[str, Any] = field(default_factory=dict)  # remote_bench.py's JSON from the guest


def qemu_binary(plugin: bool) -> str:
    names = ["qemu-aarch64"] if plugin else ["qemu-aarch64", "qemu-aarch64-static"]
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise ToolError("qemu-aarch64", "QEMU user-mode emulation is not installed",
                    "apt install qemu-user (the dynamic qemu-aarch64 accepts -plugin)")


def _core(target: TargetProfile) -> str:
    cpu = target.hardware.cpu
    if target.hardware.kind not in ("cortex-a", "edgetpu") or cpu not in _CORES:
        raise BadInputError(
            f"--target {target.name}", f"QEMU emulates Arm application cores; cpu {cpu!r} "
            f"({target.hardware.kind}) is not one of {', '.join(_CORES)}",
            "Use a cortex-a target such as rpi4 or rpi5",
        )
    return cpu


def cpuinfo_text(cpu: str, cores: int) -> str:
    """/proc/cpuinfo as an arm64 Linux kernel writes it for ``cores`` × ``cpu``."""
    part, features = _CORES[cpu]
    block = (f"BogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
             f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 3\n\n")
    return "".join(f"processor\t: {i}\n{block}" for i in range(cores))


def _prepare_cpu_files(root: Path, cpu: str, cores: int) -> None:
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc/cpuinfo").write_text(cpuinfo_text(cpu, cores))
    sysfs = root / "sys/devices/system/cpu"
    sysfs.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present", "online"):
        (sysfs / name).write_text(f"0-{cores - 1}\n" if cores > 1 else "0\n")


def _guest_run(
    arm: ArmRoot, cpu: str, argv: list[str], plugin_out: Path | None, timeout: float
) -> dict[str, Any]:
    qemu = qemu_binary(plugin_out is not None)
    cmd = [qemu, "-L", str(arm.root)]
    if plugin_out is not None:
        cmd += ["-plugin", f"{arm.plugin},out={plugin_out}"]
    # -S -s -E: no site, no user site, no PYTHON* variables: only the root's stdlib + our wheels.
    # -B: write no .pyc (provisioning compiled them), so every run executes the same code.
    cmd += [str(arm.python), "-S", "-s", "-E", "-B", *argv]
    env = {"QEMU_CPU": cpu, "PYTHONHASHSEED": "0", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
           "HOME": "/tmp", "TF_CPP_MIN_LOG_LEVEL": "2"}
    repro = "Reproduce with: " + " ".join(f"{k}={v}" for k, v in env.items() if "QEMU" in k) \
        + " " + shlex.join(cmd)
    start = time.monotonic()
    try:
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolError("qemu-aarch64", f"the emulated run took over {timeout:g} s",
                        repro) from None
    log.debug("qemu run (%s) took %.1f s", cpu, time.monotonic() - start)
    report = parse_report(res.stdout)
    if res.returncode != 0 or not report.get("ok"):
        tail = " | ".join(res.stderr.strip().splitlines()[-3:])
        problem = report.get("error") or (f"missing {report['missing']}" if report.get("missing")
                                          else f"exit {res.returncode}: {tail or 'no output'}")
        raise ToolError("LiteRT under qemu-aarch64", problem, repro)
    return report


def _read_counts(path: Path) -> tuple[int, int, int]:
    """The plugin's "total start end" instruction counts."""
    try:
        total, start, end = (int(v) for v in path.read_text().split())
        return total, start, end
    except (OSError, ValueError) as exc:
        raise ToolError("QEMU instruction-count plugin", f"wrote no count ({exc})",
                        "Rerun with -v; check that qemu-aarch64 accepts -plugin") from None


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def measure_in_qemu(
    tflite: Path,
    target: TargetProfile,
    samples: np.ndarray,
    *,
    invokes: int = 5,
    timeout: float = 1800.0,
    cache: Path | None = None,
) -> QemuResult:
    """Run ``tflite`` on aarch64 LiteRT under QEMU (QEMU_CPU = the profile's core): bit-exact
    comparison of the outputs on ``samples`` with host LiteRT's, and, when the counting plugin
    is available and the core is calibrated, latency from instructions per inference."""
    cpu = _core(target)
    tflite = Path(tflite)
    if not tflite.is_file():
        raise BadInputError(str(tflite), "no such model file", "Give a .tflite path")
    samples = np.asarray(samples, dtype=np.float32)
    arm = provision(cache)
    expected = host.predict(tflite, samples, threads=1, raw=True)
    counting = arm.plugin is not None
    with locked((cache or cache_dir()) / "qemu-run.lock"):  # one cpuinfo in the root at a time
        _prepare_cpu_files(arm.root, cpu, target.hardware.cores)
        run_dir = Path(tempfile.mkdtemp(prefix="edgeprune-run-", dir=arm.root / "tmp"))
        try:
            shutil.copy(tflite, run_dir / "model.tflite")
            shutil.copy(RUNNER, run_dir / RUNNER.name)
            np.save(run_dir / "samples.npy", host.quantize_input(tflite, samples))
            argv = [str(run_dir / RUNNER.name), "--path", str(arm.site),
                    str(run_dir / "model.tflite"), "--threads", "1", "--warmup", "1",
                    "--runs", str(invokes if counting else 0),
                    "--input", str(run_dir / "samples.npy"),
                    "--outputs", str(run_dir / "outputs.npy"), "--mark"]
            report = _guest_run(arm, cpu, argv, run_dir / "count.txt" if counting else None,
                                timeout)
            outputs = np.load(run_dir / "outputs.npy", allow_pickle=False)
            per_inference = None
            if counting:
                _total, start, end = _read_counts(run_dir / "count.txt")
                if 0 < start < end:
                    per_inference = (end - start) / invokes
                else:
                    arm = replace(arm, plugin_problem=f"the plugin saw no markers ({start}, {end})")
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
    return _result(target, cpu, arm, expected, outputs, per_inference, invokes, report)


def _result(
    target: TargetProfile, cpu: str, arm: ArmRoot, expected: np.ndarray, outputs: np.ndarray,
    per_inference: float | None, invokes: int, report: dict[str, Any],
) -> QemuResult:
    same = _identical(expected, outputs)
    max_diff = 0.0
    if expected.shape == outputs.shape and not same:
        max_diff = float(np.max(np.abs(expected.astype(np.float64) - outputs.astype(np.float64))))
    check = (f"outputs of {len(outputs)} samples {'bit-identical to' if same else 'DIFFER from'}"
             f" host LiteRT's (raw {outputs.dtype} tensors"
             + ("" if same else f", max |diff| {max_diff:g}") + ")")
    details = [f"aarch64 LiteRT {report.get('runtime')} on Debian {arm.python_version} under "
               f"QEMU user mode, QEMU_CPU={cpu}", check]
    measurements: list[Measurement] = []
    ipc = None
    if per_inference is None:
        details.append(f"no instruction count: {arm.plugin_problem}")
    else:
        details.append(f"{per_inference / 1e6:.3f} M instructions per inference "
                       f"(counted over {invokes} invokes after a warm-up, one thread)")
        cal = CALIBRATION.get(cpu)
        if cal is None:
            details.append(f"no latency: no published figure calibrates the IPC of {cpu}")
        elif target.hardware.clock_mhz <= 0:
            details.append(f"no latency: {target.name} sets no hardware.clock_mhz")
        else:
            threads = target.runtime.threads
            table = cal["time_vs_4_threads"]
            ipc = float(cal["ipc4"]) / table[min(threads, len(table)) - 1]  # at these threads
            ms = per_inference / (ipc * target.hardware.clock_mhz * 1e3)
            how = (f"{per_inference / 1e6:.3f} M instructions per inference counted under QEMU "
                   f"(QEMU_CPU={cpu}) / (effective IPC {ipc:.2f} for {threads} thread(s) × "
                   f"{target.hardware.clock_mhz:g} MHz); {cal['how']}; "
                   + ("outputs bit-identical to host LiteRT" if same else "OUTPUTS DIFFER"))
            measurements.append(Measurement(
                "latency_ms", ms, "ms", "qemu", target.name, how,
                f"QEMU user mode (aarch64, QEMU_CPU={cpu}) on {this_machine()}"))
            details.append(f"latency {ms:.4f} ms at IPC {ipc:.2f}")
    return QemuResult(measurements, same, len(outputs), "; ".join(details), per_inference, ipc,
                      max_diff, report)


def count_instructions(
    tflite: Path, cpu: str, sample: np.ndarray, invokes: int = 3, cache: Path | None = None
) -> float:
    """Instructions per inference of ``tflite`` on ``cpu`` (one thread): how the calibration
    constant MOBILENET_V1_INT8_INSTRUCTIONS_A72 was measured."""
    from edgeprune.targets import Budgets, Hardware, Runtime

    profile = TargetProfile(f"qemu-{cpu}", "", Hardware("cortex-a", cpu=cpu, cores=4),
                            Runtime("litert-xnnpack"), Budgets())
    result = measure_in_qemu(tflite, profile, np.asarray(sample)[None], invokes=invokes,
                             cache=cache)
    if result.instructions_per_inference is None:
        raise ToolError("QEMU instruction counting", result.detail,
                        "apt install gcc qemu-user, then rerun")
    return result.instructions_per_inference

