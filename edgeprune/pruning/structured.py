"""Structured (channel) pruning: graph → importance → policy → surgery, and sensitivity.

The result is a new, smaller tf_keras functional model with no masks or wrappers, so the
channels are physically gone from the converted .tflite (that is what lowers int8 latency).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeprune.data.rows import Rows
from edgeprune.errors import BadInputError
from edgeprune.pruning.graph import ChannelGraph, build_graph
from edgeprune.pruning.importance import Context, check_criterion, score_groups
from edgeprune.pruning.policy import ALLOCATORS, Plan, plan
from edgeprune.pruning.stats import flat_stats, layer_stats
from edgeprune.pruning.surgery import rebuild

log = logging.getLogger(__name__)


@dataclass
class StructuredPruneResult:
    model: Any  # the new tf_keras Model
    layers: list[dict[str, Any]]  # name, type, params, macs, channels_before/after, sparsity
    notes: list[str] = field(default_factory=list)  # clamps, boundaries, fallbacks
    groups: list[dict[str, Any]] = field(default_factory=list)  # group, layers, channels, kept


def prune_structured(
    model: Any,
    *,
    sparsity: float | dict[int, float],
    criterion: str = "l1",
    allocation: str = "uniform",
    channel_multiple: int = 1,
    min_channels: int | None = None,
    keep: Sequence[str] = (),
    calib: np.ndarray | None = None,
    data: tuple[np.ndarray, np.ndarray] | None = None,
    unknown_layers: str = "boundary",
    cost: Callable[[Mapping[str, int]], float] | None = None,
) -> StructuredPruneResult:
    """Remove the least important ``sparsity`` fraction of prunable channels of ``model``.

    ``sparsity`` may be a dict ``{group id: ratio}`` (ids as ``channel_groups``/``sensitivity``
    number them; missing groups are not pruned), e.g. from ``policy.allocate_by_sensitivity``;
    ``allocation`` is then unused. ``model`` is not modified. Channels feeding the model's
    outputs and the channels of layers named in ``keep`` (or inside nested models named there)
    are never removed. ``cost`` prices output channels per layer (flat op name -> channels;
    e.g. the target's estimated latency) and makes rounding to ``channel_multiple``
    cost-aware (``policy.round_kept``); without it kept counts round half-up.
    """
    _check_options(sparsity, allocation, channel_multiple, min_channels)
    check_criterion(criterion, calib, data)
    graph = build_graph(model, keep=keep, unknown_layers=unknown_layers)
    calib, data = _check_data(model, calib, data)
    log.info("structured pruning: %d prunable channel groups", len(graph.prunable_groups()))
    ctx = Context(graph, calib=calib, data=data)
    scores = score_groups(criterion, ctx)
    chosen = plan(
        graph.groups,
        scores,
        sparsity=sparsity,
        allocation=allocation,
        channel_multiple=channel_multiple,
        min_channels=min_channels,
        cost=None if cost is None else lambda kept: cost(graph.layer_channels(kept)),
    )
    notes = [*graph.notes, *ctx.notes, *chosen.notes]
    new_model = _apply(graph, chosen, notes)
    return StructuredPruneResult(
        model=new_model,
        layers=_rows(graph, new_model),
        notes=notes,
        groups=_group_rows(graph, chosen),
    )


def channel_groups(
    model: Any, keep: Sequence[str] = (), unknown_layers: str = "boundary"
) -> list[dict[str, Any]]:
    """The model's channel groups: ``{group, layers, channels, prunable}`` (for ``analyze``)."""
    return [g.as_dict() for g in build_graph(model, keep, unknown_layers).groups]


def sensitivity(
    model: Any,
    data: tuple[np.ndarray, np.ndarray],
    ratios: Sequence[float] = (0.25, 0.5, 0.75),
    criterion: str = "l1",
    *,
    keep: Sequence[str] = (),
    unknown_layers: str = "boundary",
    batch_size: int = 64,
    calib: Any = None,
) -> list[dict[str, Any]]:
    """Prune each group alone at each ratio (no fine-tuning) and measure accuracy on ``data``.

    Rows: ``{group, layers, ratio, channels, prunable, kept, accuracy, drop}``; ``drop`` is the
    baseline accuracy minus this accuracy (positive = worse). Group ids are those of
    ``prune_structured`` for the same model, ``keep`` and ``unknown_layers``. ``calib`` (default:
    the inputs of ``data``) feeds activation-based criteria.
    """
    for r in ratios:
        _check_options(r, "uniform", 1, None, option="ratios")
    check_criterion(criterion, None, data)
    graph = build_graph(model, keep=keep, unknown_layers=unknown_layers)
    calib, data = _check_data(model, calib, data)
    if data is None:
        raise BadInputError("--data", "sensitivity needs labelled samples", "pass --data PATH")
    x, y = data
    ctx = Context(graph, calib=x if calib is None else calib, data=data)
    scores = score_groups(criterion, ctx)
    baseline = _accuracy(model, x, y, batch_size)
    groups = graph.prunable_groups()
    rows = []
    for i, g in enumerate(groups):
        log.info("sensitivity: group %d/%d (%s)", i + 1, len(groups), g.layers[0])
        for r in ratios:
            chosen = plan(graph.groups, scores, sparsity={g.id: r})
            pruned = _apply(graph, chosen, [])
            acc = _accuracy(pruned, x, y, batch_size)
            rows.append(
                {
                    "group": g.id,
                    "layers": list(g.layers),
                    "ratio": float(r),
                    "channels": g.size,
                    "prunable": g.n_prunable,
                    "kept": g.size - len(chosen.removed.get(g.id, ())),
                    "accuracy": acc,
                    "drop": baseline - acc,
                }
            )
    return rows


# --- helpers ----------------------------------------------------------------------------------
def _apply(graph: ChannelGraph, chosen: Plan, notes: list[str]) -> Any:
    model, _ = rebuild(graph, chosen.removed_roots(graph.groups, len(graph.roots)), notes)
    return model


def _rows(graph: ChannelGraph, new_model: Any) -> list[dict[str, Any]]:
    before = {r["name"]: r for r in flat_stats(graph.flat)}
    rows = []
    for r in layer_stats(new_model):
        old = before.get(r["name"], r)
        p0 = old["params"]
        rows.append(
            {
                "name": r["name"],
                "type": r["type"],
                "params": r["params"],
                "macs": r["macs"],
                "channels_before": old["out_channels"],
                "channels_after": r["out_channels"],
                "sparsity": 1.0 - r["params"] / p0 if p0 else 0.0,
            }
        )
    return rows


def _group_rows(graph: ChannelGraph, chosen: Plan) -> list[dict[str, Any]]:
    return [
        {**g.as_dict(), "kept": g.size - len(chosen.removed.get(g.id, ()))} for g in graph.groups
    ]


def _accuracy(model: Any, x: Any, y: np.ndarray, batch_size: int) -> float:
    pred = model.predict(x, batch_size=batch_size, verbose=0)
    pred = pred[0] if isinstance(pred, list) else pred
    y = np.asarray(y)
    if y.ndim > 1 and y.shape[-1] > 1:
        y = y.argmax(axis=-1)
    y = y.reshape(len(y))
    pred = pred.reshape(len(pred), -1)
    labels = (pred[:, 0] > 0.5).astype(int) if pred.shape[1] == 1 else pred.argmax(axis=-1)
    return float(np.mean(labels == y))


def _check_options(
    sparsity: float | dict[int, float],
    allocation: str,
    channel_multiple: int,
    min_channels: int | None,
    option: str = "--sparsity",
) -> None:
    per_group = sparsity if isinstance(sparsity, dict) else {None: sparsity}
    for gid, r in per_group.items():
        ok = isinstance(r, int | float) and not math.isnan(r) and 0.0 <= r < 1.0
        if not ok or not (gid is None or isinstance(gid, int)):
            where = option if gid is None else f"{option} of group {gid!r}"
            raise BadInputError(
                f"{where} {r}",
                "must be a fraction of channels to remove, at least 0 and below 1",
                "use e.g. 0.5 to remove half of the prunable channels",
            )
    if allocation not in ALLOCATORS:
        raise BadInputError(
            f"--allocation {allocation}",
            "unknown allocation",
            f"use one of: {', '.join(ALLOCATORS)}",
        )
    if not isinstance(channel_multiple, int) or channel_multiple < 1:
        raise BadInputError(
            f"--channel-multiple {channel_multiple}",
            "must be a whole number of at least 1",
            "use 1 (no rounding), or e.g. 8 or 16 for SIMD/NPU-friendly widths",
        )
    if min_channels is not None and (not isinstance(min_channels, int) or min_channels < 1):
        raise BadInputError(
            f"--min-channels {min_channels}",
            "must be a whole number of at least 1",
            "leave it unset (the default is max(1, channel multiple)) or pass e.g. 8",
        )


def _check_data(model: Any, calib: Any, data: Any) -> tuple[Any, Any]:
    if calib is not None:
        calib = _check_x(model, calib, "--calib")
    if data is not None:
        if not isinstance(data, tuple | list) or len(data) != 2:
            raise BadInputError(
                "--data", "expected (inputs, labels)", "pass an .npz file with arrays x and y"
            )
        x, y = _check_x(model, data[0], "--data"), np.asarray(data[1])
        n = len(x[0]) if isinstance(x, list) else len(x)
        if len(y) != n:
            raise BadInputError(
                "--data", f"{n} samples but {len(y)} labels", "give one label per sample in y"
            )
        data = (x, y)
    return calib, data


def _check_x(model: Any, x: Any, option: str) -> Any:
    # Samples read from disk (data.Rows) keep being read in batches: only their shape is
    # checked here, never converted to one array (that would read a whole dataset).
    def array_like(a: Any) -> Any:
        return a if isinstance(a, Rows) else np.asarray(a)

    xs = [array_like(a) for a in x] if isinstance(x, list | tuple) else [array_like(x)]
    if len(xs) != len(model.inputs):
        raise BadInputError(
            option,
            f"{len(xs)} input array(s) for a model with {len(model.inputs)} input(s)",
            "give one array per model input",
        )
    for a, t in zip(xs, model.inputs, strict=True):
        want = tuple(t.shape)[1:]
        ok = a.ndim == len(want) + 1 and all(
            w in (None, d) for w, d in zip(want, a.shape[1:], strict=True)
        )
        if not ok or len(a) == 0 or not np.issubdtype(a.dtype, np.number):
            raise BadInputError(
                option,
                f"samples of shape {a.shape[1:]} ({a.dtype}, {len(a)} samples) do not fit model "
                f"input '{t.name}' of shape {want}",
                "pass samples shaped like the model input (preprocessed as for training)",
            )
    return xs if isinstance(x, list | tuple) else xs[0]
