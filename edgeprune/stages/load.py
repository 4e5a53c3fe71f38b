"""Load stage: the model and its data, checked against each other before any slow work.

Labelled data, held-out data and calibration samples are validated against the model's input
shape and classes. Without ``--val`` a seeded share of ``--data`` is held out and never trained
on; without ``--calib`` calibration samples come from ``--data``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeprune import converter, model_io
from edgeprune import data as data_mod
from edgeprune.errors import DataError
from edgeprune.recipe import Recipe
from edgeprune.stages import prune, qat
from edgeprune.targets import TargetProfile

# What loading reads from the recipe: the seeded hold-out split and calibration sample.
READS = ("seed", "calib_samples")


def key_parts(recipe: Recipe, target: TargetProfile) -> dict[str, Any]:
    return {"recipe": recipe.pick(READS)}


def run(model_path: Path, recipe: Recipe, *, data: Path | None, val: Path | None,
        calib: Path | None, trust_model: bool) -> tuple[Any, data_mod.Inputs]:
    """The model and its inputs; what the recipe's pruner would refuse is refused here."""
    model = model_io.load_model(model_path, trust_model=trust_model)
    inputs = load_inputs(model, recipe, data, val, calib)
    prune.check(model, recipe, inputs)
    return model, inputs


def load_inputs(model: Any, recipe: Recipe, data_path: Path | None, val_path: Path | None,
                calib_path: Path | None) -> data_mod.Inputs:
    """Labelled data, held-out data and calibration samples, checked against the model."""
    shape = tuple(model.input_shape)
    n_classes = model_io.num_classes(model)
    train = data_mod.load_labelled(data_path, "--data") if data_path else None
    val = data_mod.load_labelled(val_path, "--val") if val_path else None
    for option, labelled in (("--data", train), ("--val", val)):
        if labelled is not None:
            x = data_mod.check_against_model(labelled.x, shape, f"{option} {labelled.source}")
            labelled = data_mod.Labelled(x, labelled.y, labelled.source)
            data_mod.check_labels(labelled, n_classes, option)
            train, val = (labelled, val) if option == "--data" else (train, labelled)
    holdout = False
    if val is None and train is not None:
        train, val = data_mod.holdout_split(train, recipe.seed)
        holdout = True
    calib = None
    if calib_path is not None:
        calib = data_mod.check_against_model(
            data_mod.load_calib(calib_path), shape, f"--calib {calib_path}"
        )
    elif train is not None:
        calib = train.x
    if calib is not None:
        calib = data_mod.calibration_sample(calib, recipe.calib_samples, recipe.seed)
    if recipe.quantize in converter.CALIBRATED_MODES and calib is None:
        raise DataError(
            f"--quantize {recipe.quantize}",
            "needs calibration samples and neither --calib nor --data was given",
            "Pass --calib SAMPLES (.npz/.npy/image folder) or --data TRAIN.npz",
        )
    qat.check_inputs(recipe, train)
    return data_mod.Inputs(train=train, val=val, calib=calib, val_is_holdout=holdout)
