"""Quantization modes: int16x8, integer-only targets refusing float models, calibration size,
and the zeros counted in a .tflite's weight buffers."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from click.testing import CliRunner

from edgeprune import converter
from edgeprune.cli import main
from edgeprune.converter import to_tflite
from edgeprune.errors import RecipeError
from edgeprune.model_io import load_model
from edgeprune.recipe import QUANTIZE_MODES, Recipe
from edgeprune.targets import load_target
from edgeprune.tflite.graph import parse_tflite
from edgeprune.tflite.weights import sparsity


@pytest.fixture(scope="module")
def tiny(tiny_files):
    return load_model(tiny_files["model"]), np.load(tiny_files["calib"])["x"]


def _dtypes(graph, op_type):
    op = next(o for o in graph.ops if o.op_type == op_type)
    return [graph.tensors[i].dtype for i in op.inputs if i >= 0]


def test_int16x8_has_int16_activations_and_int8_weights(tiny):
    model, calib = tiny
    assert "int16x8" in QUANTIZE_MODES and Recipe(quantize="int16x8").quantize == "int16x8"
    host = parse_tflite(to_tflite(model, "int16x8", calib, load_target("host")))
    assert _dtypes(host, "CONV_2D")[:2] == ["int16", "int8"]
    assert host.tensors[host.inputs[0]].dtype == "float32"  # CPU targets keep float I/O
    mcu = parse_tflite(to_tflite(model, "int16x8", calib, load_target("cortex-m4")))
    assert mcu.tensors[mcu.inputs[0]].dtype == "int16"
    assert mcu.tensors[mcu.outputs[0]].dtype == "int16"
    assert converter.float_ops(mcu) == []


def test_few_calibration_samples_warn_with_the_count(tiny, caplog):
    model, calib = tiny
    with caplog.at_level(logging.WARNING, logger="edgeprune.converter"):
        to_tflite(model, "int8", calib[:20], load_target("host"))
    assert "only 20 calibration samples (< 50)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgeprune.converter"):
        to_tflite(model, "int8", calib[:50], load_target("host"))
    assert "calibration samples" not in caplog.text


@pytest.mark.parametrize("target,mode", [
    ("cortex-m4", "float16"), ("cortex-m4", "dynamic"), ("cortex-m4", "none"),
    ("ethos-u55", "float16"), ("coral-usb", "int16x8"),
])
def test_integer_only_targets_refuse_float_modes(target, mode):
    with pytest.raises(RecipeError, match=f"--quantize {mode}") as e:
        converter.check_target(mode, load_target(target))
    assert "Use --quantize int8" in str(e.value) and target in str(e.value)


@pytest.mark.parametrize("target,mode", [
    ("cortex-m4", "int8"), ("cortex-m4", "qat"), ("cortex-m7", "int16x8"),
    ("ethos-u55", "int16x8"), ("host", "float16"), ("rpi4", "none"),
])
def test_allowed_modes_pass(target, mode):
    converter.check_target(mode, load_target(target))


def test_float_ops_tell_float_models_from_integer_ones(tiny, tiny_tflite):
    model, calib = tiny
    assert converter.float_ops(parse_tflite(tiny_tflite)) == []  # int8 body, float I/O
    for mode in ("none", "float16", "dynamic"):
        graph = parse_tflite(to_tflite(model, mode, calib, load_target("host")))
        assert "CONV_2D" in converter.float_ops(graph), mode


def test_check_of_a_float_model_for_cortex_m4_is_exit_2(tiny, tmp_path):
    model, _ = tiny
    path = tmp_path / "model_float.tflite"
    path.write_bytes(to_tflite(model, "none", None, load_target("host")))
    r = CliRunner().invoke(main, ["check", str(path), "--target", "cortex-m4"])
    assert r.exit_code == 2, r.output
    assert "model_float.tflite" in r.output and "--quantize int8" in r.output


def test_check_of_an_int8_model_for_cortex_m4_runs(tiny_tflite):
    r = CliRunner().invoke(main, ["check", str(tiny_tflite), "--target", "cortex-m4"])
    assert r.exit_code in (0, 1), r.output


def test_build_float16_for_cortex_m4_is_exit_2(tiny_files, tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(main, [
        "build", "--target", "cortex-m4", "--model", str(tiny_files["model"]),
        "--calib", str(tiny_files["calib"]), "--quantize", "float16", "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "--quantize float16" in r.output and "Use --quantize int8" in r.output
    assert not out.exists()


def _model_with_zeros(fraction: float):
    from edgeprune import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(x))
    rng = np.random.default_rng(0)
    for layer in (model.get_layer("conv"), model.get_layer("head")):
        kernel, bias = layer.get_weights()
        kernel = np.where(rng.random(kernel.shape) < fraction, 0.0, kernel + np.sign(kernel))
        layer.set_weights([kernel.astype(np.float32), bias])
    return model


@pytest.mark.parametrize("mode", ["none", "float16", "dynamic", "int8"])
def test_weight_buffer_zeros_match_the_keras_kernels(mode):
    from edgeprune.stages.measure import weight_sparsity

    model = _model_with_zeros(0.5)
    calib = np.random.default_rng(1).random((60, 8, 8, 1), dtype=np.float32)
    report = sparsity(to_tflite(model, mode, calib, load_target("host")))
    assert report["weights"] == 8 * 9 + 8 * 4
    # |w| ≥ 1 where not zero, so no non-zero weight rounds to 0: the counts are equal
    assert report["fraction"] == pytest.approx(weight_sparsity(model), abs=1e-6)
    # dynamic range leaves tensors under 1,024 weights in float32 (the converter's threshold)
    dtype = {"none": "float32", "float16": "float16", "dynamic": "float32"}.get(mode, "int8")
    assert report["dtypes"] == [dtype]
