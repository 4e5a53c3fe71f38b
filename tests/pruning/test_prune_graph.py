"""Channel dependency graph: which channels are coupled, which are frozen, what is refused."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from prune_helpers import (
    L,
    concat_flatten_model,
    keras,
    nested_model,
    residual_model,
    sample,
    se_model,
)

from edgeprune.errors import BadInputError
from edgeprune.pruning import channel_groups, prune_structured
from edgeprune.pruning.graph import build_graph


def _group_of(graph, layer: str) -> int:
    op = graph.flat.layer_ops()[layer][0]
    gids, _ = graph.slots(op.outputs[0])
    assert len(set(gids.tolist())) == 1
    return int(gids[0])


def test_residual_add_couples_both_convs_and_output_is_frozen():
    graph = build_graph(residual_model())
    assert _group_of(graph, "c1") == _group_of(graph, "c2") != _group_of(graph, "c3")
    assert graph.groups[_group_of(graph, "c1")].layers == ["c1", "c2"]
    assert graph.groups[_group_of(graph, "head")].n_prunable == 0  # the model output
    rows = channel_groups(residual_model())
    assert {r["channels"] for r in rows} == {8, 6, 3}


def test_concatenate_maps_offsets_and_flatten_maps_positions():
    model = concat_flatten_model()
    graph = build_graph(model)
    ops = graph.flat.layer_ops()
    concat = ops["cat"][0]
    a, b = (graph.get(k) for k in concat.inputs)
    assert np.array_equal(graph.get(concat.outputs[0]), np.concatenate([a, b]))
    flat_op = ops["flat"][0]
    _, h, w, c = graph.flat.shapes[flat_op.inputs[0]]
    src, dst = graph.get(flat_op.inputs[0]), graph.get(flat_op.outputs[0])
    for hh, ww, cc in [(0, 0, 0), (1, 2, 5), (h - 1, w - 1, c - 1)]:
        assert dst[hh * w * c + ww * c + cc] == src[cc]


def test_squeeze_excite_broadcast_multiply_couples_excitation_with_features():
    graph = build_graph(se_model())
    stem = _group_of(graph, "stem")
    assert stem == _group_of(graph, "se_expand") == _group_of(graph, "gate_expand")
    assert len({stem, _group_of(graph, "se_reduce"), _group_of(graph, "gate_reduce")}) == 3


def test_keep_freezes_a_layer_and_a_nested_model():
    graph = build_graph(residual_model(), keep=["c1"])
    assert graph.groups[_group_of(graph, "c2")].n_prunable == 0
    assert graph.groups[_group_of(graph, "c3")].n_prunable == 6

    with pytest.raises(BadInputError, match="did you mean c1"):
        build_graph(residual_model(), keep=["c_1"])


def test_outputs_are_never_pruned_even_in_the_middle():
    i = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, name="features")(i)
    y = L.Dense(2)(L.GlobalAveragePooling2D()(L.Conv2D(4, 1, name="mid")(x)))
    model = keras.Model(i, [x, y])
    result = prune_structured(model, sparsity=0.5)
    assert result.model.get_layer("features").filters == 8
    assert result.model.get_layer("mid").filters == 2


class Scale(keras.layers.Layer):
    """A custom layer the graph knows nothing about."""

    def call(self, x):
        return x * 2.0


def _custom_model():
    i = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, name="before")(i)
    x = Scale(name="my_scale")(x)
    x = L.Conv2D(8, 1, name="after")(x)
    return keras.Model(i, L.Dense(2)(L.GlobalAveragePooling2D()(x)))


def test_custom_layer_is_a_boundary_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        result = prune_structured(_custom_model(), sparsity=0.5)
    assert "'my_scale' (Scale)" in caplog.text and "--keep my_scale" in caplog.text
    assert any("my_scale" in n for n in result.notes)
    assert result.model.get_layer("before").filters == 8  # frozen by the boundary
    assert result.model.get_layer("after").filters == 4
    assert np.asarray(result.model(sample(result.model))).shape == (4, 2)


def test_custom_layer_is_refused_in_error_mode_and_keep_is_the_workaround(caplog):
    with pytest.raises(BadInputError) as err:
        prune_structured(_custom_model(), sparsity=0.5, unknown_layers="error")
    assert "my_scale" in str(err.value) and "Scale" in str(err.value)
    assert "--keep my_scale" in str(err.value)
    with caplog.at_level(logging.WARNING):
        prune_structured(_custom_model(), sparsity=0.5, unknown_layers="error", keep=["my_scale"])
    assert "my_scale" not in caplog.text


def test_lambda_and_unknown_tf_ops_are_boundaries():
    tf = __import__("edgeprune._tf", fromlist=["tf"]).tf()
    i = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, name="a")(i)
    x = L.Lambda(lambda t: t[..., ::-1], name="flip")(x)  # a channel permutation
    y = L.Conv2D(8, 1, name="b")(x)
    y = tf.roll(y, shift=1, axis=-1)  # TFOpLambda the graph does not know
    z = L.Conv2D(4, 1, name="c")(y)
    result = prune_structured(
        keras.Model(i, L.Flatten()(L.GlobalAveragePooling2D()(z))), sparsity=0.5
    )
    assert [result.model.get_layer(n).filters for n in "abc"] == [8, 8, 4]
    assert sum("boundary" in n for n in result.notes) == 2


def test_grouped_conv_is_a_boundary():
    i = keras.Input((6, 6, 4))
    x = L.Conv2D(8, 1, name="a")(i)
    x = L.Conv2D(8, 3, groups=2, name="grouped")(x)
    x = L.Conv2D(6, 1, name="b")(x)
    result = prune_structured(keras.Model(i, L.Dense(2)(L.Flatten()(x))), sparsity=0.5)
    assert [result.model.get_layer(n).filters for n in ("a", "grouped", "b")] == [8, 8, 3]
    assert any("grouped" in n for n in result.notes)


def test_shared_layer_keeps_one_set_of_channels():
    i1, i2 = keras.Input((5,)), keras.Input((5,))
    shared = L.Dense(8, activation="relu", name="shared")
    a = L.Dense(6, name="pa")(shared(i1))
    b = L.Dense(6, name="pb")(shared(i2))
    model = keras.Model([i1, i2], L.Dense(2)(L.Add()([a, b])))
    result = prune_structured(model, sparsity=0.5)
    assert result.model.get_layer("shared").units == 4
    assert len(result.model.get_layer("shared")._inbound_nodes) == 2
    assert result.model(sample(model)).shape == (4, 2)


def test_subclassed_model_is_refused_with_how_to_make_it_functional():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(3)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 4), np.float32))
    with pytest.raises(BadInputError, match=r"functional API.*keras\.Model\(inputs=x"):
        prune_structured(net, sparsity=0.5)


def test_unknown_layers_mode_is_validated():
    with pytest.raises(BadInputError, match="--unknown-layers"):
        build_graph(residual_model(), unknown_layers="ignore")


def test_nested_model_calls_are_inlined_with_their_training_argument():
    graph = build_graph(nested_model())
    calls = graph.flat.layer_ops()["block_conv"]  # the inner "conv" BN, renamed
    assert [op.kwargs.get("training") for op in calls] == [False, None]
    assert [op.scopes for op in calls] == [("block",), ("block",)]
    kept = build_graph(nested_model(), keep=["block"])  # keep a whole nested model by name
    assert all(g.n_prunable == 0 for g in kept.groups if "inner_conv" in g.layers)


def test_groups_say_why_their_channels_are_frozen():
    i = keras.Input((6, 6, 4))
    a = L.Conv2D(4, 1, name="to_input")(i)
    x = L.Add()([i, a])  # coupled with the model input
    x = L.Conv2D(8, 3, padding="same", name="before_ln")(x)
    x = L.LayerNormalization(name="ln")(x)
    x = L.Conv2D(6, 1, name="mid")(x)
    x = L.Conv2D(6, 1, name="kept")(x)  # a boundary: the channels feeding it stay
    x = L.Conv2D(5, 1, name="free")(x)
    out = L.Dense(3, activation="softmax", name="head")(L.GlobalAveragePooling2D()(x))
    rows = {r["layers"][0]: r for r in channel_groups(keras.Model(i, out), keep=["kept"])}
    assert rows["to_input"]["frozen_by"] == ["model input"]
    assert rows["before_ln"]["frozen_by"] == ["boundary layer 'ln' (LayerNormalization)"]
    assert rows["mid"]["frozen_by"] == ["--keep kept"] and "kept" not in rows
    assert rows["free"]["frozen_by"] == [] and rows["free"]["prunable"] == 5
    assert rows["head"]["frozen_by"] == [
        "model output", "softmax activation of 'head' mixes its channels"]
