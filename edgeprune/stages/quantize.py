"""Quantize stage: configure the TFLite converter for ``recipe.quantize``.

int8 is full-integer post-training quantization calibrated on the calibration samples. Targets
whose runtime only runs integer tensors (Cortex-M, Edge TPU, Ethos-U) get int8 input/output too;
CPU targets keep float I/O so callers feed raw samples.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from edgeprune import _tf
from edgeprune.errors import DataError
from edgeprune.targets import TargetProfile

log = logging.getLogger(__name__)

MIN_CALIB_SAMPLES = 50
INTEGER_ONLY_KINDS = ("cortex-m", "edgetpu", "ethos-u")


def integer_io(target: TargetProfile) -> bool:
    return target.hardware.kind in INTEGER_ONLY_KINDS


def representative_dataset(calib: np.ndarray) -> Iterator[list[np.ndarray]]:
    for sample in calib:
        yield [sample[None].astype(np.float32)]


def configure(converter: Any, mode: str, calib: np.ndarray | None, target: TargetProfile) -> None:
    tf = _tf.tf()
    if mode == "none":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        if calib is None:
            raise DataError(
                "--quantize int8",
                "needs calibration samples and none were given",
                "Pass --calib SAMPLES (.npz/.npy/image folder) or --data TRAIN.npz",
            )
        if len(calib) < MIN_CALIB_SAMPLES:
            log.warning(
                "only %d calibration samples (< %d): int8 ranges may be poorly estimated",
                len(calib), MIN_CALIB_SAMPLES,
            )
        converter.representative_dataset = lambda: representative_dataset(calib)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if integer_io(target):
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    # "dynamic": Optimize.DEFAULT alone gives dynamic-range (int8 weights, float activations).
