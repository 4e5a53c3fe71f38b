"""One test per registry entry: every layer class the channel graph or the surgery handles.

Each case builds a tiny model in which the class sits on a prunable path (or, for boundaries,
where it must stop pruning), plants dead channels and prunes: outputs must not change.
"""

from __future__ import annotations

import numpy as np
import pytest
from prune_helpers import L, keras, max_diff, plant_dead, randomize_bn, sample

from edgeprune import _tf
from edgeprune.pruning import prune_structured
from edgeprune.pruning.graph import HANDLERS, build_graph
from edgeprune.pruning.surgery import SLICERS

CONV = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}
GAP = {1: L.GlobalAveragePooling1D, 2: L.GlobalAveragePooling2D, 3: L.GlobalAveragePooling3D}


def chain(rank: int, make, spatial: int | None = None):
    """Input → Conv(8) → BN → ReLU → SUBJECT → Conv(8) → GAP → Dense(3)."""
    spatial = spatial or {1: 8, 2: 6, 3: 4}[rank]
    i = keras.Input((spatial,) * rank + (3,))
    x = L.ReLU()(L.BatchNormalization()(CONV[rank](8, 3, padding="same", name="first")(i)))
    x = make()(x)
    x = CONV[rank](8, 1, activation="relu")(x)
    return keras.Model(i, L.Dense(3)(GAP[rank]()(x)))


def global_pool(rank: int, cls):
    i = keras.Input((4,) * rank + (3,))
    x = L.ReLU()(CONV[rank](8, 3, padding="same", name="first")(i))
    x = L.Dense(6, activation="relu")(cls(name="subject")(x))
    return keras.Model(i, L.Dense(3)(x))


def dense():
    i = keras.Input((6,))
    x = L.Dense(8, activation="relu", name="first")(i)
    return keras.Model(i, L.Dense(3)(L.Dense(8)(x)))


def merge(cls):
    i = keras.Input((6, 6, 3))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", name="first")(i)))
    y = L.BatchNormalization()(L.Conv2D(8, 3, padding="same")(x))
    x = cls(name="subject")([x, y])
    return keras.Model(i, L.Dense(3)(L.GlobalAveragePooling2D()(L.Conv2D(6, 1)(x))))


def concatenate():
    i = keras.Input((6, 6, 3))
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="first")(i)
    b = L.Conv2D(6, 1, activation="relu")(i)
    x = L.Concatenate(name="subject")([b, a])
    return keras.Model(i, L.Dense(3)(L.GlobalAveragePooling2D()(L.Conv2D(6, 1)(x))))


def flatten():
    i = keras.Input((6, 6, 3))
    x = L.MaxPooling2D(2)(L.Conv2D(8, 3, padding="same", activation="relu", name="first")(i))
    return keras.Model(i, L.Dense(3)(L.Dense(8)(L.Flatten(name="subject")(x))))


def reshape():
    i = keras.Input((4, 4, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="first")(i)
    x = L.Reshape((-1, 4 * 8), name="subject")(x)  # (H, W*C): whole channel vectors per row
    return keras.Model(i, L.Dense(3)(L.Dense(8)(L.Flatten()(x))))


def masking():
    i = keras.Input((6, 3))
    x = L.Masking(0.0, name="subject")(L.Conv1D(8, 3, padding="same", name="first")(i))
    return keras.Model(i, L.Dense(3)(L.GlobalAveragePooling1D()(x)))


def tf_ops():
    tf = _tf.tf()
    i = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, padding="same", name="first")(i)
    x = tf.nn.relu6(x) * 2.0  # unary op, then a scalar multiply
    y = L.Conv2D(8, 1, activation="relu")(x)
    z = tf.concat([x * y, x], axis=-1)  # tensor x tensor couples x and y
    z = tf.reduce_mean(z, axis=[1, 2], keepdims=True)
    return keras.Model(i, L.Dense(3)(L.Flatten()(z)))


def same(cls, **kw):
    return lambda: cls(name="subject", **kw)


