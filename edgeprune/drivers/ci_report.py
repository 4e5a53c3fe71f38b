"""CI output for builds over several targets: which targets (``--all-targets``), one summary
table, and a JUnit XML report that CI systems (GitHub, GitLab, Jenkins) display natively.

JUnit layout: one ``<testsuite>`` per target and one ``<testcase>`` per target × check
(classname = target, name = check). A budget not met is a ``<failure>``, a budget that could
not be checked (passed = null) is ``<skipped>`` with the rule as message, and a target whose
build errored (exit 2/3) is one ``<testcase name="build">`` with an ``<error>``. The Jenkins
schema allows properties only on suites, so each check's method/value/budget are suite
properties named ``<check>.method`` etc.; each case also repeats them in its ``<system-out>``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edgeprune.drivers import executor as executors
from edgeprune.drivers.executor import TargetRun
from edgeprune.errors import BadInputError, TargetError
from edgeprune.targets import load_target, shipped_names

if TYPE_CHECKING:
    from edgeprune.drivers.pipeline import BuildRequest

log = logging.getLogger(__name__)
PROJECT_FILE = "edgeprune.toml"
_CI_KEYS = {"targets"}


def target_specs(given: tuple[str, ...], all_targets: bool, project_dir: Path) -> list[str]:
    """The targets to build, every one loaded (so validated) before anything is built."""
    if all_targets and given:
        raise BadInputError("--all-targets", "cannot be combined with --target",
                            "Use --target NAME (repeatable) or --all-targets, not both")
    if not all_targets and not given:
        raise BadInputError("--target", "is missing",
                            "Give --target NAME (see `edgeprune targets`) or --all-targets")
    if all_targets:
        return ci_targets(project_dir)
    for spec in given:
        load_target(spec)
    return list(given)


def build_targets(request: BuildRequest, specs: list[str], done: Callable[[TargetRun], None],
                  executor: str = "local", address: str | None = None) -> list[TargetRun]:
    """Build every target (as Ray tasks with ``executor`` ray); a target that fails with exit
    2/3 is recorded and the rest still build, so CI sees every target's verdict. ``done`` is
    called after each target; the runs come back in ``specs``' order."""
    if executor != "local":
        request = executors.absolute(request)
    jobs = [executors.Job(target_label(spec), request, spec) for spec in specs]
    return executors.run(jobs, executor, address, done)


def target_label(spec: str) -> str:
    return Path(spec).stem if spec.endswith(".toml") else spec


