"""--prune auto on an example: budgets met, and auto against uniform pruning.

    nice -n 10 .venv/bin/python bench/auto_search.py [--example digits|mnist|fashion]
        [--phase all|PHASE[,PHASE…]] [--redo auto]

Examples (``EXAMPLES``): ``digits``, the bundled default (results bench/auto_search.json and
.md, profiles bench/<target>-…pct.toml); ``mnist``, examples/mnist (bench/auto_search_mnist.*,
bench/mnist-<target>-…pct.toml); ``fashion``, examples/fashion (likewise). Phases (results
accumulate in the example's JSON, so a phase can be re-run alone):

- profiles: convert the dense example to int8, estimate it for rpi4 and cortex-m7, and write
  bench/<target>-40pct.toml (``inherit`` the shipped profile) with a latency budget of 40 % of
  that estimate.
- budget: ``edgeprune build --prune auto`` (through ``pipeline.build``) on rpi4-40pct and
  cortex-m7-40pct: does it meet every budget, with accuracy within 1 point of float?
- compare: per target and level (``COMPARE``, % of the dense latency; levels that give an
  earlier level's uniform model are not built again): the smallest uniform ``--sparsity``
  (l1, the target's channel multiple) whose estimated latency L is at or below that level
  (bisection);
  ``--prune structured`` with it, and ``--prune auto`` with L as its latency budget
  (bench/<target>-u<P>pct.toml), so auto is never the slower one; same fine-tuning, the
  example's seeds. Accuracy is the emitted int8 .tflite's on the example's val.npz (the
  build's figure).
- rank: the search with every proposal short-fine-tuned (``screen=None``): how well the
  proxy (adaptive-BN loss per unit of cost removed, no training) ranks proposals against the
  same measure after the short fine-tune.
- md: write the example's .md from its JSON.

``--redo auto`` drops the stored ``--prune auto`` builds first (after a change to the search;
the uniform builds it is compared with stay); ``--redo uniform`` the uniform ones. A variant's
runs: ``--results PATH`` (a copy of the example's JSON), ``--target T`` (compare that target
only), ``--auto KEY=VALUE`` and ``--uniform KEY=VALUE`` (recipe overrides of those builds, e.g.
``--uniform criterion=bn``), ``--about TEXT``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
# Fine-tuning of every build here, auto and uniform alike: the recipe's (10 epochs at 1e-3,
# early stopping on the fine-tune stage's monitor split).
FT = {"epochs": 10}
SEARCH_MINUTES = 30.0  # a loaded shared machine: never let the limit decide the comparison
TARGETS = ("rpi4", "cortex-m7")  # budget runs at 40 % of the dense latency


@dataclasses.dataclass(frozen=True)
class Example:
    name: str  # examples/<name>, calib_data/<name>
    # Levels (% of the dense latency) where auto is compared with uniform pruning, per target.
    compare: dict[str, tuple[int, ...]]
    seeds: dict[str, tuple[int, ...]]
    provenance: dict[str, str]  # how each target's levels and seeds came about (in its table)
    about: str  # the md's description of the example and of its runs
    groups: str  # the md's key to the refinement table's channel groups

    @property
    def results(self) -> Path:
        return BENCH / ("auto_search.json" if self.name == "digits"
                        else f"auto_search_{self.name}.json")

    @property
    def prefix(self) -> str:  # of its bench profiles
        return "" if self.name == "digits" else f"{self.name}-"

    def inputs(self) -> dict[str, Path]:
        folder = REPO / "examples" / self.name
        return {"model": folder / "model.keras", "data": folder / "train.npz",
                "val": folder / "val.npz", "calib": REPO / "calib_data" / self.name / "calib.npz"}


EXAMPLES = {e.name: e for e in (
    Example(
        name="digits",
        compare={"rpi4": (70, 60, 50, 40, 30, 25), "cortex-m7": (60, 50, 40, 30, 70, 25)},
        # cortex-m7's seeds 3-5 were added after its first three, before their results, to
        # narrow its pooled interval (all of them are reported).
        seeds={"rpi4": (0, 1, 2), "cortex-m7": (0, 1, 2, 3, 4, 5)},
        provenance={
            "rpi4": "Levels fixed before the runs.",
            "cortex-m7": "Added after the rpi4 runs, because at 40 % the refinement's proxy loss "
                         "of auto's allocation was a third of uniform's (0.32 against 1.15; "
                         "rpi4: 1.70 against 1.75): MAC-bound costs differ more between groups. "
                         "The levels first fixed were 60/50/40/30; 70 and 25 (rpi4's other "
                         "levels) were added after the 60 % runs. Seeds 3-5 were added after "
                         "the runs of seeds 0-2, before their own results.",
        },
        about="Runs: budget and rpi4 compare `--redo auto --phase budget,compare` on d91f431; "
              "cortex-m7 compare `--phase compare` on a1df32b (seeds 0-2) and 63ec9ed (3-5; the "
              "same pruning, search and fine-tune code); rank: an earlier session's run (its "
              "code path unchanged since).",
        groups="0 stem+block1b, 1 block1a, 2 down2+block2_pw, 3 down3_pw, 4 block3_pw"),
    Example(
        name="mnist",
        compare={"cortex-m7": (60, 40, 25), "rpi4": (60, 40, 25)},
        seeds={"cortex-m7": (0, 1, 2), "rpi4": (0, 1, 2)},
        provenance={
            "cortex-m7": "Targets, levels and seeds fixed before any mnist comparison run "
                         "(cortex-m7 first: digits showed the larger spread of per-channel "
                         "costs there).",
            "rpi4": "Fixed with cortex-m7's, before any mnist comparison run; run after it.",
        },
        about="Runs: `--phase profiles,budget` on bb11502, `--phase compare,md` on 2c96c3a "
              "(edgeprune's code is the same in both, and as in the digits runs' last, "
              "63ec9ed); rank: not run on this example.",
        groups="0 conv1, 1 conv2, 2 conv3, 3 conv4, 4 conv5"),
    Example(
        name="fashion",
        compare={"cortex-m7": (50,), "rpi4": (50,)},
        seeds={"cortex-m7": (0, 1, 2), "rpi4": (0, 1, 2)},
        provenance={t: "Pre-registered in bench/auto_search_fashion_plan.md (targets, level, "
                       "seeds and order fixed before any fashion comparison run)."
                    for t in ("cortex-m7", "rpi4")},
        about="Plan: bench/auto_search_fashion_plan.md.",
        groups="0 stem+b1_project, 1 b1_expand, 2 b2_expand, 3 b2_project+b3_project, "
               "4 b3_expand, 5 b4_expand, 6 b4_project+b5_project, 7 b5_expand, 8 b6_expand, "
               "9 b6_project+b7_project, 10 b7_expand, 11 head"),
)}
EX = EXAMPLES["digits"]  # main() sets the one chosen
RESULTS: Path = EX.results  # main() sets these too (--results, --about)
ABOUT: str | None = None
ONLY: str | None = None  # --target
# Recipe overrides of a variant's builds (--auto, --uniform), added to every compare build.
EXTRA: dict[str, dict[str, Any]] = {"auto": {}, "uniform": {}}
PHASES = ("profiles", "budget", "compare", "rank", "md")
log = logging.getLogger("bench")


def _load() -> dict[str, Any]:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def _save(results: dict[str, Any]) -> None:
    RESULTS.write_text(json.dumps(results, indent=1, default=float) + "\n")


def _example() -> tuple[Any, dict[str, Path]]:
    from edgeprune import model_io

    ex = EX.inputs()
    return model_io.load_model(ex["model"]), ex


def _profile_path(target: str, pct: int | str) -> Path:
    return BENCH / f"{EX.prefix}{target}-{pct}pct.toml"


def _write_profile(path: Path, target: str, budget: float, why: str) -> None:
    path.write_text(f"# Written by bench/auto_search.py: {why}.\n"
                    f'inherit = "{target}"\nname = "{path.stem}"\n'
                    f'description = "{target}, {why} (bench)"\n\n'
                    f"[budgets]\nlatency_ms = {budget}\n")


def phase_profiles(results: dict[str, Any]) -> None:
    from edgeprune.converter import to_tflite
    from edgeprune.search.anchor import estimate_costs
    from edgeprune.targets import load_target

    model, ex = _example()
    calib = np.load(ex["calib"])["x"]
    dense = to_tflite(model, "int8", calib[:200], load_target("rpi4"))
    results["dense"] = {}
    for target in TARGETS:
        latency = estimate_costs(dense, load_target(target)).latency_ms
        results["dense"][target] = {"latency_ms": latency, "tflite_bytes": len(dense)}
        budget = math.floor(latency * 0.4 * 1e4) / 1e4  # rounded down: never looser
        _write_profile(_profile_path(target, 40), target, budget,
                       f"40 % of the dense int8 example's estimated latency ({latency:.4f} ms)")
        log.info("%s: dense %.4f ms -> 40 %% budget %.4f ms", target, latency, budget)


def _build(profile: Path, **overrides: Any) -> dict[str, Any]:
    """One build of the example; the search's report is captured from the prune stage (the
    pipeline adds it to report.json as "search" once it forwards ``Pruned.report``)."""
    from edgeprune.drivers.pipeline import BuildRequest, build
    from edgeprune.stages import prune

    captured: dict[str, Any] = {}
    auto = prune.PRUNERS["auto"]

    def capture(*args: Any) -> Any:
        pruned = auto(*args)
        captured["search"] = pruned.search
        return pruned

    prune.PRUNERS["auto"] = capture
    tag = "-".join([profile.stem, *(f"{k}{v}" for k, v in sorted(overrides.items()))])
    start = time.monotonic()
    try:
        ex = EX.inputs()
        request = BuildRequest(model=ex["model"], data=ex["data"], val=ex["val"],
                               calib=ex["calib"], out=REPO / "build" / "bench-auto" / tag,
                               overrides=overrides)
        outcome = build(request, str(profile))
    finally:
        prune.PRUNERS["auto"] = auto
    rep = outcome.report
    latency = next(c for c in rep["checks"] if c["name"] == "latency")
    return {
        "target": profile.stem, "overrides": overrides, "exit_code": outcome.exit_code,
        "passed": rep["passed"], "checks": {c["name"]: {k: c[k] for k in (
            "value", "budget", "passed", "method")} for c in rep["checks"]},
        "accuracy": rep["result"]["accuracy"], "baseline_accuracy": rep["baseline"]["accuracy"],
        "latency_ms": latency["value"], "tflite_bytes": rep["result"]["tflite_bytes"],
        "params": rep["result"]["params"], "macs": rep["result"]["macs"],
        "layers": {r["name"]: r["channels_after"] for r in rep["layers"]},
        "seconds": round(time.monotonic() - start, 1), "timings_s": rep["timings_s"],
        "search": rep.get("search") or captured.get("search"), "notes": rep.get("notes", []),
    }


def phase_budget(results: dict[str, Any]) -> None:
    for target in TARGETS:
        results[f"auto/{target}/40"] = _build(_profile_path(target, 40), prune="auto",
                                              search_minutes=SEARCH_MINUTES, **FT)
        _save(results)


def _uniform_latency(model: Any, cost_model: Any, sparsity: float, multiple: int) -> float:
    from edgeprune.pruning import layer_stats, prune_structured

    pruned = prune_structured(model, sparsity=sparsity, channel_multiple=multiple).model
    return cost_model.predict({r["name"]: r["out_channels"] for r in layer_stats(pruned)}
                              ).latency_ms


@functools.cache
def _pricer(target: str) -> tuple[Any, Any, int]:
    """The example, its cost model for ``target`` (anchored on the dense int8 model) and the
    target's channel multiple: built once per target, shared by every level's bisection."""
    from edgeprune.converter import to_tflite
    from edgeprune.pruning import layer_stats
    from edgeprune.search.anchor import AnchoredCostModel
    from edgeprune.targets import load_target

    model, ex = _example()
    profile = load_target(target)
    dense = to_tflite(model, "int8", np.load(ex["calib"])["x"][:50], profile)
    cost_model = AnchoredCostModel(dense, profile, {r["name"]: r["out_channels"]
                                                    for r in layer_stats(model)})
    return model, cost_model, profile.hardware.channel_multiple


def bisect_sparsity(target: str, latency: float) -> tuple[float, float]:
    """The smallest uniform sparsity whose estimated latency is ≤ ``latency`` (±0.002), and
    that latency. Uniform pruning's latency falls in steps (every group crosses a multiple of
    the channel multiple at once), so it is usually below ``latency``."""
    model, cost_model, multiple = _pricer(target)
    lo, hi = 0.0, 0.95
    for _ in range(9):
        mid = (lo + hi) / 2
        if _uniform_latency(model, cost_model, mid, multiple) <= latency:
            hi = mid
        else:
            lo = mid
    return round(hi, 4), _uniform_latency(model, cost_model, hi, multiple)


def _short_epochs(search: dict[str, Any] | None) -> float:
    """Epochs' worth of training auto's kept path received from its short fine-tunes, in
    epochs of the fine-tune stage's training split."""
    from edgeprune import data

    if not search:
        return 0.0
    fit = len(data.fit_split(data.load_labelled(EX.inputs()["data"], "--data"), 0)[0])
    refine = search.get("refine") or {}
    steps = refine.get("final_steps", 0)  # the final round (absent in earlier runs)
    if refine.get("chosen", "greedy") == "greedy":
        steps += (len(search["trajectory"]) - 1) * search["config"]["short_steps"]
    return round(steps * 32 / fit, 1)


