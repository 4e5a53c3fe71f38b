"""Prune stage: dispatch on ``recipe.prune`` through a registry of pruners.

A pruner returns a ``Pruned``: the model to fine-tune (possibly TF-MOT-wrapped), the callbacks
fine-tuning needs, how to strip the wrappers afterwards, and per-layer notes for the report.

Channel pruning (structured, hybrid) runs: an optional L1 sparsity phase (``--l1``, network
slimming) → an optional sensitivity scan (``--allocation sensitivity``) → channel selection and
surgery → optionally re-initialising the smaller architecture (``--after-prune retrain``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeprune.data import Inputs, Labelled, fit_split
from edgeprune.errors import RecipeError
from edgeprune.recipe import Recipe
from edgeprune.targets import TargetProfile
from edgeprune.training import outputs_probabilities


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
    # Channel groups (structured/hybrid): group, layers, channels, prunable, frozen_by, kept.
    groups: list[dict[str, Any]] = field(default_factory=list)
    # report.json sections of some pruners: --allocation sensitivity's scan, --prune auto's
    # trajectory.
    sensitivity: list[dict[str, Any]] | None = None
    search: dict[str, Any] | None = None
    # Non-empty: why the fine-tune stage is skipped (the pruner left the model as it was).
    skip_finetune: str = ""
    # Channels were cut: batch-norm statistics are re-estimated after fine-tuning too, since
    # its moving averages lag the weights it changed (pruning/batchnorm.py).
    recalibrate_bn: bool = False


# What pruning reads from the recipe (for its cache key; tests/test_stage_reads.py checks it).
READS = ("prune", "sparsity", "criterion", "allocation", "l1", "l1_on", "l1_epochs",
         "after_prune", "weight_sparsity", "keep", "batch_size", "learning_rate", "seed",
         "search_minutes")


def key_parts(recipe: Recipe, target: TargetProfile) -> dict[str, Any]:
    """Some pruners also read ``epochs`` (TF-MOT's schedule spans 2/3 of them; the L1 phase
    defaults to them; retraining runs them) or ``quantize`` (the budget search converts with
    it). Channel pruning reads the profile: its channel multiple, and its cost model for
    cost-aware rounding."""
    names = list(READS)
    if (recipe.prune in ("magnitude", "m-by-n", "hybrid") or recipe.after_prune == "retrain"
            or (recipe.l1 > 0 and not recipe.l1_epochs)):
        names.append("epochs")
    from edgeprune.search.anchor import has_latency_estimate

    if recipe.prune == "auto" or (recipe.prune in ("structured", "hybrid")
                                  and has_latency_estimate(target)):
        names.append("quantize")  # the anchor conversion that prices channels
    target_part = ({"profile": target.to_dict()} if recipe.prune in ("auto", "structured",
                   "hybrid") else {"channel_multiple": target.hardware.channel_multiple})
    return {"recipe": recipe.pick(names), "target": target_part}


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
    return magnitude_pruned(model, recipe.sparsity, recipe, inputs)


def magnitude_pruned(model: Any, sparsity: float, recipe: Recipe, inputs: Inputs) -> Pruned:
    from edgeprune.pruning import tfmot

    _needs_training(recipe, inputs)
    # Reach the final sparsity after ~2/3 of the epochs, leaving the rest to recover.
    schedule_epochs = max(1, (2 * recipe.epochs) // 3)
    end_step = schedule_epochs * steps_per_epoch(inputs, recipe)
    wrapped = tfmot.wrap_magnitude(model, sparsity, end_step, recipe.keep)
    return Pruned(
        model=wrapped,
        needs_training=True,
        callbacks=tfmot.callbacks(None),
        strip=tfmot.strip,
        min_epochs=schedule_epochs,
        notes=[
            f"TF-MOT magnitude pruning to {sparsity:.0%} zeros (polynomial schedule over "
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


SENSITIVITY_SAMPLES = 512  # enough to rank groups; each group is evaluated 3 times


def _check_channel_inputs(recipe: Recipe, inputs: Inputs) -> None:
    """Refuse what cannot run before any slow work starts (exit 2, naming the option)."""
    from edgeprune.pruning.importance import check_criterion

    labelled = (inputs.train.x, inputs.train.y) if inputs.train is not None else None
    check_criterion(recipe.criterion, inputs.calib, labelled)
    needs_data = {
        f"--l1 {recipe.l1:g}": recipe.l1 > 0,
        "--allocation sensitivity": recipe.allocation == "sensitivity",
        "--after-prune retrain": recipe.after_prune == "retrain",
    }
    for option, used in needs_data.items():
        if used and inputs.train is None:
            raise RecipeError(
                option, "needs labelled training data", "Pass --data TRAIN.npz (with x and y)"
            )
    if recipe.l1 > 0 and (recipe.l1_epochs or recipe.epochs) < 1:
        raise RecipeError(
            f"--l1 {recipe.l1:g} with --epochs 0",
            "the L1 sparsity phase needs at least one epoch",
            "Pass --l1-epochs N (its default is --epochs)",
        )
    if recipe.after_prune == "retrain" and recipe.epochs < 1:
        raise RecipeError(
            "--after-prune retrain with --epochs 0",
            "the re-initialised model must be trained",
            "Pass --epochs N (N ≥ 1), or use --after-prune finetune",
        )


def _l1_phase(model: Any, recipe: Recipe, train: Labelled) -> tuple[Any, str]:
    from edgeprune.pruning.regularize import NEAR_ZERO, near_zero_fraction, sparsify
    epochs = recipe.l1_epochs or recipe.epochs
    fit, _ = fit_split(train, recipe.seed)  # the same samples fine-tuning trains on
    before = near_zero_fraction(model, recipe.l1_on)
    trained = sparsify(
        model, fit.x, fit.y, l1=recipe.l1, on=recipe.l1_on, epochs=epochs,
        batch_size=recipe.batch_size, learning_rate=recipe.learning_rate, seed=recipe.seed,
        from_logits=not outputs_probabilities(model),
    )  # fmt: skip
    what = "batch-norm scales γ" if recipe.l1_on == "bn" else "conv/dense kernel weights"
    return trained, (
        f"L1 sparsity phase (network slimming): {epochs} epoch(s) with λ={recipe.l1:g}·Σ|·| "
        f"over the {what}; values below {NEAR_ZERO:g}: {before:.0%} → "
        f"{near_zero_fraction(trained, recipe.l1_on):.0%}"
    )


def _sensitivity_ratios(
    model: Any, recipe: Recipe, train: Labelled
) -> tuple[dict[int, float], str, list[dict[str, Any]]]:
    """Per-group ratios from a no-fine-tuning sensitivity scan on (a seeded subset of) ``train``."""
    from edgeprune.pruning import sensitivity
    from edgeprune.pruning.policy import allocate_by_sensitivity

    rng = np.random.default_rng(recipe.seed)
    idx = np.sort(rng.permutation(len(train))[:SENSITIVITY_SAMPLES])
    rows = sensitivity(model, (train.x[idx], train.y[idx]), criterion=recipe.criterion,
                       keep=recipe.keep)  # fmt: skip
    ratios = allocate_by_sensitivity(rows, recipe.sparsity)
    spread = ", ".join(f"group {g} {r:.0%}" for g, r in sorted(ratios.items()))
    return ratios, (
        f"sensitivity allocation: each group pruned alone at 25/50/75 % on {len(idx)} training "
        f"samples (no fine-tuning); fragile groups keep more: {spread or 'no prunable groups'}"
    ), rows


def reinitialise(model: Any, seed: int) -> Any:
    """The same architecture with fresh, seeded initial weights (``--after-prune retrain``)."""
    from edgeprune import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(seed)
    return keras.models.clone_model(model)


def cut_channels(
    model: Any, recipe: Recipe, target: TargetProfile, inputs: Inputs,
    sparsity: float | dict[int, float], channel_multiple: int | None = None,
) -> Any:  # fmt: skip
    """``model`` cut (``sparsity``, or per group id), batch-norm statistics re-estimated;
    ``channel_multiple`` overrides the target's (the gradual schedule's exact counts)."""
    from edgeprune.pruning import prune_structured
    from edgeprune.pruning.batchnorm import BN_SAMPLES, bn_sample, recalibrate_bn
    from edgeprune.search.anchor import ChannelPricer, has_latency_estimate

    labelled = (inputs.train.x, inputs.train.y) if inputs.train is not None else None
    # Kept counts round to the channel multiple where the target's cost model says a channel
    # costs least (policy.round_kept); MACs, without a latency estimator, ignore the dtype.
    mode = recipe.quantize if has_latency_estimate(target) else "none"
    pricer = ChannelPricer(model, target, mode, inputs.calib)
    result = prune_structured(
        model,
        sparsity=sparsity,
        criterion=recipe.criterion,
        allocation="uniform" if isinstance(sparsity, dict) else recipe.allocation,
        channel_multiple=(target.hardware.channel_multiple if channel_multiple is None
                          else channel_multiple),
        keep=recipe.keep,
        calib=inputs.calib,
        data=labelled,
        cost=pricer,
    )
    if pricer.note:
        result.notes.append(pricer.note)
    # The batch-norm statistics of the cut model (pruning/batchnorm.py): from the samples
    # fine-tuning trains on, else calibration samples (no labels needed).
    samples = fit_split(inputs.train, recipe.seed)[0].x if inputs.train is not None else (
        inputs.calib)
    if samples is not None and recalibrate_bn(result.model, bn_sample(samples, recipe.seed)):
        n = min(len(samples), BN_SAMPLES)
        result.notes.append(f"batch-norm statistics re-estimated on {n} samples after the cut "
                            "(adaptive BN)")
    return result


@register_pruner("structured")
def prune_channels(model: Any, recipe: Recipe, target: TargetProfile, inputs: Inputs) -> Pruned:
    _check_channel_inputs(recipe, inputs)
    notes = []
    if recipe.l1 > 0 and inputs.train is not None:
        model, note = _l1_phase(model, recipe, inputs.train)
        notes.append(note)
    sparsity: float | dict[int, float] = recipe.sparsity
    scan = None
    if recipe.allocation == "sensitivity" and inputs.train is not None:
        sparsity, note, scan = _sensitivity_ratios(model, recipe, inputs.train)
        notes.append(note)
    result = cut_channels(model, recipe, target, inputs, sparsity)
    groups = result.groups
    if isinstance(sparsity, dict):
        groups = [{**g, "ratio": round(sparsity.get(g["group"], 0.0), 4)} for g in groups]
    pruned = result.model
    if recipe.after_prune == "retrain":
        pruned = reinitialise(result.model, recipe.seed)
        notes.append(
            f"--after-prune retrain: the pruned architecture was re-initialised (seed "
            f"{recipe.seed}) and trained from scratch for up to {recipe.epochs} epoch(s); "
            "no surviving weights were kept"
        )
    return Pruned(
        model=pruned,
        layers=result.layers,
        groups=groups,
        recalibrate_bn=True,
        sensitivity=scan,  # plotted in report.html
        notes=[
            f"structured pruning removed {recipe.sparsity:.0%} of prunable channels "
            f"({recipe.criterion} importance, {recipe.allocation} allocation, kept counts "
            f"rounded to multiples of {target.hardware.channel_multiple})",
            *notes,
            *result.notes,
        ],
    )


@register_pruner("hybrid")
def prune_hybrid(model: Any, recipe: Recipe, target: TargetProfile, inputs: Inputs) -> Pruned:
    """Structural pruning first, then TF-MOT magnitude pruning of the remaining weights."""
    _needs_training(recipe, inputs)
    channels = prune_channels(model, recipe, target, inputs)
    weights = magnitude_pruned(channels.model, recipe.weight_sparsity, recipe, inputs)
    weights.notes = [*channels.notes, *weights.notes]
    weights.groups, weights.sensitivity = channels.groups, channels.sensitivity
    return weights


@register_pruner("auto")
def prune_auto(model: Any, recipe: Recipe, target: TargetProfile, inputs: Inputs) -> Pruned:
    """Budget-driven channel pruning: cut until the target's budgets are met (search/loop.py)."""
    from edgeprune.search.loop import SearchConfig, search

    result = search(
        model, target, inputs.train, quantize=recipe.quantize, calib=inputs.calib,
        config=SearchConfig(minutes=recipe.search_minutes), criterion=recipe.criterion,
        keep=recipe.keep, seed=recipe.seed, batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate,
    )
    unpruned = len(result.report["trajectory"]) == 1  # no step taken: the input model as is
    return Pruned(model=result.model, notes=result.notes, search=result.report,
                  groups=kept_channels(model, result.model, recipe.keep),
                  skip_finetune="--prune auto took no pruning step" if unpruned else "",
                  recalibrate_bn=True)


