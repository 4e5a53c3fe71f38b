"""Recovery after structured pruning: levels × schedule × distillation × seeds (issue 20).

    cd <repo> && PYTHONPATH=$PWD nice -n 15 .venv/bin/python bench/recovery.py \
        [--example digits,mnist,fashion] [--stop-after MINUTES] [--md-only]

The grid is fixed in bench/recovery_plan.md (committed before any run): on each example,
``edgeprune build --target rpi4 --prune structured --sparsity S --epochs 10 --seed N`` with
``--schedule oneshot`` or ``--schedule gradual --steps 3`` and ``--no-distill`` or
``--distill``, S in 50/62.5/75/87.5 %, seeds 0/1/2; plus a float32 and a dense int8 reference
per example. Each build runs as a subprocess (``python -m edgeprune build``) into
/tmp/edgeprune-recovery/<example>/<build>/; its model.tflite and report.json are kept there,
the rest is removed. Right after a build its model.tflite is timed on this machine interleaved
with the example's two references (bench/_common.py ``time_ms``: CPU time of the invoking
thread, LiteRT, 1 thread), rounds rotating the order.

Results accumulate in bench/recovery.json (a build whose key is there is skipped, so the
script resumes where it stopped); bench/recovery.md is rewritten from it after every build.
``--stop-after`` starts no build after that many minutes (the running one finishes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from _common import time_ms  # noqa: E402

RESULTS = REPO / "bench" / "recovery.json"
MD = REPO / "bench" / "recovery.md"
SCRATCH = Path("/tmp/edgeprune-recovery")

TARGET = "rpi4"
EPOCHS = 10
STEPS = 3
LEVELS = (0.5, 0.625, 0.75, 0.875)
SCHEDULES = ("oneshot", "gradual")
DISTILL = (False, True)
SEEDS = (0, 1, 2)
ROUNDS = 7  # interleaved latency rounds per build
REPEATS, BLOCK_S = 3, 0.1  # time_ms: lowest of REPEATS blocks of ≥ BLOCK_S seconds

EXAMPLES: dict[str, list[str]] = {
    "digits": [],  # the bundled default
    **{name: ["--model", f"examples/{name}/model.keras", "--data", f"examples/{name}/train.npz",
              "--val", f"examples/{name}/val.npz", "--calib", f"calib_data/{name}/calib.npz"]
       for name in ("mnist", "fashion")},
}
ABOUT = {
    "digits": "the bundled digits example (examples/digits; val.npz: 360 samples, one sample "
              "0.28 points)",
    "mnist": "examples/mnist, a VGG-style CNN on MNIST (val.npz: 5,000 samples, one sample "
             "0.02 points)",
    "fashion": "examples/fashion, the MobileNetV2-style network on Fashion-MNIST (val.npz: "
               "5,000 samples, one sample 0.02 points)",
}
REFS = {
    "float32": ["--prune", "none", "--quantize", "none", "--epochs", "0", "--seed", "0"],
    "int8": ["--prune", "none", "--quantize", "int8", "--epochs", "0", "--seed", "0"],
}


def cells() -> list[tuple[float, str, bool, int]]:
    """The plan's run order: seed-major, then level ascending, oneshot before gradual,
    distillation off before on."""
    return [(level, schedule, distill, seed) for seed in SEEDS for level in LEVELS
            for schedule in SCHEDULES for distill in DISTILL]


def cell_key(example: str, level: float, schedule: str, distill: bool, seed: int) -> str:
    return f"{example}/{level * 100:g}/{schedule}/{'distill' if distill else 'no-distill'}/{seed}"


def cell_args(level: float, schedule: str, distill: bool, seed: int) -> list[str]:
    args = ["--prune", "structured", "--sparsity", f"{level:g}", "--epochs", str(EPOCHS),
            "--seed", str(seed), "--schedule", schedule]
    if schedule == "gradual":
        args += ["--steps", str(STEPS)]
    return [*args, "--distill" if distill else "--no-distill"]


def _commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                          capture_output=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "edgeprune"], cwd=REPO, text=True,
                           capture_output=True).stdout.strip()
    return head + (" (edgeprune/ modified)" if dirty else "")


def load() -> dict[str, Any]:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": {}}


def save(results: dict[str, Any]) -> None:
    tmp = RESULTS.with_suffix(".partial")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    tmp.replace(RESULTS)


def run_build(example: str, slug: str, extra: list[str]) -> dict[str, Any]:
    """One ``edgeprune build`` as a subprocess; keeps model.tflite and report.json."""
    folder = SCRATCH / example / slug
    out = folder / "build"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    argv = ["build", "--target", TARGET, *EXAMPLES[example], *extra, "--out", str(out)]
    start = time.perf_counter()
    with (folder / "log.txt").open("w") as log:
        rc = subprocess.run([sys.executable, "-m", "edgeprune", *argv], cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    row: dict[str, Any] = {
        "command": "edgeprune " + " ".join(a for a in argv if not a.startswith(str(SCRATCH))
                                           and a != "--out"),
        "exit_code": rc, "wall_s": round(wall, 1), "commit": _commit(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    built = out / TARGET
    if not (built / "report.json").is_file():
        row["error"] = (folder / "log.txt").read_text()[-2000:]
        return row
    shutil.copy(built / "model.tflite", folder / "model.tflite")
    shutil.copy(built / "report.json", folder / "report.json")
    shutil.rmtree(out)
    rep = json.loads((folder / "report.json").read_text())
    res, base = rep["result"], rep["baseline"]
    row.update({
        "accuracy": res["accuracy"], "float32_accuracy": base["accuracy"],
        "tflite_bytes": res["tflite_bytes"], "float32_tflite_bytes": base["tflite_bytes"],
        "params": res["params"], "macs": res["macs"], "passed": rep["passed"],
        "failed_checks": [c["name"] for c in rep["checks"] if c.get("passed") is False],
        "finetune": rep.get("finetune"),
        "schedule": [{k: step.get(k) for k in ("ratio", "kept", "epochs", "epochs_run",
                                               "stopped", "monitor_accuracy")}
                     for step in (rep.get("schedule") or {}).get("rows", [])],
        **group_counts(rep),
        "notes": rep.get("notes", []),
        "sha256": hashlib.sha256((folder / "model.tflite").read_bytes()).hexdigest(),
    })
    return row


def group_counts(rep: dict[str, Any]) -> dict[str, Any]:
    groups = rep.get("pruning_groups") or []
    return {"kept": {str(g["group"]): g["kept"] for g in groups},
            "channels": {str(g["group"]): g["channels"] for g in groups}}


def backfill_channels(results: dict[str, Any]) -> None:
    """Rows written before ``channels`` was recorded: read it from the kept report.json."""
    for key, row in results["runs"].items():
        if "kept" in row and "channels" not in row and "/ref/" not in key:
            example, rest = key.split("/", 1)
            path = SCRATCH / example / rest.replace("/", "-") / "report.json"
            if path.is_file():
                row["channels"] = group_counts(json.loads(path.read_text()))["channels"]


def reference(results: dict[str, Any], example: str, name: str) -> bytes | None:
    """The example's reference model, built once; rebuilt (and checked byte-identical) when
    the scratch copy is gone."""
    key = f"{example}/ref/{name}"
    path = SCRATCH / example / f"ref-{name}" / "model.tflite"
    stored = results["runs"].get(key)
    if stored and path.is_file():
        return path.read_bytes()
    row = run_build(example, f"ref-{name}", REFS[name])
    if stored and row.get("sha256") and row["sha256"] != stored.get("sha256"):
        row["note"] = f"rebuilt: sha256 differs from the first build's {stored.get('sha256')}"
        results["runs"][f"{key}/rebuilt-{row['finished']}"] = row
    elif not stored:
        results["runs"][key] = row
    save(results)
    print(f"{key}: exit {row['exit_code']} in {row['wall_s']} s", file=sys.stderr, flush=True)
    return path.read_bytes() if path.is_file() else None


def interleaved(blob: bytes, int8: bytes, f32: bytes) -> dict[str, Any]:
    """ROUNDS rounds, the three models' order rotated each round; per round the ratios
    reference / pruned; medians over rounds."""
    models = [("pruned", blob), ("int8", int8), ("float32", f32)]
    ms: dict[str, list[float]] = {name: [] for name, _ in models}
    for r in range(ROUNDS):
        for name, model in models[r % 3:] + models[:r % 3]:
            ms[name].append(time_ms(model, repeats=REPEATS, block_s=BLOCK_S))
    vs_int8 = [i / p for i, p in zip(ms["int8"], ms["pruned"], strict=True)]
    vs_f32 = [f / p for f, p in zip(ms["float32"], ms["pruned"], strict=True)]
    return {"ms": {k: statistics.median(v) for k, v in ms.items()},
            "speedup_vs_int8": statistics.median(vs_int8),
            "speedup_vs_float32": statistics.median(vs_f32),
            "rounds": ROUNDS, "repeats": REPEATS, "block_s": BLOCK_S}


def run(examples: list[str], stop_after: float | None) -> None:
    results = load()
    results.setdefault("invocations", []).append({
        "argv": sys.argv[1:], "commit": _commit(), "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    save(results)
    start = time.monotonic()
    for example in examples:
        f32, int8 = (reference(results, example, n) for n in ("float32", "int8"))
        if f32 is None or int8 is None:
            print(f"{example}: a reference build failed; see the json", file=sys.stderr)
            continue
        for level, schedule, distill, seed in cells():
            key = cell_key(example, level, schedule, distill, seed)
            if key in results["runs"]:
                continue
            if stop_after is not None and time.monotonic() - start > stop_after * 60:
                print(f"stopped after {stop_after} minutes, before {key}", file=sys.stderr)
                return
            slug = key.split("/", 1)[1].replace("/", "-")
            row = run_build(example, slug, cell_args(level, schedule, distill, seed))
            tflite = SCRATCH / example / slug / "model.tflite"
            if tflite.is_file():
                row["latency"] = interleaved(tflite.read_bytes(), int8, f32)
            results["runs"][key] = row
            save(results)
            write_md(results)
            print(f"{key}: exit {row['exit_code']} in {row['wall_s']} s, accuracy "
                  f"{row.get('accuracy')}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the report


def _t95(n: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1))


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "—"
    mean = statistics.fmean(values) * 100
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {statistics.stdev(values) * 100:.2f}"


def _ratio(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}×" if values else "—"


def _paired(diffs: list[float]) -> str:
    if len(diffs) < 2:
        return f"{len(diffs)} pair(s)"
    mean = statistics.fmean(diffs)
    half = _t95(len(diffs)) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    shown = "not shown" if mean - half <= 0 <= mean + half else "shown"
    return (f"{mean:+.2f} ({mean - half:+.2f} … {mean + half:+.2f}; {len(diffs)} pairs; "
            f"{shown})")


def example_section(results: dict[str, Any], example: str) -> list[str]:
    runs = results["runs"]
    refs = {n: runs.get(f"{example}/ref/{n}") for n in ("float32", "int8")}
    lines = [f"## {example}", "", f"Example: {ABOUT[example]}.", ""]
    if not all(r and "accuracy" in r for r in refs.values()):
        return [*lines, "Not run yet.", ""]
    f32, i8 = refs["float32"], refs["int8"]
    lines += [
        f"References (seed 0, no fine-tuning): float32 {f32['accuracy']:.2%}, "
        f"{f32['tflite_bytes']:,} B; dense int8 {i8['accuracy']:.2%}, {i8['tflite_bytes']:,} B. "
        f"Commands: `{f32['command']}`; `{i8['command']}`.", ""]
    header = ["level", "schedule", "distill", "seeds", "accuracy % (mean ± SD)",
              "per seed (0, 1, 2)", "Δ vs float32 (pt)", "Δ vs int8 (pt)", ".tflite bytes",
              "bytes vs int8", "bytes vs float32", "host speed-up vs int8",
              "host speed-up vs float32", "epochs run", "budgets"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    failures, missing = [], 0
    for level in LEVELS:
        for schedule in SCHEDULES:
            for distill in DISTILL:
                rows = []
                for seed in SEEDS:
                    row = runs.get(cell_key(example, level, schedule, distill, seed))
                    if row is None:
                        missing += 1
                    elif "accuracy" not in row:
                        failures.append((seed, level, schedule, distill, row))
                    rows.append(row if row and "accuracy" in row else None)
                done = [r for r in rows if r]
                if not done and all(
                        runs.get(cell_key(example, level, schedule, distill, s)) is None
                        for s in SEEDS):
                    continue
                acc = [r["accuracy"] for r in done]
                per_seed = ", ".join(f"{r['accuracy'] * 100:.2f}" if r else "—" for r in rows)
                sizes = sorted({r["tflite_bytes"] for r in done})
                lat = [r["latency"] for r in done if "latency" in r]
                epochs = ", ".join(str((r.get("finetune") or {}).get("epochs_run", "?"))
                                   for r in done)
                passed = f"{sum(bool(r['passed']) for r in done)}/{len(done)} met"
                mean = statistics.fmean(acc) if acc else None
                lines.append("| " + " | ".join([
                    f"{level:.1%}", schedule, "on" if distill else "off", str(len(done)),
                    _mean_sd(acc), per_seed,
                    f"{(mean - f32['accuracy']) * 100:+.2f}" if acc else "—",
                    f"{(mean - i8['accuracy']) * 100:+.2f}" if acc else "—",
                    " / ".join(f"{s:,}" for s in sizes) or "—",
                    " / ".join(f"{i8['tflite_bytes'] / s:.2f}×" for s in sizes) or "—",
                    " / ".join(f"{f32['tflite_bytes'] / s:.2f}×" for s in sizes) or "—",
                    _ratio([x["speedup_vs_int8"] for x in lat]),
                    _ratio([x["speedup_vs_float32"] for x in lat]),
                    epochs or "—", passed if done else "—",
                ]) + " |")
    lines += ["", "Paired differences in accuracy points, mean (95 % t-interval; pairs), as "
              "pre-registered. The interval treats the 6 pairs as independent, but they come "
              "from 3 seeds (two pairs share each seed), so it is narrower than the seeds "
              "alone justify; \"shown\" means only that it excludes 0.", "",
              "| level | gradual − oneshot (pairs: seed × distill) | distill on − off (pairs: "
              "seed × schedule) |", "|---|---|---|"]
    for level in LEVELS:
        def acc(schedule: str, distill: bool, seed: int, level: float = level) -> float | None:
            row = runs.get(cell_key(example, level, schedule, distill, seed)) or {}
            return row.get("accuracy")
        sched, dist = [], []
        for seed in SEEDS:
            for other in DISTILL:
                a, b = acc("gradual", other, seed), acc("oneshot", other, seed)
                if a is not None and b is not None:
                    sched.append((a - b) * 100)
            for other in SCHEDULES:
                a, b = acc(other, True, seed), acc(other, False, seed)
                if a is not None and b is not None:
                    dist.append((a - b) * 100)
        if sched or dist:
            lines.append(f"| {level:.1%} | {_paired(sched)} | {_paired(dist)} |")
    lines += ["", "Channels kept per channel group (group: kept/dense; `edgeprune analyze` "
              "names the groups) and parameters, per level, over every build of the level "
              "that ran:", ""]
    for level in LEVELS:
        kept = {(json.dumps(r["kept"], sort_keys=True), r["params"])
                for k, r in runs.items()
                if k.startswith(f"{example}/{level * 100:g}/") and "kept" in r}
        channels = next((r["channels"] for k, r in runs.items()
                         if k.startswith(f"{example}/") and "channels" in r), {})
        for groups, params in sorted(kept):
            text = ", ".join(f"{g}: {n}/{channels.get(g, '?')}"
                             for g, n in json.loads(groups).items())
            lines.append(f"- {level:.1%}: {text}; {params:,} parameters")
    lines.append("")
    for seed, level, schedule, distill, row in failures:
        lines.append(f"- Failed: {level:.1%} {schedule} distill {'on' if distill else 'off'} "
                     f"seed {seed}: exit {row['exit_code']} (`{row['command']}`).")
    total = len(LEVELS) * len(SCHEDULES) * len(DISTILL) * len(SEEDS)
    ran = total - missing
    lines += [f"Builds run: {ran} of {total}" + (f"; not run yet: {missing}." if missing
                                                   else "."), ""]
    commits = sorted({r["commit"] for k, r in runs.items() if k.startswith(example + "/")})
    lines += [f"Commits the builds ran at: {', '.join(commits)} ({_same_product(commits)}).",
              ""]
    return lines


def _same_product(commits: list[str]) -> str:
    """Whether edgeprune/ is the same at every commit the builds ran at."""
    heads = [c.split()[0] for c in commits]
    if any(" " in c for c in commits):
        return "some with edgeprune/ modified"
    same = all(subprocess.run(["git", "diff", "--quiet", heads[0], h, "--", "edgeprune"],
                              cwd=REPO).returncode == 0 for h in heads[1:])
    return ("edgeprune/ identical in all of them" if same
            else "edgeprune/ differs between them")


def write_md(results: dict[str, Any]) -> None:
    lines = [
        "# Recovery after structured pruning: schedule and distillation (issue 20)",
        "",
        "The grid was fixed before any run in [recovery_plan.md](recovery_plan.md). Every "
        "build: `edgeprune build --target rpi4 --prune structured --sparsity S --epochs 10 "
        "--seed N --schedule oneshot|gradual [--steps 3] --distill|--no-distill` (rpi4's "
        "`[build]`: l1 criterion, uniform allocation, int8, kept counts rounded to multiples "
        "of 8), run as a subprocess by:",
        "",
        "    cd <repo> && PYTHONPATH=$PWD nice -n 15 .venv/bin/python bench/recovery.py "
        "--example EXAMPLES --stop-after MINUTES",
        "",
        "Invocations so far (arguments, commit, start): "
        + "; ".join(f"`{' '.join(i['argv'])}` at {i['commit']}, {i['started']}"
                    for i in results.get("invocations", [])) + ".",
        "",
        "Methods: accuracy is `report.json` `result.accuracy`, the emitted int8 .tflite run "
        "with LiteRT on the example's val.npz (method `host`); bytes are the .tflite's "
        "(`artifact`). Host latency (`host`: this shared 2-core x86-64 VM, LiteRT, 1 thread; "
        "not a Raspberry Pi figure): right after each build its model.tflite is timed "
        f"interleaved with the example's dense int8 and float32 references, {ROUNDS} rounds "
        "rotating the order, each timing bench/_common.py `time_ms` (CPU time of the invoking "
        f"thread, lowest of {REPEATS} blocks of ≥ {BLOCK_S} s); a build's speed-up is the "
        "median over rounds of reference ms / pruned ms, and the table shows the median over "
        "seeds. Ratios are reference / pruned: > 1 is fewer bytes or faster. Accuracy: mean ± "
        "sample SD over the seeds that ran, each seed's value (%), and the mean's Δ against "
        "the float32 and dense int8 references. \"epochs run\": per seed (gradual: summed over "
        "its steps); \"budgets\": seeds whose build met every rpi4 budget (accuracy within 1 "
        "point of float32; latency, RAM and flash are rpi4 estimates or artifact sizes).",
        "",
    ]
    for example in EXAMPLES:
        lines += example_section(results, example)
    MD.write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", default=",".join(EXAMPLES),
                        help="comma-separated, run in this order")
    parser.add_argument("--stop-after", type=float, default=None,
                        help="minutes; start no build after this")
    parser.add_argument("--md-only", action="store_true", help="rewrite the md from the json")
    args = parser.parse_args(argv)
    examples = [e for e in args.example.split(",") if e]
    unknown = [e for e in examples if e not in EXAMPLES]
    if unknown:
        parser.error(f"unknown example(s): {', '.join(unknown)}")
    if not args.md_only:
        run(examples, args.stop_after)
    results = load()
    backfill_channels(results)
    save(results)
    write_md(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