def ci_targets(project_dir: Path) -> list[str]:
    """Targets for ``--all-targets``: ``[ci] targets`` of ``edgeprune.toml`` in project_dir,
    else every shipped profile. Every listed target is loaded (and so validated) up front."""
    path = project_dir / PROJECT_FILE
    if not path.is_file():
        return shipped_names()
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(str(path), f"TOML syntax error: {exc}", "Fix the file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(str(path), f"cannot be read ({exc})", "Check the file") from exc
    ci = raw.get("ci", {})
    if not isinstance(ci, dict):
        raise BadInputError(str(path), "[ci] must be a table", 'Write [ci] targets = ["rpi4"]')
    unknown = sorted(set(ci) - _CI_KEYS)
    if unknown:
        raise BadInputError(str(path), f"[ci] has unknown key {unknown[0]!r}",
                            f"Allowed keys: {', '.join(sorted(_CI_KEYS))}")
    if "targets" not in ci:
        return shipped_names()
    specs = ci["targets"]
    what = f"{path} [ci] targets"
    if not isinstance(specs, list) or not specs or not all(
            isinstance(s, str) and s.strip() for s in specs):
        raise BadInputError(what, f"= {specs!r} is not a non-empty list of target names",
                            'Write e.g. targets = ["rpi4", "cortex-m4"] (names or .toml paths)')
    dupes = sorted({s for s in specs if specs.count(s) > 1})
    if dupes:
        raise BadInputError(what, f"lists {dupes[0]!r} twice", "List each target once")
    resolved = [_relative_to(s, path.parent) for s in specs]
    for spec, original in zip(resolved, specs, strict=True):
        try:
            load_target(spec)
        except TargetError as exc:
            raise BadInputError(what, f"{original!r}: {exc.problem}", exc.fix) from exc
    return resolved


def _relative_to(spec: str, folder: Path) -> str:
    """A profile path in the project file is relative to that file, as users expect."""
    path_like = spec.endswith(".toml") or "/" in spec or "\\" in spec
    if path_like and not Path(spec).is_absolute():
        return str(folder / spec)
    return spec


def check_junit_path(path: Path) -> None:
    """Fail before any build rather than after an hour of them."""
    if path.is_dir():
        raise BadInputError(f"--junit {path}", "is a folder", "Give a file path, e.g. junit.xml")


def worst_exit_code(runs: list[TargetRun]) -> int:
    return max((r.exit_code for r in runs), default=0)


def _mark(passed: bool | None) -> str:
    return {True: "✓", False: "✗", None: "?"}[passed]


def _verdict(run: TargetRun) -> str:
    if run.error is not None:
        return "ERROR"
    if any(c["passed"] is False for c in run.checks):
        return "FAIL"
    if any(c["passed"] is None for c in run.checks):
        return "UNCHECKED"
    return "PASS"


def _figure(value: float | None, unit: str) -> str:
    """Reports keep bytes; people read KB."""
    if value is None:
        return "—"
    if unit == "bytes":
        return f"{value / 1024:,.1f} KB"
    return f"{value:,.3g} {unit}" if abs(value) < 1000 else f"{value:,.0f} {unit}"


def summary_table(runs: list[TargetRun]) -> str:
    """One line per target: verdict, exit code and every check as ``✓ name value/budget``."""
    width = max([len(r.target) for r in runs] + [6])
    lines = [f"{'target':<{width}}  {'verdict':<9}  exit  checks (value / budget)"]
    for run in runs:
        if run.error is not None:
            detail = run.error
        else:
            detail = "  ".join(
                f"{_mark(c['passed'])} {c['name']} {_figure(c['value'], c['unit'])} / "
                f"{_figure(c['budget'], c['unit'])}"
                for c in run.checks
            ) or "no budgets"
        lines.append(f"{run.target:<{width}}  {_verdict(run):<9}  {run.exit_code:>4}  {detail}")
    lines.append(f"worst exit code: {worst_exit_code(runs)}")
    return "\n".join(lines)


def junit_xml(runs: list[TargetRun], timestamp: dt.datetime | None = None) -> ET.ElementTree:
    stamp = (timestamp or dt.datetime.now()).replace(microsecond=0).isoformat()
    host = socket.gethostname() or "localhost"
    root = ET.Element("testsuites", name="edgeprune")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for i, run in enumerate(runs):
        suite = _suite(run, i, stamp, host)
        root.append(suite)
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
    for key in ("tests", "failures", "errors"):
        root.set(key, str(totals[key]))
    root.set("time", f"{sum(r.seconds for r in runs):.3f}")
    ET.indent(root)
    return ET.ElementTree(root)


def _suite(run: TargetRun, index: int, stamp: str, host: str) -> ET.Element:
    suite = ET.Element("testsuite", name=run.target, id=str(index), package="edgeprune",
                       timestamp=stamp, hostname=host, time=f"{run.seconds:.3f}")
    props = ET.SubElement(suite, "properties")
    _prop(props, "exit_code", str(run.exit_code))
    if run.folder is not None:
        _prop(props, "folder", str(run.folder))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if run.error is not None:
        case = ET.SubElement(suite, "testcase", classname=run.target, name="build", time="0")
        ET.SubElement(case, "error", message=run.error, type=f"exit {run.exit_code}").text = \
            run.error
        counts.update(tests=1, errors=1)
    for c in run.checks:
        for key in ("method", "value", "budget", "unit"):
            _prop(props, f"{c['name']}.{key}", "" if c[key] is None else str(c[key]))
        case = ET.SubElement(suite, "testcase", classname=run.target, name=c["name"], time="0")
        figure = (f"{_figure(c['value'], c['unit'])} against a budget of "
                  f"{_figure(c['budget'], c['unit'])} (method: {c['method'] or 'none'})")
        counts["tests"] += 1
        if c["passed"] is False:
            ET.SubElement(case, "failure", message=f"budget not met: {figure}",
                          type="BudgetNotMet").text = c["rule"]
            counts["failures"] += 1
        elif c["passed"] is None:
            ET.SubElement(case, "skipped", message=c["rule"])
            counts["skipped"] += 1
        ET.SubElement(case, "system-out").text = figure
    for key, value in counts.items():
        suite.set(key, str(value))
    return suite


def _prop(props: ET.Element, name: str, value: str) -> None:
    ET.SubElement(props, "property", name=name, value=value)


def write_junit(path: Path, runs: list[TargetRun]) -> Path:
    """Write atomically: a CI step reading the file never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    junit_xml(runs).write(tmp, encoding="utf-8", xml_declaration=True)
    tmp.replace(path)
    return path
