"""Report stage: report.json (a contract other tools read), rendered to report.md and .html.

``edgeprune report DIR`` re-renders the Markdown and HTML from report.json alone.
"""

from __future__ import annotations

import dataclasses
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.errors import BadInputError
from edgeprune.measurement import CheckResult, Measurement
from edgeprune.stages import check

SCHEMA = "edgeprune.report/1"
REQUIRED_KEYS = (
    "schema", "target", "recipe", "baseline", "result", "measurements", "checks", "passed",
    "layers", "timings_s", "versions",
)


@dataclass
class BuildReport:
    """report.json of a build: every top-level key is a field here, so no stage can add one
    by accident. ``to_dict`` writes the contract keys first; sections set to None (they did not
    apply to this build: no QAT, no --device, …) are left out, except where None is the value."""

    target: dict[str, Any]
    recipe: dict[str, Any]
    baseline: dict[str, Any]
    result: dict[str, Any]
    measurements: list[Measurement]
    checks: list[CheckResult]
    layers: list[dict[str, Any]]
    timings_s: dict[str, float]
    versions: dict[str, str]
    notes: list[str] = field(default_factory=list)
    quantization: dict[str, Any] | None = None
    fidelity: dict[str, Any] | None = None  # None: no held-out data (kept as null)
    artifacts: dict[str, Any] = field(default_factory=dict)
    estimate: dict[str, Any] = field(default_factory=dict)
    finetune: dict[str, Any] | None = None
    pruning_groups: list[dict[str, Any]] = field(default_factory=list)
    reused_stages: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # inputs found, preprocessing, classes
    # The Keras 3 input's translation check (None: a tf_keras model, kept as null) and the
    # model.keras written in the input's flavour.
    model_in: dict[str, Any] | None = None
    model_out: dict[str, Any] | None = None
    # Present only when they apply:
    qat_finetune: dict[str, Any] | None = None
    search: dict[str, Any] | None = None  # --prune auto's trajectory
    sensitivity: list[dict[str, Any]] | None = None  # --allocation sensitivity's scan
    device: str | None = None  # --device
    device_not_used: dict[str, str] | None = None  # per quantity, why its figure is not used
    emulation: dict[str, Any] | None = None  # --emulate
    onnx: dict[str, Any] | None = None  # --export onnx: agreement of model.onnx with LiteRT
    schedule: dict[str, Any] | None = None  # schedule "gradual": each cut and its fine-tune
    # --strategy: what trained, on how many replicas, with the global batch size
    training: dict[str, Any] | None = None

    OPTIONAL = ("qat_finetune", "search", "sensitivity", "device", "device_not_used",
                "emulation", "onnx", "schedule")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA, "target": self.target, "recipe": self.recipe,
            "baseline": self.baseline, "result": self.result,
            "measurements": [m.to_dict() for m in self.measurements],
            "checks": [c.to_dict() for c in self.checks], "passed": check.passed(self.checks),
            "layers": self.layers,
            "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()},
            "versions": self.versions,
        }
        for f in dataclasses.fields(self):
            if f.name not in out:
                value = getattr(self, f.name)
                if value is not None or f.name not in self.OPTIONAL:
                    out[f.name] = value
        return out


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if 0 < abs(value) < 10**-digits:  # e.g. an output difference of 4e-7: not "0.000"
            return f"{value:.{digits}g}"
        return f"{value:,.{digits}f}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _mark(passed: bool | None, marginal: bool = False) -> str:
    mark = {True: "✓", False: "✗", None: "?"}[passed]
    return f"{mark} marginal" if marginal else mark


def with_uncertainty(value: Any, uncertainty: float | None) -> str:
    """A figure with its stated relative uncertainty, e.g. "12.300 ± 8 %"."""
    return _fmt(value) + (f" ± {uncertainty * 100:.0f} %" if uncertainty else "")


def verdict(report: dict[str, Any]) -> str:
    failed = [c["name"] for c in report["checks"] if c["passed"] is False]
    unchecked = [c["name"] for c in report["checks"] if c["passed"] is None]
    if failed:
        text = f"FAIL — budget not met: {', '.join(failed)}"
    elif unchecked:
        text = f"no budget failed; not checked: {', '.join(unchecked)}"
    else:
        text = "PASS — every budget met"
    marginal = [c["name"] for c in report["checks"] if c.get("marginal")]
    if marginal:  # the verdict stands; the reader learns which ones a real run could flip
        text += f" (marginal: {', '.join(marginal)}, within the estimate's uncertainty)"
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
            _mark(c["passed"], c.get("marginal", False)), c["name"], _fmt(c["value"]),
            _fmt(c["budget"]), c["unit"], c["method"] or "—", c["rule"],
        )
        for c in report["checks"]
    ]


