"""``edgeprune analyze``: where a model's parameters and MACs are, which channels are coupled,
which can be pruned (and why not), and how much accuracy each group loses when pruned alone.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.errors import BadInputError

SCHEMA = "edgeprune.drivers.analyze/1"
RATIOS = (0.25, 0.5, 0.75)
SENSITIVITY_SAMPLES = 500  # a seeded subset: the scan runs len(groups) × 3 evaluations


@dataclass
class Analysis:
    model: str
    input_shape: list[int | None]
    params: int
    macs: int | None  # None when a layer's MACs are unknown (dynamic shapes)
    layers: list[dict[str, Any]]  # name, type, params, macs, out_channels
    groups: list[dict[str, Any]]  # group, layers, channels, prunable, frozen_by
    notes: list[str] = field(default_factory=list)
    sensitivity: dict[str, Any] | None = None  # criterion, samples, baseline_accuracy, rows

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **dataclasses.asdict(self)}


def analyze(
    model: Any,
    *,
    data: tuple[np.ndarray, np.ndarray] | None = None,
    calib: np.ndarray | None = None,
    with_sensitivity: bool = False,
    criterion: str = "l1",
    keep: Sequence[str] = (),
    ratios: Sequence[float] = RATIOS,
    samples: int = SENSITIVITY_SAMPLES,
    seed: int = 0,
) -> Analysis:
    """Analyse a tf_keras model; the sensitivity scan needs labelled ``data``."""
    from edgeprune.pruning import layer_stats, sensitivity
    from edgeprune.pruning.graph import build_graph

    if with_sensitivity and data is None:
        raise _needs_data()
    graph = build_graph(model, keep=keep)  # refuses subclassed models, says how to fix
    layers = layer_stats(model)
    macs = [r["macs"] for r in layers]
    result = Analysis(
        model=model.name,
        input_shape=list(model.input_shape)[1:],
        params=int(model.count_params()),
        macs=None if None in macs else int(sum(macs)),
        layers=layers,
        groups=[g.as_dict() for g in graph.groups],
        notes=list(graph.notes),
    )
    if with_sensitivity and data is not None:
        x, y = _subset(data, samples, seed)
        rows = sensitivity(model, (x, y), ratios, criterion, keep=keep, calib=calib)
        result.sensitivity = {
            "criterion": criterion,
            "samples": len(y),
            "baseline_accuracy": rows[0]["accuracy"] + rows[0]["drop"] if rows else None,
            "rows": rows,
        }
    return result


def analyze_file(
    model_path: Path,
    *,
    data_path: Path | None = None,
    calib_path: Path | None = None,
    with_sensitivity: bool = False,
    criterion: str = "l1",
    keep: Sequence[str] = (),
    samples: int = SENSITIVITY_SAMPLES,
    trust_model: bool = False,
) -> Analysis:
    """Load and check the inputs (bad input fails before any work), then ``analyze``."""
    from edgeprune import data as data_mod
    from edgeprune import model_io
    from edgeprune.data import load as data_load
    from edgeprune.pruning.importance import check_criterion

    if with_sensitivity and data_path is None:
        raise _needs_data()
    if samples < 1:
        raise BadInputError(f"--samples {samples}", "must be ≥ 1", "Use e.g. 500")
    if with_sensitivity:
        check_criterion(criterion, calib_path, data_path)
    model = model_io.load_model(model_path, trust_model=trust_model)
    shape = tuple(model.input_shape)
    data = None
    if data_path is not None:
        labelled = data_load.load_labelled(data_path, "--data", shape)
        data_mod.check_labels(labelled, model_io.num_classes(model), "--data")
        data = (labelled.x, labelled.y)
    calib = None if calib_path is None else data_load.load_samples(calib_path, "--calib", shape)
    _verify_translation(model, data, calib)
    return analyze(
        model, data=data, calib=calib, with_sensitivity=with_sensitivity,
        criterion=criterion, keep=keep, samples=samples,
    )  # fmt: skip


def _verify_translation(model: Any, data: tuple[Any, Any] | None, calib: Any) -> None:
    """A Keras 3 model was rebuilt in tf_keras: check the twin on the given samples (or a few
    seeded noise inputs), as a build does."""
    from edgeprune.keras3 import bridge

    if data is not None or calib is not None:
        x, source = (data[0], "--data") if data is not None else (calib, "--calib")
    else:
        shape = [d or 1 for d in model.input_shape[1:]]
        x, source = np.random.default_rng(0).random((4, *shape), dtype=np.float32), "noise"
    bridge.verify(model, x, source)


def write_json(analysis: Analysis, path: Path) -> Path:
    if path.is_dir():
        raise BadInputError(f"--out {path}", "is a folder", "Give a file name, e.g. analysis.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(analysis.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def _needs_data() -> BadInputError:
    return BadInputError(
        "--sensitivity",
        "measures each group's accuracy drop, so it needs labelled samples",
        "Pass --data DATA.npz (with x and y; held-out data gives the most honest figures)",
    )


def _subset(data: tuple[Any, np.ndarray], n: int, seed: int) -> tuple[Any, np.ndarray]:
    from edgeprune.data import sample_positions

    x, y = data
    idx = sample_positions(len(y), n, seed)
    return np.asarray(x[idx]), y[idx]


# --- text rendering ---------------------------------------------------------------------------
def render(a: Analysis) -> str:
    """Aligned text tables: layers, channel groups, notes, sensitivity."""
    macs = "?" if a.macs is None else f"{a.macs:,}"
    shape = "×".join("?" if d is None else str(d) for d in a.input_shape)
    out = [f"model '{a.model}': input {shape}, {a.params:,} parameters, {macs} MACs", ""]
    layer_rows = [
        [r["name"], r["type"], f"{r['params']:,}", _num(r["macs"]), _num(r["out_channels"])]
        for r in a.layers
    ]
    out += _table(["layer", "type", "params", "MACs", "out ch"], layer_rows, right={2, 3, 4})
    prunable = sum(g["prunable"] for g in a.groups)
    out += [
        "",
        f"channel groups: {len(a.groups)} ({prunable:,} prunable channels; layers in a group "
        "share their output channels and are pruned together)",
        "",
    ]
    group_rows = [
        [str(g["group"]), str(g["channels"]), str(g["prunable"]), _names(g["layers"]),
         "; ".join(g["frozen_by"]) or "—"]
        for g in a.groups
    ]  # fmt: skip
    header = ["group", "channels", "prunable", "layers", "frozen by"]
    out += _table(header, group_rows, right={0, 1, 2})
    if a.notes:
        out += ["", "notes:", *(f"  - {n}" for n in a.notes)]
    if a.sensitivity is not None:
        out += ["", *_render_sensitivity(a.sensitivity)]
    return "\n".join(out)


def _render_sensitivity(s: dict[str, Any]) -> list[str]:
    rows = s["rows"]
    if not rows:
        return ["sensitivity: no prunable channel groups"]
    ratios = sorted({r["ratio"] for r in rows})
    by_group: dict[int, dict[float, dict[str, Any]]] = {}
    for r in rows:
        by_group.setdefault(r["group"], {})[r["ratio"]] = r
    head = [
        f"sensitivity: accuracy drop (points) when one group alone is pruned, no fine-tuning "
        f"({s['criterion']} importance; baseline {s['baseline_accuracy']:.2%} on "
        f"{s['samples']} samples; kept channels in brackets)",
        "",
    ]
    table = []
    for gid, per in by_group.items():
        first = next(iter(per.values()))
        cells = [f"{100 * per[q]['drop']:+.1f} ({per[q]['kept']})" if q in per else "—"
                 for q in ratios]  # fmt: skip
        table.append([str(gid), str(first["channels"]), _names(first["layers"]), *cells])
    header = ["group", "channels", "layers", *(f"{q:.0%}" for q in ratios)]
    return head + _table(header, table, right={0, 1, *range(3, 3 + len(ratios))})


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(c) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        parts = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))]  # fmt: skip
        return "  ".join(parts).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _num(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _names(layers: list[str], limit: int = 4) -> str:
    shown = ", ".join(layers[:limit])
    return shown + (f", … (+{len(layers) - limit})" if len(layers) > limit else "")
