"""Each budget predicate and the exit code, directly: which figure stands for the target, the
verdict at, under and over the budget, and what an unchecked budget means."""

from __future__ import annotations

import dataclasses

import pytest

from edgeprune.errors import BadInputError, ExitCode, ToolError
from edgeprune.measurement import CheckResult, Measurement
from edgeprune.stages import check
from edgeprune.targets import Budgets, load_target

RPI4 = dataclasses.replace(load_target("rpi4"), budgets=Budgets(
    latency_ms=10.0, ram_kb=100.0, flash_kb=50.0, accuracy_drop=1.0))
HOST = dataclasses.replace(load_target("host"), budgets=RPI4.budgets)


def _m(quantity: str, value: float, method: str = "estimate", where: str = "rpi4") -> Measurement:
    unit = {"latency_ms": "ms", "accuracy": "fraction"}.get(quantity, "bytes")
    return Measurement(quantity, value, unit, method, where)


@pytest.mark.parametrize(("predicate", "budget", "unit"), [
    (check.check_latency, 10.0, "ms"),
    (check.check_ram, 100 * 1024.0, "bytes"),
    (check.check_flash, 50 * 1024.0, "bytes"),
])
def test_size_and_time_predicates(predicate, budget, unit):
    quantity = {"ms": "latency_ms"}.get(unit, "ram_bytes")
    at = predicate(_m(quantity, budget), RPI4)
    assert (at.passed, at.value, at.budget, at.unit, at.method) == (True, budget, budget, unit,
                                                                   "estimate")
    assert at.margin == 0.0
    over = predicate(_m(quantity, budget * 1.01), RPI4)
    assert over.passed is False and over.margin < 0
    assert over.rule.startswith(predicate.__doc__.split(":")[0])  # the docstring is the rule
    missing = predicate(None, RPI4)
    assert missing.passed is None and missing.value is None and "Not checked" in missing.rule


def test_accuracy_predicate_compares_points_below_the_baseline():
    ok = check.check_accuracy(_m("accuracy", 0.975), 0.98, RPI4)
    assert ok.passed is True and ok.value == pytest.approx(0.5) and ok.unit == "points"
    bad = check.check_accuracy(_m("accuracy", 0.965), 0.98, RPI4)
    assert bad.passed is False and bad.value == pytest.approx(1.5)
    better = check.check_accuracy(_m("accuracy", 0.99), 0.98, RPI4)
    assert better.passed is True and better.value == pytest.approx(-1.0)
    assert check.check_accuracy(_m("accuracy", 0.9), None, RPI4).passed is None


def test_best_never_takes_a_host_figure_for_a_target():
    figures = [_m("latency_ms", 1.0, "host", "host"), _m("latency_ms", 20.0, "estimate"),
               _m("latency_ms", 8.0, "qemu")]
    assert check.best(figures, "latency_ms", RPI4).method == "qemu"  # qemu outranks estimate
    assert check.best(figures[:1], "latency_ms", RPI4) is None
    assert check.best(figures[:1], "latency_ms", HOST).value == 1.0  # host describes itself
    assert check.best([_m("latency_ms", 1.0, "device", "rpi5")], "latency_ms", RPI4) is None


def test_run_checks_each_budget_the_target_sets_in_order():
    figures = [_m("latency_ms", 5.0), _m("ram_bytes", 200 * 1024.0),
               _m("flash_bytes", 10.0, "artifact"), _m("accuracy", 0.98)]
    checks = check.run(figures, RPI4, 0.98)
    assert [c.name for c in checks] == ["latency", "ram", "flash", "accuracy_drop"]
    assert [c.passed for c in checks] == [True, False, True, True]
    only_flash = dataclasses.replace(RPI4, budgets=Budgets(flash_kb=1.0))
    assert [c.name for c in check.run(figures, only_flash, 0.98)] == ["flash"]


def _c(passed: bool | None) -> CheckResult:
    return CheckResult("latency", 1.0, None if passed is None else 0.5, "ms", passed, None, "")


@pytest.mark.parametrize(("verdicts", "strict", "code"), [
    ([True, True], False, ExitCode.OK),
    ([True, None], False, ExitCode.OK),
    ([True, None], True, ExitCode.BUDGET_FAILED),
    ([True, False], False, ExitCode.BUDGET_FAILED),
    ([], False, ExitCode.OK),
])
def test_exit_code(verdicts, strict, code):
    checks = [_c(v) for v in verdicts]
    assert check.exit_code(checks, strict) == code
    assert check.passed(checks) is all(v is True for v in verdicts)  # no budgets: passed


def test_exit_code_values_are_the_documented_contract():
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 130]
    assert BadInputError("x", "y", "z").exit_code == 2
    assert ToolError("x", "y", "z").exit_code == 3


@pytest.mark.parametrize(("budget", "passed", "marginal"), [
    (10.5, True, True),    # inside 10 ms ± 10 %: passes, but a real run could exceed it
    (9.5, False, True),    # inside the band on the other side: fails, and says so
    (11.5, True, False),   # outside the band: a clear pass
    (8.5, False, False),
])
def test_a_budget_inside_the_estimates_uncertainty_is_marginal(budget, passed, marginal):
    target = dataclasses.replace(RPI4, budgets=Budgets(latency_ms=budget))
    m = dataclasses.replace(_m("latency_ms", 10.0), uncertainty=0.10)
    c = check.check_latency(m, target)
    assert (c.passed, c.marginal) == (passed, marginal)
    assert ("Marginal" in c.rule) is marginal
    assert c.to_dict()["marginal"] is marginal


def test_a_figure_without_uncertainty_is_never_marginal():
    target = dataclasses.replace(RPI4, budgets=Budgets(latency_ms=10.0))
    assert check.check_latency(_m("latency_ms", 10.0), target).marginal is False


def test_report_marks_a_marginal_check_and_keeps_its_verdict():
    from edgeprune.stages import report

    target = dataclasses.replace(RPI4, budgets=Budgets(latency_ms=10.5))
    m = dataclasses.replace(_m("latency_ms", 10.0), uncertainty=0.10)
    checks = check.run([m], target, None)
    rep = {"checks": [c.to_dict() for c in checks], "measurements": [m.to_dict()]}
    assert report.verdict(rep).startswith("PASS — every budget met (marginal: latency")
    row = report._check_rows(rep)[0]
    assert row[0] == "✓ marginal" and "Marginal" in row[-1]
    assert report._measurement_rows(rep)[0][1] == "10.000 ± 10 %"


def test_qemu_and_estimate_both_reported_with_their_disagreement():
    target = dataclasses.replace(RPI4, budgets=Budgets(latency_ms=20.0))
    figures = [_m("latency_ms", 12.0, "qemu"), _m("latency_ms", 9.0, "estimate")]
    c = check.run(figures, target, None)[0]
    assert c.method == "qemu"  # the better method still decides
    assert "Second opinion: estimate 9.000 ms" in c.rule and "-25 %" in c.rule
