"""examples/mnist: its files agree with each other, and its loader never runs pickled code."""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from edgeprune import data, model_io
from edgeprune.pruning import prune_structured

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO / "examples" / "mnist"


def _train_module():
    spec = importlib.util.spec_from_file_location("mnist_train", MNIST / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_arrays_only_unpickler_reads_arrays_and_refuses_other_globals():
    unpickler = _train_module()._ArraysOnly
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64))
    got = unpickler(io.BytesIO(pickle.dumps(arrays))).load()
    for a, b in zip(got, arrays, strict=True):
        assert np.array_equal(a, b) and a.dtype == b.dtype

    class Payload:  # what a hostile pickle carries: a call on load
        def __reduce__(self):
            return (os.system, ("true",))

    with pytest.raises(pickle.UnpicklingError, match="system"):
        unpickler(io.BytesIO(pickle.dumps(Payload()))).load()


def test_files_match_the_model_and_its_readme():
    train = data.load_labelled(MNIST / "train.npz", "--data")
    val = data.load_labelled(MNIST / "val.npz", "--val")
    calib = np.load(REPO / "calib_data" / "mnist" / "calib.npz")["x"]
    assert (len(train.y), len(val.y), len(calib)) == (10_000, 5_000, 256)
    assert train.x.shape[1:] == val.x.shape[1:] == calib.shape[1:] == (28, 28, 1)
    assert train.x.max() == 255 and set(np.unique(val.y)) == set(range(10))
    model = model_io.load_model(MNIST / "model.keras")
    assert model.count_params() == 141_098
    accuracy = np.mean(model.predict(val.x, batch_size=500, verbose=0).argmax(1) == val.y)
    assert accuracy == pytest.approx(0.9902, abs=5e-5)  # the README's figure
    # Five free channel groups: the point of this example for the budget-driven search.
    pruned = prune_structured(model, sparsity=0.5, channel_multiple=8).model
    widths = [layer.filters for layer in pruned.layers if hasattr(layer, "filters")]
    assert widths == [16, 16, 32, 32, 64]
