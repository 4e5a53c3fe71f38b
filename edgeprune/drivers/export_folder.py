"""``edgeprune export DIR --format onnx``: add model.onnx to a finished build folder.

The model converted is the folder's model.tflite, as ``build --export onnx`` converts it, and its
agreement with LiteRT is measured on the build's recorded held-out data (else its calibration
or training data, when still unchanged at their paths), or on ``--samples``. Nothing is left
half-written: the new files are written into a hidden folder inside the build folder and
renamed into place, then manifest.json's hashes are updated, so ``edgeprune verify`` passes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgeprune.data import load as data_load
from edgeprune.dataspec import DataSpec, data_spec
from edgeprune.drivers.verify import MANIFEST, build_folders
from edgeprune.errors import BadInputError
from edgeprune.exporters import onnx as export_onnx
from edgeprune.manifest import refresh_hashes, sha256_path
from edgeprune.recipe import EXPORT_FORMATS
from edgeprune.stages import report

log = logging.getLogger(__name__)
SAMPLE_INPUTS = ("val", "calib", "data")  # the recorded inputs tried, in this order


def export(folder: Path, formats: tuple[str, ...], samples: Path | None = None) -> list[Path]:
    """Write each format into every build folder in ``folder``; the paths written."""
    for fmt in formats:
        if fmt not in EXPORT_FORMATS:
            raise BadInputError(f"--format {fmt}", "is not a format edgeprune exports",
                                f"Use one of: {', '.join(EXPORT_FORMATS)}")
    export_onnx.require(f"edgeprune export {folder} --format onnx")
    return [export_onnx_into(build, samples) for build in build_folders(folder)]


def export_onnx_into(folder: Path, samples: Path | None = None) -> Path:
    rep = report.load(folder)
    what = f"edgeprune export {folder} --format onnx"
    tflite = folder / "model.tflite"
    if not tflite.is_file():
        raise BadInputError(str(tflite), "no such file (the build's emitted model)",
                            "Give a folder written by edgeprune build, or rebuild it")
    export_onnx.check(what, str(rep["recipe"].get("quantize")))
    x, source = _samples(folder, samples, tflite)
    onnx_model = export_onnx.convert(tflite, what)
    rep["onnx"] = {**export_onnx.agreement(tflite.read_bytes(), onnx_model, x, source),
                   "written_by": "edgeprune export"}
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=folder))
    try:
        (staging / export_onnx.FILENAME).write_bytes(onnx_model)
        staged = [staging / export_onnx.FILENAME, *report.write(staging, rep)]
        for path in staged:
            path.chmod(0o644)
            os.replace(path, folder / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    refresh_hashes(folder, [folder / path.name for path in staged])
    log.info("%s: written, report and manifest.json updated", folder / export_onnx.FILENAME)
    return folder / export_onnx.FILENAME


def _recorded_data_spec(folder: Path) -> DataSpec:
    try:
        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        return data_spec(f"{folder / 'report.json'} recipe", report["recipe"].get("data", {}))
    except (OSError, ValueError, KeyError, TypeError):  # older reports: the defaults
        return DataSpec()


def _samples(folder: Path, path: Path | None, tflite: Path) -> tuple[np.ndarray, str]:
    from edgeprune.tflite.graph import parse_tflite

    graph = parse_tflite(tflite, name=str(tflite))
    shape = (None, *graph.tensors[graph.inputs[0]].shape[1:])
    spec = _recorded_data_spec(folder)  # images are read as the build read them
    if path is not None:
        return data_load.load_samples(path, "--samples", shape, spec), f"--samples {path}"
    recorded = json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("inputs", {})
    for name in SAMPLE_INPUTS:
        entry = recorded.get(name) or {}
        file = Path(entry.get("path") or "")
        if entry.get("path") and file.exists() and sha256_path(file) == entry.get("sha256"):
            return (data_load.load_samples(file, f"the build's --{name}", shape, spec),
                    f"the build's --{name} {file}")
    raise BadInputError(
        str(folder), "records no --val, --calib or --data file that is still unchanged at its "
        "path, to run model.onnx and model.tflite on",
        "Pass --samples FILE (.npz/.npy or an image folder of model inputs)")
