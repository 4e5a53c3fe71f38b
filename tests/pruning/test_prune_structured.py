"""Public API: conversion of pruned models, layer stats, sensitivity, TF-free import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from prune_helpers import L, int8_tflite, keras, run_tflite, sample, se_model, separable_model

from edgeprune.errors import BadInputError
from edgeprune.pruning import layer_stats, prune_structured, sensitivity


def test_pruned_model_converts_to_full_int8_and_runs():
    model = se_model()
    result = prune_structured(model, sparsity=0.5)
    x = sample(model, n=16)
    dense_blob, pruned_blob = int8_tflite(model, x), int8_tflite(result.model, x)
    assert len(pruned_blob) < len(dense_blob)
    out = run_tflite(pruned_blob, x[:1])
    assert out.shape == (1, 3) and out.dtype == np.int8


def test_layer_stats_macs_from_shapes():
    i = keras.Input((8, 8, 4))
    x = L.Conv2D(6, 3, padding="same", name="conv")(i)
    x = L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, name="dw")(x)
    x = L.SeparableConv2D(5, 3, padding="same", name="sep")(x)
    x = L.Conv2DTranspose(3, 2, strides=2, name="tconv")(x)
    x = L.Dense(7, name="dense")(L.GlobalAveragePooling2D(name="gap")(x))
    rows = {r["name"]: r for r in layer_stats(keras.Model(i, x))}
    assert rows["conv"]["macs"] == 8 * 8 * 3 * 3 * 4 * 6
    assert rows["dw"]["macs"] == 4 * 4 * 3 * 3 * 6 * 2
    assert rows["sep"]["macs"] == 4 * 4 * (3 * 3 * 12 + 12 * 5)
    assert rows["tconv"]["macs"] == 4 * 4 * 2 * 2 * 5 * 3
    assert rows["dense"]["macs"] == 3 * 7
    assert rows["dense"]["params"] == 3 * 7 + 7 and rows["dense"]["out_channels"] == 7
    assert rows["gap"]["macs"] == 0


def test_layer_stats_of_a_subclassed_model_lists_layers_without_macs():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(3)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 4), np.float32))
    assert layer_stats(net) == [
        {"name": net.d.name, "type": "Dense", "params": 15, "macs": None, "out_channels": None}
    ]


def test_sensitivity_prunes_each_group_alone():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 96)
    x = rng.normal(0, 0.3, (96, 12, 12, 3)).astype(np.float32)
    for i, label in enumerate(y):  # each class lights up its own band of rows
        x[i, label * 4 : label * 4 + 4] += 1.0
    model = separable_model()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(0.01), loss)
    model.fit(x, y, epochs=10, batch_size=16, verbose=0)
    rows = sensitivity(model, (x, y), ratios=(0.25, 0.75))
    groups = {r["group"] for r in rows}
    assert len(rows) == 2 * len(groups) and len(groups) >= 2
    baseline = float(np.mean(np.asarray(model(x)).argmax(-1) == y))
    assert baseline > 0.6
    for r in rows:
        assert set(r) >= {"group", "layers", "ratio", "accuracy", "drop"}
        assert r["drop"] == pytest.approx(baseline - r["accuracy"])
        assert r["kept"] < r["channels"]
    assert any(r["drop"] > 0 for r in rows)  # pruning without fine-tuning hurts somewhere


def test_multi_input_data_is_checked_per_input():
    a, b = keras.Input((4,)), keras.Input((3,))
    x = L.Concatenate()([L.Dense(8)(a), L.Dense(6)(b)])
    model = keras.Model([a, b], L.Dense(2)(L.Dense(8, activation="relu")(x)))
    calib = [np.ones((5, 4), np.float32), np.ones((5, 3), np.float32)]
    result = prune_structured(model, sparsity=0.5, criterion="activation", calib=calib)
    assert result.model(calib).shape == (5, 2)
    with pytest.raises(BadInputError, match="--calib"):
        prune_structured(model, sparsity=0.5, criterion="activation", calib=calib[0])


def test_importing_the_pruning_package_does_not_import_tensorflow():
    code = "import edgeprune.pruning, sys; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
