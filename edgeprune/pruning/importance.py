"""Importance criteria: a score per channel of every group (higher = more important).

Each criterion scores the channels a layer sees (filter norms of a producer, |γ| of a batch
norm, activation statistics of a post-activation tensor). Scores are normalised per layer (by
their max) and summed over the layers of a coupled group, so one wide layer cannot drown the
others. Criteria register by name; ``--criterion`` picks one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeprune.errors import BadInputError
from edgeprune.pruning.graph import ChannelGraph, Member

log = logging.getLogger(__name__)


@dataclass
class Context:
    graph: ChannelGraph
    calib: Any = None  # inputs (ndarray, or a list for multi-input models)
    data: tuple[Any, np.ndarray] | None = None  # (inputs, integer labels)
    batch_size: int = 32
    notes: list[str] = field(default_factory=list)


ScoreFn = Callable[[Context], dict[int, np.ndarray]]


@dataclass(frozen=True)
class Criterion:
    name: str
    fn: ScoreFn
    needs: str | None  # None, "calib" or "labels"
    help: str


CRITERIA: dict[str, Criterion] = {}


def register_criterion(
    name: str, needs: str | None = None, help: str = ""
) -> Callable[[ScoreFn], ScoreFn]:
    def deco(fn: ScoreFn) -> ScoreFn:
        CRITERIA[name] = Criterion(name, fn, needs, help or (fn.__doc__ or "").strip())
        return fn

    return deco


def check_criterion(name: str, calib: Any, data: Any) -> None:
    """Raise BadInputError for an unknown criterion or one missing its data."""
    crit = CRITERIA.get(name)
    if crit is None:
        raise BadInputError(
            f"--criterion {name}", "unknown criterion", f"use one of: {', '.join(CRITERIA)}"
        )
    if crit.needs == "labels" and data is None:
        raise BadInputError(
            f"--criterion {name}",
            "it needs labelled samples (it back-propagates a classification loss)",
            "pass --data PATH (an .npz with x and y), or use --criterion l1",
        )
    if crit.needs == "calib" and calib is None and data is None:
        raise BadInputError(
            f"--criterion {name}",
            "it needs calibration samples (it measures activations)",
            "pass --calib PATH (or --data PATH), or use --criterion l1",
        )


def score_groups(name: str, ctx: Context) -> dict[int, np.ndarray]:
    """Scores for every group of ``ctx.graph`` (zeros where a criterion sees nothing)."""
    check_criterion(name, ctx.calib, ctx.data)
    if ctx.calib is None and ctx.data is not None:
        ctx.calib = ctx.data[0]
    return CRITERIA[name].fn(ctx)


# --- combining per-layer scores -------------------------------------------------------------
def combine(graph: ChannelGraph, per_member: list[tuple[str, np.ndarray]]) -> dict[int, np.ndarray]:
    """Sum per-layer scores (each normalised by its max within the group) into group scores."""
    scores = {g.id: np.zeros(g.size) for g in graph.groups}
    for key, values in per_member:
        slots = graph.slots(key)
        if slots is None:
            continue
        gids, pos = slots
        for gid in np.unique(gids[gids >= 0]).tolist():
            m = gids == gid
            v = np.zeros(graph.groups[gid].size)
            np.add.at(v, pos[m], np.asarray(values, dtype=np.float64)[m])  # depthwise repeats add
            peak = v.max()
            scores[gid] += v / peak if peak > 0 else v
    return scores


def _layer(graph: ChannelGraph, member: Member) -> Any:
    return graph.flat.layer_ops()[member.layer][0].layer


def _members(graph: ChannelGraph, *kinds: str) -> list[Member]:
    return [m for m in graph.members if m.kind in kinds]


# --- weight-based criteria ------------------------------------------------------------------
def _filter_norms(graph: ChannelGraph, order: int) -> list[tuple[str, np.ndarray]]:
    out = []
    for m in _members(graph, "producer"):
        layer = _layer(graph, m)
        kernel = getattr(layer, "pointwise_kernel", None)  # separable: the filters are pointwise
        if kernel is None:
            kernel = layer.kernel
        w = kernel.numpy()
        out_axis = w.ndim - 2 if type(layer).__name__.endswith("Transpose") else w.ndim - 1
        w = np.moveaxis(w, out_axis, -1).reshape(-1, w.shape[out_axis])
        out.append((m.key, np.linalg.norm(w, ord=order, axis=0)))
    return out


@register_criterion("l1")
def l1(ctx: Context) -> dict[int, np.ndarray]:
    """L1 norm of each output filter of the group's producers (Conv, Dense, …)."""
    return combine(ctx.graph, _filter_norms(ctx.graph, 1))


@register_criterion("l2")
def l2(ctx: Context) -> dict[int, np.ndarray]:
    """L2 norm of each output filter of the group's producers."""
    return combine(ctx.graph, _filter_norms(ctx.graph, 2))


@register_criterion("bn")
def bn(ctx: Context) -> dict[int, np.ndarray]:
    """|γ| of the batch norms in the group (network slimming); l1 for groups without one."""
    per = []
    for m in _members(ctx.graph, "bn"):
        gamma = getattr(_layer(ctx.graph, m), "gamma", None)
        if gamma is not None:
            per.append((m.key, np.abs(gamma.numpy())))
    scores = combine(ctx.graph, per)
    fallback = l1(ctx)
    missing = [g.id for g in ctx.graph.prunable_groups() if not scores[g.id].any()]
    for gid in missing:
        scores[gid] = fallback[gid]
    if missing:
        ctx.notes.append(
            f"criterion bn: {len(missing)} group(s) have no batch norm with a scale; "
            "they are ranked by l1"
        )
    return scores


