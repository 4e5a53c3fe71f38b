"""Artifacts stage: the device files a target needs beside model.tflite, and what they measure.

Runs right after conversion, on the emitted model. Dispatch on ``target.hardware.kind``:

- ``cortex-m``: TFLite-Micro C sources, the measured arena, a TFLM-vs-LiteRT output check.
- ``ethos-u``: Vela's optimised model, its summary and its cycle/SRAM/flash estimates.
- ``edgetpu``: the Edge TPU compatibility report (and the compiled model when
  ``edgetpu_compiler`` is on PATH).
- anything else: nothing.
"""

from __future__ import annotations

from pathlib import Path

from edgeprune.artifacts import Artifacts
from edgeprune.data import Inputs
from edgeprune.targets import TargetProfile


def run(tflite_path: Path, work_dir: Path, target: TargetProfile,
        inputs: Inputs | None = None) -> Artifacts:
    """Write the target's artifacts into ``work_dir``; returns their measurements and report."""
    kind = target.hardware.kind
    if kind == "cortex-m":
        from edgeprune.artifacts import tflm

        return tflm.build(tflite_path, work_dir, target, inputs)
    if kind == "ethos-u":
        from edgeprune.artifacts import vela

        return vela.build(tflite_path, work_dir, target, inputs)
    if kind == "edgetpu":
        from edgeprune.artifacts import edgetpu

        return edgetpu.build(tflite_path, work_dir, target, inputs)
    return Artifacts()
