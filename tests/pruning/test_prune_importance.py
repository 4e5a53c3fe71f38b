"""Every criterion ranks a planted dead or useless channel last."""

from __future__ import annotations

import numpy as np
import pytest
from prune_helpers import L, keras, randomize_bn

from edgeprune.errors import BadInputError
from edgeprune.pruning import prune_structured
from edgeprune.pruning.graph import build_graph
from edgeprune.pruning.importance import CRITERIA, Context, combine, score_groups

DEAD = 5  # the planted channel


def _model():
    keras.utils.set_random_seed(3)
    i = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="c1")(i)
    x = L.ReLU(name="relu")(L.BatchNormalization(name="bn1")(x))
    x = L.Dense(4, name="head")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(i, x)
    randomize_bn(model)
    return model


def _set(layer, index: int, fn) -> None:
    w = layer.get_weights()
    fn(w)
    layer.set_weights(w)


def _plant(model, criterion: str) -> None:
    if criterion in ("l1", "l2"):  # a filter with tiny weights contributes little
        _set(
            model.get_layer("c1"),
            0,
            lambda w: w[0].__setitem__((..., DEAD), w[0][..., DEAD] * 1e-3),
        )
    elif criterion == "bn":  # network slimming: γ ≈ 0 switches the channel off
        _set(model.get_layer("bn1"), 0, lambda w: w[0].__setitem__(DEAD, 1e-4))
    elif criterion in ("apoz", "activation"):  # β ≪ 0: the ReLU output is always zero
        _set(model.get_layer("bn1"), 1, lambda w: w[1].__setitem__(DEAD, -100.0))
    elif criterion == "taylor":  # the head ignores the channel: zero gradient, zero saliency
        _set(model.get_layer("head"), 0, lambda w: w[0].__setitem__(DEAD, 0.0))


def _data(n: int = 48):
    rng = np.random.default_rng(0)
    return rng.normal(0, 1, (n, 8, 8, 3)).astype(np.float32), rng.integers(0, 4, n)


def _kwargs(criterion: str) -> dict:
    x, y = _data()
    return {"calib": x} if CRITERIA[criterion].needs == "calib" else {"data": (x, y)}


def test_every_criterion_is_tested():
    assert set(CRITERIA) == {"l1", "l2", "bn", "apoz", "activation", "taylor"}


@pytest.mark.parametrize("criterion", sorted(CRITERIA))
def test_criterion_ranks_planted_channel_last(criterion):
    model = _model()
    _plant(model, criterion)
    graph = build_graph(model)
    kw = _kwargs(criterion)
    data = kw.get("data")
    ctx = Context(graph, calib=kw.get("calib"), data=data)
    scores = score_groups(criterion, ctx)
    op = graph.flat.layer_ops()["c1"][0]
    gid, pos = (a[DEAD] for a in graph.slots(op.outputs[0]))
    s = scores[int(gid)]
    others = np.delete(s, pos)
    assert s[pos] < others.min(), (criterion, s)

    # end to end: removing one channel removes the planted one
    result = prune_structured(model, sparsity=1 / 8, criterion=criterion, **kw)
    old = model.get_layer("c1").get_weights()[0]
    new = result.model.get_layer("c1").get_weights()[0]
    assert np.array_equal(new, np.delete(old, DEAD, axis=-1))


def test_data_criteria_name_the_missing_option():
    with pytest.raises(BadInputError, match="--criterion apoz.*--calib"):
        prune_structured(_model(), sparsity=0.5, criterion="apoz")
    with pytest.raises(BadInputError, match="--criterion activation.*--calib"):
        prune_structured(_model(), sparsity=0.5, criterion="activation")
    with pytest.raises(BadInputError, match="--criterion taylor.*--data"):
        prune_structured(_model(), sparsity=0.5, criterion="taylor", calib=_data()[0])
    with pytest.raises(BadInputError, match="--criterion nope"):
        prune_structured(_model(), sparsity=0.5, criterion="nope")
    with pytest.raises(BadInputError, match="--calib"):
        prune_structured(_model(), sparsity=0.5, criterion="apoz", calib=np.zeros((4, 9, 9, 3)))


def test_group_scores_are_normalised_per_layer_then_summed():
    i = keras.Input((6,))
    a, b = L.Dense(4, name="a")(i), L.Dense(4, name="b")(i)
    graph = build_graph(keras.Model(i, L.Dense(2)(L.Add()([a, b]))))
    ka, kb = (graph.flat.layer_ops()[n][0].outputs[0] for n in "ab")
    scores = combine(
        graph, [(ka, np.array([1.0, 2, 3, 4])), (kb, np.array([400.0, 300, 200, 100]))]
    )
    gid = int(graph.slots(ka)[0][0])
    assert np.allclose(scores[gid], [1.25, 1.25, 1.25, 1.25])


def test_bn_falls_back_to_l1_for_groups_without_batch_norm():
    i = keras.Input((6,))
    model = keras.Model(i, L.Dense(2)(L.Dense(8, name="d")(i)))
    ctx = Context(build_graph(model))
    scores = score_groups("bn", ctx)
    assert any(s.any() for s in scores.values())
    assert "ranked by l1" in ctx.notes[0]
