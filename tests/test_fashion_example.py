"""examples/fashion: its loader reads .deb/IDX correctly, and its files agree with each other and
with its README (a MobileNet-class network: depthwise convs at several resolutions, residuals)."""

from __future__ import annotations

import gzip
import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from edgeprune import data, model_io
from edgeprune.pruning import prune_structured

REPO = Path(__file__).resolve().parents[1]
FASHION = REPO / "examples" / "fashion"


def _train_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fashion_train", FASHION / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train() -> ModuleType:
    return _train_module()


@pytest.fixture(scope="module")
def model() -> Any:
    return model_io.load_model(FASHION / "model.keras")


def _ar(members: dict[str, bytes]) -> bytes:
    out = b"!<arch>\n"
    for name, blob in members.items():
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(blob):<10}`\n"
        out += header.encode("ascii") + blob + b"\n" * (len(blob) % 2)
    return out


def test_ar_members_reads_odd_and_even_sized_members(train):
    members = {"debian-binary": b"2.0\n", "data.tar.xz": b"abc"}  # 4 and 3 bytes (padded)
    assert train.ar_members(_ar(members)) == members
    with pytest.raises(ValueError, match="ar archive"):
        train.ar_members(b"PK\x03\x04")


def test_read_idx_round_trips_images_and_refuses_other_formats(train):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = b"\x00\x00\x08\x03" + np.array([2, 3, 4], ">u4").tobytes() + images.tobytes()
    assert np.array_equal(train.read_idx(gzip.decompress(gzip.compress(raw))), images)
    with pytest.raises(ValueError, match="IDX"):
        train.read_idx(b"\x00\x00\x0d\x01" + raw[4:])  # 0x0d: float32 data
    with pytest.raises(ValueError, match="does not match"):
        train.read_idx(raw[:-1])


def test_disjoint_stratified_splits_share_no_index(train):
    labels = np.repeat(np.arange(10), 30)
    a, b = train.disjoint_stratified(labels, (100, 50), np.random.default_rng(0))
    assert (len(a), len(b)) == (100, 50) and not set(a) & set(b)
    assert list(np.bincount(labels[a])) == [10] * 10 and list(np.bincount(labels[b])) == [5] * 10


def test_files_have_the_documented_shapes_and_balance():
    tr = data.load_labelled(FASHION / "train.npz", "--data")
    va = data.load_labelled(FASHION / "val.npz", "--val")
    with np.load(FASHION / "train.npz") as raw:
        assert raw["x"].dtype == np.uint8 and raw["y"].dtype == np.int64
    calib = np.load(REPO / "calib_data" / "fashion" / "calib.npz")
    assert list(calib.keys()) == ["x"] and calib["x"].dtype == np.uint8
    assert (len(tr.y), len(va.y), len(calib["x"])) == (10_000, 5_000, 256)
    assert tr.x.shape[1:] == va.x.shape[1:] == calib["x"].shape[1:] == (28, 28, 1)
    assert list(np.bincount(tr.y)) == [1_000] * 10 and list(np.bincount(va.y)) == [500] * 10


def test_model_is_mobilenet_class_and_matches_its_readme(model):
    layers = {type(layer).__name__: [] for layer in model.layers}
    for layer in model.layers:
        layers[type(layer).__name__].append(layer)
    sizes = {layer.output_shape[1] for layer in layers["DepthwiseConv2D"]}
    assert sizes == {28, 14, 7, 4} and len(layers["Add"]) == 4
    assert model.count_params() == 102_410
    readme = (FASHION / "README.md").read_text()
    figure = float(re.search(r"\*\*([\d.]+) %\*\* float32", readme).group(1))
    va = data.load_labelled(FASHION / "val.npz", "--val")
    accuracy = np.mean(model.predict(va.x, batch_size=500, verbose=0).argmax(1) == va.y)
    assert accuracy * 100 == pytest.approx(figure, abs=0.01)


def test_residual_and_depthwise_channels_are_pruned_together(model):
    pruned = prune_structured(model, sparsity=0.5, channel_multiple=8).model
    width = {layer.name: layer.output_shape[-1] for layer in pruned.layers}
    for block in range(1, 8):  # a depthwise conv keeps its expansion conv's channels
        assert width[f"b{block}_dw"] == width[f"b{block}_expand_conv"]
    for a, b in (("stem_conv", "b1_project_conv"), ("b2_project_conv", "b3_project_conv"),
                 ("b4_project_conv", "b5_project_conv"), ("b6_project_conv", "b7_project_conv")):
        assert width[a] == width[b]  # tied by the residual Add
    assert [width[f"b{i}_expand_conv"] for i in range(1, 8)] == [24, 32, 48, 48, 64, 64, 128]
    assert [width[n] for n in ("stem_conv", "b2_project_conv", "b4_project_conv",
                               "b6_project_conv", "head_conv")] == [8, 16, 16, 32, 128]
