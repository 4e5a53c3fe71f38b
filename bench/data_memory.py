"""Streaming data (issue 21): peak RSS of a build from an image folder of N and 10·N images,
and fine-tuning throughput from a folder against the same images in .npz files.

    nice -n 10 .venv/bin/python bench/data_memory.py                    # every phase
    nice -n 10 .venv/bin/python bench/data_memory.py --phase throughput,md
    options: --scratch DIR (default /tmp/edgeprune-data-memory), --rounds R (5)

Phases (results merge into bench/data_memory.json, so a phase can be re-run alone):

- ``make``: the data, in the scratch folder (never the repository), seeded. The N = 10,000
  images are examples/mnist/train.npz as they are; the 10·N = 100,000 are those 10,000 plus 9
  variants of each, every variant shifted by a seeded (dy, dx) in [-2, 2]² (zero fill) and given
  seeded Gaussian noise (σ = 8 grey levels, rounded, clipped to 0-255). Each set is written as a
  folder of 8-bit grayscale PNGs, one sub-folder per class (``0``..``9``, so the folder's class
  index is the digit), and as an uncompressed (``numpy.savez``, memory-mapped by edgeprune) and
  a compressed (``savez_compressed``, loaded into memory) .npz holding the same images in the
  folder's order (sorted class folders, sorted file names).
- ``rss``: ``python -m edgeprune build --target rpi4 --model examples/mnist/model.keras --data
  FOLDER --val examples/mnist/val.npz --calib calib_data/mnist/calib.npz --prune structured
  --sparsity 0.5 --epochs 1 --out OUT`` for N and 10·N, each run by a fresh wrapper process
  whose ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` after the build is the build's peak
  RSS (the largest of the build process and any process it waited for). ``--rss-sources``
  adds the same builds from the uncompressed .npz files, for reference.
- ``throughput``: in one process, fine-tuning images/s from the N folder, the N uncompressed
  .npz and the N compressed .npz, through the fine-tune's own pipeline: ``load_labelled(path,
  "--data", model.input_shape)``, ``training_dataset(x, y, 32, seed=round, epochs=1)`` and
  ``model.fit`` after ``seed_everything(0)`` and ``compile_for_training(model, 1e-3)``, as
  stages/finetune.py does. Two models: the input model (dense) and the 10·N build's output
  model.keras (structured 50 %, the architecture the build's fine-tune trains; its weights do
  not matter for speed). Each (model, source) is warmed up with 20 steps (tracing excluded),
  then ``--rounds`` rounds each time one full epoch (10,000 images, 313 steps) per (model,
  source), the source order rotated each round; the figure is the median over rounds of images
  / wall second of ``fit``. Process CPU seconds per fit are kept too (the machine is shared).
  The input pipeline alone (iterating the dataset, no training) is timed the same way.
- ``md``: writes bench/data_memory.md from the json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "data_memory.json"
PAGE = REPO / "bench" / "data_memory.md"
N = 10_000
SIZES = (N, 10 * N)
VARIANTS = 10  # 10·N = the N images and 9 shifted, noisy variants of each
SHIFT, NOISE_SIGMA, SEED = 2, 8.0, 0
BATCH, WARMUP_STEPS = 32, 20
PHASES = ("make", "rss", "profile", "throughput", "md")
SOURCES = ("folder", "npz", "npz-compressed")
# A fresh process per build: RUSAGE_CHILDREN then covers that build alone. While it runs, the
# build's RSS (/proc, the build process only) is sampled every 0.2 s and attributed to the
# stage its log last started ("<stage> …" lines), for the per-stage profile.
WRAPPER = r"""
import json, re, resource, subprocess, sys, time
log_path = sys.argv[1]
start = time.perf_counter()
with open(log_path, "w") as log:
    child = subprocess.Popen(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT)
stage, stages, ends, seen = "start", {}, {}, 0
while child.poll() is None:
    with open(log_path, "rb") as f:
        f.seek(seen)
        text = f.read()
    cut = text.rfind(b"\n") + 1
    seen += cut
    for line in text[:cut].decode(errors="replace").splitlines():
        m = re.match(r"^(\w+)\s+…$", line)
        if m:
            stage = m.group(1)
    try:
        with open(f"/proc/{child.pid}/status") as f:
            kib = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    except (OSError, AttributeError):
        kib = 0
    stages[stage] = max(stages.get(stage, 0), kib)
    ends[stage] = kib
    time.sleep(0.2)
