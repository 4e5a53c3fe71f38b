"""Convert stage: the final model to .tflite bytes with the recipe's quantization."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeprune.converter import to_tflite
from edgeprune.recipe import Recipe
from edgeprune.targets import TargetProfile


def key_parts(recipe: Recipe, target: TargetProfile) -> dict[str, Any]:
    """The quantization mode; the hardware kind decides integer or float I/O."""
    return {"recipe": recipe.pick(("quantize",)), "target": {"kind": target.hardware.kind}}


def run(model: Any, recipe: Recipe, calib: np.ndarray | None, target: TargetProfile) -> bytes:
    return to_tflite(model, recipe.quantize, calib, target)
