"""One list of valid values per option: the registries that implement them, the recipe that
validates them and the click choices that parse them agree, and every value is accepted from
the command line to a Recipe."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import click
import pytest

from edgeprune import converter, recipe
from edgeprune.cli import main
from edgeprune.pruning import importance, policy
from edgeprune.stages import prune
from edgeprune.targets import shipped_names

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()

# option -> (Recipe field, the recipe's values)
OPTIONS = {
    "--prune": ("prune", recipe.PRUNE_MODES),
    "--criterion": ("criterion", recipe.CRITERIA),
    "--allocation": ("allocation", recipe.ALLOCATIONS),
    "--quantize": ("quantize", recipe.QUANTIZE_MODES),
    "--l1-on": ("l1_on", recipe.L1_TARGETS),
    "--after-prune": ("after_prune", recipe.AFTER_PRUNE),
    "--optimizer": ("optimizer", recipe.OPTIMIZERS),
    "--lr-schedule": ("lr_schedule", recipe.LR_SCHEDULES),
    "--schedule": ("schedule", recipe.SCHEDULES),
    "--strategy": ("strategy", recipe.STRATEGIES),
}


def test_registries_implement_exactly_the_recipe_values():
    assert set(prune.PRUNERS) == set(recipe.PRUNE_MODES)
    assert set(importance.CRITERIA) == set(recipe.CRITERIA)
    assert set(converter.QUANTIZERS) == set(recipe.QUANTIZE_MODES)
    # "sensitivity" measures per-group ratios first (stages/prune.py), then cuts them uniformly
    assert set(policy.ALLOCATORS) | {"sensitivity"} == set(recipe.ALLOCATIONS)


def _choices(command: click.Command, flag: str) -> tuple[str, ...]:
    option = next(p for p in command.params if flag in p.opts)
    assert isinstance(option.type, click.Choice), flag
    return tuple(option.type.choices)


@pytest.mark.parametrize("flag", sorted(OPTIONS))
def test_every_value_is_accepted_from_the_command_line_to_a_recipe(flag):
    field, values = OPTIONS[flag]
    build = main.commands["build"]
    assert _choices(build, flag) == values
    for value in values:
        ctx = build.make_context("build", [flag, value])
        # with channel pruning and epochs, which the channel-only options (--l1-on, --after-prune,
        # --schedule gradual) need
        fields = {"prune": "structured", "epochs": 10, field: ctx.params[field]}
        assert recipe.Recipe(**fields).to_dict()[field] == value


def test_analyze_takes_the_same_criteria():
    assert _choices(main.commands["analyze"], "--criterion") == recipe.CRITERIA


def test_an_unregistered_quantization_mode_is_refused():
    with pytest.raises(recipe.RecipeError, match="--quantize int4"):
        converter.configure(object(), "int4", None, None)  # type: ignore[arg-type]


def _readme_rows() -> dict[str, str]:
    """The README's tables, first cell (its backticked names) -> the rest of the row."""
    rows = {}
    for line in README.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith(
            "| `") else []
        for name in re.findall(r"`([^`]+)`", cells[0] if cells else ""):
            rows[name] = " | ".join(cells[1:])
    return rows


def test_the_readme_lists_every_recipe_key_value_and_target():
    rows = _readme_rows()
    assert {f.name for f in dataclasses.fields(recipe.Recipe)} <= set(rows)
    for _, (field, values) in OPTIONS.items():
        if field in rows and field not in ("l1_on",):  # l1_on shares the row of l1
            assert set(re.findall(r"`([^`(]+)`", rows[field])) >= set(values), field
    assert set(re.findall(r"`([^`]+)`", rows["export"])) == set(recipe.EXPORT_FORMATS)
    assert set(shipped_names()) <= set(rows)
