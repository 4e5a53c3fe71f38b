"""Quantization-aware training (``--quantize qat``): wrap, fine-tune, hand back for conversion.

QAT runs after pruning and its fine-tuning: the pruned, stripped model gets TF-MOT's int8
fake-quant wrappers and is fine-tuned again for the recipe's epochs (by the fine-tune stage,
as a ``Pruned`` with its own strip function). After unstructured pruning (magnitude, 2:4,
hybrid) it uses the pruning-preserving scheme so the zeros reach the int8 weights.
"""

from __future__ import annotations

from typing import Any

from edgeprune.data import Labelled
from edgeprune.errors import RecipeError
from edgeprune.recipe import Recipe
from edgeprune.stages import finetune
from edgeprune.stages.prune import Pruned

# Prune modes that leave zeros in the kernels (rather than removing channels).
UNSTRUCTURED = ("magnitude", "m-by-n", "hybrid")
READS = ("quantize", *finetune.READS)  # for its cache key: QAT runs the fine-tune stage


def key_parts(recipe: Recipe, target: Any) -> dict[str, Any]:
    return {"recipe": recipe.pick(READS)}


def check_inputs(recipe: Recipe, train: Labelled | None) -> None:
    """QAT learns its ranges by training: it needs labelled data and at least one epoch."""
    if recipe.quantize != "qat":
        return
    if train is None:
        raise RecipeError(
            "--quantize qat",
            "quantization-aware training needs labelled training data",
            "Pass --data TRAIN.npz (with x and y), or use --quantize int8 (post-training)",
        )
    if recipe.epochs < 1:
        raise RecipeError(
            "--quantize qat with --epochs 0",
            "quantization-aware training fine-tunes the model",
            "Pass --epochs 1 or more, or use --quantize int8 (post-training)",
        )


def prepare(model: Any, recipe: Recipe) -> Pruned:
    """The QAT-wrapped model to fine-tune; ``strip`` gives its plain float twin for reports."""
    from edgeprune.pruning import tfmot

    preserve = recipe.prune in UNSTRUCTURED
    try:
        wrapped = tfmot.wrap_qat(model, preserve_sparsity=preserve)
    except (ValueError, TypeError, RuntimeError, AttributeError) as exc:  # unsupported layer,
        # nested model, or an op layer (TFOpLambda) TF-MOT's clone cannot rebuild
        raise RecipeError(
            "--quantize qat",
            f"TF-MOT cannot add quantization-aware training to this model "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
            "Use --quantize int8 (post-training quantization), which handles any layer the "
            "TFLite converter does",
        ) from exc
    scheme = ("pruning-preserving QAT (Default8BitPrunePreserveQuantizeScheme)" if preserve
              else "QAT (Default8BitQuantizeScheme)")
    return Pruned(
        model=wrapped,
        needs_training=True,
        strip=lambda trained: tfmot.float_twin(trained, model),
        notes=[f"TF-MOT {scheme}, fine-tuned up to {recipe.epochs} epoch(s), converted to int8"],
    )