wall = time.perf_counter() - start
use = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"exit_code": child.returncode, "peak_rss_kib": use.ru_maxrss,
                  "wall_s": round(wall, 1), "cpu_s": round(use.ru_utime + use.ru_stime, 1),
                  "stage_peak_rss_kib": stages, "stage_end_rss_kib": ends}))
"""


def paths(scratch: Path, n: int) -> dict[str, Path]:
    return {"folder": scratch / f"images-{n}", "npz": scratch / f"train-{n}.npz",
            "npz-compressed": scratch / f"train-{n}-compressed.npz",
            "out": scratch / f"build-{n}"}


# --- make -----------------------------------------------------------------------------------

def variants(x: np.ndarray, y: np.ndarray, count: int) -> list[tuple[str, str, np.ndarray]]:
    """(class folder, file name, 28×28 uint8 image) for ``count`` variants of every image;
    variant 0 is the image itself."""
    out = []
    for k in range(count):
        rng = np.random.default_rng([SEED, k])
        shifts = rng.integers(-SHIFT, SHIFT + 1, size=(len(x), 2))
        noise = rng.normal(0.0, NOISE_SIGMA, size=x.shape[:3])
        for i in range(len(x)):
            image = x[i, :, :, 0].astype(np.float64)
            if k > 0:
                image = _shifted(image, *shifts[i])
                image = np.clip(np.rint(image + noise[i]), 0, 255)
            out.append((str(int(y[i])), f"{k:02d}-{i:05d}.png", image.astype(np.uint8)))
    return sorted(out, key=lambda t: (t[0], t[1]))  # the folder's order: classes, then names


def _shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(image)
    h, w = image.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def make(scratch: Path) -> dict[str, Any]:
    from PIL import Image

    with np.load(REPO / "examples" / "mnist" / "train.npz") as f:
        x, y = f["x"], f["y"]
    assert len(x) == N, len(x)
    made: dict[str, Any] = {}
    for n in SIZES:
        where = paths(scratch, n)
        done = where["folder"] / ".complete"
        items = variants(x, y, n // N)
        if not done.is_file():
            shutil.rmtree(where["folder"], ignore_errors=True)
            for label, name, image in items:
                folder = where["folder"] / label
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image, mode="L").save(folder / name)
            done.write_text("")
        xs = np.stack([image for _, _, image in items])[..., None]
        ys = np.array([int(label) for label, _, _ in items], np.int64)
        np.savez(where["npz"], x=xs, y=ys)
        np.savez_compressed(where["npz-compressed"], x=xs, y=ys)
        pngs = list(where["folder"].rglob("*.png"))
        made[str(n)] = {"images": len(pngs), "png_bytes": sum(p.stat().st_size for p in pngs),
                        "npz_bytes": where["npz"].stat().st_size,
                        "npz_compressed_bytes": where["npz-compressed"].stat().st_size,
                        "per_class": np.bincount(ys).tolist()}
        print(f"make {n}: {made[str(n)]}", file=sys.stderr)
    return made


# --- rss ------------------------------------------------------------------------------------

def build_command(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "edgeprune", "build", "--target", "rpi4",
            "--model", "examples/mnist/model.keras", "--data", str(data),
            "--val", "examples/mnist/val.npz", "--calib", "calib_data/mnist/calib.npz",
            "--prune", "structured", "--sparsity", "0.5", "--epochs", "1", "--out", str(out)]


def rss(scratch: Path, sources: list[str]) -> list[dict[str, Any]]:
    rows = []
    for source in sources:
        for n in SIZES:
            where = paths(scratch, n)
            out = where["out"] if source == "folder" else scratch / f"build-{n}-{source}"
            shutil.rmtree(out, ignore_errors=True)
            cmd = build_command(where[source], out)
            log = scratch / f"{out.name}.log"
            done = subprocess.run([sys.executable, "-c", WRAPPER, str(log), *cmd], cwd=REPO,
                                  capture_output=True, text=True, check=True)
            row: dict[str, Any] = {"source": source, "images": n, **json.loads(done.stdout)}
            report = out / "rpi4" / "report.json"
            if report.is_file():
                rep = json.loads(report.read_text())
                row["timings_s"] = rep.get("timings_s")
                row["finetune"] = rep.get("finetune")
            rows.append(row)
            print(f"rss {json.dumps(row)}", file=sys.stderr)
    return rows


# --- profile --------------------------------------------------------------------------------

def _status_mib(field: str) -> float:
    text = Path("/proc/self/status").read_text()
    return int(text.split(f"{field}:")[1].split()[0]) / 1024


def profile(scratch: Path) -> dict[str, Any]:
    """The prune stage's reads of ``--data``: the stage's ``prune_structured`` call (as
    stages/prune.py makes it) on the 10·N folder, every read of the training ``Rows`` counted
    by its caller outside edgeprune/data, and this process's RSS and peak RSS around it."""
    import collections
    import traceback

    from edgeprune import _tf
    from edgeprune.data import load_labelled, load_samples
    from edgeprune.data.rows import Rows
    from edgeprune.pruning import prune_structured

    model = _tf.keras().models.load_model(REPO / "examples" / "mnist" / "model.keras",
                                          compile=False)
    train = load_labelled(paths(scratch, 10 * N)["folder"], "--data", model.input_shape)
    calib = np.asarray(load_samples(REPO / "calib_data" / "mnist" / "calib.npz", "--calib",
                                    model.input_shape))
    reads: collections.Counter[str] = collections.Counter()
    samples: collections.Counter[str] = collections.Counter()
    original = Rows.__getitem__

    def counted(self: Rows, key: Any) -> np.ndarray:
        out = original(self, key)
        caller = [f for f in traceback.extract_stack()[:-1]
                  if "/edgeprune/" in f.filename and "/edgeprune/data/" not in f.filename][-1]
        where = f"edgeprune/{caller.filename.split('/edgeprune/')[-1]}:{caller.lineno} " \
                f"{caller.name}"
        reads[where] += 1
        samples[where] += len(out) if out.ndim == 4 else 1
        return out

    Rows.__getitem__ = counted  # type: ignore[method-assign]
    before = {"rss_mib": _status_mib("VmRSS"), "peak_rss_mib": _status_mib("VmHWM")}
    start = time.perf_counter()
    try:
        prune_structured(model, sparsity=0.5, criterion="l1", allocation="uniform",
                         channel_multiple=1, keep=[], calib=calib, data=(train.x, train.y))
    finally:
        Rows.__getitem__ = original  # type: ignore[method-assign]
    out = {"images": len(train), "seconds": round(time.perf_counter() - start, 1),
           "before": before, "after": {"rss_mib": _status_mib("VmRSS"),
                                       "peak_rss_mib": _status_mib("VmHWM")},
           "reads": {w: {"reads": reads[w], "samples": samples[w]} for w in reads}}
    print(f"profile {json.dumps(out)}", file=sys.stderr)
    return out


