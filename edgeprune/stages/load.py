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
from edgeprune.data import load as data_load
from edgeprune.errors import DataError
from edgeprune.recipe import Recipe
from edgeprune.stages import prune, qat
from edgeprune.targets import TargetProfile

# What loading reads from the recipe: the seeded hold-out split and calibration sample, and
# the [data] section (how images become inputs).
READS = ("seed", "calib_samples", "data")


def key_parts(recipe: Recipe, target: TargetProfile) -> dict[str, Any]:
    return {"recipe": recipe.pick(READS)}


def run(model_path: Path, recipe: Recipe, *, data: Path | None, val: Path | None,
        calib: Path | None, trust_model: bool) -> tuple[Any, data_mod.Inputs]:
    """The model and its inputs; what the recipe's pruner would refuse is refused here."""
    model = model_io.load_model(  # a SavedModel without layers can only be converted
        model_path, trust_model=trust_model,
        layerless_ok=recipe.prune == "none" and recipe.quantize != "qat")
    inputs = load_inputs(model, recipe, data, val, calib)
    prune.check(model, recipe, inputs)
    return model, inputs


def load_inputs(model: Any, recipe: Recipe, data_path: Path | None, val_path: Path | None,
                calib_path: Path | None) -> data_mod.Inputs:
    """Labelled data, held-out data and calibration samples, checked against the model."""
    shape = tuple(model.input_shape)
    n_classes = model_io.num_classes(model)
    pre = data_load.preprocessing(recipe.data, shape, [data_path, val_path, calib_path])
    labelled: dict[str, data_mod.Labelled | None] = {}
    for option, path in (("--data", data_path), ("--val", val_path)):
        found = None if path is None else data_load.load_labelled(path, option, shape,
                                                                  recipe.data)
        if found is not None:
            data_mod.check_labels(found, n_classes, option)
        labelled[option] = found
    train, val = labelled["--data"], labelled["--val"]
    classes = _class_names(train, val)
    holdout = False
    if val is None and train is not None:
        train, val = data_mod.holdout_split(train, recipe.seed)
        holdout = True
    samples: data_mod.Samples | None = None
    if calib_path is not None:
        samples = data_load.load_samples(calib_path, "--calib", shape, recipe.data)
    elif train is not None:
        samples = train.x
    calib = (None if samples is None
             else data_mod.calibration_sample(samples, recipe.calib_samples, recipe.seed))
    if recipe.quantize in converter.CALIBRATED_MODES and calib is None:
        raise DataError(
            f"--quantize {recipe.quantize}",
            "needs calibration samples and neither --calib nor --data was given",
            "Pass --calib SAMPLES (.npz/.npy/image folder) or --data TRAIN.npz",
        )
    qat.check_inputs(recipe, train)
    return data_mod.Inputs(train=train, val=val, calib=calib, val_is_holdout=holdout,
                           preprocessing=None if pre is None else pre.to_dict(),
                           classes=classes)


def _class_names(train: data_mod.Labelled | None, val: data_mod.Labelled | None) -> list[str]:
    """The class folders' names (label order); --data and --val folders must agree."""
    names = [list(d.found["classes"]) for d in (train, val) if d and "classes" in d.found]
    if len(names) == 2 and names[0] != names[1]:
        assert train is not None and val is not None
        raise DataError(f"--val {val.source}", f"has class folders {names[1]} but --data "
                        f"{train.source} has {names[0]}", "Give both the same class folders")
    return names[0] if names else []