def kept_channels(model: Any, pruned: Any, keep: tuple[str, ...]) -> list[dict[str, Any]]:
    """report.json's ``pruning_groups`` of a model cut by other means than one plan (the
    search): each channel group of ``model`` with the channels ``pruned`` keeps (surgery keeps
    layer names)."""
    from edgeprune.pruning.graph import build_graph
    from edgeprune.pruning.stats import layer_stats

    widths = {r["name"]: r["out_channels"] for r in layer_stats(pruned)}
    return [{**g.as_dict(), "kept": int(widths[g.layers[0]])}
            for g in build_graph(model, keep=keep).groups if g.layers[0] in widths]


def check(model: Any, recipe: Recipe, inputs: Inputs) -> None:
    """What the pruner would refuse, checked right after loading, before the slow stages."""
    if recipe.prune in ("magnitude", "m-by-n", "hybrid"):
        _needs_training(recipe, inputs)
    if recipe.prune in ("structured", "hybrid"):
        _check_channel_inputs(recipe, inputs)
    if recipe.schedule == "gradual" and inputs.train is None:  # stages/gradual.py
        raise RecipeError("--schedule gradual", "fine-tunes the model between its cuts, so it "
                          "needs labelled training data", "Pass --data TRAIN.npz (with x and "
                          "y), or use --schedule oneshot")
    if recipe.prune == "auto" and inputs.train is None and inputs.calib is None:
        raise RecipeError("--prune auto", "needs samples to score pruning steps on",
                          "Pass --data TRAIN.npz (labelled), or at least --calib")
    if recipe.keep:
        from edgeprune.pruning.graph import check_keep
        from edgeprune.pruning.ir import flatten_model

        check_keep(flatten_model(model), recipe.keep)


def run(model: Any, recipe: Recipe, target: TargetProfile, inputs: Inputs) -> Pruned:
    pruner = PRUNERS.get(recipe.prune)
    if pruner is None:
        raise RecipeError(
            f"--prune {recipe.prune}",
            "is not available in this version",
            f"Use one of: {', '.join(sorted(PRUNERS))}",
        )
    return pruner(model, recipe, target, inputs)
