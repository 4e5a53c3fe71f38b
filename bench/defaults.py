"""bench/defaults: every shipped target's default recipe on the examples, side by side.

    cd <repo> && PYTHONPATH=$PWD nice -n 10 .venv/bin/python bench/defaults.py \
        [--example digits,mnist] [--target rpi4,...] [--md-only]

Per example: the float32 and dense int8 references (rpi4 conversion, no fine-tuning), then per
target a build with nothing but the example's files and ``--seed 0`` (so the target's
``[build]`` decides everything) and the same target's dense int8 build (``--prune none
--epochs 0``). Reported: accuracy and the target's checks (report.json), .tflite bytes against
the target's dense int8 and the float32 reference, the target's own latency figure (the check's
method, an estimate here) against its dense int8 model's, and host latency (LiteRT, 1 thread,
this machine) interleaved with the two references: ROUNDS rounds rotating the order, each
timing bench/_common.py ``time_ms`` (CPU time of the invoking thread), median of the per-round
ratios. Results: bench/defaults.json (resumable: a build already there is not run again) and
bench/defaults.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import recovery  # noqa: E402
from _common import time_ms  # noqa: E402

RESULTS = REPO / "bench" / "defaults.json"
MD = REPO / "bench" / "defaults.md"
SCRATCH = Path("/tmp/edgeprune-defaults")
TARGETS = ("rpi4", "rpi5", "cortex-m4", "cortex-m7", "coral-usb", "ethos-u55")
ROUNDS = 15
DENSE = ["--prune", "none", "--epochs", "0", "--seed", "0"]


def build(example: str, target: str, slug: str, extra: list[str]) -> dict[str, Any]:
    folder = SCRATCH / example / target / slug
    out = folder / "build"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    argv = ["build", "--target", target, *recovery.EXAMPLES[example], *extra]
    start = time.perf_counter()
    with (folder / "log.txt").open("w") as log:
        rc = subprocess.run([sys.executable, "-m", "edgeprune", *argv, "--out", str(out)],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
    row: dict[str, Any] = {"command": "edgeprune " + " ".join(argv), "exit_code": rc,
                           "wall_s": round(time.perf_counter() - start, 1),
                           "commit": recovery._commit()}
    built = out / target
    if not (built / "report.json").is_file():
        row["error"] = (folder / "log.txt").read_text()[-2000:]
        return row
    shutil.copy(built / "model.tflite", folder / "model.tflite")
    rep = json.loads((built / "report.json").read_text())
    shutil.rmtree(out)
    latency = next((c for c in rep["checks"] if c["name"] == "latency"), None)
    row.update({
        "accuracy": rep["result"]["accuracy"], "float32_accuracy": rep["baseline"]["accuracy"],
        "tflite_bytes": rep["result"]["tflite_bytes"],
        "checks": {c["name"]: {"value": c["value"], "budget": c["budget"], "passed": c["passed"],
                               "method": c["method"]} for c in rep["checks"]},
        "target_latency_ms": latency and latency["value"],
        "target_latency_method": latency and latency["method"],
        "recipe": {k: rep["recipe"].get(k) for k in ("prune", "sparsity", "schedule", "steps",
                                                      "distill", "epochs", "quantize")},
        "kept": recovery.group_counts(rep), "notes": rep.get("notes", []),
        "model": str(folder / "model.tflite"),
    })
    return row


def timed(models: dict[str, bytes]) -> dict[str, Any]:
    """ROUNDS rounds, order rotated; per round reference ms / default ms; medians."""
    names = list(models)
    ms: dict[str, list[float]] = {n: [] for n in names}
    for r in range(ROUNDS):
        for name in names[r % len(names):] + names[:r % len(names)]:
            ms[name].append(time_ms(models[name], repeats=recovery.REPEATS,
                                    block_s=recovery.BLOCK_S))
    return {"ms": {k: statistics.median(v) for k, v in ms.items()},
            "speedup_vs_int8": statistics.median(
                i / d for i, d in zip(ms["int8"], ms["default"], strict=True)),
            "speedup_vs_float32": statistics.median(
                f / d for f, d in zip(ms["float32"], ms["default"], strict=True)),
            "rounds": ROUNDS}


def run(examples: list[str], targets: list[str]) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": {}}
    runs = results["runs"]

    def once(key: str, *args: Any) -> dict[str, Any]:
        if key not in runs:
            runs[key] = build(*args)
            RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
            print(f"{key}: exit {runs[key]['exit_code']} in {runs[key]['wall_s']} s",
                  file=sys.stderr, flush=True)
        return runs[key]

    for example in examples:
        refs = {n: once(f"{example}/ref/{n}", example, "rpi4", f"ref-{n}", recovery.REFS[n])
                for n in ("float32", "int8")}
        ref_blobs = {n: Path(r["model"]).read_bytes() for n, r in refs.items()}
        for target in targets:
            once(f"{example}/{target}/dense-int8", example, target, "dense-int8", DENSE)
            row = once(f"{example}/{target}/default", example, target, "default", ["--seed", "0"])
            if "model" in row and "host" not in row:
                row["host"] = timed({"default": Path(row["model"]).read_bytes(), **ref_blobs})
                RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    write_md(results, examples, targets)


def _x(num: float | None, den: float | None) -> str:
    return f"{num / den:.2f}×" if num and den else "—"


def write_md(results: dict[str, Any], examples: list[str], targets: list[str]) -> None:
    runs = results["runs"]
    lines = [
        "# The shipped default recipes, per target and example",
        "",
        "Written by bench/defaults.py (its docstring says how each figure is measured); raw "
        "results in bench/defaults.json. Command:",
        "",
        f"    PYTHONPATH=$PWD nice -n 10 .venv/bin/python bench/defaults.py --example "
        f"{','.join(examples)} --target {','.join(targets)}",
        "",
        "Every default build is `edgeprune build --target T` with the example's files and "
        "`--seed 0` only. Accuracy is the emitted .tflite's on the example's val.npz. Host "
        "latency is LiteRT on this shared 2-core x86-64 machine (method `host`, not a device "
        f"figure), {ROUNDS} interleaved rounds with the rpi4 float32 and dense int8 "
        "references. The target's latency is its check's figure (method shown: `estimate` is "
        "the calibrated estimator, not a measurement) against the same target's dense int8 "
        "build.",
        "",
        "Builds ran at commit(s): " + ", ".join(sorted({r.get("commit", "?") for r in
                                                          runs.values()})) + ".",
    ]
    for example in examples:
        f32, i8 = runs.get(f"{example}/ref/float32"), runs.get(f"{example}/ref/int8")
        if not f32 or not i8:
            continue
        lines += ["", f"## {example}", "",
                  f"References: float32 {f32['accuracy']:.2%}, {f32['tflite_bytes']:,} B; dense "
                  f"int8 {i8['accuracy']:.2%}, {i8['tflite_bytes']:,} B.", "",
                  "| target | recipe | accuracy | Δ vs float32 (pt) | budgets | .tflite B | "
                  "bytes vs its dense int8 | bytes vs float32 | host speed-up vs int8 | host "
                  "speed-up vs float32 | target latency vs its dense int8 (method) | exit |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for target in targets:
            row = runs.get(f"{example}/{target}/default")
            dense = runs.get(f"{example}/{target}/dense-int8") or {}
            if not row:
                lines.append(f"| {target} | not run | | | | | | | | | | |")
                continue
            if "accuracy" not in row:
                lines.append(f"| {target} | failed | | | | | | | | | | {row['exit_code']} |")
                continue
            r = row["recipe"]
            recipe = (f"{r['prune']} {r['sparsity']:g}, {r['schedule']}"
                      + (f" {r['steps']}" if r["schedule"] == "gradual" else "")
                      + (", distill" if r["distill"] else "") + f", {r['epochs']} ep")
            mark = {True: "✓", False: "✗", None: "?"}
            budgets = ", ".join(f"{n} {mark[c['passed']]}" for n, c in row["checks"].items())
            host = row.get("host", {})
            lines.append(
                f"| {target} | {recipe} | {row['accuracy']:.2%} | "
                f"{(row['accuracy'] - row['float32_accuracy']) * 100:+.2f} | {budgets} | "
                f"{row['tflite_bytes']:,} | {_x(dense.get('tflite_bytes'), row['tflite_bytes'])}"
                f" | {_x(f32['tflite_bytes'], row['tflite_bytes'])} | "
                f"{host.get('speedup_vs_int8', 0):.2f}× | {host.get('speedup_vs_float32', 0):.2f}×"
                f" | {_x(dense.get('target_latency_ms'), row['target_latency_ms'])} "
                f"({row['target_latency_method']}) | {row['exit_code']} |")
    MD.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--example", default="digits,mnist")
    p.add_argument("--target", default=",".join(TARGETS))
    p.add_argument("--md-only", action="store_true")
    args = p.parse_args(argv)
    examples, targets = args.example.split(","), args.target.split(",")
    if args.md_only:
        write_md(json.loads(RESULTS.read_text()), examples, targets)
    else:
        run(examples, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
