"""Fidelity: how closely the emitted .tflite follows the float Keras model on held-out data.

Two numbers per build: top-1 agreement (the fraction of samples where both pick the same
class — independent of the labels, so it isolates conversion/quantization error from model
error) and, per output, the signal-to-quantization-noise ratio
``SQNR = 10·log10(Σ float² / Σ (float − tflite)²)`` in dB (about 6 dB per bit: int8 outputs of
a healthy model usually land around 20–40 dB). When agreement falls below 99 %, TF's
quantization debugger names the layers with the largest quantization error, ranked by
RMSE / scale (≈ 0.29 is the ideal rounding error of a uniform quantizer; much larger means
the layer's range or distribution quantizes badly).
"""

from __future__ import annotations

import csv
import io
import logging
import math
from typing import Any

import numpy as np

from edgeprune import _tf, native_output
from edgeprune.runners import host
from edgeprune.targets import TargetProfile

log = logging.getLogger(__name__)

AGREEMENT_THRESHOLD = 0.99
MAX_SAMPLES = 1000  # the held-out set, capped: enough for a percent-level agreement figure
DEBUG_SAMPLES = 64  # samples the quantization debugger runs (it re-converts the model)
WORST_LAYERS = 5
_IDEAL_RMSE_OVER_SCALE = 1 / math.sqrt(12)


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float | None:
    """SQNR in dB; None when it is undefined (identical outputs, or an all-zero reference)."""
    ref = reference.astype(np.float64)
    noise = float(np.sum((ref - approx.astype(np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0 or signal == 0.0:
        return None
    return round(10 * math.log10(signal / noise), 3)


def _pair_outputs(ref: list[np.ndarray], out: list[np.ndarray]) -> list[tuple[int, int]]:
    """Keras output i ↔ .tflite output j; the converter may reorder multi-output models."""
    if len(ref) == 1 and len(out) == 1:
        return [(0, 0)]
    pairs, free = [], list(range(len(out)))
    for i, r in enumerate(ref):
        same = [j for j in free if out[j].shape == r.shape]
        if same:
            pairs.append((i, same[0]))
            free.remove(same[0])
    return pairs


def evaluate(
    tflite: bytes,
    keras_model: Any,
    x: np.ndarray,
    *,
    mode: str,
    calib: np.ndarray | None,
    target: TargetProfile,
) -> dict[str, Any]:
    """The report's ``fidelity`` section for the emitted model against its float source."""
    x = x[:MAX_SAMPLES]
    if len(keras_model.inputs) != 1:
        return {"skipped": "fidelity is measured for single-input models only"}
    ref = keras_model.predict(x, batch_size=64, verbose=0)
    ref = [np.asarray(r) for r in (ref if isinstance(ref, list) else [ref])]
    out = host.outputs(tflite, x)[0]
    outputs = []
    for i, j in _pair_outputs(ref, out):
        outputs.append({
            "output": i, "sqnr_db": sqnr_db(ref[i], out[j]),
            "identical": bool(np.array_equal(ref[i], out[j])),
            "max_abs_error": round(float(np.max(np.abs(ref[i] - out[j]))), 6),
        })
    agreement = None
    if ref[0].ndim == 2 and ref[0].shape[-1] > 1 and out:
        agreement = float(np.mean(ref[0].argmax(-1) == out[_pair_outputs(ref, out)[0][1]]
                                  .argmax(-1)))
    report: dict[str, Any] = {
        "samples": len(x),
        "quantize": mode,
        "top1_agreement": agreement,
        "outputs": outputs,
        "threshold": AGREEMENT_THRESHOLD,
    }
    if agreement is not None and agreement < AGREEMENT_THRESHOLD:
        report["worst_layers"], report["layers_note"] = _worst_layers(keras_model, mode, calib,
                                                                     target)
    return report


def _worst_layers(
    model: Any, mode: str, calib: np.ndarray | None, target: TargetProfile
) -> tuple[list[dict[str, Any]], str]:
    """Layers ranked by quantization error (TF's QuantizationDebugger), with a note."""
    if mode != "int8":
        return [], (f"per-layer analysis covers int8 post-training quantization; --quantize "
                    f"{mode} is not analysed layer by layer")
    if calib is None or len(calib) == 0:
        return [], "per-layer analysis needs calibration samples"
    from edgeprune.converter import configure, representative_dataset

    tf = _tf.tf()
    sample = calib[:DEBUG_SAMPLES]
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    configure(converter, "int8", sample, target)
    try:
        with native_output.captured("TF's quantization debugger"):
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter,
                debug_dataset=lambda: representative_dataset(sample),
            )
            debugger.run()
        dump = io.StringIO()
        debugger.layer_statistics_dump(dump)
    except Exception as exc:  # a diagnostic: never fail the build over it
        log.warning("quantization debugger failed: %s", exc)
        return [], f"TF's quantization debugger failed ({str(exc).splitlines()[0]})"
    rows = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        scale = float(row["scale"] or 0)
        rmse = math.sqrt(float(row["mean_squared_error"]))
        rows.append({
            "layers": _keras_layers(row["tensor_name"], model.name)
            or (list(model.output_names) if "PartitionedCall" in row["tensor_name"] else []),
            "tensor": row["tensor_name"],
            "op": row["op_name"],
            "rmse": round(rmse, 6),
            "rmse_over_scale": round(rmse / scale, 4) if scale else None,
        })
    rows.sort(key=lambda r: -(r["rmse_over_scale"] or 0))
    note = (f"TF QuantizationDebugger on {len(sample)} calibration samples; ranked by "
            f"RMSE/scale (ideal ≈ {_IDEAL_RMSE_OVER_SCALE:.2f})")
    return rows[:WORST_LAYERS], note


def _keras_layers(tensor_name: str, model_name: str) -> list[str]:
    """Keras layer names in a converter tensor name like 'm/relu/Relu;m/bn/FusedBatchNormV3'."""
    names = []
    for part in tensor_name.split(";"):
        pieces = part.split("/")
        if len(pieces) > 1 and pieces[0] == model_name and pieces[1] not in names:
            names.append(pieces[1])
    return names
