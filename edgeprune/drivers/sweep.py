"""``build --sweep 0.25,0.5,0.75``: one build per sparsity, and a comparison of them.

Every variant is a complete build (``OUT/<target>-sweep/sparsity-<r>/``, with its own
report.html); ``sweep.json``, ``sweep.md`` and ``sweep.html`` compare accuracy, size and latency
(with each figure's method) and mark the variants that meet every budget. The sweep folder is
built in a temporary folder and renamed into place, like a single build's.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.atomic import staged_folder
from edgeprune.errors import BadInputError, RecipeError, ToolError
from edgeprune.recipe import resolve_for_build
from edgeprune.targets import load_target

if TYPE_CHECKING:  # the pipeline imports TensorFlow
    from edgeprune.drivers.pipeline import BuildRequest

log = logging.getLogger(__name__)
SCHEMA = "edgeprune.drivers.sweep/1"
# Methods that take --sparsity (m-by-n is fixed 2:4; auto and none choose no ratio).
SWEEPABLE = ("magnitude", "structured", "hybrid")


@dataclass(frozen=True)
class SweepOutcome:
    target: str
    folder: Path
    summary: dict[str, Any]
    exit_code: int  # 0: some variant meets every budget, else 1


def parse_ratios(text: str) -> tuple[float, ...]:
    """``"0.25,0.5,0.75"`` → (0.25, 0.5, 0.75): each in [0, 1), no repeats, in order."""
    fix = "Give comma-separated sparsities in [0, 1), e.g. --sweep 0.25,0.5,0.75"
    try:
        ratios = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise BadInputError(f"--sweep {text!r}", f"is not a list of numbers ({exc})",
                            fix) from exc
    if len(ratios) < 2:
        raise BadInputError(f"--sweep {text!r}", "needs at least two sparsities", fix)
    bad = [r for r in ratios if not 0.0 <= r < 1.0]
    if bad:
        raise BadInputError(f"--sweep {text!r}", f"{bad[0]:g} is outside [0, 1)", fix)
    if len(set(ratios)) != len(ratios):
        raise BadInputError(f"--sweep {text!r}", "lists a sparsity twice", fix)
    return tuple(sorted(ratios))


def check_recipe(request: BuildRequest, spec: str) -> None:
    """Refuse a sweep whose resolved pruning method takes no sparsity, before any build."""
    if "sparsity" in {k for k, v in request.overrides.items() if v is not None}:
        raise BadInputError("--sparsity", "cannot be combined with --sweep (the sweep sets it)",
                            "Drop --sparsity, or drop --sweep for a single build")
    target = load_target(spec)
    recipe, _ = resolve_for_build(target.build, target.source, request.recipe_file,
                                  request.overrides,
                                  has_train=request.data is not None or request.model is None)
    if recipe.prune not in SWEEPABLE:
        raise RecipeError(f"--sweep with --prune {recipe.prune} (for {target.name})",
                          "varies --sparsity, which this pruning method does not take",
                          f"Add --prune {' / '.join(SWEEPABLE)}")


def variant_row(sparsity: float, rep: dict[str, Any], exit_code: int) -> dict[str, Any]:
    checks = {c["name"]: c for c in rep["checks"]}
    latency = checks.get("latency") or {}
    return {
        "sparsity": sparsity, "folder": f"sparsity-{sparsity:g}", "exit_code": exit_code,
        "passed": rep["passed"], "accuracy": rep["result"]["accuracy"],
        "tflite_bytes": rep["result"]["tflite_bytes"], "gzip_bytes": rep["result"]["gzip_bytes"],
        "params": rep["result"]["params"], "latency_ms": latency.get("value"),
        "latency_method": latency.get("method"),
        # kept channels per layer: ratios that round to the same multiples give the same model
        "channels": [row.get("channels_after") for row in rep["layers"]],
        "checks": {name: {k: c.get(k) for k in ("value", "budget", "unit", "passed", "method")}
                   for name, c in checks.items()},
    }


def run(request: BuildRequest, spec: str, ratios: tuple[float, ...], executor: str = "local",
        address: str | None = None) -> SweepOutcome:
    """Build ``spec`` once per ratio into ``OUT/<target>-sweep`` and compare the variants; with
    ``executor`` ray, the variants are built as Ray tasks."""
    from edgeprune.drivers import executor as executors

    check_recipe(request, spec)
    created_out = not request.out.exists()
    name = load_target(spec).name
    final = request.out / f"{name}-sweep"
    try:
        with staged_folder(final) as work:
            jobs = [executors.Job(f"{name} at sparsity {ratio:g}", dataclasses.replace(
                request, out=work / f".variant-{ratio:g}",
                overrides={**request.overrides, "sparsity": ratio}), spec) for ratio in ratios]
            if executor != "local":
                jobs = [dataclasses.replace(j, request=executors.absolute(j.request))
                        for j in jobs]
            done = executors.run(jobs, executor, address, lambda d: log.info(
                "sweep: %s done (exit %d)", d.target, d.exit_code))
            rows, baseline, target = [], None, None
            for ratio, result in zip(ratios, done, strict=True):
                if result.report is None or result.folder is None:
                    error = BadInputError if result.exit_code == 2 else ToolError
                    raise error(result.target, result.error or "failed",
                                "Fix it and rerun the sweep (--resume reuses finished stages)")
                result.folder.rename(work / f"sparsity-{ratio:g}")
                shutil.rmtree(result.folder.parent, ignore_errors=True)
                rows.append(variant_row(ratio, result.report, result.exit_code))
                baseline, target = result.report["baseline"], result.report["target"]
            summary = {"schema": SCHEMA, "target": target, "baseline": baseline,
                       "recipe": {k: v for k, v in request.overrides.items() if v is not None},
                       "variants": rows, "best": best(rows)}
            write(work, summary)
    except BaseException:
        if created_out:
            shutil.rmtree(request.out, ignore_errors=True)
        raise
    return SweepOutcome(target["name"], final, summary, 0 if summary["best"] is not None else 1)


def best(rows: list[dict[str, Any]]) -> float | None:
    """The sparsity to ship: the most accurate variant that meets every budget (ties: the
    faster, then the higher sparsity); None when none does."""
    ok = [r for r in rows if r["passed"]]
    if not ok:
        return None
    pick = max(ok, key=lambda r: (r["accuracy"] or 0.0, -(r["latency_ms"] or 0.0),
                                  r["sparsity"]))
    return pick["sparsity"]


# --- the comparison ---------------------------------------------------------------------------

HEADER = ("sparsity", "meets budgets", "accuracy", ".tflite bytes", "gzip bytes", "params",
          "latency ms", "checks not met")


def _rows(summary: dict[str, Any]) -> list[tuple[str, ...]]:
    out, first = [], {}
    for r in summary["variants"]:
        twin = first.setdefault(tuple(r["channels"]), r["sparsity"])
        failed = [name for name, c in r["checks"].items() if c["passed"] is False]
        acc = "n/a" if r["accuracy"] is None else f"{r['accuracy']:.2%}"
        latency = ("—" if r["latency_ms"] is None
                   else f"{r['latency_ms']:.4g} ({r['latency_method']})")
        mark = "yes" if r["passed"] else "no"
        if r["sparsity"] == summary["best"]:
            mark += " (best)"
        name = f"{r['sparsity']:g}" + ("" if twin == r["sparsity"] else
                                        f" (same channels as {twin:g})")
        out.append((name, mark, acc, f"{r['tflite_bytes']:,}",
                    f"{r['gzip_bytes']:,}", f"{r['params']:,}", latency,
                    ", ".join(failed) or "—"))
    return out


def verdict(summary: dict[str, Any]) -> str:
    if summary["best"] is None:
        return "no variant meets every budget"
    return f"ship sparsity {summary['best']:g}: the most accurate variant that meets every budget"


def render_md(summary: dict[str, Any]) -> str:
    from edgeprune.stages.report import md_table

    base = summary["baseline"]
    return "\n".join([
        f"# edgeprune sweep — {summary['target']['name']}", "", f"**{verdict(summary)}**", "",
        f"Input model: accuracy {base['accuracy']:.2%}, {base['tflite_bytes']:,} B float32 "
        ".tflite. Accuracy is each variant's emitted .tflite on the held-out data; latency is "
        "the budget check's figure, with its method in brackets.", "",
        md_table(HEADER, _rows(summary)), "",
        "![accuracy against latency](sweep.png)", "",
        "Each variant's full report: `sparsity-<r>/report.html`.", ""])


def render_html(summary: dict[str, Any], plot_uri: str | None) -> str:
    from edgeprune.stages.report import html_page, html_table

    colour = "#1a7f37" if summary["best"] is not None else "#b42318"
    links = "".join(f"<li><a href='{html.escape(r['folder'])}/report.html'>sparsity "
                    f"{r['sparsity']:g}</a></li>" for r in summary["variants"])
    image = "" if plot_uri is None else f"<img src='{plot_uri}' alt='accuracy against latency'>"
    return html_page(f"edgeprune sweep — {summary['target']['name']}", verdict(summary), colour,
                     summary["target"].get("description", ""),
                     [("Accuracy against latency", image),
                      ("Variants", html_table(HEADER, _rows(summary))),
                      ("Reports", f"<ul>{links}</ul>")])


def write(folder: Path, summary: dict[str, Any]) -> None:
    from edgeprune.stages.report_plots import data_uri, sweep_plot

    (folder / "sweep.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    png = sweep_plot(summary)
    if png is not None:
        (folder / "sweep.png").write_bytes(png)
    uri = None if png is None else data_uri(png)
    (folder / "sweep.md").write_text(render_md(summary), encoding="utf-8")
    (folder / "sweep.html").write_text(render_html(summary, uri), encoding="utf-8")
