"""Shared fixtures: tiny Keras models and datasets that build in well under a second."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_models import blobs, tiny_classifier

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory) -> dict[str, Path]:
    """A trained tiny model (.keras) with train/val/calib files."""
    from edgeprune.training import compile_for_training

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
    from edgeprune.converter import to_tflite
    from edgeprune.model_io import load_model
    from edgeprune.targets import load_target

    model = load_model(tiny_files["model"])
    calib = np.load(tiny_files["calib"])["x"]
    path = tmp_path_factory.mktemp("tflite") / "tiny_int8.tflite"
    path.write_bytes(to_tflite(model, "int8", calib, load_target("host")))
    return path