def phase_compare(results: dict[str, Any]) -> None:
    """Uniform at P % of the dense latency (bisection), then auto with uniform's estimated
    latency as its budget: auto is never slower than the uniform model it is compared to."""
    for target, levels in EX.compare.items():
        if ONLY and target != ONLY:
            continue
        dense = results["dense"][target]["latency_ms"]
        seen: set[float] = set()
        for pct in levels:
            sparsity, latency = bisect_sparsity(target, dense * pct / 100)
            level = f"{target}/{pct}"
            same = results.get(f"level/{level}", {}).get("sparsity") == sparsity
            results[f"level/{level}"] = {"sparsity": sparsity, "latency_ms": latency}
            if sparsity in seen:  # uniform latency falls in steps: an experiment already run
                continue
            seen.add(sparsity)
            profile = _profile_path(target, f"u{pct}")
            _write_profile(profile, target, round(latency, 4),
                           f"the estimated latency of uniform --sparsity {sparsity} "
                           f"(the smallest at or below {pct} % of the dense model's)")
            for seed in EX.seeds[target]:
                # A re-run (e.g. with levels added) keeps the builds it has at this level.
                if not (same and f"uniform/{level}/{seed}" in results):
                    results[f"uniform/{level}/{seed}"] = _build(
                        profile, prune="structured", sparsity=sparsity, seed=seed, **FT,
                        **EXTRA["uniform"])
                    _save(results)
                if not (same and f"auto/{level}/{seed}" in results):
                    results[f"auto/{level}/{seed}"] = _build(
                        profile, prune="auto", seed=seed, search_minutes=SEARCH_MINUTES, **FT,
                        **EXTRA["auto"])
                    _save(results)


