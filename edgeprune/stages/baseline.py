"""Baseline stage: the input model's own figures, from its float32 .tflite."""

from __future__ import annotations

from typing import Any

from edgeprune.converter import to_tflite
from edgeprune.data import Inputs
from edgeprune.recipe import Recipe
from edgeprune.stages.measure import accuracy, gzip_size, tflite_macs, weight_sparsity
from edgeprune.targets import TargetProfile


def key_parts(recipe: Recipe, target: TargetProfile) -> dict[str, Any]:
    """The conversion reads the hardware kind (integer I/O); nothing from the recipe."""
    return {"recipe": {}, "target": {"kind": target.hardware.kind}}


def run(model: Any, inputs: Inputs, target: TargetProfile) -> dict[str, Any]:
    base_tflite = to_tflite(model, "none", None, target)
    val = inputs.val
    return {
        "accuracy": None if val is None else accuracy(base_tflite, val.x, val.y, val.source).value,
        "params": int(model.count_params()), "macs": tflite_macs(base_tflite),
        "sparsity": weight_sparsity(model), "tflite_bytes": len(base_tflite),
        "gzip_bytes": gzip_size(base_tflite),
    }
