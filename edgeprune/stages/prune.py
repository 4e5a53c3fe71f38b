"""Prune stage: dispatch on ``recipe.prune`` through a registry of pruners.

A pruner returns a ``Pruned``: the model to fine-tune (possibly TF-MOT-wrapped), the callbacks
fine-tuning needs, how to strip the wrappers afterwards, and per-layer notes for the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from edgeprune.data import Inputs, fit_split
from edgeprune.errors import RecipeError
from edgeprune.recipe import Recipe
from edgeprune.targets import TargetProfile


def _identity(model: Any) -> Any:
    return model


@dataclass
class Pruned:
    model: Any
    needs_training: bool = False  # TF-MOT applies its masks only during training steps
    callbacks: list[Any] = field(default_factory=list)
    strip: Callable[[Any], Any] = _identity
    layers: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # TF-MOT's schedule must finish before early stopping may pick a "best" epoch.
    min_epochs: int = 0


Pruner = Callable[[Any, Recipe, TargetProfile, Inputs], Pruned]
PRUNERS: dict[str, Pruner] = {}


def register_pruner(name: str) -> Callable[[Pruner], Pruner]:
    def decorate(fn: Pruner) -> Pruner:
        PRUNERS[name] = fn
        return fn

    return decorate


def steps_per_epoch(inputs: Inputs, recipe: Recipe) -> int:
    """Optimizer steps per epoch of the fine-tune stage (which trains on ``fit_split``)."""
    n = len(fit_split(inputs.train, recipe.seed)[0]) if inputs.train is not None else 0
    return max(1, -(-n // recipe.batch_size))


def _needs_training(recipe: Recipe, inputs: Inputs) -> None:
    if inputs.train is None:
        raise RecipeError(
            f"--prune {recipe.prune}",
            "TF-MOT applies its masks while training, so it needs labelled training data",
            "Pass --data TRAIN.npz (with x and y), or use --prune structured",
        )
    if recipe.epochs < 1:
        raise RecipeError(
            f"--prune {recipe.prune} with --epochs 0",
            "TF-MOT applies its masks while training",
            "Pass --epochs 1 or more",
        )


@register_pruner("none")
def prune_none(model: Any, recipe: Recipe, target: TargetProfile, inputs: Inputs) -> Pruned:
    return Pruned(model=model)


@register_pruner("magnitude")
def prune_magnitude(model: Any, recipe: Recipe, target: TargetProfile, inputs: Inputs) -> Pruned:
    from edgeprune.pruning import tfmot

    _needs_training(recipe, inputs)
    # Reach the final sparsity after ~2/3 of the epochs, leaving the rest to recover.
    schedule_epochs = max(1, (2 * recipe.epochs) // 3)
    end_step = schedule_epochs * steps_per_epoch(inputs, recipe)
    wrapped = tfmot.wrap_magnitude(model, recipe.sparsity, end_step, recipe.keep)
    return Pruned(
        model=wrapped,
        needs_training=True,
        callbacks=tfmot.callbacks(None),
        strip=tfmot.strip,
        min_epochs=schedule_epochs,
        notes=[
            f"TF-MOT magnitude pruning to {recipe.sparsity:.0%} zeros (polynomial schedule over "
            f"{end_step} steps). Unstructured zeros are stored and multiplied by LiteRT and "
            "TFLite-Micro: they shrink the compressed download, not the .tflite or latency."
        ],
    )


@register_pruner("m-by-n")
def prune_m_by_n(model: Any, recipe: Recipe, target: TargetProfile, inputs: Inputs) -> Pruned:
    from edgeprune.pruning import tfmot

    _needs_training(recipe, inputs)
    return Pruned(
        model=tfmot.wrap_m_by_n(model, 2, 4, recipe.keep),
        needs_training=True,
        callbacks=tfmot.callbacks(None),
        strip=tfmot.strip,
        min_epochs=1,
        notes=[
            "TF-MOT 2:4 pruning (50 % zeros in every block of 4). No shipped target's int8 "
            "runtime has 2:4 kernels: expect no latency or .tflite size change."
        ],
    )


def _structured(model: Any, recipe: Recipe, target: TargetProfile, inputs: Inputs) -> Any:
    from edgeprune.pruning import prune_structured

    labelled = (inputs.train.x, inputs.train.y) if inputs.train is not None else None
    return prune_structured(
        model,
        sparsity=recipe.sparsity,
        criterion=recipe.criterion,
        allocation=recipe.allocation,
        channel_multiple=target.hardware.channel_multiple,
        keep=recipe.keep,
        calib=inputs.calib,
        data=labelled,
    )


@register_pruner("structured")
def prune_channels(model: Any, recipe: Recipe, target: TargetProfile, inputs: Inputs) -> Pruned:
    result = _structured(model, recipe, target, inputs)
    return Pruned(
        model=result.model,
        layers=result.layers,
        notes=[
            f"structured pruning removed {recipe.sparsity:.0%} of prunable channels "
            f"({recipe.criterion} importance, {recipe.allocation} allocation, kept counts "
            f"rounded to multiples of {target.hardware.channel_multiple})",
            *result.notes,
        ],
    )


@register_pruner("hybrid")
def prune_hybrid(model: Any, recipe: Recipe, target: TargetProfile, inputs: Inputs) -> Pruned:
    """Structural pruning first, then TF-MOT magnitude pruning of the remaining weights."""
    _needs_training(recipe, inputs)
    channels = prune_channels(model, recipe, target, inputs)
    weights = prune_magnitude(
        channels.model, replace(recipe, sparsity=recipe.weight_sparsity), target, inputs
    )
    weights.notes = [*channels.notes, *weights.notes]
    return weights


def run(model: Any, recipe: Recipe, target: TargetProfile, inputs: Inputs) -> Pruned:
    pruner = PRUNERS.get(recipe.prune)
    if pruner is None:
        raise RecipeError(
            f"--prune {recipe.prune}",
            "is not available in this version",
            f"Use one of: {', '.join(sorted(PRUNERS))}",
        )
    return pruner(model, recipe, target, inputs)