# --- throughput -----------------------------------------------------------------------------

class _Timer:
    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> _Timer:
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: Any) -> None:
        self.wall, self.cpu = time.perf_counter() - self._w, time.process_time() - self._c


def throughput(scratch: Path, rounds: int) -> dict[str, Any]:
    from edgeprune import _tf
    from edgeprune.data.load import load_labelled
    from edgeprune.data.stream import training_dataset
    from edgeprune.training import compile_for_training, seed_everything

    keras = _tf.keras()
    seed_everything(0)
    where = paths(scratch, N)
    models = {"dense": REPO / "examples" / "mnist" / "model.keras",
              "structured 50 %": paths(scratch, 10 * N)["out"] / "rpi4" / "model.keras"}
    loaded = {}
    for name, path in models.items():
        model = keras.models.load_model(path, compile=False)
        compile_for_training(model, 1e-3)
        loaded[name] = model
    shape = loaded["dense"].input_shape
    data = {s: load_labelled(where[s], "--data", shape) for s in SOURCES}
    kinds = {s: type(data[s].x).__name__ for s in SOURCES}
    for s in SOURCES:
        assert len(data[s]) == N, (s, len(data[s]))
    # The same images in the same order: batch 0 of every source is identical.
    first = {s: np.asarray(data[s].x[np.arange(64)]) for s in SOURCES}
    assert all(np.array_equal(first["folder"], first[s]) for s in SOURCES)

    def fit(model: Any, source: str, seed: int, steps: int | None = None) -> _Timer:
        ds, per_epoch = training_dataset(data[source].x, data[source].y, BATCH, seed=seed,
                                         epochs=1)
        with _Timer() as t:
            model.fit(ds, steps_per_epoch=steps or per_epoch, epochs=1, verbose=0)
        return t

    def pipeline(source: str, seed: int) -> _Timer:
        ds, _ = training_dataset(data[source].x, data[source].y, BATCH, seed=seed, epochs=1)
        with _Timer() as t:
            for _ in ds:
                pass
        return t

    for model in loaded.values():
        for s in SOURCES:
            fit(model, s, 99, WARMUP_STEPS)
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        order = SOURCES[r % 3:] + SOURCES[:r % 3]
        for s in order:
            t = pipeline(s, r)
            runs.append({"round": r, "what": "pipeline only", "source": s,
                         "wall_s": t.wall, "cpu_s": t.cpu})
        for name, model in loaded.items():
            for s in order:
                t = fit(model, s, r)
                runs.append({"round": r, "what": f"fit, {name}", "source": s,
                             "wall_s": t.wall, "cpu_s": t.cpu})
                print(f"throughput {json.dumps(runs[-1])}", file=sys.stderr)
    summary = {}
    for what in dict.fromkeys(r["what"] for r in runs):
        summary[what] = {s: {"images_per_s": median(N / r["wall_s"] for r in runs
                                                    if r["what"] == what and r["source"] == s),
                             "cpu_ms_per_image": median(1e3 * r["cpu_s"] / N for r in runs
                                                        if r["what"] == what
                                                        and r["source"] == s)}
                         for s in SOURCES}
    return {"rounds": rounds, "batch_size": BATCH, "images": N, "x_types": kinds,
            "runs": runs, "median": summary}