def phase_rank(results: dict[str, Any]) -> None:
    from edgeprune import data
    from edgeprune.search.loop import SearchConfig, search
    from edgeprune.targets import load_target

    model, ex = _example()
    train = data.load_labelled(ex["data"], "--data")
    calib = np.load(ex["calib"])["x"][:200]
    results["rank"] = {}
    for target in TARGETS:
        start = time.monotonic()
        res = search(model, load_target(str(_profile_path(target, 40))), train, calib=calib,
                     config=SearchConfig(screen=None, minutes=SEARCH_MINUTES * 2))
        results["rank"][target] = {"search": res.report,
                                   "seconds": round(time.monotonic() - start, 1),
                                   **rank_agreement(res.report)}
        _save(results)
    steps = [r for t in results["rank"].values() for r in t["steps"]]
    valid = [r["spearman"] for r in steps if not math.isnan(r["spearman"])]
    results["rank_pooled"] = {
        "steps": len(steps), "mean_spearman": float(np.mean(valid)) if valid else None,
        "top1_agreement": sum(r["top1"] for r in steps) / max(1, len(steps)),
        "top2_agreement": sum(r["best_in_proxy_top2"] for r in steps) / max(1, len(steps))}


def _spearman(a: list[float], b: list[float]) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def rank_agreement(search: dict[str, Any]) -> dict[str, Any]:
    """Per step: Spearman between the proxy's ranking (adaptive-BN loss added per unit of cost
    removed, lower is better) and the short fine-tune's (the same, after it); does the proxy's
    top pick (top 2) hold the fine-tune's best?"""
    rows = []
    for step in search["trajectory"][1:]:
        props = [p for p in step["proposals"] if p["accuracy"] is not None]
        if len(props) < 2:
            continue
        proxy = [p["proxy_damage"] for p in props]
        tuned = [p["damage"] for p in props]
        tuned_rank = sorted(range(len(props)), key=lambda i: tuned[i])
        proxy_rank = sorted(range(len(props)), key=lambda i: proxy[i])
        order = [tuned_rank.index(i) for i in range(len(props))]
        rows.append({"step": step["step"], "proposals": len(props),
                     "spearman": _spearman(proxy, order),
                     "top1": proxy_rank[0] == tuned_rank[0],
                     "best_in_proxy_top2": tuned_rank[0] in proxy_rank[:2]})
    valid = [r["spearman"] for r in rows if not math.isnan(r["spearman"])]
    return {"steps": rows,
            "mean_spearman": float(np.mean(valid)) if valid else None,
            "top1_agreement": sum(r["top1"] for r in rows) / len(rows) if rows else None,
            "top2_agreement": (sum(r["best_in_proxy_top2"] for r in rows) / len(rows)
                               if rows else None)}


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.2f} %"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(str(c) for c in row) + " |" for row in rows], ""]


