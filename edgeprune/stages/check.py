"""Check stage: measurements in, budget verdicts out.

Each budget is a named predicate whose docstring is the rule shown in reports. A budget is
checked with the best measurement available *for the target* (device > qemu > tflm > estimate);
a host figure counts only for the ``host`` profile. With no usable figure the check is
``passed: None`` and its rule says why.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edgeprune.errors import ExitCode
from edgeprune.measurement import METHOD_RANK, CheckResult, Measurement
from edgeprune.targets import TargetProfile


def best(
    measurements: Sequence[Measurement], quantity: str, target: TargetProfile
) -> Measurement | None:
    """The figure that stands for the target: never a host figure, except for ``host``."""
    usable = [m for m in measurements if m.quantity == quantity]
    if target.hardware.kind == "host":
        usable = [m for m in usable if m.where in ("host", target.name)]
    else:
        usable = [m for m in usable if m.where == target.name and m.method in METHOD_RANK]
    usable.sort(key=lambda m: METHOD_RANK.index(m.method) if m.method in METHOD_RANK else 99)
    return usable[0] if usable else None


def _rule(fn: Callable[..., Any]) -> str:
    return " ".join((inspect.getdoc(fn) or "").split())


def _verdict(
    fn: Callable[..., Any],
    name: str,
    budget: float,
    m: Measurement | None,
    value: float | None,
    unit: str,
    missing: str,
) -> CheckResult:
    rule = _rule(fn)
    if m is None or value is None:
        return CheckResult(name, budget, None, unit, None, None, f"{rule} Not checked: {missing}")
    marginal = is_marginal(value, budget, m.uncertainty)
    if marginal:
        rule += (f" Marginal: the budget lies within the {m.method}'s stated uncertainty "
                 f"(± {m.uncertainty * 100:.0f} %), so the real figure may fall either side.")
    return CheckResult(name, budget, value, unit, value <= budget, m.method, rule, marginal)


def is_marginal(value: float, budget: float, uncertainty: float | None) -> bool:
    """True when ``budget`` lies inside value × (1 ± uncertainty)."""
    if not uncertainty:
        return False
    return value * (1 - uncertainty) <= budget <= value * (1 + uncertainty)


def check_latency(m: Measurement | None, target: TargetProfile) -> CheckResult:
    """Latency: one inference (p50 when measured) must take at most budgets.latency_ms."""
    budget = float(target.budgets.latency_ms or 0)
    return _verdict(
        check_latency, "latency", budget, m, m.value if m else None, "ms",
        f"no device, emulation or estimate of {target.name}'s latency is available in this "
        "version, and a host figure is not the target's (see measurements, where=host)",
    )


def check_ram(m: Measurement | None, target: TargetProfile) -> CheckResult:
    """RAM: the memory the runtime needs for one inference (tensor arena or peak RSS) must not
    exceed budgets.ram_kb × 1024 bytes."""
    budget = float(target.budgets.ram_kb or 0) * 1024
    return _verdict(
        check_ram, "ram", budget, m, m.value if m else None, "bytes",
        f"no measurement or estimate of {target.name}'s RAM is available in this version",
    )


def check_flash(m: Measurement | None, target: TargetProfile) -> CheckResult:
    """Flash: the model's bytes as stored on the device (.tflite or its C array) must not exceed
    budgets.flash_kb × 1024 bytes. Runtime code (interpreter, kernels) is not included."""
    budget = float(target.budgets.flash_kb or 0) * 1024
    return _verdict(
        check_flash, "flash", budget, m, m.value if m else None, "bytes", "no model size"
    )


def check_accuracy(
    m: Measurement | None, baseline_accuracy: float | None, target: TargetProfile
) -> CheckResult:
    """Accuracy: top-1 accuracy of the emitted model, run with LiteRT on the held-out data, may
    fall at most budgets.accuracy_drop percentage points below the float32 baseline's."""
    drop = None
    if m is not None and baseline_accuracy is not None:
        drop = round((baseline_accuracy - m.value) * 100, 4)
    return _verdict(
        check_accuracy, "accuracy_drop", float(target.budgets.accuracy_drop or 0), m, drop,
        "points", "no labelled data (pass --data or --val)",
    )


