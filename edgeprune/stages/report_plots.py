"""Plots for report.html, rendered with matplotlib (Agg) into embedded PNG data URIs.

Each function takes the report dict and returns a data URI, or None when the report has nothing
to plot. PNGs are written without a timestamp or software tag so the same report gives the same
bytes.
"""

from __future__ import annotations

import base64
import io
from typing import Any

_COLOURS = {True: "#1a7f37", False: "#b42318", None: "#8c8c8c"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "svg.hashsalt": "edgeprune"})
    return plt


def _png(fig: Any) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _to_uri(fig: Any) -> str:
    return data_uri(_png(fig))


def budget_panel(report: dict[str, Any]) -> str | None:
    """One bar per check: value as a share of its budget, coloured by verdict."""
    checks = [c for c in report.get("checks", []) if c.get("budget")]
    if not checks:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 0.5 + 0.45 * len(checks)))
    names, shares, colours = [], [], []
    for c in checks:
        share = 0.0 if c["value"] is None else max(c["value"], 0.0) / c["budget"]
        names.append(f"{c['name']} ({c['method'] or 'not checked'})")
        shares.append(share)
        colours.append(_COLOURS[c["passed"]])
    ax.barh(names, shares, color=colours)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("share of budget (1.0 = budget)")
    ax.invert_yaxis()
    for y, (share, c) in enumerate(zip(shares, checks, strict=True)):
        label = "not checked" if c["value"] is None else f"{share:.0%}"
        ax.text(share + 0.01, y, label, va="center")
    ax.set_xlim(0, max([1.2, *[s * 1.15 for s in shares]]))
    return _to_uri(fig)


def layer_channels(report: dict[str, Any]) -> str | None:
    """Channels before/after per layer that has an output channel count."""
    rows = [r for r in report.get("layers", []) if r.get("channels_before")]
    rows = [r for r in rows if r["type"] not in ("BatchNormalization",)]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.5, 0.35 * len(rows)), 3.2))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["channels_before"] for r in rows], 0.4, label="before",
           color="#9db4d3")
    ax.bar([x + 0.2 for x in xs], [r["channels_after"] or 0 for r in rows], 0.4, label="after",
           color="#1f4e8c")
    ax.set_xticks(list(xs), [r["name"] for r in rows], rotation=60, ha="right")
    ax.set_ylabel("output channels")
    ax.legend()
    return _to_uri(fig)


def top_ops(per_op: list[dict[str, Any]], title: str) -> str | None:
    """The ten most expensive ops by estimated time."""
    ops = sorted((o for o in per_op if o.get("ms") is not None), key=lambda o: -o["ms"])[:10]
    if not ops:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 0.5 + 0.35 * len(ops)))
    labels = [f"#{o.get('index', '?')} {o.get('op_type', '?')}" for o in ops]
    ax.barh(labels, [o["ms"] for o in ops], color="#6f42c1")
    ax.invert_yaxis()
    ax.set_xlabel("estimated ms")
    ax.set_title(title)
    return _to_uri(fig)


def sensitivity(rows: list[dict[str, Any]]) -> str | None:
    """Accuracy drop per channel group when pruned alone, one line per ratio."""
    if not rows:
        return None
    plt = _pyplot()
    groups = sorted({str(r["group"]) for r in rows})
    ratios = sorted({r["ratio"] for r in rows})
    fig, ax = plt.subplots(figsize=(max(6.5, 0.4 * len(groups)), 3.2))
    for ratio in ratios:
        drop = {str(r["group"]): r["drop"] * 100 for r in rows if r["ratio"] == ratio}
        ax.plot(groups, [drop.get(g, float("nan")) for g in groups], marker="o",
                label=f"{ratio:.0%} pruned")
    ax.set_ylabel("accuracy drop (points)")
    ax.set_xlabel("channel group")
    ax.tick_params(axis="x", rotation=60)
    ax.legend()
    return _to_uri(fig)


def search_trajectory(search: dict[str, Any] | None) -> str | None:
    """--prune auto: estimated cost per step, as a share of its budget, and accuracy."""
    steps = (search or {}).get("trajectory") or []
    budgets = (search or {}).get("budgets") or []
    if len(steps) < 2 or not budgets:
        return None
    plt = _pyplot()
    fig, (cost_ax, acc_ax) = plt.subplots(2, 1, figsize=(6.5, 4.6), sharex=True)
    xs = [s["step"] for s in steps]
    for b in budgets:
        # The verified (re-converted) figure where there is one, else the prediction.
        ys = [((s.get("estimated") or s.get("predicted") or {}).get(b["quantity"]) or
               float("nan")) / b["limit"] for s in steps]
        cost_ax.plot(xs, ys, marker="o", label=b["name"])
    cost_ax.axhline(1.0, color="black", linewidth=1)
    cost_ax.set_ylabel("estimate / budget")
    cost_ax.legend()
    acc_ax.plot(xs, [(s.get("accuracy") or float("nan")) * 100 for s in steps], marker="o",
                color="#1f4e8c")
    acc_ax.set_ylabel("accuracy % (scoring split)")
    acc_ax.set_xlabel("search step")
    for s in steps[1:]:
        acc_ax.annotate(f"{s['layers'][0] if s['layers'] else ''}\n{s['channels_before']}→"
                        f"{s['channels_after']}", (s["step"], (s.get("accuracy") or 0) * 100),
                        fontsize=6, ha="center", va="top", xytext=(0, -4),
                        textcoords="offset points")
    return _to_uri(fig)


def sweep_plot(summary: dict[str, Any]) -> bytes | None:
    """--sweep: accuracy against latency per variant; filled = meets every budget, with the
    latency and accuracy budgets drawn where the target has them."""
    rows = [r for r in summary["variants"]
            if r["latency_ms"] is not None and r["accuracy"] is not None]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in rows:
        colour = _COLOURS[bool(r["passed"])]
        ax.scatter(r["latency_ms"], r["accuracy"] * 100, s=48, color=colour,
                   facecolors=colour if r["passed"] else "none", linewidths=1.5)
        ax.annotate(f"{r['sparsity']:g}", (r["latency_ms"], r["accuracy"] * 100),
                    xytext=(5, 4), textcoords="offset points")
    checks = rows[0]["checks"]
    if (checks.get("latency") or {}).get("budget"):
        ax.axvline(checks["latency"]["budget"], color="black", linewidth=1, linestyle="--",
                   label="latency budget")
    base = summary["baseline"].get("accuracy")
    drop = (checks.get("accuracy_drop") or {}).get("budget")
    if base is not None and drop is not None:
        ax.axhline(base * 100 - drop, color="#8c8c8c", linewidth=1, linestyle=":",
                   label="accuracy floor (input − drop budget)")
    methods = sorted({r["latency_method"] or "?" for r in rows})
    ax.set_xlabel(f"latency ms on {summary['target']['name']} ({', '.join(methods)})")
    ax.set_ylabel("accuracy % (emitted .tflite, held-out data)")
    ax.set_title("filled: meets every budget · label: sparsity", fontsize=8)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    return _png(fig)
