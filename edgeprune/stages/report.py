"""Report stage: report.json (a contract other tools read), rendered to report.md and .html.

``edgeprune report DIR`` re-renders the Markdown and HTML from report.json alone.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from edgeprune.errors import BadInputError

SCHEMA = "edgeprune.report/1"
REQUIRED_KEYS = (
    "schema", "target", "recipe", "baseline", "result", "measurements", "checks", "passed",
    "layers", "timings_s", "versions",
)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _mark(passed: bool | None) -> str:
    return {True: "✓", False: "✗", None: "?"}[passed]


def verdict(report: dict[str, Any]) -> str:
    failed = [c["name"] for c in report["checks"] if c["passed"] is False]
    unchecked = [c["name"] for c in report["checks"] if c["passed"] is None]
    if failed:
        text = f"FAIL — budget not met: {', '.join(failed)}"
    elif unchecked:
        text = f"no budget failed; not checked: {', '.join(unchecked)}"
    else:
        text = "PASS — every budget met"
    return text


def _comparison_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    base, res = report["baseline"], report["result"]
    rows = []
    for key, label in (
        ("accuracy", "accuracy (LiteRT, held-out data)"),
        ("params", "parameters"),
        ("macs", "MACs per inference"),
        ("tflite_bytes", ".tflite bytes"),
        ("gzip_bytes", "gzip bytes"),
        ("sparsity", "weight sparsity (zeros)"),
    ):
        rows.append((label, _fmt(base.get(key)), _fmt(res.get(key))))
    return rows


def _check_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    return [
        (
            _mark(c["passed"]), c["name"], _fmt(c["value"]), _fmt(c["budget"]), c["unit"],
            c["method"] or "—", c["rule"],
        )
        for c in report["checks"]
    ]


def _measurement_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    return [
        (m["quantity"], _fmt(m["value"]), m["unit"], m["method"], m["where"], m.get("detail", ""))
        for m in report["measurements"]
    ]


def _md_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def render_md(report: dict[str, Any]) -> str:
    target, recipe = report["target"], report["recipe"]
    parts = [
        f"# edgeprune report — {target['name']}",
        "",
        f"**{verdict(report)}**",
        "",
        f"{target.get('description', '')}",
        "",
        "## Recipe",
        "",
        ", ".join(f"{k} = {v}" for k, v in recipe.items()),
        "",
        "## Before and after",
        "",
        _md_table(("", "baseline (float32)", "result"), _comparison_rows(report)),
        "",
        "## Checks",
        "",
        _md_table(
            ("", "check", "value", "budget", "unit", "method", "rule"), _check_rows(report)
        ),
        "",
        "## Measurements",
        "",
        _md_table(
            ("quantity", "value", "unit", "method", "where", "how"), _measurement_rows(report)
        ),
        "",
    ]
    if report.get("notes"):
        parts += ["## Notes", "", *[f"- {n}" for n in report["notes"]], ""]
    if report["layers"]:
        rows = [
            (
                r["name"], r["type"], _fmt(r.get("params")), _fmt(r.get("macs")),
                _fmt(r.get("channels_before")), _fmt(r.get("channels_after")),
                _fmt(r.get("sparsity")),
            )
            for r in report["layers"]
        ]
        header = ("layer", "type", "params", "MACs", "channels before", "after", "sparsity")
        parts += ["## Layers", "", _md_table(header, rows), ""]
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in report["timings_s"].items())
    parts += ["## Stage timings", "", timings, ""]
    return "\n".join(parts)


def _html_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(uri: str | None, alt: str) -> str:
    return "" if uri is None else f"<img src='{uri}' alt='{html.escape(alt)}'>"


def _kv_rows(d: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, value in d.items():
        if isinstance(value, dict):
            rows.extend(_kv_rows(value, f"{prefix}{key}."))
        else:
            rows.append((f"{prefix}{key}", _fmt(value)))
    return rows


def _fidelity_html(fid: dict[str, Any] | None) -> str:
    if not fid:
        return ""
    scalars = {k: v for k, v in fid.items() if not isinstance(v, list | dict)}
    out = _html_table(("figure", "value"), _kv_rows(scalars))
    for key, value in fid.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            header = tuple(value[0])
            rows = [tuple(_fmt(r.get(h)) for h in header) for r in value]
            out += f"<h3>{html.escape(key)}</h3>" + _html_table(header, rows)
    return out


def render_html(report: dict[str, Any]) -> str:
    """Self-contained: plots are embedded PNGs; no scripts, no external resources."""
    from edgeprune.stages import report_plots as plots

    target = report["target"]
    colour = "#1a7f37" if report["passed"] else (
        "#b42318" if any(c["passed"] is False for c in report["checks"]) else "#9a6700")
    per_op = (report.get("estimate") or {}).get("per_op") or []
    layer_rows = [
        (r["name"], r["type"], _fmt(r.get("params")), _fmt(r.get("macs")),
         _fmt(r.get("channels_before")), _fmt(r.get("channels_after")), _fmt(r.get("sparsity")))
        for r in report["layers"]
    ]
    sections = [
        ("Budgets", _img(plots.budget_panel(report), "budget panel") + _html_table(
            ("", "check", "value", "budget", "unit", "method", "rule"), _check_rows(report))),
        ("Before and after", _html_table(("", "baseline", "result"), _comparison_rows(report))),
        ("Channels per layer", _img(plots.layer_channels(report), "channels per layer")
         + _html_table(("layer", "type", "params", "MACs", "channels before", "after",
                        "sparsity"), layer_rows)),
        (f"Where the time goes on {target['name']}",
         _img(plots.top_ops(per_op, f"top ops, estimated for {target['name']}"), "top ops")),
        ("Fidelity of the emitted model", _fidelity_html(report.get("fidelity"))),
        ("Sensitivity", _img(plots.sensitivity(report.get("sensitivity") or []), "sensitivity")),
        ("Measurements", _html_table(("quantity", "value", "unit", "method", "where", "how"),
                                     _measurement_rows(report))),
        ("Notes", "".join(f"<p>{html.escape(n)}</p>" for n in report.get("notes", []))),
        ("Recipe", _html_table(("key", "value"), _kv_rows(report["recipe"]))),
        ("Target", _html_table(("key", "value"), _kv_rows(target))),
        ("Versions and timings", _html_table(("key", "value"), _kv_rows(
            {"versions": report["versions"], "timings_s": report["timings_s"]}))),
    ]
    body = "".join(f"<h2>{html.escape(t)}</h2>{c}" for t, c in sections if c)
    title = html.escape(f"edgeprune report — {target['name']}")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:75em;color:#1f2328}"
        "table{border-collapse:collapse;margin-bottom:1em;font-size:.9em}"
        "td,th{border:1px solid #d0d7de;padding:.3em .6em;text-align:left;vertical-align:top}"
        "th{background:#f6f8fa}img{max-width:100%;display:block;margin:.5em 0}"
        f".verdict{{color:{colour};font-weight:bold;font-size:1.3em;border-left:.3em solid "
        f"{colour};padding-left:.5em}}"
        "</style></head><body>"
        f"<h1>{title}</h1><p class='verdict'>{html.escape(verdict(report))}</p>"
        f"<p>{html.escape(target.get('description', ''))}</p>{body}</body></html>"
    )


def write(out_dir: Path, report: dict[str, Any]) -> list[Path]:
    path = out_dir / "report.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return [path, *_render(out_dir, report)]


def _render(out_dir: Path, report: dict[str, Any]) -> list[Path]:
    md, page = out_dir / "report.md", out_dir / "report.html"
    md.write_text(render_md(report), encoding="utf-8")
    page.write_text(render_html(report), encoding="utf-8")
    return [md, page]


def load(out_dir: Path) -> dict[str, Any]:
    path = out_dir / "report.json"
    if not path.is_file():
        raise BadInputError(str(path), "no such file", "Give a folder written by edgeprune build")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(str(path), f"is not valid JSON ({exc})", "Rebuild it") from exc
    missing = [k for k in REQUIRED_KEYS if k not in report] if isinstance(report, dict) else ["*"]
    if missing or report.get("schema") != SCHEMA:
        raise BadInputError(
            str(path),
            f"is not an {SCHEMA} report (missing {', '.join(missing) or 'schema'})",
            "Give a folder written by edgeprune build",
        )
    return report


def rerender(out_dir: Path) -> list[Path]:
    """Re-render report.md/.html from report.json (left untouched); refresh their manifest
    hashes so the folder still verifies."""
    from edgeprune.manifest import refresh_hashes

    paths = _render(out_dir, load(out_dir))
    refresh_hashes(out_dir, paths)
    return paths
