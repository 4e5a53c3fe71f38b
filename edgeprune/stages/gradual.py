"""Gradual channel pruning (``schedule = "gradual"``): the channel plan reached in ``steps`` cuts.

The prune stage decides how many channels each group keeps (the one-shot plan: ``sparsity``
and ``allocation``, or ``--prune auto``'s search); this stage then starts again from the input
model and cuts towards that plan on the cubic schedule of Zhu & Gupta 2017 (pruning/schedule.py),
each cut choosing channels by the criterion's scores on the model as it is then, re-estimating
batch-norm statistics (adaptive BN) and fine-tuning before the next. The last cut keeps exactly
the plan's counts, so a gradual build ships the same architecture as the one-shot build.

The steps share the recipe's ``epochs`` (the one-shot fine-tune's budget, so the two compare
fairly): an equal share each, the rest on the last. Early stopping is per step: it ends that
step's fine-tune (a fresh cut raises the monitor loss, so a schedule-wide patience would stop
at the first cut), and the epochs it saved go to the steps after it. With ``hybrid``, TF-MOT's
weight pruning runs during the last step's fine-tune, on the final architecture.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from edgeprune.data import Inputs
from edgeprune.recipe import Recipe
from edgeprune.stages import finetune, prune
from edgeprune.stages.prune import Pruned
from edgeprune.targets import TargetProfile

log = logging.getLogger(__name__)

# For the stage's cache key (it chains from the prune stage's, whose plan it reaches): the
# schedule, what each cut and the hybrid weight pruning read, and the fine-tune's options.
READS = ("schedule", "steps", "prune", "criterion", "keep", "weight_sparsity", *finetune.READS)


def key_parts(recipe: Recipe, target: TargetProfile) -> dict[str, Any]:
    return {"recipe": recipe.pick(READS)}


@dataclasses.dataclass(frozen=True)
class Group:
    channels: int  # before pruning
    prunable: int
    kept: int  # after the last cut: the plan's


def plan(pruned: Pruned) -> dict[str, Group]:
    """Each channel group (by its first layer's name, which surgery keeps) with the count the
    prune stage's model keeps: its group rows (``auto``: the searched model's widths)."""
    return {g["layers"][0]: Group(g["channels"], g["prunable"], g["kept"])
            for g in pruned.groups}


def run(model: Any, pruned: Pruned, inputs: Inputs, recipe: Recipe, target: TargetProfile,
        log_dir: Path | None) -> tuple[Any, dict[str, Any]]:
    """The model after the last cut and its fine-tune (TF-MOT's wrappers stripped) and the
    fine-tune's summary for report.json, with the schedule under ``"schedule"``
    (``split`` separates them). ``model`` is the input model (also the ``--distill``
    teacher); ``pruned`` the prune stage's output, whose model only sets the plan."""
    from edgeprune.pruning.schedule import cubic_fractions, kept_per_step, step_epochs

    groups = plan(pruned)
    if pruned.skip_finetune or all(g.kept == g.channels for g in groups.values()):
        trained, summary = finetune.run(pruned, inputs, recipe, log_dir, model)
        why = ("gradual schedule: the plan removes no channel (after rounding to the target's "
               "channel multiple, or --prune auto took no step), so nothing was cut in steps: "
               "the one-shot build's fine-tune ran")
        return pruned.strip(trained), {**summary, "schedule": {
            "schedule": "gradual", "steps": 0, "rows": [], "notes": [why]}}
    k = recipe.cuts()
    fractions = cubic_fractions(k)
    targets = kept_per_step({n: g.channels for n, g in groups.items()},
                            {n: g.kept for n, g in groups.items()}, k)
    current, remaining, rows, notes = model, recipe.epochs, [], []
    for t, kept in enumerate(targets, 1):
        current = _cut(current, kept, recipe, target, inputs)
        epochs = step_epochs(remaining, k - t + 1)
        # The step's fine-tune: the recipe's, over this step's share of the epochs.
        step_recipe = dataclasses.replace(recipe, epochs=epochs, schedule="oneshot", steps=0)
        step = Pruned(model=current, recalibrate_bn=True)
        if t == k and recipe.prune == "hybrid":  # weight zeros on the final architecture
            step = prune.magnitude_pruned(current, recipe.weight_sparsity, step_recipe, inputs)
            notes.extend(step.notes)
        ratio = _ratio(groups, kept)
        log.info("gradual step %d/%d: %.0f %% of the final cut (%.1f %% of prunable channels "
                 "removed), fine-tuning up to %d epoch(s)", t, k, 100 * fractions[t - 1],
                 100 * ratio, epochs)
        trained, summary = finetune.run(step, inputs, step_recipe,
                                        None if log_dir is None else log_dir / f"step-{t}",
                                        model)
        current = step.strip(trained)
        remaining -= summary["epochs_run"]
        rows.append({
            "step": t, "fraction_of_final": round(fractions[t - 1], 4), "ratio": round(ratio, 4),
            "channels_kept": sum(kept.values()), "kept": kept, "epochs": epochs,
            "epochs_run": summary["epochs_run"], "stopped": summary.get("stopped"),
            "monitor_accuracy": summary.get("monitor_accuracy"),
            "monitor_loss": summary.get("monitor_loss")})
    schedule = {
        "schedule": "gradual", "steps": k, "curve": "cubic: 1 - (1 - t/steps)^3 of each "
        "group's final removal (Zhu & Gupta 2017)", "epochs": recipe.epochs,
        "epochs_run": recipe.epochs - remaining,
        "after_each_cut": "batch-norm statistics re-estimated (adaptive BN), then fine-tuned",
        "epoch_split": "equal shares of the epochs left, the rest on the last step; early "
                       "stopping ends a step, its unused epochs go to the later steps",
        "plan_from": "--prune auto's search" if recipe.prune == "auto" else "the one-shot plan",
        "rows": rows, "notes": notes}
    return current, {**summary, "epochs": recipe.epochs, "epochs_run": schedule["epochs_run"],
                     "schedule": schedule}


def _ratio(groups: dict[str, Group], kept: dict[str, int]) -> float:
    """The share of prunable channels removed."""
    prunable = sum(g.prunable for g in groups.values())
    removed = sum(g.channels - kept[n] for n, g in groups.items())
    return removed / prunable if prunable else 0.0


def _cut(model: Any, kept: dict[str, int], recipe: Recipe, target: TargetProfile,
         inputs: Inputs) -> Any:
    """``model`` cut to ``kept`` channels per group (by the criterion's scores on ``model``),
    batch-norm statistics re-estimated; unchanged when no group shrinks."""
    from edgeprune.pruning.graph import build_graph

    ratios = {}
    for g in build_graph(model, keep=recipe.keep).prunable_groups():
        want = kept.get(g.layers[0], g.size)
        if want < g.size:
            ratios[g.id] = (g.size - want) / g.n_prunable
    if not ratios:
        return model
    # channel_multiple 1: the counts are the plan's (already rounded) or in between
    result = prune.cut_channels(model, recipe, target, inputs, ratios, channel_multiple=1)
    got = {g["layers"][0]: g["kept"] for g in result.groups}
    wrong = {n: (got.get(n), k) for n, k in kept.items() if got.get(n, k) != k}
    if wrong:
        raise RuntimeError(f"gradual pruning: cut to {wrong} (got, wanted) channels; this is a "
                           "bug in edgeprune, use --schedule oneshot meanwhile")
    return result.model


def split(trained: dict[str, Any] | None) -> tuple[dict[str, Any] | None,
                                                  dict[str, Any] | None]:
    """The fine-tune summary and the schedule (report.json ``finetune`` and ``schedule``)."""
    if not trained or "schedule" not in trained:
        return trained, None
    return {k: v for k, v in trained.items() if k != "schedule"}, trained["schedule"]


def notes(schedule: dict[str, Any] | None) -> list[str]:
    """For report.json ``notes``."""
    if schedule is None or not schedule["rows"]:
        return [] if schedule is None else schedule["notes"]
    rows = schedule["rows"]

    def joined(key: str, fmt: str) -> str:
        return "/".join(format(r[key], fmt) for r in rows)

    return [
        f"gradual schedule: the prune stage's cut set each group's final width "
        f"({schedule['plan_from']}); the input model was cut towards it in {schedule['steps']} "
        f"steps (cubic: {joined('fraction_of_final', '.0%')} of each group's removal, "
        f"{joined('ratio', '.1%')} of prunable channels), each followed by adaptive BN and "
        f"{joined('epochs_run', 'd')} fine-tuning epoch(s); see report.json schedule",
        *schedule["notes"]]