MEASUREMENT_HEADER = ("quantity", "value", "unit", "method", "where", "ran on", "used by",
                      "how")


def _measurement_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    return [
        (m["quantity"], with_uncertainty(m["value"], m.get("uncertainty")), m["unit"],
         m["method"], m["where"], m.get("ran_on") or "—",
         ", ".join(m.get("used_by") or ()) or "—", m.get("detail", ""))
        for m in report["measurements"]
    ]


def md_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
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
        md_table(("", "baseline (float32)", "result"), _comparison_rows(report)),
        "",
        "## Checks",
        "",
        md_table(
            ("", "check", "value", "budget", "unit", "method", "rule"), _check_rows(report)
        ),
        "",
        "## Measurements",
        "",
        md_table(
            MEASUREMENT_HEADER, _measurement_rows(report)
        ),
        "",
    ]
    if report.get("search"):
        parts += ["## Budget search (--prune auto)", "",
                  md_table(SEARCH_HEADER, _search_rows(report["search"])), ""]
        if report["search"].get("refine"):
            parts += [_refine_summary(report["search"]), ""]
    if (report.get("schedule") or {}).get("rows"):  # empty when the plan cut nothing
        parts += ["## Gradual schedule", "", md_table(SCHEDULE_HEADER,
                                                      _schedule_rows(report["schedule"])), ""]
    for title, rows in _details(report):
        parts += [f"## {title}", "", md_table(("", ""), rows), ""]
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
        parts += ["## Layers", "", md_table(header, rows), ""]
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in report["timings_s"].items())
    parts += ["## Stage timings", "", timings, ""]
    return "\n".join(parts)


DETAIL_SECTIONS = (
    ("finetune", "Fine-tuning"),
    ("qat_finetune", "Quantization-aware fine-tuning"),
    ("quantization", "Quantization"),
    ("artifacts", "Device artifacts"),
    ("emulation", "Emulation (QEMU)"),
    ("onnx", "ONNX export: model.onnx against LiteRT"),
)