def _budget_rows(results: dict[str, Any], prefix: str) -> list[list[Any]]:
    rows = []
    for target in TARGETS:
        r = results.get(f"{prefix}/{target}/40")
        if not r:
            continue
        c, search = r["checks"], r["search"] or {}
        rows.append([
            target, f"{results['dense'][target]['latency_ms']:.4f}",
            f"{c['latency']['budget']:.4f}", f"{c['latency']['value']:.4f}",
            f"{c['ram']['value']:,.0f}", f"{c['flash']['value']:,.0f}",
            _pct(r["baseline_accuracy"]), _pct(r["accuracy"]),
            f"{c['accuracy_drop']['value']:.2f}", "yes" if r["passed"] else "**no**",
            r["exit_code"], len(search.get("trajectory", [])) - 1,
            f"{search.get('seconds', 0):.0f}", f"{r['seconds']:.0f}"])
    return rows


def _float_accuracy(results: dict[str, Any]) -> float | None:
    return next((r["baseline_accuracy"] for k, r in results.items()
                 if isinstance(r, dict) and "baseline_accuracy" in r), None)


def _compare_section(results: dict[str, Any], target: str, levels: tuple[int, ...]
                     ) -> list[str]:
    """One target's auto-against-uniform table: per level the seeds' accuracies, their means and
    the per-seed comparison; then every distinct level's seed pairs pooled."""
    rows, wins, seen, same, diffs = [], 0, {}, [], []
    for pct in sorted(levels, reverse=True):
        level = results.get(f"level/{target}/{pct}")
        if not level:
            continue
        if level["sparsity"] in seen:  # uniform latency falls in steps: the same experiment
            same.append(f"{pct} % gives the same uniform model (sparsity {level['sparsity']}) "
                        f"as {seen[level['sparsity']]} % and is not counted again")
            continue
        pairs = [(results.get(f"auto/{target}/{pct}/{s}"),
                  results.get(f"uniform/{target}/{pct}/{s}")) for s in EX.seeds[target]]
        pairs = [(a, u) for a, u in pairs if a and u]
        if not pairs:
            continue
        seen[level["sparsity"]] = pct
        diffs += [(a["accuracy"] - u["accuracy"]) * 100 for a, u in pairs]
        auto_acc = float(np.mean([a["accuracy"] for a, _ in pairs]))
        uni_acc = float(np.mean([u["accuracy"] for _, u in pairs]))
        wins += auto_acc > uni_acc
        rows.append([
            f"{pct} %", f"{level['sparsity']:.3f}", f"{level['latency_ms']:.4f}",
            " / ".join(f"{a['latency_ms']:.4f}" for a, _ in pairs),
            " / ".join(_pct(u["accuracy"]) for _, u in pairs), _pct(uni_acc),
            " / ".join(_pct(a["accuracy"]) for a, _ in pairs), _pct(auto_acc),
            f"{(auto_acc - uni_acc) * 100:+.2f}",
            "/".join(str(sum(cmp(a["accuracy"], u["accuracy"]) for a, u in pairs))
                     for cmp in (float.__gt__, float.__eq__, float.__lt__)),
            " / ".join(f"{_short_epochs(a['search']):g}" for a, _ in pairs)])
    if not rows:
        return []
    multiple = _channel_multiple(target)
    lines = [f"## auto against uniform structured pruning ({target}, same estimated latency)",
             "",
             f"Per level: the smallest uniform `--sparsity` (l1, channel multiple {multiple}) "
             "whose estimated latency is at or below P % of the dense model's (bisection); then "
             "`--prune auto` with that uniform model's estimated latency as its latency "
             f"budget (bench/{EX.prefix}{target}-uP.toml), so auto is never the slower of the "
             f"two. Same fine-tuning for both; seeds {', '.join(map(str, EX.seeds[target]))} "
             "(values listed per seed; a seed's auto and uniform builds are compared in the "
             "ahead/tied/behind column). auto's search also trains the model it keeps "
             "(last column, in epochs of the fine-tune split: the greedy path's short "
             "fine-tunes plus the final round's two epochs when the greedy model is kept, the "
             "final round's alone when a one-shot cut is; in runs before the final round, the "
             "path's steps, which a refined cut also received before it could replace the "
             "greedy model). Uniform builds get no such extra training; both fine-tunes stop "
             "early on the monitor split. "
             f"{EX.provenance[target]}", ""]
    lines += _table(["level", "uniform sparsity", "uniform ms", "auto ms", "uniform acc",
                     "uniform mean", "auto acc", "auto mean", "auto − uniform (pt)",
                     "seeds auto ahead/tied/behind", "auto short-FT epochs"], rows)
    lines += [f"auto is more accurate at {wins} of {len(rows)} levels"
              + (f" ({'; '.join(same)})" if same else "") + ". " + _paired(diffs), ""]
    return lines


