"""Fidelity of the emitted .tflite against the float Keras model."""

from __future__ import annotations

import numpy as np
import pytest

from edgeprune.converter import to_tflite
from edgeprune.model_io import load_model
from edgeprune.stages import fidelity
from edgeprune.targets import load_target


@pytest.fixture(scope="module")
def tiny(tiny_files):
    model = load_model(tiny_files["model"])
    return model, np.load(tiny_files["val"])["x"], np.load(tiny_files["calib"])["x"]


def test_sqnr():
    ref = np.full((4, 3), 10.0)
    assert fidelity.sqnr_db(ref, ref + 1.0) == pytest.approx(20.0)
    assert fidelity.sqnr_db(ref, ref) is None  # identical: no noise
    assert fidelity.sqnr_db(np.zeros(3), np.ones(3)) is None  # no signal


def test_int8_agreement_and_sqnr(tiny):
    model, x, calib = tiny
    host = load_target("host")
    rep = fidelity.evaluate(to_tflite(model, "int8", calib, host), model, x, mode="int8",
                            calib=calib, target=host)
    assert rep["samples"] == len(x) and rep["top1_agreement"] >= 0.99
    (out,) = rep["outputs"]
    assert out["sqnr_db"] > 20 and not out["identical"]
    assert "worst_layers" not in rep  # only named when agreement is below 99 %


def test_float_model_is_identical_or_nearly(tiny):
    model, x, calib = tiny
    host = load_target("host")
    rep = fidelity.evaluate(to_tflite(model, "none", None, host), model, x, mode="none",
                            calib=calib, target=host)
    assert rep["top1_agreement"] == 1.0
    out = rep["outputs"][0]
    assert out["identical"] or out["sqnr_db"] > 80


def test_low_agreement_names_the_worst_layers(tiny, monkeypatch):
    model, x, calib = tiny
    host = load_target("host")
    monkeypatch.setattr(fidelity, "AGREEMENT_THRESHOLD", 1.01)  # force the per-layer analysis
    rep = fidelity.evaluate(to_tflite(model, "int8", calib, host), model, x, mode="int8",
                            calib=calib, target=host)
    worst = rep["worst_layers"]
    assert worst and "QuantizationDebugger" in rep["layers_note"]
    names = {layer.name for layer in model.layers}
    assert all(set(w["layers"]) <= names and w["layers"] for w in worst)
    ratios = [w["rmse_over_scale"] for w in worst]
    assert ratios == sorted(ratios, reverse=True)


def test_per_layer_analysis_is_int8_only(tiny, monkeypatch):
    model, x, calib = tiny
    host = load_target("host")
    monkeypatch.setattr(fidelity, "AGREEMENT_THRESHOLD", 1.01)
    rep = fidelity.evaluate(to_tflite(model, "float16", None, host), model, x,
                            mode="float16", calib=calib, target=host)
    assert rep["worst_layers"] == [] and "int8" in rep["layers_note"]
