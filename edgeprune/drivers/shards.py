"""CI matrix shards: ``targets --matrix`` prints the jobs, ``build --shard K/N`` builds one
share of the targets, ``merge DIR…`` joins the shards' results into one summary and JUnit file.

Shard K of N takes targets K, K+N, K+2N, … of the ``--all-targets`` list (1-based), so every
target is in exactly one shard. A shard's ``OUT/runs.json`` records each of its targets' exit
code, error and place in the whole list; ``merge`` reads it (a folder without one is read from
its ``<target>/report.json`` files) and restores the whole list's order, so the merged summary
and JUnit report are the ones a sequential run writes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from edgeprune.drivers.ci_report import TargetRun
from edgeprune.errors import BadInputError, ExitCode

RUNS_FILE = "runs.json"
SCHEMA = "edgeprune.drivers.shards/1"
MATRICES = ("github", "gitlab")
_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` → (2, 4), with 1 ≤ K ≤ N."""
    found = _SHARD.fullmatch(text)
    k, n = (int(found[1]), int(found[2])) if found else (0, 0)
    if not 1 <= k <= n:
        raise BadInputError(f"--shard {text}", "is not K/N with 1 ≤ K ≤ N",
                            "Give e.g. --shard 1/4 (the first of four shards)")
    return k, n


def share(specs: list[str], k: int, n: int) -> list[tuple[int, str]]:
    """Shard K of N: (place in the whole list, spec) of its targets."""
    return [(i, spec) for i, spec in enumerate(specs) if i % n == k - 1]


def matrix(kind: str, specs: list[str], shards: int | None) -> str:
    """The CI jobs: one shard per target unless ``shards`` is given. GitHub: the JSON of a
    ``strategy.matrix`` (``fromJSON``); GitLab: the ``parallel:matrix`` of a job."""
    n = shards or len(specs)
    if n < 1:
        raise BadInputError(f"--shards {n}", "must be ≥ 1", "Give the number of CI jobs")
    jobs = [(f"{k}/{n}", [s for _, s in share(specs, k, n)]) for k in range(1, n + 1)]
    if kind == "github":
        return json.dumps({"include": [{"shard": shard, "targets": " ".join(names)}
                                       for shard, names in jobs]})
    shard_list = ", ".join(f'"{shard}"' for shard, _ in jobs)
    return f"parallel:\n  matrix:\n    - SHARD: [{shard_list}]"


def write_runs(out: Path, runs: list[TargetRun], places: list[int], shard: str) -> Path:
    """``OUT/runs.json``: what ``merge`` needs of this shard's runs."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / RUNS_FILE
    rows = [{"target": r.target, "place": place, "exit_code": r.exit_code, "error": r.error,
             "folder": None if r.folder is None else r.folder.name, "seconds": r.seconds}
            for r, place in zip(runs, places, strict=True)]
    tmp = path.with_name(f".{RUNS_FILE}.partial")
    tmp.write_text(json.dumps({"schema": SCHEMA, "shard": shard, "runs": rows}, indent=2) + "\n",
                   encoding="utf-8")
    tmp.replace(path)
    return path


def merge(folders: list[Path]) -> list[TargetRun]:
    """The runs of every shard folder, in the whole list's order (then the folders')."""
    found: list[tuple[float, TargetRun]] = []
    for n, folder in enumerate(folders):
        if not folder.is_dir():
            raise BadInputError(f"merge {folder}", "is not a folder",
                                "Give the --out folders of the shards' builds")
        runs_file = folder / RUNS_FILE
        if runs_file.is_file():
            found.extend(_from_runs(runs_file))
        else:
            reports = sorted(p for p in folder.glob("*/report.json")
                             if not p.parent.name.startswith("."))
            found.extend((n * 1e6 + i, _from_report(p.parent)) for i, p in enumerate(reports))
    if not found:
        raise BadInputError(f"merge {' '.join(map(str, folders))}", "holds no build results",
                            "Give the --out folders of `edgeprune build --shard K/N` runs")
    names = [run.target for _, run in found]
    dupes = sorted({t for t in names if names.count(t) > 1})
    if dupes:
        raise BadInputError("merge", f"target {dupes[0]} is in more than one folder",
                            "Merge each shard's folder once")
    return [run for _, run in sorted(found, key=lambda pair: pair[0])]


def _from_runs(path: Path) -> list[tuple[float, TargetRun]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data["runs"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInputError(str(path), f"is not a shard's runs file ({exc})",
                            "Rebuild the shard") from exc
    out = []
    for row in rows:
        if row["folder"] is None:
            run = TargetRun(row["target"], row["exit_code"], error=row["error"],
                            seconds=row["seconds"])
        else:
            run = _from_report(path.parent / row["folder"], row["exit_code"], row["seconds"])
        out.append((float(row["place"]), run))
    return out


def _from_report(folder: Path, exit_code: int | None = None,
                 seconds: float | None = None) -> TargetRun:
    path = folder / "report.json"
    try:
        report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInputError(str(path), f"cannot be read ({exc})", "Rebuild that target") from exc
    if exit_code is None:  # no runs.json: the verdict as a build without --strict gives it
        failed = any(c["passed"] is False for c in report["checks"])
        exit_code = ExitCode.BUDGET_FAILED if failed else ExitCode.OK
    if seconds is None:
        seconds = float(sum(report.get("timings_s", {}).values()))
    return TargetRun.from_report(report, folder, int(exit_code), seconds)