EXACT = {
    "Conv1D": lambda: chain(1, same(L.Conv1D, filters=8, kernel_size=3, padding="same")),
    "Conv2D": lambda: chain(2, same(L.Conv2D, filters=8, kernel_size=3, padding="same")),
    "Conv3D": lambda: chain(3, same(L.Conv3D, filters=8, kernel_size=3, padding="same")),
    "SeparableConv1D": lambda: chain(
        1, same(L.SeparableConv1D, filters=8, kernel_size=3, padding="same", depth_multiplier=2)
    ),
    "SeparableConv2D": lambda: chain(
        2, same(L.SeparableConv2D, filters=8, kernel_size=3, padding="same", depth_multiplier=2)
    ),
    "Conv1DTranspose": lambda: chain(1, same(L.Conv1DTranspose, filters=8, kernel_size=3)),
    "Conv2DTranspose": lambda: chain(
        2, same(L.Conv2DTranspose, filters=8, kernel_size=3, strides=2, padding="same")
    ),
    "Conv3DTranspose": lambda: chain(3, same(L.Conv3DTranspose, filters=8, kernel_size=2)),
    "DepthwiseConv1D": lambda: chain(
        1, same(L.DepthwiseConv1D, kernel_size=3, padding="same", depth_multiplier=2)
    ),
    "DepthwiseConv2D": lambda: chain(
        2, same(L.DepthwiseConv2D, kernel_size=3, padding="same", depth_multiplier=2)
    ),
    "Dense": dense,
    "BatchNormalization": lambda: chain(2, same(L.BatchNormalization)),
    "Activation": lambda: chain(2, same(L.Activation, activation="relu")),
    "ReLU": lambda: chain(2, same(L.ReLU, max_value=6.0)),
    "LeakyReLU": lambda: chain(2, same(L.LeakyReLU)),
    "ELU": lambda: chain(2, same(L.ELU)),
    "ThresholdedReLU": lambda: chain(2, same(L.ThresholdedReLU, theta=0.1)),
    "PReLU": lambda: chain(2, same(L.PReLU, alpha_initializer="random_uniform")),
    "Softmax": lambda: chain(2, same(L.Softmax, axis=-1)),  # a boundary: mixes channels
    "Identity": lambda: chain(2, same(L.Identity)),
    "Dropout": lambda: chain(2, same(L.Dropout, rate=0.5)),
    "SpatialDropout1D": lambda: chain(1, same(L.SpatialDropout1D, rate=0.5)),
    "SpatialDropout2D": lambda: chain(2, same(L.SpatialDropout2D, rate=0.5)),
    "SpatialDropout3D": lambda: chain(3, same(L.SpatialDropout3D, rate=0.5)),
    "GaussianNoise": lambda: chain(2, same(L.GaussianNoise, stddev=0.1)),
    "GaussianDropout": lambda: chain(2, same(L.GaussianDropout, rate=0.1)),
    "AlphaDropout": lambda: chain(2, same(L.AlphaDropout, rate=0.1)),
    "ActivityRegularization": lambda: chain(2, same(L.ActivityRegularization, l1=0.01)),
    "Concatenate": concatenate,
    "Flatten": flatten,
    "Reshape": reshape,
    "TFOpLambda": tf_ops,
}
for _r in (1, 2, 3):
    for _name, _kw in (
        ("MaxPooling", {"pool_size": 2}),
        ("AveragePooling", {"pool_size": 2}),
        ("ZeroPadding", {"padding": 1}),
        ("Cropping", {"cropping": 1}),
        ("UpSampling", {"size": 2}),
    ):
        _cls = getattr(L, f"{_name}{_r}D")
        EXACT[f"{_name}{_r}D"] = lambda r=_r, c=_cls, kw=_kw: chain(r, same(c, **kw))
    for _name in ("GlobalAveragePooling", "GlobalMaxPooling"):
        _cls = getattr(L, f"{_name}{_r}D")
        EXACT[f"{_name}{_r}D"] = lambda r=_r, c=_cls: global_pool(r, c)
for _name in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"):
    _cls = getattr(L, _name)
    EXACT[_name] = lambda c=_cls: merge(c)

# Layers that stop pruning: their input channels must stay.
BOUNDARY = {
    "Rescaling": lambda: chain(2, same(L.Rescaling, scale=0.5)),
    "Normalization": lambda: chain(2, same(L.Normalization, mean=0.0, variance=2.0)),
    "LayerNormalization": lambda: chain(2, same(L.LayerNormalization)),
    "UnitNormalization": lambda: chain(2, same(L.UnitNormalization)),
    "Permute": lambda: chain(2, same(L.Permute, dims=(2, 1, 3))),
    "Masking": masking,
    "Softmax": EXACT["Softmax"],
}


def test_every_registry_entry_has_a_case():
    assert set(HANDLERS) | set(SLICERS) == set(EXACT) | set(BOUNDARY)


@pytest.mark.parametrize("name", sorted(EXACT))
def test_registered_layer_prunes_exactly(name):
    keras.utils.set_random_seed(0)
    model = EXACT[name]()
    assert any(type(op.layer).__name__ == name for op in build_graph(model).flat.ops)
    randomize_bn(model)
    plant_dead(model, 0.5)
    x = sample(model)
    result = prune_structured(model, sparsity=0.5, unknown_layers="error")
    assert max_diff(model, result.model, x) <= 1e-5
    first = {r["name"]: r for r in result.layers}["first"]
    if name not in BOUNDARY:
        assert first["channels_after"] < first["channels_before"]


@pytest.mark.parametrize("name", sorted(BOUNDARY))
def test_boundary_layer_freezes_its_input_channels(name):
    model = BOUNDARY[name]()
    graph = build_graph(model, unknown_layers="error")
    first = graph.flat.layer_ops()["first"][0]
    gids, _ = graph.slots(first.outputs[0])
    assert all(graph.groups[g].n_prunable == 0 for g in set(gids.tolist()))
    result = prune_structured(model, sparsity=0.5, unknown_layers="error")
    assert result.model.get_layer("first").filters == 8
    assert np.asarray(result.model(sample(model))).shape == (4, 3)