def _paired(diffs: list[float]) -> str:
    """All seed pairs of the distinct levels pooled: mean difference, a 95 % t-interval and
    the sign counts (the pairs share a seed, so each difference is one paired observation)."""
    from scipy import stats

    d = np.asarray(diffs)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return (f"Pooled over the {len(d)} seed pairs: auto − uniform {d.mean():+.2f} pt "
            f"(95 % t-interval {d.mean() - half:+.2f} … {d.mean() + half:+.2f}); "
            f"ahead {int((d > 0).sum())}, tied {int((d == 0).sum())}, "
            f"behind {int((d < 0).sum())}.")


def _channel_multiple(target: str) -> int:
    from edgeprune.targets import load_target

    return load_target(target).hardware.channel_multiple


def write_md(results: dict[str, Any], path: Path) -> None:
    from edgeprune import data

    ft = f"`--epochs {FT['epochs']}` (the recipe's learning rate, 1e-3)"
    val = EX.inputs()["val"]
    samples = len(data.load_labelled(val, "--val").y)
    option = "" if EX.name == "digits" else f" --example {EX.name}"
    lines = [f"# --prune auto on the {EX.name} example", "",
             f"Command: `nice -n 10 .venv/bin/python bench/auto_search.py{option}` (phases: "
             f"profiles, budget, compare, rank, md; raw results in bench/{RESULTS.name}). On "
             "a shared 2-core machine (load 2-6 from other jobs): times are wall-clock under that "
             f"load. {ABOUT or EX.about}",
             "",
             f"Every build: examples/{EX.name} (float val accuracy "
             f"{_pct(_float_accuracy(results))}), int8, {ft} "
             f"(the same for auto and uniform), `--search-minutes {SEARCH_MINUTES:g}`. Accuracy "
             f"is the emitted int8 .tflite's on {val.relative_to(REPO)} ({samples:,} samples: "
             f"one sample is {100 / samples:.2g} points); latency, RAM and flash are the "
             "target's estimates of that .tflite, as the check stage reports them.", ""]
    header = ["target", "dense ms", "budget ms", "auto ms", "RAM B", "flash B", "float acc",
              "auto acc", "drop (pt)", "every budget met", "exit", "search steps",
              "search s", "build s"]
    budget_rows = _budget_rows(results, "auto")
    if budget_rows:  # results files of compare runs alone have none
        lines += ["## Budgets at 40 % of the dense model's latency", "",
                  f"Profiles bench/{_profile_path('rpi4', 40).name} and "
                  f"bench/{_profile_path('cortex-m7', 40).name} (written by the script; RAM, "
                  "flash and accuracy budgets inherited: 1.0 point accuracy drop).", ""]
        lines += _table(header, budget_rows)
    for target, levels in EX.compare.items():
        lines += _compare_section(results, target, levels)
    refined = [(k, r["search"]["refine"]) for k, r in results.items()
               if k.startswith("auto/") and (r.get("search") or {}).get("refine")]
    if refined:
        def kept(alloc: dict[str, int]) -> str:
            return "/".join(str(v) for _, v in sorted(alloc.items(), key=lambda e: int(e[0])))

        lines += ["## The refinement at the budget, per auto build", "",
                  f"Channels kept per group ({EX.groups}): where the greedy path ended, the "
                  "uniform allocation at the same budget, what the climb reached; loss is the "
                  "proxy's (one-shot cut from the input model, adaptive BN, scoring split). "
                  "Final round (builds since it exists): each finalist's scoring-split "
                  "accuracy / loss after the same two-epoch fine-tune; the kept one is marked "
                  "*.", ""]

        def final(ref: dict[str, Any]) -> str:
            return "; ".join(f"{f['from']}{'*' if f['from'] == ref['chosen'] else ''} "
                             f"{f['accuracy']:.4f} / {f['loss']:.4f}"
                             for f in ref.get("finalists", []) if f["loss"] is not None) or "—"

        lines += _table(
            ["build", "greedy (loss)", "uniform (loss)", "climbed from", "moves",
             "climbed to (loss)", "allocations scored", "final round", "outcome", "s"],
            [[k, *[next((f"{kept(st['kept'])} ({st['loss']:.3f})" for st in ref["starts"]
                          if st["from"] == start), "—") for start in ("greedy", "uniform")],
              ref["climbed_from"], len(ref["moves"]),
              f"{kept(ref.get('climbed', ref['kept']))} ({ref['loss']:.3f})",
              ref["allocations_scored"], final(ref), ref["outcome"], f"{ref['seconds']:.0f}"]
             for k, ref in refined])
    for target, rank in (results.get("rank") or {}).items():
        lines += [f"## Proxy against short fine-tune: rank agreement ({target}-40pct)", "",
                  "The search with every proposal short-fine-tuned (`screen=None`). Both rank "
                  "proposals by loss added on the search's scoring split per unit of cost "
                  "removed; the proxy measures the loss after re-estimating batch-norm "
                  "statistics with no training, the short fine-tune after it. "
                  f"Search time {rank['seconds']:.0f} s.", ""]
        lines += _table(["step", "proposals", "Spearman ρ", "proxy top-1 = best",
                         "best in proxy top-2"],
                        [[r["step"], r["proposals"], f"{r['spearman']:.2f}", r["top1"],
                          r["best_in_proxy_top2"]] for r in rank["steps"]])
    pooled = results.get("rank_pooled")
    if pooled:
        lines += [f"Pooled over {pooled['steps']} steps: mean ρ {pooled['mean_spearman']:.2f}; "
                  f"the proxy's top pick is the fine-tune's best in "
                  f"{pooled['top1_agreement']:.0%} of steps, within its top 2 in "
                  f"{pooled['top2_agreement']:.0%}.", ""]
    r = results.get("auto/rpi4/40")
    if r and r.get("search"):
        lines += ["## Trajectory of the rpi4-40pct search", ""]
        lines += _table(
            ["step", "group (layers)", "channels", "predicted ms", "estimated ms", "flash B",
             "accuracy (scoring split)", "s"],
            [[s["step"], "input" if s["group"] is None else
              f"{s['group']} ({', '.join(s['layers'])})",
              "—" if s["channels_before"] is None else
              f"{s['channels_before']} → {s['channels_after']}",
              f"{s['predicted']['latency_ms']:.4f}",
              "—" if not s["estimated"] else f"{s['estimated']['latency_ms']:.4f}",
              f"{(s['estimated'] or s['predicted'])['flash_bytes']:,}", f"{s['accuracy']:.4f}",
              f"{s['seconds']:.0f}"] for s in r["search"]["trajectory"]])
    path.write_text("\n".join(lines) + "\n")


