"""Budget-driven channel pruning (``--prune auto``), NetAdapt-style.

Each step, for the budget furthest over its limit, every channel group proposes the smallest cut
(in multiples of ``channel_multiple``) that lowers that cost by ``step`` of its current value
(or to the limit, when that is nearer). Proposals are priced by ``AnchoredCostModel`` from the
last real int8 conversion and ranked by the loss they add per unit of cost removed, on a
scoring split carved from the training data: first by a proxy (after re-estimating batch-norm
statistics, no training), then the best ``screen`` after a short fine-tune; the best of those is
kept with its fine-tuned weights. bench/auto_search.md measures how well the proxy alone would
rank them, and how auto compares with uniform pruning.
The model each step keeps is converted in a background process and re-estimated: that anchor
verifies the step's predicted cost and prices the steps after it. The greedy path stops when
every budget it can price is met by a real conversion, at its time limit, or when no group can
be cut further. Once every budget is met, the allocation it ended at is refined
(search/refine.py): allocations that meet the budgets are compared on equal terms, each cut
from the input model in one shot, and the best by the proxy replaces the greedy model when,
given as many short fine-tune steps, it scores a lower loss and a real conversion confirms it
fits. Budgets no amount of channel pruning can meet are found first, named in a note and left
to the checks (the build then exits 1).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeprune import distribute
from edgeprune.data import Labelled, fit_split
from edgeprune.data.stream import training_dataset
from edgeprune.errors import BadInputError
from edgeprune.pruning.batchnorm import bn_sample, recalibrate_bn
from edgeprune.pruning.graph import ChannelGraph, build_graph
from edgeprune.pruning.stats import layer_stats
from edgeprune.pruning.structured import prune_structured
from edgeprune.search.anchor import AnchoredCostModel, Costs
from edgeprune.search.background import Converter
from edgeprune.search.budgets import Budget, budgets_of, fmt_budget, own_labels
from edgeprune.search.refine import Allocation, Refiner, widths
from edgeprune.targets import TargetProfile
from edgeprune.training import accuracy_and_loss, compile_for_training, seed_everything

log = logging.getLogger(__name__)
# Sizes and latency do not depend on calibration values: anchors calibrate on a few samples
# (50: below that the quantize stage warns about poorly estimated ranges).
ANCHOR_CALIB = 50


@dataclass(frozen=True)
class SearchConfig:
    step: float = 0.1  # each step cuts the most-over budget's cost by this share (NetAdapt)
    short_steps: int = 20  # optimizer steps of the short fine-tune of a proposal
    screen: int | None = 2  # short-fine-tune the best N proposals by proxy; None: all
    minutes: float = 10.0
    background: bool = True  # convert anchors in a child process (overlaps scoring)
    refine: bool = True  # refine the greedy allocation at the budget (search/refine.py)

    def __post_init__(self) -> None:
        if not 0 < self.step < 1:
            raise BadInputError(f"search step {self.step}", "must be in (0, 1)", "Use e.g. 0.1")
        if self.minutes <= 0:
            raise BadInputError(f"--search-minutes {self.minutes}", "must be > 0",
                                "Give the search's time budget in minutes, e.g. 10")


@dataclass
class SearchResult:
    model: Any
    report: dict[str, Any]  # report.json's "search": trajectory, stopped, seconds, …
    notes: list[str] = field(default_factory=list)


@dataclass
class _Proposal:
    group: int
    layers: list[str]
    before: int
    after: int
    prunable: int
    channels: dict[str, int]
    costs: Costs
    model: Any = None
    proxy: tuple[float, float] | None = None  # (accuracy, loss) before any training
    tuned: tuple[float, float] | None = None  # (accuracy, loss) after the short fine-tune
    # Loss added per unit of cost removed (see _Search._damage), by proxy and after tuning.
    proxy_damage: float | None = None
    damage: float | None = None

    def row(self, cut: str) -> dict[str, Any]:
        return {"group": self.group, "channels_after": self.after, cut: self.costs.get(cut),
                "proxy_accuracy": _r(self.proxy, 0), "proxy_loss": _r(self.proxy, 1),
                "proxy_damage": self.proxy_damage, "accuracy": _r(self.tuned, 0),
                "loss": _r(self.tuned, 1), "damage": self.damage}


def _r(pair: tuple[float, float] | None, i: int) -> float | None:
    return None if pair is None else round(pair[i], 5)


class _Search:
    def __init__(self, model: Any, target: TargetProfile, train: Labelled, quantize: str,
                 calib: np.ndarray | None, config: SearchConfig, criterion: str,
                 keep: Sequence[str], seed: int, batch_size: int, learning_rate: float) -> None:
        self.target, self.config, self.criterion = target, config, criterion
        self.keep, self.seed = tuple(keep), seed
        self.batch_size, self.learning_rate = batch_size, learning_rate
        self.multiple = target.hardware.channel_multiple
        # The fine-tune stage trains on fit_split's first part and early-stops on its monitor
        # split. The search scores on a split of the *first* part: a monitor split it had
        # selected proposals on would read as already at its best, and stop that fine-tune at
        # once (seen: 4 epochs, 1.4 points lost on the example).
        fit, score = fit_split(fit_split(train, seed)[0], seed + 1)
        self.fit = fit
        self.scoring = score or fit  # tiny data: score on the training samples
        self.calib = calib
        self.bn_batch = bn_sample(fit.x, seed)
        mode = "int8" if quantize == "qat" else quantize
        sample = None if calib is None else calib[:ANCHOR_CALIB]
        self.converter = Converter(mode, sample, target, config.background)
        self.start = time.monotonic()
        self.deadline = self.start + config.minutes * 60
        self.model = self.source = model
        self.budgets, self.notes = budgets_of(target)
        self.trajectory: list[dict[str, Any]] = []
        self.pending: list[tuple[dict[str, Any], Future[bytes], dict[str, int]]] = []
        self.infeasible: list[dict[str, Any]] = []
        self.refined: dict[str, Any] | None = None

    # --- costs ------------------------------------------------------------------------------
    def _anchor(self, model: Any, channels: dict[str, int]) -> AnchoredCostModel:
        tflite = self.converter.convert_here(model)
        return AnchoredCostModel(tflite, self.target, channels)

    def _settle(self, wait: bool) -> None:
        """Fold finished background anchors in: verified costs, and a fresher cost model."""
        while self.pending and (wait or self.pending[0][1].done()):
            row, future, channels = self.pending.pop(0)
            self.cost_model = AnchoredCostModel(future.result(), self.target, channels)
            row["estimated"] = self.cost_model.costs.to_dict()
            if row is self.trajectory[-1]:
                self.costs, self.verified = self.cost_model.costs, True

    def _over(self, costs: Costs) -> list[tuple[float, Budget]]:
        out = []
        for b in self.feasible:
            value = costs.get(b.quantity)
            if value is not None and value > b.limit:
                out.append((value / b.limit, b))
        return sorted(out, key=lambda e: -e[0])

    # --- the loop ---------------------------------------------------------------------------
    def run(self) -> SearchResult:
        try:
            return self._run()
        finally:
            self.converter.close()

    def _run(self) -> SearchResult:
        graph = build_graph(self.model, keep=self.keep)
        self.cost_model = self._anchor(self.model, graph.layer_channels({}))
        # The current model's costs: a real conversion's once verified, until then predicted.
        self.costs, self.verified = self.cost_model.costs, True
        start = self._evaluate(self.model)
        self.loss = start[1]  # the kept model's scoring loss: proposals are priced against it
        self.trajectory.append({
            "step": 0, "group": None, "layers": [], "channels_before": None,
            "channels_after": None, "cut": None, "predicted": self.costs.to_dict(),
            "estimated": self.costs.to_dict(),
            "accuracy": round(start[0], 5), "loss": round(start[1], 5),
            "scored_by": "input model",
            "proposals": [], "seconds": self._elapsed()})
        self.feasible = self._feasibility(graph)
        stopped = None
        while stopped is None:
            self._settle(wait=False)
            over = self._over(self.costs)
            if not over and not self.verified:
                self._settle(wait=True)  # predicted to fit: confirm on a real conversion
            elif not over:
                stopped = "every budget met" if self.feasible else "no budget to search"
            elif distribute.time_up(self.deadline):
                stopped = "time limit"
            else:
                stopped = self._step(build_graph(self.model, keep=self.keep), over[0][1])
        self._settle(wait=True)
        if stopped == "every budget met" and len(self.trajectory) > 1 and self.config.refine:
            self._refine(graph)
        self._closing_notes(stopped)
        return SearchResult(self.model, self._report(stopped), self.notes)

    def _step(self, graph: ChannelGraph, budget: Budget) -> str | None:
        """One NetAdapt step; None when a proposal was taken, else why the search stops."""
        current = self.costs.get(budget.quantity) or 0.0
        goal = max(budget.limit, current * (1 - self.config.step))
        clock = [time.monotonic()]
        proposals = self._proposals(graph, budget, goal)
        if not proposals:
            return "no group can be cut further"
        for p in proposals:
            if distribute.time_up(self.deadline):
                return "time limit"
            p.model = self._prune(p)
            recalibrate_bn(p.model, self.bn_batch)
            p.proxy = self._evaluate(p.model)
        clock.append(time.monotonic())
        # Priced like the proposals (same cost model), so the cuts compare.
        now = self.cost_model.predict(graph.layer_channels({})).get(budget.quantity) or 0.0
        for p in proposals:
            p.proxy_damage = self._damage(p.proxy, p, budget, now)[0]
        ranked = sorted(proposals, key=lambda p: self._damage(p.proxy, p, budget, now))
        screened = ranked if self.config.screen is None else ranked[: self.config.screen]
        for i, p in enumerate(screened):
            if distribute.time_up(self.deadline):
                return "time limit"
            self._short_finetune(p.model, len(self.trajectory) + i)
            recalibrate_bn(p.model, self.bn_batch)
            p.tuned = self._evaluate(p.model)
            p.damage = self._damage(p.tuned, p, budget, now)[0]
        clock.append(time.monotonic())
        best = min(screened, key=lambda p: self._damage(p.tuned, p, budget, now))
        self.model, self.loss = best.model, best.tuned[1]
        row = {
            "step": len(self.trajectory), "group": best.group, "layers": best.layers,
            "channels_before": best.before, "channels_after": best.after,
            "cut": budget.quantity, "predicted": best.costs.to_dict(), "estimated": None,
            "accuracy": round(best.tuned[0], 5), "loss": round(best.tuned[1], 5),
            "scored_by": f"short fine-tune ({self.config.short_steps} steps)",
            "proposals": [p.row(budget.quantity) for p in proposals],
            "seconds": self._elapsed(),
            "phase_seconds": {"price_prune_proxy": round(clock[1] - clock[0], 2),
                              "short_finetune": round(clock[2] - clock[1], 2)},
        }
        self.trajectory.append(row)
        log.info("search step %d: group %d (%s) %d → %d channels; predicted %s; accuracy %.4f",
                 row["step"], best.group, best.layers[0], best.before, best.after,
                 best.costs.to_dict(), best.tuned[0])
        self.pending.append((row, self.converter.submit(best.model), best.channels))
        self.costs, self.verified = best.costs, False
        return None

    def _damage(self, scored: tuple[float, float], p: _Proposal, budget: Budget,
                now: float) -> tuple[float, float]:
        """Rank key, lower is better: loss added per unit of cost removed, then the bigger cut.

        Proposals cut different amounts (the smallest ``channel_multiple`` step that reaches
        the goal), so raw accuracy favours the cut that barely reaches it; per unit of cost,
        the NetAdapt comparison at equal cost holds. Loss, not accuracy: on a scoring split of
        a few hundred samples accuracy saturates and ties (seen: 1.0 for every proposal).
        """
        cut = max(now - (p.costs.get(budget.quantity) or 0.0), 1e-12)
        return max(scored[1] - self.loss, 0.0) / cut, -cut

    def _proposals(self, graph: ChannelGraph, budget: Budget, goal: float) -> list[_Proposal]:
        """Per group, the smallest cut that brings ``budget``'s cost to ``goal``; when no group
        can alone, each group's largest cut that lowers it at all."""
        full, partial = [], []
        base = graph.layer_channels({})
        now = self.cost_model.predict(base).get(budget.quantity) or 0.0
        for g in graph.prunable_groups():
            last = None
            for kept in widths(g, self.multiple)[1:]:
                channels = graph.layer_channels({g.id: kept})
                costs = self.cost_model.predict(channels)
                last = _Proposal(g.id, list(g.layers), g.size, kept, g.n_prunable, channels,
                                 costs)
                if (costs.get(budget.quantity) or 0.0) <= goal:
                    full.append(last)
                    break
            else:
                if last is not None and (last.costs.get(budget.quantity) or 0.0) < now:
                    partial.append(last)
        return full or partial

    def _prune(self, p: _Proposal) -> Any:
        return self._structured(self.model, {p.group: (p.before - p.after) / p.prunable})

    def _structured(self, model: Any, ratios: dict[int, float]) -> Any:
        """``model`` with each group's ``ratios`` share of prunable channels cut."""
        return prune_structured(
            model, sparsity=ratios, criterion=self.criterion, channel_multiple=self.multiple,
            keep=self.keep, calib=self.calib, data=(self.fit.x, self.fit.y)).model

    # --- refinement at the budget -----------------------------------------------------------
    def _refine(self, graph: ChannelGraph) -> None:
        """Look for a better allocation that still fits (search/refine.py) and let it compete
        with the greedy model; record what was compared."""
        start = time.monotonic()
        groups = graph.prunable_groups()  # the input model's
        channels = {r["name"]: r["out_channels"] for r in layer_stats(self.model)}
        greedy = {g.id: int(channels[g.layers[0]]) for g in groups}

        def price(alloc: Allocation) -> Costs:
            return self.cost_model.predict(graph.layer_channels(alloc))

        refiner = Refiner(groups, self.multiple, price, self._fits,
                          lambda alloc: self._evaluate(self._cut(graph, alloc))[1],
                          self.deadline, lambda alloc: self.cost_model.rounding_cost(
                              graph.layer_channels(alloc)))
        starts = [("greedy", None, greedy)]
        uniform = refiner.uniform()
        if uniform is not None:
            starts.append(("uniform", uniform[0], uniform[1]))
        rows = [{"from": name, "ratio": ratio, "kept": alloc, "loss": round(refiner.loss(alloc), 5)}
                for name, ratio, alloc in starts]
        origin = min(starts, key=lambda s: refiner.loss(s[2]))
        chosen, moves = refiner.climb(origin[2])
        self.refined = {"starts": rows, "climbed_from": origin[0], "moves": moves,
                        "kept": chosen, "loss": round(refiner.loss(chosen), 5),
                        "allocations_scored": len(refiner.scored), "outcome": "greedy kept",
                        "estimated": None}
        if chosen != greedy:
            self.refined.update(self._replace_greedy(graph, chosen))
        self.refined["seconds"] = round(time.monotonic() - start, 2)
        log.info("search refinement: %s (%s), %d allocations scored in %.0f s",
                 self.refined["outcome"], chosen, len(refiner.scored), self.refined["seconds"])

    def _replace_greedy(self, graph: ChannelGraph, chosen: Allocation) -> dict[str, Any]:
        """The refined cut replaces the greedy model only if, given as many short fine-tune
        steps as the greedy path took, it scores a lower loss (NetAdapt's own test): where
        every one-shot cut is near chance (extreme budgets) the proxy cannot tell them apart,
        and the greedy path's gradual cuts are the better start (seen at 25 % latency).
        Returns the report's fields."""
        model = self._cut(graph, chosen)
        steps = (len(self.trajectory) - 1) * self.config.short_steps
        self._short_finetune(model, len(self.trajectory), steps)
        recalibrate_bn(model, self.bn_batch)
        loss = self._evaluate(model)[1]
        out = {"tuned_loss": round(loss, 5), "greedy_loss": round(self.loss, 5),
               "finetune_steps": steps}
        if loss >= self.loss:
            return {**out, "outcome": "greedy kept: after the same short fine-tune the refined "
                                      "cut's loss is not lower"}
        costs = self._anchor(model, graph.layer_channels(chosen)).costs
        out["estimated"] = costs.to_dict()
        if not self._fits(costs):  # the prediction missed what the conversion adds
            return {**out, "outcome": "greedy kept: the refined model's conversion is over"}
        self.model, self.costs, self.loss = model, costs, loss
        return {**out, "outcome": "replaced the greedy model"}

    def _fits(self, costs: Costs) -> bool:
        return not self._over(costs)

    def _cut(self, graph: ChannelGraph, alloc: Allocation) -> Any:
        """The input model (its ``graph``) cut to ``alloc`` in one shot, batch-norm statistics
        re-estimated."""
        model = self._structured(self.source, {
            g.id: (g.size - alloc[g.id]) / g.n_prunable
            for g in graph.prunable_groups() if alloc[g.id] < g.size})
        recalibrate_bn(model, self.bn_batch)
        return model

    # --- accuracy ---------------------------------------------------------------------------
    def _short_finetune(self, model: Any, step: int, steps: int | None = None) -> None:
        """``steps`` optimizer steps (default: the config's short fine-tune), seeded by
        ``step``: every proposal of a step sees the same batches."""
        seed_everything(self.seed)
        n = (steps or self.config.short_steps) * self.batch_size
        rng = np.random.default_rng(self.seed + step)
        passes = -(-n // len(self.fit))
        order = np.concatenate([rng.permutation(len(self.fit)) for _ in range(passes)])[:n]
        batches, _ = training_dataset(self.fit.x, self.fit.y, self.batch_size, seed=self.seed,
                                      epochs=1, order=order)
        with distribute.training_copy(model) as twin:
            compile_for_training(twin, self.learning_rate)
            twin.fit(batches, epochs=1, verbose=0)

    def _evaluate(self, model: Any) -> tuple[float, float]:
        """(accuracy, cross-entropy) on the scoring split, in inference mode."""
        return accuracy_and_loss(model, self.scoring.x, self.scoring.y)

    # --- budgets no pruning can meet ----------------------------------------------------------
    def _feasibility(self, graph: ChannelGraph) -> list[Budget]:
        floor = {g.id: widths(g, self.multiple)[-1] for g in graph.prunable_groups()}
        predicted = self.cost_model.predict(graph.layer_channels(floor))
        if not any(b.limit < (predicted.get(b.quantity) or 0.0) for b in self.budgets):
            return list(self.budgets)
        # Confirm on a real conversion of the narrowest model before giving a budget up.
        ratios = {g.id: (g.size - floor[g.id]) / g.n_prunable for g in graph.prunable_groups()}
        narrowest = prune_structured(self.model, sparsity=ratios, channel_multiple=self.multiple,
                                     keep=self.keep).model
        real = self._anchor(narrowest, build_graph(narrowest).layer_channels({})).costs
        feasible = []
        for b in self.budgets:
            value = real.get(b.quantity) or 0.0
            if value <= b.limit:
                feasible.append(b)
                continue
            short = value - b.limit
            self.notes.append(
                f"the {b.name} budget ({fmt_budget(b, b.limit)}) cannot be met by structural "
                f"pruning: even with every channel group at its narrowest ({self.multiple}-"
                f"channel multiples) the {self.converter.mode} model's {b.quantity} is "
                f"{fmt_budget(b, value)}, {fmt_budget(b, short)} ({short / b.limit:.0%}) over. "
                f"The search met the other budgets;"
                f" raise this one, or start from a smaller architecture")
            self.infeasible.append({"budget": b.name, "limit": b.limit, "narrowest": value,
                                    "shortfall": short, "unit": b.unit})
        return feasible

    def _closing_notes(self, stopped: str) -> None:
        last = self.trajectory[-1]
        costs = last["estimated"] or last["predicted"]
        over = [(b, costs[b.quantity]) for b in self.feasible
                if costs.get(b.quantity) is not None and costs[b.quantity] > b.limit]
        steps = len(self.trajectory) - 1
        if over:
            what = "; ".join(f"{b.name} {fmt_budget(b, v)} > {fmt_budget(b, b.limit)} "
                             f"({fmt_budget(b, v - b.limit)} over)" for b, v in over)
            self.notes.append(f"--prune auto stopped ({stopped}) after {steps} step(s) with "
                              f"budgets still not met: {what}; the build continues with the "
                              "last model")
        elif steps == 0:
            self.notes.append("--prune auto: the input model already meets every budget the "
                              "search prices: it was not pruned (nor fine-tuned)")
        else:
            refined = ""
            if self.refined is not None:
                refined = (f"; refined at the budget ({self.refined['allocations_scored']} "
                           f"allocations scored): {self.refined['outcome']}")
            self.notes.append(f"--prune auto: {steps} step(s) in {self._elapsed():.0f} s "
                              f"({stopped}){refined}; see report.json 'search'")

    def _elapsed(self) -> float:
        return round(time.monotonic() - self.start, 2)

    def _report(self, stopped: str) -> dict[str, Any]:
        return {
            "trajectory": self.trajectory, "stopped": stopped, "seconds": self._elapsed(),
            "budgets": [{"name": b.name, "quantity": b.quantity, "limit": b.limit,
                         "unit": b.unit} for b in self.budgets],
            "infeasible": self.infeasible,
            "refine": self.refined,
            "config": {"step": self.config.step, "short_steps": self.config.short_steps,
                       "screen": self.config.screen, "minutes": self.config.minutes,
                       "refine": self.config.refine,
                       "channel_multiple": self.multiple, "criterion": self.criterion},
        }


def search(model: Any, target: TargetProfile, train: Labelled | None, *,
           quantize: str = "int8", calib: np.ndarray | None = None,
           config: SearchConfig | None = None, criterion: str = "l1", keep: Sequence[str] = (),
           seed: int = 0, batch_size: int = 32, learning_rate: float = 1e-3) -> SearchResult:
    """Prune ``model`` (not modified) until ``target``'s latency/RAM/flash budgets are met.

    Without labelled ``train`` data, proposals are scored against the input model's own
    predictions on ``calib``."""
    note = None
    if train is None:
        if calib is None:
            raise BadInputError("--prune auto", "needs samples to score pruning steps on",
                                "Pass --data TRAIN.npz (labelled), or at least --calib")
        train = own_labels(model, calib)
        note = ("--prune auto had no --data: each step was scored by agreement with the input "
                f"model's predictions on {len(calib)} calibration samples (and short-fine-tuned "
                "on them); pass --data for accuracy-scored steps and the final fine-tune")
    result = _Search(model, target, train, quantize, calib, config or SearchConfig(),
                     criterion, keep, seed, batch_size, learning_rate).run()
    result.notes[:0] = [note] if note else []
    return result
