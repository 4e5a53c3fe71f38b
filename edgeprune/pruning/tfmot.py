"""The one adapter to TF-MOT. Its wrappers never leave the prune/fine-tune stages: ``strip``
returns a plain tf_keras model.

TF-MOT applies masks during training (``UpdatePruningStep``), so magnitude and N:M pruning need
fine-tuning steps; the schedule reaches the final sparsity at ``end_step``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeprune import _tf

# Layer types TF-MOT knows how to prune (kernels); everything else is left untouched.
PRUNABLE = ("Conv1D", "Conv2D", "Conv2DTranspose", "Dense", "DepthwiseConv2D", "SeparableConv2D")


def _wrap_layers(model: Any, keep: Sequence[str], **prune_kwargs: Any) -> Any:
    keras = _tf.keras()
    sparsity = _tf.tfmot().sparsity.keras

    def clone(layer: Any) -> Any:
        # A fresh layer, so training never touches the caller's model; weights copied below.
        fresh = layer.__class__.from_config(layer.get_config())
        if type(layer).__name__ in PRUNABLE and layer.name not in keep:
            return sparsity.prune_low_magnitude(fresh, **prune_kwargs)
        return fresh

    wrapped = keras.models.clone_model(model, clone_function=clone)
    return _copy_weights(model, wrapped)


def _copy_weights(source: Any, wrapped: Any) -> Any:
    """clone_model re-initialises weights: copy each layer's weights into its (wrapped) twin."""
    for src, dst in zip(source.layers, wrapped.layers, strict=True):
        target = getattr(dst, "layer", dst)  # PruneLowMagnitude keeps the original in .layer
        target.set_weights(src.get_weights())
    return wrapped


def wrap_magnitude(model: Any, sparsity: float, end_step: int, keep: Sequence[str] = ()) -> Any:
    """Polynomial schedule from 0 to ``sparsity`` over ``end_step`` training steps."""
    schedule = _tf.tfmot().sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0, end_step=max(end_step, 1),
        frequency=max(1, end_step // 20),
    )
    return _wrap_layers(model, keep, pruning_schedule=schedule)


def wrap_m_by_n(model: Any, m: int = 2, n: int = 4, keep: Sequence[str] = ()) -> Any:
    return _wrap_layers(model, keep, sparsity_m_by_n=(m, n))


def callbacks(log_dir: Path | None) -> list[Any]:
    keras_sparsity = _tf.tfmot().sparsity.keras
    cbs = [keras_sparsity.UpdatePruningStep()]
    if log_dir is not None:
        cbs.append(keras_sparsity.PruningSummaries(log_dir=str(log_dir)))
    return cbs


def with_summaries(cbs: list[Any], log_dir: Path) -> list[Any]:
    """``cbs`` plus TF-MOT's PruningSummaries (sparsity and schedule per layer, for
    TensorBoard) when they drive TF-MOT pruning."""
    keras_sparsity = _tf.tfmot().sparsity.keras
    if any(isinstance(c, keras_sparsity.UpdatePruningStep) for c in cbs):
        return [*cbs, keras_sparsity.PruningSummaries(log_dir=str(log_dir))]
    return cbs


def strip(model: Any) -> Any:
    return _tf.tfmot().sparsity.keras.strip_pruning(model)


# --- Quantization-aware training -----------------------------------------------------------


def wrap_qat(model: Any, preserve_sparsity: bool) -> Any:
    """The model with TF-MOT's int8 fake-quant wrappers, ready for QAT fine-tuning.

    ``preserve_sparsity`` uses the pruning-preserving scheme: it masks the kernels' zeros
    during QAT, so unstructured (magnitude / 2:4) sparsity survives into the int8 weights.
    """
    tfmot = _tf.tfmot()
    quant = tfmot.quantization.keras
    annotated = quant.quantize_annotate_model(model)
    if preserve_sparsity:
        scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
        return quant.quantize_apply(annotated, scheme)
    return quant.quantize_apply(annotated)


def float_twin(qat_model: Any, float_model: Any) -> Any:
    """A plain tf_keras copy of ``float_model`` carrying the QAT-trained weights.

    QAT wrappers keep the original layer (same name) in ``.layer``; its weights are the float
    weights the fake-quant nodes act on. The twin is for statistics and the float reference,
    never for conversion (the fake-quant ranges live only in the wrapped model).
    """
    keras = _tf.keras()
    trained = {}
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", layer)
        trained[inner.name] = inner.get_weights()
    twin = keras.models.clone_model(float_model)
    for layer in twin.layers:
        weights = trained.get(layer.name)
        source = float_model.get_layer(layer.name).get_weights()
        layer.set_weights(weights if weights is not None and len(weights) == len(source)
                          else source)
    return twin