# --- md -------------------------------------------------------------------------------------

def _mib(kib: float) -> str:
    return f"{kib / 1024:,.0f} MiB"


def _rss_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["## Peak RSS of a build", "",
             "`python -m edgeprune build --target rpi4 --model examples/mnist/model.keras "
             "--data DATA --val examples/mnist/val.npz --calib calib_data/mnist/calib.npz "
             "--prune structured --sparsity 0.5 --epochs 1 --out OUT`, one build at a time. "
             "Peak RSS: `ru_maxrss` of `getrusage(RUSAGE_CHILDREN)` in a fresh wrapper process "
             "per build (the largest resident set of the build and of any process it ran). "
             "Stage times from the build's report.json.", "",
             "| --data | images | peak RSS | ratio to N | exit | wall | load stage | prune stage "
             "| fine-tune stage |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = next(b for b in rows if b["source"] == r["source"] and b["images"] == N)
        t = r.get("timings_s") or {}
        lines.append(
            f"| {r['source']} | {r['images']:,} | {_mib(r['peak_rss_kib'])} | "
            f"{r['peak_rss_kib'] / base['peak_rss_kib']:.3f}× | {r['exit_code']} | "
            f"{r['wall_s']:.0f} s | " + " | ".join(
                f"{t.get(k, float('nan')):.0f} s" for k in ("load", "prune", "finetune")) + " |")
    lines += ["", "Per stage: the build process's RSS sampled from /proc every 0.2 s, the "
              "largest sample while each stage ran (child processes not included; the last "
              "column is the sample at the stage's end).", ""]
    for source in dict.fromkeys(r["source"] for r in rows):
        small, large = (next(r for r in rows if r["source"] == source and r["images"] == n)
                        for n in SIZES)
        lines += [f"| stage ({source}) | N peak | 10·N peak | ratio | 10·N at the end |",
                  "|---|---|---|---|---|"]
        for stage, kib in large["stage_peak_rss_kib"].items():
            if stage == "start":
                continue
            lo = small["stage_peak_rss_kib"].get(stage)
            end = large["stage_end_rss_kib"].get(stage)
            lines.append(f"| {stage} | {_mib(lo) if lo else '—'} | {_mib(kib)} | "
                         f"{kib / lo:.2f}× | {_mib(end) if end else '—'} |" if lo else
                         f"| {stage} | — | {_mib(kib)} | — | — |")
        lines.append("")
    return lines


def _profile_lines(prof: dict[str, Any]) -> list[str]:
    lines = ["## Where the prune stage reads --data (profile phase)", "",
             f"`prune_structured` as stages/prune.py calls it, on the {prof['images']:,}-image "
             "folder (l1, 50 %, uniform), every read of the training samples counted by its "
             f"caller: {prof['seconds']:.0f} s; this process's RSS "
             f"{prof['before']['rss_mib']:,.0f} MiB before, peak RSS "
             f"{prof['before']['peak_rss_mib']:,.0f} → {prof['after']['peak_rss_mib']:,.0f} MiB.",
             "", "| caller | reads | samples read |", "|---|---|---|"]
    lines += [f"| `{w}` | {v['reads']:,} | {v['samples']:,} |"
              for w, v in prof["reads"].items()] or ["| (none) | 0 | 0 |"]
    return [*lines, ""]


def _throughput_lines(tp: dict[str, Any]) -> list[str]:
    lines = ["## Fine-tuning throughput, folder against .npz", "",
             f"One process, {tp['rounds']} interleaved rounds, one epoch of the {tp['images']:,} "
             f"N images per (model, source) per round, batch {tp['batch_size']}; median over "
             "rounds. `fit`: the fine-tune's pipeline (load_labelled → training_dataset → "
             "model.fit after compile_for_training). `pipeline only`: the same dataset iterated "
             "without training. Wall: images per wall-clock second of the call. CPU: images per "
             "second of process CPU time (every thread), less sensitive to the other jobs on "
             "the machine.", "",
             "| what | wall img/s: folder / .npz / compressed | .npz ÷ folder (wall) "
             "| CPU img/s: folder / .npz / compressed | .npz ÷ folder (CPU) |",
             "|---|---|---|---|---|"]
    for what, by in tp["median"].items():
        wall = [by[s]["images_per_s"] for s in SOURCES]
        cpu = [1e3 / by[s]["cpu_ms_per_image"] for s in SOURCES]
        lines.append(f"| {what} | " + " / ".join(f"{v:,.0f}" for v in wall)
                     + f" | {wall[1] / wall[0]:.2f}× | " + " / ".join(f"{v:,.0f}" for v in cpu)
                     + f" | {cpu[1] / cpu[0]:.2f}× |")
    pipe = tp["median"].get("pipeline only")
    fits = [w for w in tp["median"] if w != "pipeline only"]
    if pipe and fits:
        fastest = max(tp["median"][w]["folder"]["images_per_s"] for w in fits)
        extra = {w: tp["median"][w]["folder"]["cpu_ms_per_image"]
                 - tp["median"][w]["npz"]["cpu_ms_per_image"] for w in fits}
        lines += ["", f"The input pipeline alone reads the folder at "
                  f"{pipe['folder']['images_per_s']:,.0f} images/s "
                  f"({pipe['folder']['cpu_ms_per_image']:.2f} ms CPU an image, one reader: "
                  "data/stream.py maps with num_parallel_calls=1), "
                  f"{pipe['folder']['images_per_s'] / fastest:.1f}× the fastest fit's folder "
                  "rate, so on these models the reader does not starve training; the folder "
                  "costs fit " + ", ".join(f"{v:.2f} ms ({w})" for w, v in extra.items())
                  + " more CPU an image than the .npz, the decoding, on the same 2 cores."]
    lines += ["", "Per round (wall s, folder / .npz / compressed):", ""]
    for what in tp["median"]:
        per = []
        for r in range(tp["rounds"]):
            got = {x["source"]: x["wall_s"] for x in tp["runs"]
                   if x["what"] == what and x["round"] == r}
            per.append("/".join(f"{got[s]:.1f}" for s in SOURCES))
        lines.append(f"- {what}: " + "; ".join(per))
    lines += ["", f"Samples as edgeprune holds them: {tp['x_types']}.", ""]
    return lines


def render(res: dict[str, Any]) -> str:
    meta = res["meta"]
    lines = ["# Streaming data: peak RSS and fine-tuning throughput (issue 21)", "",
             f"Command: `{meta['command']}` at {meta['commit']} ({meta['cores']} cores, "
             "a VM shared with other jobs; Python " + meta["python"] + "). Method and data: the "
             "script's docstring. Data: examples/mnist/train.npz (N = 10,000 28×28 uint8 "
             "images) and, for 10·N = 100,000, those images plus 9 variants of each (seeded "
             f"shift of up to ±{SHIFT} px and Gaussian noise σ = {NOISE_SIGMA:g} grey levels); "
             "folders of PNGs with one sub-folder per class, and the same images in .npz "
             "files, in /tmp.", "",
             "Each phase's figures come from its last run: " + ", ".join(
                 f"{p} at {c}" for p, c in sorted(res.get("ran_at", {}).items())) + ".", ""]
    made = res.get("make", {})
    if made:
        lines += ["| images | PNG bytes | .npz | .npz compressed |", "|---|---|---|---|"]
        lines += [f"| {int(n):,} | {m['png_bytes']:,} | {m['npz_bytes']:,} | "
                  f"{m['npz_compressed_bytes']:,} |" for n, m in made.items()]
        lines.append("")
    lines += ["## Requirements", "", *res.get("verdict", []), ""]
    if res.get("rss"):
        lines += _rss_lines(res["rss"])
    if res.get("profile"):
        lines += _profile_lines(res["profile"])
    if res.get("throughput"):
        lines += _throughput_lines(res["throughput"])
    return "\n".join(lines).rstrip("\n") + "\n"


def verdict(res: dict[str, Any]) -> list[str]:
    out = []
    rows = [r for r in res.get("rss", []) if r["source"] == "folder"]
    if len(rows) == 2:
        small, large = sorted(rows, key=lambda r: r["images"])
        ratio = large["peak_rss_kib"] / small["peak_rss_kib"]
        met = "met" if ratio <= 1.25 else "NOT met"
        stages = large["stage_peak_rss_kib"]
        top = max(stages, key=stages.get)
        rest = max(v for k, v in stages.items() if k != top)
        small_rest = max(v for k, v in small["stage_peak_rss_kib"].items() if k != top)
        out.append(f"- Peak RSS grows by at most 25 % from N to 10·N: **{met}** "
                   f"({_mib(small['peak_rss_kib'])} → {_mib(large['peak_rss_kib'])}, "
                   f"{(ratio - 1) * 100:+.1f} %). The 10·N build peaks in its {top} stage; "
                   f"outside it the build process's largest sample is {_mib(rest)} "
                   f"({_mib(small_rest)} at N, {(rest / small_rest - 1) * 100:+.1f} %).")
    prof = res.get("profile")
    if prof and prof["reads"]:
        where, most = max(prof["reads"].items(), key=lambda kv: kv[1]["samples"])
        out.append(f"  In the prune stage, `{where}` reads {most['samples']:,} of the "
                   f"{prof['images']:,} training samples ({most['reads']:,} reads) "
                   "(profile below).")
    elif prof:
        out.append("  The prune stage (l1 criterion) reads none of the "
                   f"{prof['images']:,} training samples (profile below).")
    tp = res.get("throughput")
    if tp:
        for what, by in tp["median"].items():
            if not what.startswith("fit"):
                continue
            wall = by["npz"]["images_per_s"] / by["folder"]["images_per_s"]
            cpu = by["folder"]["cpu_ms_per_image"] / by["npz"]["cpu_ms_per_image"]
            out.append(f"- Folder within 1.5× of .npz ({what}): "
                       f"**{'met' if wall <= 1.5 else 'NOT met'}** (.npz {wall:.2f}× the "
                       f"folder's images per wall second; {cpu:.2f}× per CPU second).")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", default=",".join(PHASES))
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/edgeprune-data-memory"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rss-sources", default="folder",
                        help="comma-separated: folder, npz, npz-compressed")
    args = parser.parse_args(argv)
    phases = args.phase.split(",")
    res = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    args.scratch.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    if phases != ["md"]:
        res["meta"] = {"command": "nice -n 10 .venv/bin/python bench/data_memory.py "
                       + " ".join(argv if argv is not None else sys.argv[1:]),
                       "commit": commit, "cores": os.cpu_count(),
                       "python": platform.python_version()}
        # phases can be re-run alone: each keeps the commit it ran at
        res.setdefault("ran_at", {}).update({p: commit for p in phases if p != "md"})
    if "make" in phases:
        res["make"] = make(args.scratch)
    if "rss" in phases:
        res["rss"] = rss(args.scratch, args.rss_sources.split(","))
    if "profile" in phases:
        res["profile"] = profile(args.scratch)
    if "throughput" in phases:
        res["throughput"] = throughput(args.scratch, args.rounds)
    res["verdict"] = verdict(res)
    RESULTS.write_text(json.dumps(res, indent=1) + "\n")
    if "md" in phases:
        PAGE.write_text(render(res))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