def _device_note(check: CheckResult, why: str | None) -> CheckResult:
    """Say why a device figure was not what the check used."""
    if not why or check.method == "device":
        return check
    return dataclasses.replace(check, rule=f"{check.rule} The device's figure was not used: "
                                           f"{why}.")


def _second_opinion(check: CheckResult, measurements: Sequence[Measurement],
                    target: TargetProfile) -> CheckResult:
    """Where QEMU's instruction count and the estimator both give the target's latency, name
    the one the check did not use and how far the two disagree."""
    ours = {m.method: m for m in measurements
            if m.quantity == "latency_ms" and m.where == target.name}
    if check.method not in ("qemu", "estimate") or not {"qemu", "estimate"} <= ours.keys():
        return check
    other = ours["estimate" if check.method == "qemu" else "qemu"]
    gap = ours["estimate"].value / ours["qemu"].value - 1
    return dataclasses.replace(check, rule=(
        f"{check.rule} Second opinion: {other.method} {other.value:,.3f} ms; the estimate is "
        f"{gap * 100:+.0f} % from QEMU's instruction-count figure."))


def run(
    measurements: Sequence[Measurement], target: TargetProfile, baseline_accuracy: float | None,
    device_not_used: Mapping[str, str] | None = None,
) -> list[CheckResult]:
    """One check per budget the target sets, in a fixed order. ``device_not_used``: per
    quantity, why ``--device`` gave no figure that stands for the target."""
    b = target.budgets
    why = device_not_used or {}
    checks = []
    if b.latency_ms is not None:
        checks.append(_second_opinion(_device_note(
            check_latency(best(measurements, "latency_ms", target), target),
            why.get("latency_ms")), measurements, target))
    if b.ram_kb is not None:
        checks.append(_device_note(check_ram(best(measurements, "ram_bytes", target), target),
                                   why.get("ram_bytes")))
    if b.flash_kb is not None:
        checks.append(check_flash(best(measurements, "flash_bytes", target), target))
    if b.accuracy_drop is not None:
        acc = next((m for m in measurements if m.quantity == "accuracy"), None)
        checks.append(check_accuracy(acc, baseline_accuracy, target))
    return checks


_QUANTITY = {"latency": "latency_ms", "ram": "ram_bytes", "flash": "flash_bytes"}


def mark_used(measurements: Sequence[Measurement], checks: Sequence[CheckResult],
              target: TargetProfile) -> list[Measurement]:
    """The measurements, each with ``used_by`` naming the checks that used it."""
    used: dict[int, list[str]] = {}
    for c in checks:
        if c.method is None:
            continue
        quantity = _QUANTITY.get(c.name)
        m = best(measurements, quantity, target) if quantity else next(
            (m for m in measurements if m.quantity == "accuracy"), None)
        if m is not None:
            used.setdefault(id(m), []).append(c.name)
    return [dataclasses.replace(m, used_by=tuple(used[id(m)])) if id(m) in used else m
            for m in measurements]


def passed(checks: Sequence[CheckResult]) -> bool:
    """The report's ``passed``: true only when every check passed (unchecked is not passed)."""
    return all(c.passed is True for c in checks)


def exit_code(checks: Sequence[CheckResult], strict: bool = False) -> int:
    """0 when no budget failed; 1 when one did (or, with ``strict``, one could not be checked)."""
    if any(c.passed is False for c in checks):
        return ExitCode.BUDGET_FAILED
    if strict and any(c.passed is None for c in checks):
        return ExitCode.BUDGET_FAILED
    return ExitCode.OK
