"""Arm Ethos-U: compile with Vela and turn its performance summary into measurements.

Vela (``pip install 'edgeprune[vela]'``) rewrites the supported part of an int8/int16 model into
one ``ethos-u`` custom op (a command stream for the NPU) and leaves the rest for the CPU. Its
summary CSV is a static estimate: NPU cycles and inference time at the configured clock and
memory bandwidths, SRAM and flash used. Ops left on the CPU are not in its time.

Configuration: Vela's own ``Arm/vela.ini``. For a U55 that is ``Ethos_U55_High_End_Embedded``
(500 MHz NPU, 4 GB/s SRAM, 0.5 GB/s off-chip flash, as on Corstone-300) with the
``Shared_Sram`` memory mode (the SRAM holds the tensor arena, weights stay in flash).
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeprune.artifacts import Artifacts
from edgeprune.data import Inputs
from edgeprune.errors import ToolError
from edgeprune.measurement import Measurement
from edgeprune.targets import TargetProfile
from edgeprune.tflite.graph import parse_tflite

log = logging.getLogger(__name__)

CONFIG_FILE = "Arm/vela.ini"  # shipped inside ethos-u-vela (vela --list-config-files)
DEFAULT_ACCELERATOR = "ethos-u55-128"
# accelerator family -> (system config, memory mode) from Arm/vela.ini
SYSTEM_CONFIGS = {
    "ethos-u55": ("Ethos_U55_High_End_Embedded", "Shared_Sram"),
    "ethos-u65": ("Ethos_U65_High_End", "Dedicated_Sram"),
    "ethos-u85": ("Ethos_U85_SYS_DRAM_Mid", "Dedicated_Sram_384KB"),
}
TIMEOUT_S = 600
_OPERATORS = re.compile(r"^(CPU|NPU) operators = (\d+)", re.MULTILINE)


@dataclass(frozen=True)
class VelaRun:
    summary: dict[str, str]  # the CSV's one row
    summary_path: Path
    model_path: Path  # <model>_vela.tflite
    cpu_operators: int | None
    npu_operators: int | None
    command: list[str]


def available() -> bool:
    return importlib.util.find_spec("ethosu.vela") is not None


def vela_version() -> str | None:
    try:
        return metadata.version("ethos-u-vela")
    except metadata.PackageNotFoundError:
        return None


def configuration(accelerator: str) -> tuple[str, str]:
    family = accelerator.rsplit("-", 1)[0]
    return SYSTEM_CONFIGS.get(family, SYSTEM_CONFIGS["ethos-u55"])


def compile_model(tflite_path: Path, out_dir: Path, accelerator: str) -> VelaRun:
    """Run Vela on ``tflite_path``; its outputs go to ``out_dir`` (named after the model)."""
    system_config, memory_mode = configuration(accelerator)
    cmd = [
        sys.executable, "-m", "ethosu.vela", "--accelerator-config", accelerator,
        "--config", CONFIG_FILE, "--system-config", system_config,
        "--memory-mode", memory_mode, "--output-dir", str(out_dir), str(tflite_path),
    ]
    reproduce = f"Reproduce with: {shlex.join(['vela', *cmd[3:]])}"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise ToolError("vela", f"timed out after {TIMEOUT_S} s on {tflite_path}",
                        reproduce) from exc
    stem = tflite_path.stem
    summary_path = out_dir / f"{stem}_summary_{system_config}.csv"
    model_path = out_dir / f"{stem}_vela.tflite"
    if proc.returncode != 0 or not summary_path.is_file() or not model_path.is_file():
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:]) or "no output"
        raise ToolError("vela", f"failed on {tflite_path} (exit {proc.returncode}): {tail}",
                        reproduce)
    with summary_path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ToolError("vela", f"wrote an empty summary {summary_path.name}", reproduce)
    counts = {kind: int(n) for kind, n in _OPERATORS.findall(proc.stdout)}
    return VelaRun(rows[0], summary_path, model_path, counts.get("CPU"), counts.get("NPU"), cmd)


def _num(summary: dict[str, str], key: str) -> float:
    try:
        return float(summary[key])
    except (KeyError, ValueError) as exc:
        raise ToolError("vela", f"summary has no numeric {key!r}",
                        "Check the ethos-u-vela version (edgeprune expects 5.x)") from exc


def build(
    tflite_path: Path, work_dir: Path, target: TargetProfile, inputs: Inputs | None = None
) -> Artifacts:
    """``model_vela.tflite`` + Vela's summary CSV in ``work_dir``, and the estimates."""
    if not available():
        note = ("ethos-u-vela is not installed, so the model was not compiled for the NPU and "
                "its latency/SRAM were not estimated. Install it with: pip install "
                "'edgeprune[vela]'")
        log.warning(note)
        return Artifacts(report={"compiler": "vela", "skipped": note})
    accelerator = target.hardware.accelerator or DEFAULT_ACCELERATOR
    run = compile_model(tflite_path, work_dir, accelerator)
    s = run.summary
    clock_hz = _num(s, "core_clock")
    cycles_total = int(_num(s, "cycles_total"))
    cycles_npu = int(_num(s, "cycles_npu"))
    sram = round(_num(s, "sram_memory_used") * 1024)  # the CSV is in KiB
    flash = round(_num(s, "off_chip_flash_memory_used") * 1024)
    latency_ms = _num(s, "inference_time") * 1e3
    out_graph = parse_tflite(run.model_path)
    cpu_ops = sorted({t for t in out_graph.op_types() if t != "CUSTOM:ethos-u"})
    config = f"{accelerator} @ {clock_hz / 1e6:g} MHz, {s['system_config']}, {s['memory_mode']}"
    cpu_note = ("" if not cpu_ops else
                f"; {', '.join(cpu_ops)} run on the CPU and are not included")
    where = target.name
    measurements = [
        Measurement("latency_ms", round(latency_ms, 6), "ms", "estimate", where,
                    f"Vela {vela_version()} performance estimate ({config}): "
                    f"{cycles_total:,} cycles{cpu_note}"),
        Measurement("ram_bytes", sram, "bytes", "estimate", where,
                    f"SRAM used per Vela ({config}): tensor arena incl. NPU scratch"),
        Measurement("flash_bytes", flash, "bytes", "estimate", where,
                    f"off-chip flash used per Vela ({config}): weights and command stream; "
                    "runtime code not included"),
    ]
    kept = work_dir / "model_vela.tflite"
    if run.model_path != kept:
        run.model_path.replace(kept)
    # What is flashed is Vela's model, not model.tflite: its size is the artifact figure.
    measurements.insert(0, Measurement(
        "flash_bytes", kept.stat().st_size, "bytes", "artifact", where,
        f"size of model_vela.tflite (Vela's optimised model: NPU command stream, encoded "
        f"weights, CPU ops; Vela's own figure for flash used is {flash} B); runtime code not "
        "included"))
    report: dict[str, Any] = {
        "compiler": "vela",
        "vela_version": vela_version(),
        "accelerator": accelerator,
        "system_config": s["system_config"],
        "memory_mode": s["memory_mode"],
        "config_file": CONFIG_FILE,
        "clock_mhz": clock_hz / 1e6,
        "cycles_total": cycles_total,
        "cycles_npu": cycles_npu,
        "inference_time_ms": round(latency_ms, 6),
        "sram_bytes": sram,
        "off_chip_flash_bytes": flash,
        "npu_operators": run.npu_operators,
        "cpu_operators": run.cpu_operators,
        "cpu_ops": cpu_ops,
        "model_vela_bytes": kept.stat().st_size,
        "files": sorted([kept.name, run.summary_path.name]),
        "command": shlex.join(["vela", *run.command[3:-3], "--output-dir", "OUT",
                               "model.tflite"]),
    }
    return Artifacts(measurements, report, [kept, run.summary_path])
