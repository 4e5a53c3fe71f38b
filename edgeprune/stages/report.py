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


def render_html(report: dict[str, Any]) -> str:
    """Self-contained: no scripts, no external resources."""
    target = report["target"]
    ok = report["passed"]
    colour = "#1a7f37" if ok else "#b42318"
    sections = [
        ("Before and after", _html_table(("", "baseline", "result"), _comparison_rows(report))),
        (
            "Checks",
            _html_table(
                ("", "check", "value", "budget", "unit", "method", "rule"), _check_rows(report)
            ),
        ),
        (
            "Measurements",
            _html_table(
                ("quantity", "value", "unit", "method", "where", "how"),
                _measurement_rows(report),
            ),
        ),
        (
            "Recipe",
            _html_table(("key", "value"), [(k, str(v)) for k, v in report["recipe"].items()]),
        ),
    ]
    body = "".join(f"<h2>{html.escape(t)}</h2>{content}" for t, content in sections)
    title = html.escape(f"edgeprune report — {target['name']}")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}"
        "table{border-collapse:collapse;margin-bottom:1em}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}"
        f".verdict{{color:{colour};font-weight:bold;font-size:1.2em}}"
        "</style></head><body>"
        f"<h1>{title}</h1><p class='verdict'>{html.escape(verdict(report))}</p>"
        f"<p>{html.escape(target.get('description', ''))}</p>{body}</body></html>"
    )


def write(out_dir: Path, report: dict[str, Any]) -> list[Path]:
    paths = [out_dir / "report.json", out_dir / "report.md", out_dir / "report.html"]
    paths[0].write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    paths[1].write_text(render_md(report), encoding="utf-8")
    paths[2].write_text(render_html(report), encoding="utf-8")
    return paths


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
    return write(out_dir, load(out_dir))