def _override(item: str) -> tuple[str, Any]:
    key, _, value = item.partition("=")
    return key, json.loads(value) if value[:1].isdigit() or value[:1] == "-" else value


def _numbers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers like 0,1,2") from None


def _levels(text: str) -> tuple[int, ...]:
    levels = _numbers(text)
    if not all(0 < p < 100 for p in levels):
        raise argparse.ArgumentTypeError(f"{text!r}: expected percentages like 15,10,6")
    return levels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", default="all",
                        help="all, or a comma-separated list of: " + ", ".join(PHASES))
    parser.add_argument("--redo", choices=["auto", "uniform"], action="append", default=[],
                        help="drop the stored builds of that kind (repeatable)")
    parser.add_argument("--target", choices=TARGETS, help="compare this target only")
    for kind in EXTRA:
        parser.add_argument(f"--{kind}", action="append", default=[], metavar="KEY=VALUE",
                            help=f"recipe override of the {kind} compare builds (repeatable)")
    parser.add_argument("--example", choices=sorted(EXAMPLES), default="digits")
    parser.add_argument("--results", type=Path,
                        help="results JSON (the md is written next to it); default: the "
                             "example's own, e.g. for runs of a variant of the search")
    parser.add_argument("--about", help="the md's account of the runs, instead of the example's")
    parser.add_argument("--levels", type=_levels, metavar="P,P,...",
                        help="compare at these %% of the dense latency instead of the example's "
                             "levels (needs --target and --provenance)")
    parser.add_argument("--seeds", type=_numbers, metavar="S,S,...",
                        help="with --levels: these seeds instead of the example's")
    parser.add_argument("--provenance", help="how the --levels and seeds came about (its table)")
    args = parser.parse_args(argv)
    if args.levels and not (args.target and args.provenance):
        parser.error("--levels needs --target and --provenance")
    if args.seeds and not args.levels:
        parser.error("--seeds needs --levels")
    global EX, RESULTS, ABOUT, ONLY
    EX = EXAMPLES[args.example]
    if args.levels:
        EX = dataclasses.replace(
            EX, compare={args.target: args.levels}, provenance={args.target: args.provenance},
            seeds={args.target: args.seeds or EX.seeds[args.target]})
    RESULTS, ABOUT, ONLY = args.results or EX.results, args.about, args.target
    for kind in EXTRA:
        EXTRA[kind] = dict(_override(item) for item in getattr(args, kind))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    for noisy in ("tensorflow", "absl", "h5py"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    results = _load()
    results = {k: v for k, v in results.items() if k.split("/")[0] not in args.redo}
    phases = list(PHASES) if args.phase == "all" else args.phase.split(",")
    if not set(phases) <= set(PHASES):
        parser.error(f"--phase {args.phase}: phases are {', '.join(PHASES)}")
    for name in phases:
        if name == "md":
            write_md(results, RESULTS.with_suffix(".md"))
            continue
        log.info("phase %s", name)
        globals()[f"phase_{name}"](results)
        _save(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
