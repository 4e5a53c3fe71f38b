"""Edge TPU artifacts: the compatibility report and, with the real compiler, its model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeprune.artifacts import Artifacts
from edgeprune.estimate.edgetpu import MIB
from edgeprune.estimate.edgetpu_compiler import edgetpu_artifacts
from edgeprune.targets import TargetProfile


def build(tflite_path: Path, work_dir: Path, target: TargetProfile, inputs: Any = None
          ) -> Artifacts:
    """``edgetpu_compat.json`` (+ ``model_edgetpu.tflite`` when ``edgetpu_compiler`` is on
    PATH). Latency comes from the Edge TPU estimator, not from here."""
    est = target.estimator
    cache = round(float(est.param_cache_mib or 0) * MIB) if est else round(7.0 * MIB)
    report = edgetpu_artifacts(tflite_path, work_dir, cache)
    files = [work_dir / "edgetpu_compat.json"]
    if (work_dir / f"{tflite_path.stem}_edgetpu.tflite").is_file():
        files.append(work_dir / f"{tflite_path.stem}_edgetpu.tflite")
    summary = {k: v for k, v in report.to_dict().items() if k != "ops"}
    return Artifacts(report={"edgetpu_compat": summary}, files=files)
