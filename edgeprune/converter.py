"""The TFLite converter, configured for a quantization mode and a target.

Modes: ``int8`` full-integer post-training quantization calibrated on the calibration samples;
``int16x8`` the same with int16 activations and int8 weights (more accurate, about twice the
activation memory); ``float16`` weights; ``dynamic`` int8 weights with float activations;
``qat`` a model trained with TF-MOT's fake-quant wrappers (see ``stages/qat.py``), converted to
int8 from its learned ranges; ``none`` float32.

Targets whose runtime only runs integer tensors (Cortex-M, Edge TPU, Ethos-U) get integer
input/output too and refuse float modes; CPU targets keep float I/O so callers feed raw samples.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from edgeprune import _tf, native_output, progress
from edgeprune.errors import BadInputError, DataError, RecipeError, ToolError
from edgeprune.targets import TargetProfile

log = logging.getLogger(__name__)

MIN_CALIB_SAMPLES = 50
INTEGER_ONLY_KINDS = ("cortex-m", "edgetpu", "ethos-u")
# Post-training modes calibrated on --calib (QAT may use it too, but does not need it).
CALIBRATED_MODES = ("int8", "int16x8")
# What each integer-only kind can run. TFLM (CMSIS-NN) and Vela have int16x8 kernels for the
# common ops; the Edge TPU is int8 only.
INTEGER_MODES = {
    "cortex-m": ("int8", "qat", "int16x8"),
    "ethos-u": ("int8", "qat", "int16x8"),
    "edgetpu": ("int8", "qat"),
}
_FLOAT_DTYPES = ("float32", "float16", "float64", "bfloat16")


def integer_io(target: TargetProfile) -> bool:
    return target.hardware.kind in INTEGER_ONLY_KINDS


def check_target(mode: str, target: TargetProfile) -> None:
    """Refuse a float mode for a target whose runtime only runs integer models (exit 2)."""
    allowed = INTEGER_MODES.get(target.hardware.kind)
    if allowed is None or mode in allowed:
        return
    raise RecipeError(
        f"--quantize {mode} for --target {target.name}",
        f"{target.name} ({target.hardware.kind}, {target.runtime.engine}) runs only "
        "integer-quantized models, and this mode leaves float tensors",
        f"Use --quantize int8 (post-training) or qat; allowed here: {', '.join(allowed)}",
    )


def float_ops(graph: Any) -> list[str]:
    """Op types that compute on float tensors (QUANTIZE/DEQUANTIZE at the edges excepted).

    ``graph`` is an ``tflite.graph.TfliteGraph``; TF-free, so ``check`` can use it.
    """
    found = set()
    for op in graph.ops:
        if op.op_type in ("QUANTIZE", "DEQUANTIZE"):
            continue
        used = (graph.tensors[i] for i in (*op.inputs, *op.outputs) if i >= 0)
        if any(t.dtype in _FLOAT_DTYPES for t in used):
            found.add(op.op_type)
    return sorted(found)


def check_model_for_target(graph: Any, target: TargetProfile, what: str) -> None:
    """A float (or float16 / dynamic-range) .tflite sent to an integer-only target: exit 2."""
    allowed = INTEGER_MODES.get(target.hardware.kind)
    if allowed is None:
        return
    ops = float_ops(graph)
    if ops:
        raise BadInputError(
            what,
            f"computes in float ({', '.join(ops[:6])}{' …' if len(ops) > 6 else ''}), but "
            f"{target.name} ({target.hardware.kind}) runs only integer-quantized models",
            "Rebuild it with `edgeprune build --quantize int8` (or qat) from the Keras model, "
            "or convert with full-integer post-training quantization "
            "(TFLiteConverter with a representative dataset and TFLITE_BUILTINS_INT8)",
        )


def representative_dataset(calib: np.ndarray) -> Iterator[list[np.ndarray]]:
    for sample in progress.track(calib, len(calib), "calibrating", "sample"):
        yield [sample[None].astype(np.float32)]


def _calibrate(converter: Any, mode: str, calib: np.ndarray | None) -> None:
    if calib is None:
        raise DataError(
            f"--quantize {mode}",
            "needs calibration samples and none were given",
            "Pass --calib SAMPLES (.npz/.npy/image folder) or --data TRAIN.npz",
        )
    if len(calib) < MIN_CALIB_SAMPLES:
        log.warning(
            "only %d calibration samples (< %d): int8 ranges may be poorly estimated",
            len(calib), MIN_CALIB_SAMPLES,
        )
    converter.representative_dataset = lambda: representative_dataset(calib)


Quantizer = Callable[[Any, "np.ndarray | None", TargetProfile], None]
QUANTIZERS: dict[str, Quantizer] = {}


def register_quantizer(mode: str) -> Callable[[Quantizer], Quantizer]:
    """Register how the converter is set up for ``--quantize MODE`` (after Optimize.DEFAULT)."""

    def deco(fn: Quantizer) -> Quantizer:
        QUANTIZERS[mode] = fn
        return fn

    return deco


def configure(converter: Any, mode: str, calib: np.ndarray | None, target: TargetProfile) -> None:
    if mode not in QUANTIZERS:
        raise RecipeError(f"--quantize {mode}", "unknown quantization mode",
                          f"Use one of: {', '.join(QUANTIZERS)}")
    if mode != "none":
        converter.optimizations = [_tf.tf().lite.Optimize.DEFAULT]
    QUANTIZERS[mode](converter, calib, target)


@register_quantizer("none")
def _float32(converter: Any, calib: np.ndarray | None, target: TargetProfile) -> None:
    """No optimisation: a float32 model."""


@register_quantizer("dynamic")
def _dynamic(converter: Any, calib: np.ndarray | None, target: TargetProfile) -> None:
    """Optimize.DEFAULT alone: int8 weights, float activations (dynamic range)."""


@register_quantizer("float16")
def _float16(converter: Any, calib: np.ndarray | None, target: TargetProfile) -> None:
    converter.target_spec.supported_types = [_tf.tf().float16]


@register_quantizer("int8")
def _int8(converter: Any, calib: np.ndarray | None, target: TargetProfile) -> None:
    tf = _tf.tf()
    _calibrate(converter, "int8", calib)
    _integer_only(converter, target, tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.int8)


@register_quantizer("int16x8")
def _int16x8(converter: Any, calib: np.ndarray | None, target: TargetProfile) -> None:
    tf = _tf.tf()
    _calibrate(converter, "int16x8", calib)
    _integer_only(converter, target,
                  tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
                  tf.int16)


@register_quantizer("qat")
def _qat(converter: Any, calib: np.ndarray | None, target: TargetProfile) -> None:
    tf = _tf.tf()
    # The fake-quant nodes carry the ranges; calibration only fills ops QAT left without.
    if calib is not None:
        converter.representative_dataset = lambda: representative_dataset(calib)
    if integer_io(target):
        _integer_only(converter, target, tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.int8)


def _integer_only(converter: Any, target: TargetProfile, ops: Any, io_type: Any) -> None:
    """Integer kernels only; integer inputs and outputs too where the target's runtime runs
    nothing else (CPU targets keep float I/O so callers feed raw samples)."""
    converter.target_spec.supported_ops = [ops]
    if integer_io(target):
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type


def sparsity_report(keras_sparsity: float, tflite: bytes, mode: str) -> dict[str, Any]:
    """Zeros before (Keras kernels) and after (the .tflite's weight buffers) quantization."""
    from edgeprune.tflite.weights import sparsity

    after = sparsity(tflite)
    return {
        "mode": mode,
        "sparsity_keras": round(keras_sparsity, 6),
        "sparsity_tflite": after["fraction"],
        "tflite_weight_zeros": after["zeros"],
        "tflite_weights": after["weights"],
        "tflite_weight_dtypes": after["dtypes"],
        "tensors": after["tensors"],
        "note": "zeros in conv/depthwise/dense kernels of the Keras model vs. stored weight "
                "values equal to the zero point in model.tflite (BN folded in)",
    }


def to_tflite(
    model: Any, mode: str, calib: np.ndarray | None, target: TargetProfile
) -> bytes:
    tf = _tf.tf()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    configure(converter, mode, calib, target)
    try:
        with warnings.catch_warnings():
            # float I/O around an int8 body: the converter warns that it has no input stats.
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            with native_output.captured("the TFLite converter"):
                return bytes(converter.convert())
    except Exception as exc:
        raise ToolError(
            "TFLite converter",
            f"failed to convert the model with --quantize {mode} ({str(exc).splitlines()[0]})",
            "Reproduce with tf.lite.TFLiteConverter.from_keras_model(model).convert(); "
            "try --quantize dynamic or none",
        ) from exc