def _detail_rows(d: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts flattened to dotted keys; lists of scalars joined, lists of records counted
    (their full content stays in report.json)."""
    rows: list[tuple[str, str]] = []
    for key, value in d.items():
        if isinstance(value, dict):
            rows.extend(_detail_rows(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            if all(not isinstance(v, dict | list) for v in value):
                rows.append((f"{prefix}{key}", ", ".join(_fmt(v) for v in value)))
            else:
                rows.append((f"{prefix}{key}", f"{len(value)} entries (see report.json)"))
        else:
            rows.append((f"{prefix}{key}", _fmt(value)))
    return rows


def _details(report: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    return [
        (title, _detail_rows(report[key]))
        for key, title in DETAIL_SECTIONS
        if isinstance(report.get(key), dict) and report[key]
    ]


def html_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(uri: str | None, alt: str) -> str:
    return "" if uri is None else f"<img src='{uri}' alt='{html.escape(alt)}'>"


SEARCH_HEADER = ("step", "group (layers)", "channels", "latency ms", "flash B", "RAM B",
                 "accuracy")


def _search_rows(search: dict[str, Any]) -> list[tuple[str, ...]]:
    """--prune auto's trajectory: the verified estimate of each step (else its prediction)."""
    rows = []
    for s in search.get("trajectory") or []:
        costs = s.get("estimated") or s.get("predicted") or {}
        where = "input model" if s.get("group") is None else (
            f"{s['group']} ({', '.join(s.get('layers') or [])})")
        chans = "—" if s.get("channels_before") is None else (
            f"{s['channels_before']} → {s['channels_after']}")
        rows.append((str(s["step"]), where, chans, _fmt(costs.get("latency_ms"), 4),
                     _fmt(costs.get("flash_bytes")), _fmt(costs.get("ram_bytes")),
                     _fmt(s.get("accuracy"), 4)))
    refine = search.get("refine") or {}
    if refine.get("outcome") == "replaced the greedy model":
        costs = refine.get("estimated") or {}
        kept = ", ".join(f"{g}: {k}" for g, k in refine["kept"].items())
        rows.append(("refined", f"channels kept per group: {kept}", "—",
                     _fmt(costs.get("latency_ms"), 4), _fmt(costs.get("flash_bytes")),
                     _fmt(costs.get("ram_bytes")), "—"))
    return rows


SCHEDULE_HEADER = ("step", "share of the final cut", "prunable channels removed",
                   "channels kept per group", "epochs run / allotted", "monitor accuracy")


def _schedule_rows(schedule: dict[str, Any]) -> list[tuple[str, ...]]:
    """``schedule = "gradual"``: each cut and its fine-tune."""
    return [(str(r["step"]), f"{r['fraction_of_final']:.0%}", f"{r['ratio']:.1%}",
             ", ".join(f"{name} {kept}" for name, kept in r["kept"].items()),
             f"{r['epochs_run']} / {r['epochs']}", _fmt(r.get("monitor_accuracy"), 4))
            for r in schedule.get("rows") or []]


def _refine_summary(search: dict[str, Any]) -> str:
    r = search["refine"]
    return (f"Refinement at the budget: {r['outcome']} ({r['allocations_scored']} allocations "
            f"cut from the input model and scored by loss on the scoring split, climbed from "
            f"the {r['climbed_from']} allocation, {len(r['moves'])} move(s) taken).")


def _search_html(search: dict[str, Any] | None) -> str:
    if not search:
        return ""
    from edgeprune.stages import report_plots as plots

    summary = (f"<p>stopped: {html.escape(str(search.get('stopped')))}, "
               f"{_fmt(search.get('seconds'), 1)} s; accuracy is the short fine-tune's, on a "
               "split of the training data</p>")
    if search.get("refine"):
        summary += f"<p>{html.escape(_refine_summary(search))}</p>"
    return (_img(plots.search_trajectory(search), "search trajectory") + summary
            + html_table(SEARCH_HEADER, _search_rows(search)))


def _fidelity_html(fid: dict[str, Any] | None) -> str:
    if not fid:
        return ""
    scalars = {k: v for k, v in fid.items() if not isinstance(v, list | dict)}
    out = html_table(("figure", "value"), _detail_rows(scalars))
    for key, value in fid.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            header = tuple(value[0])
            rows = [tuple(_fmt(r.get(h)) for h in header) for r in value]
            out += f"<h3>{html.escape(key)}</h3>" + html_table(header, rows)
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
        ("Budgets", _img(plots.budget_panel(report), "budget panel") + html_table(
            ("", "check", "value", "budget", "unit", "method", "rule"), _check_rows(report))),
        ("Before and after", html_table(("", "baseline", "result"), _comparison_rows(report))),
        ("Channels per layer", _img(plots.layer_channels(report), "channels per layer")
         + html_table(("layer", "type", "params", "MACs", "channels before", "after",
                        "sparsity"), layer_rows)),
        (f"Where the time goes on {target['name']}",
         _img(plots.top_ops(per_op, f"top ops, estimated for {target['name']}"), "top ops")),
        ("Fidelity of the emitted model", _fidelity_html(report.get("fidelity"))),
        *[(title, html_table(("", ""), rows)) for title, rows in _details(report)],
        ("Sensitivity", _img(plots.sensitivity(report.get("sensitivity") or []), "sensitivity")),
        ("Budget search (--prune auto)", _search_html(report.get("search"))),
        ("Gradual schedule", html_table(SCHEDULE_HEADER, _schedule_rows(report["schedule"]))
         if (report.get("schedule") or {}).get("rows") else ""),
        ("Measurements", html_table(MEASUREMENT_HEADER, _measurement_rows(report))),
        ("Notes", "".join(f"<p>{html.escape(n)}</p>" for n in report.get("notes", []))),
        ("Recipe", html_table(("key", "value"), _detail_rows(report["recipe"]))),
        ("Target", html_table(("key", "value"), _detail_rows(target))),
        ("Versions and timings", html_table(("key", "value"), _detail_rows(
            {"versions": report["versions"], "timings_s": report["timings_s"]}))),
    ]
    return html_page(f"edgeprune report — {target['name']}", verdict(report), colour,
                     target.get("description", ""), sections)


def html_page(title: str, verdict_text: str, colour: str, lead: str,
              sections: list[tuple[str, str]]) -> str:
    """A self-contained page: inline CSS, embedded images, no scripts, no external resources.
    ``sections`` are (heading, HTML) pairs; empty ones are left out."""
    body = "".join(f"<h2>{html.escape(t)}</h2>{c}" for t, c in sections if c)
    title = html.escape(title)
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
        f"<h1>{title}</h1><p class='verdict'>{html.escape(verdict_text)}</p>"
        f"<p>{html.escape(lead)}</p>{body}</body></html>"
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
