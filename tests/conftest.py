"""Shared fixtures: tiny Keras models and datasets that build in well under a second."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def tiny_classifier(input_shape=(8, 8, 1), classes: int = 3, seed: int = 0):
    """Conv → BN → ReLU → GAP → Dense softmax: the smallest model with every stage's work."""
    from edgeprune import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="tiny")


def blobs(n: int = 120, input_shape=(8, 8, 1), classes: int = 3, seed: int = 0):
    """Separable synthetic classes: horizontal stripes, vertical stripes, checkerboard, … —
    textures a 3×3 conv detects and global pooling keeps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    h, w = input_shape[:2]
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    patterns = [rows % 2, cols % 2, (rows + cols) % 2, (rows // 2 + cols // 2) % 2]
    x = rng.normal(0, 0.1, (n, *input_shape)).astype(np.float32)
    for i, label in enumerate(y):
        x[i, :, :, 0] += patterns[label % len(patterns)]
    return x, y.astype(np.int64)


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory) -> dict[str, Path]:
    """A trained tiny model (.keras) with train/val/calib files."""
    from edgeprune.stages.finetune import compile_for_training

    root = tmp_path_factory.mktemp("tiny")
    model = tiny_classifier()
    x, y = blobs(160)
    compile_for_training(model, 1e-2)
    model.fit(x[:120], y[:120], epochs=15, batch_size=16, verbose=0)
    paths = {
        "model": root / "tiny.keras",
        "data": root / "train.npz",
        "val": root / "val.npz",
        "calib": root / "calib.npz",
    }
    model.save(paths["model"])
    np.savez(paths["data"], x=x[:120], y=y[:120])
    np.savez(paths["val"], x=x[120:], y=y[120:])
    np.savez(paths["calib"], x=x[:60])
    return paths


@pytest.fixture(scope="session")
def tiny_tflite(tiny_files, tmp_path_factory) -> Path:
    from edgeprune.model_io import load_model
    from edgeprune.stages.convert import to_tflite
    from edgeprune.targets import load_target

    model = load_model(tiny_files["model"])
    calib = np.load(tiny_files["calib"])["x"]
    path = tmp_path_factory.mktemp("tflite") / "tiny_int8.tflite"
    path.write_bytes(to_tflite(model, "int8", calib, load_target("host")))
    return path