# --- data-based criteria --------------------------------------------------------------------
def activation_keys(graph: ChannelGraph) -> list[str]:
    """Post-activation tensors of every group (pre-activation outputs where a group has none)."""
    acts = _members(graph, "act")
    covered = set()
    for m in acts:
        gids, _ = graph.slots(m.key) or (np.zeros(0, dtype=np.int64), None)
        covered.update(gids[gids >= 0].tolist())
    keys = [m.key for m in acts]
    for m in _members(graph, "out"):
        gids, _ = graph.slots(m.key) or (np.zeros(0, dtype=np.int64), None)
        if set(gids[gids >= 0].tolist()) - covered:
            keys.append(m.key)
    return list(dict.fromkeys(keys))


def _submodel(graph: ChannelGraph, keys: list[str], with_output: bool = False) -> Any:
    from edgeprune import _tf
    from edgeprune.pruning.surgery import rebuild

    keras = _tf.keras()
    model, env = rebuild(graph)
    outs = ([model.outputs[0]] if with_output else []) + [env[k] for k in keys]
    return keras.Model(model.inputs, outs)


def _batches(x: Any, batch_size: int) -> Iterator[Any]:
    """Batches read one at a time (``x`` may be ``Rows`` read from disk, or a list of them)."""
    xs = x if isinstance(x, list | tuple) else [x]
    for i in range(0, len(xs[0]), batch_size):
        part = [np.asarray(a[i : i + batch_size]) for a in xs]
        yield part if isinstance(x, list | tuple) else part[0]


def _per_sample_mean(a: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], n: int) -> np.ndarray:
    return fn(a).reshape(n, -1, a.shape[-1]).mean(axis=1)


@register_criterion("apoz", needs="calib")
def apoz(ctx: Context) -> dict[int, np.ndarray]:
    """1 − average percentage of zeros of the group's post-activation outputs."""
    return combine(ctx.graph, _spatial_stat(ctx, lambda a: (a != 0).astype(np.float64)))


@register_criterion("activation", needs="calib")
def activation(ctx: Context) -> dict[int, np.ndarray]:
    """Mean |activation| of the group's post-activation outputs over calibration samples."""
    return combine(ctx.graph, _spatial_stat(ctx, np.abs))


def _spatial_stat(ctx: Context, fn: Callable[[np.ndarray], np.ndarray]) -> list:
    """Per-channel mean of fn(activation) over samples and positions."""
    keys = activation_keys(ctx.graph)
    if not keys:
        return []
    sub = _submodel(ctx.graph, keys)
    sums = [np.zeros(ctx.graph.flat.channels(k) or 0) for k in keys]
    count = 0
    for xb in _batches(ctx.calib, ctx.batch_size):
        outs = sub(xb, training=False)
        outs = outs if isinstance(outs, list | tuple) else [outs]
        n = int(outs[0].shape[0])
        for i, a in enumerate(outs):
            sums[i] += _per_sample_mean(np.asarray(a), fn, n).sum(axis=0)
        count += n
    return [(k, s / max(count, 1)) for k, s in zip(keys, sums, strict=True)]


@register_criterion("taylor", needs="labels")
def taylor(ctx: Context) -> dict[int, np.ndarray]:
    """First-order Taylor |Σ a·∂L/∂a| (sparse categorical cross-entropy) over labelled data."""
    from edgeprune import _tf

    tf, keras = _tf.tf(), _tf.keras()
    keys = activation_keys(ctx.graph)
    if not keys or ctx.data is None:
        return combine(ctx.graph, [])
    sub = _submodel(ctx.graph, keys, with_output=True)
    x, y = ctx.data
    y = np.asarray(y)
    if y.ndim > 1 and y.shape[-1] > 1:  # one-hot labels
        y = y.argmax(axis=-1)
    sums = [np.zeros(ctx.graph.flat.channels(k) or 0) for k in keys]
    from_logits = None
    for xb, yb in zip(_batches(x, ctx.batch_size), _batches(y, ctx.batch_size), strict=True):
        with tf.GradientTape() as tape:
            outs = sub(xb, training=False)
            pred, acts = outs[0], outs[1:]
            if from_logits is None:
                from_logits = not _looks_like_probabilities(np.asarray(pred))
            loss = tf.reduce_sum(
                keras.losses.sparse_categorical_crossentropy(
                    yb.reshape(len(yb), -1)[:, 0], pred, from_logits=from_logits
                )
            )
        grads = tape.gradient(loss, acts)
        for i, (a, g) in enumerate(zip(acts, grads, strict=True)):
            if g is None:
                continue
            ag = (np.asarray(a) * np.asarray(g)).reshape(len(yb), -1, a.shape[-1])
            sums[i] += np.abs(ag.sum(axis=1)).sum(axis=0)
    return combine(ctx.graph, list(zip(keys, sums, strict=True)))


def _looks_like_probabilities(p: np.ndarray) -> bool:
    return bool(p.min() >= 0 and np.allclose(p.sum(axis=-1), 1.0, atol=1e-3))
