import pytest

from edgeprune.errors import RecipeError
from edgeprune.recipe import Recipe, resolve_recipe


def test_precedence_target_then_file_then_cli(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text('sparsity = 0.3\nepochs = 4\n[build]\ncriterion = "l2"\n')
    r = resolve_recipe(
        {"prune": "structured", "sparsity": 0.5, "epochs": 10, "quantize": "int8"},
        "rpi4.toml", f, {"epochs": 2, "seed": None, "keep": ()},
    )
    assert (r.prune, r.sparsity, r.criterion, r.epochs, r.quantize) == (
        "structured", 0.3, "l2", 2, "int8")
    assert r.to_dict()["keep"] == []


@pytest.mark.parametrize(
    ("cli", "needle"),
    [
        ({"sparsity": 1.0}, "--sparsity"),
        ({"sparsity": -0.1}, "--sparsity"),
        ({"epochs": -1}, "--epochs"),
        ({"prune": "random"}, "--prune"),
        ({"quantize": "int4"}, "--quantize"),
    ],
)
def test_bad_values_name_the_option(cli, needle):
    with pytest.raises(RecipeError) as e:
        resolve_recipe({}, "t.toml", None, cli)
    assert needle in str(e.value)


def test_recipe_file_errors(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text("spars1ty = 0.3\n")
    with pytest.raises(RecipeError, match="spars1ty"):
        resolve_recipe({}, "t.toml", f, {})
    f.write_text('epochs = "ten"\n')
    with pytest.raises(RecipeError, match="epochs"):
        resolve_recipe({}, "t.toml", f, {})
    f.write_text("epochs = \n")
    with pytest.raises(RecipeError, match="r.toml"):
        resolve_recipe({}, "t.toml", f, {})
    with pytest.raises(RecipeError, match="no such file"):
        resolve_recipe({}, "t.toml", tmp_path / "missing.toml", {})


def test_bad_target_build_section_names_the_target():
    with pytest.raises(RecipeError, match="mine.toml"):
        resolve_recipe({"epochs": "x"}, "mine.toml", None, {})


def test_recipe_is_frozen():
    with pytest.raises(AttributeError):
        Recipe().epochs = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("cli", "needle", "allowed"),
    [
        ({"alpha": 1.5}, "--alpha 1.5", "[0, 1]"),
        ({"alpha": float("nan")}, "--alpha nan", "[0, 1]"),
        ({"temperature": 0.0}, "--temperature 0.0", "> 0"),
        ({"temperature": float("inf")}, "--temperature inf", "> 0"),
        ({"optimizer": "rmsprop"}, "--optimizer rmsprop", "adam, sgd, adamw"),
        ({"lr_schedule": "step"}, "--lr-schedule step", "constant, cosine"),
        ({"warmup_epochs": -1}, "--warmup-epochs -1", "≥ 0"),
        ({"lr_schedule": "cosine", "epochs": 3, "warmup_epochs": 3}, "--warmup-epochs 3",
         "0 to 2"),
        ({"distill": "yes"}, "--distill", "wrong type"),
    ],
)
def test_bad_fine_tuning_options_name_the_option_and_what_is_allowed(cli, needle, allowed):
    with pytest.raises(RecipeError) as e:
        resolve_recipe({}, "t.toml", None, cli)
    assert needle in str(e.value) and allowed in str(e.value)
    assert e.value.exit_code == 2


def test_fine_tuning_defaults_and_a_recipe_file(tmp_path):
    r = Recipe()
    assert (r.optimizer, r.lr_schedule, r.warmup_epochs, r.distill, r.temperature, r.alpha) == (
        "adam", "constant", 1, False, 4.0, 0.5)
    f = tmp_path / "r.toml"
    f.write_text('distill = true\ntemperature = 2\nalpha = 0\nlr_schedule = "cosine"\n'
                 'warmup_epochs = 0\noptimizer = "adamw"\nepochs = 1\n')
    r = resolve_recipe({}, "t.toml", f, {})
    assert (r.distill, r.temperature, r.alpha, r.lr_schedule, r.warmup_epochs, r.optimizer) == (
        True, 2.0, 0.0, "cosine", 0, "adamw")
    with pytest.raises(RecipeError, match="distill"):
        resolve_recipe({}, "t.toml", None, {"distill": 1})


def _build_overrides(*args: str) -> dict:
    """What `edgeprune build ARGS` hands resolve_recipe: its recipe options."""
    import dataclasses

    from edgeprune.cli import main

    params = main.commands["build"].make_context("build", list(args)).params
    return {k: v for k, v in params.items() if k in {f.name for f in dataclasses.fields(Recipe)}}


def test_the_fine_tuning_options_reach_the_recipe():
    cli = _build_overrides("--distill", "--temperature", "2.5", "--alpha", "0.2", "--optimizer",
                           "sgd", "--lr-schedule", "cosine", "--warmup-epochs", "0")
    r = resolve_recipe({"epochs": 5}, "t.toml", None, cli)
    assert (r.distill, r.temperature, r.alpha, r.optimizer, r.lr_schedule, r.warmup_epochs) == (
        True, 2.5, 0.2, "sgd", "cosine", 0)
    # not given: the target's [build] value stands; --no-distill overrides it
    assert resolve_recipe({"distill": True}, "t.toml", None, _build_overrides()).distill is True
    assert resolve_recipe({"distill": True}, "t.toml", None,
                          _build_overrides("--no-distill")).distill is False


@pytest.mark.parametrize(("args", "needle"), [(("--alpha", "2"), "--alpha 2.0"),
                                              (("--temperature", "-1"), "--temperature -1.0"),
                                              (("--warmup-epochs", "-2"), "--warmup-epochs -2")])
def test_a_bad_fine_tuning_option_exits_2_naming_it(args, needle, tmp_path):
    from click.testing import CliRunner

    from edgeprune.cli import main

    r = CliRunner().invoke(main, ["build", "--target", "host", "--out", str(tmp_path / "o"),
                                  *args])
    assert r.exit_code == 2 and needle in r.output, r.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("cli", "needle", "fix"), [
    ({"prune": "structured", "epochs": 10, "steps": 3}, "--steps 3 with --schedule oneshot",
     "--schedule gradual"),
    ({"prune": "structured", "epochs": 10, "schedule": "gradual", "steps": 1}, "--steps 1",
     "--steps 2 or more"),
    ({"prune": "structured", "epochs": 10, "schedule": "gradual", "steps": -2}, "--steps -2",
     "≥ 0"),
    ({"prune": "structured", "schedule": "gradual"}, "--epochs 0", "--epochs 3 or more"),
    ({"prune": "structured", "epochs": 4, "schedule": "gradual", "steps": 5}, "--epochs 4",
     "--epochs 5 or more"),
    ({"prune": "magnitude", "epochs": 10, "schedule": "gradual"}, "--prune magnitude",
     "structured, hybrid, auto"),
    ({"prune": "structured", "epochs": 10, "schedule": "gradual", "l1": 1e-4}, "--l1",
     "--schedule oneshot"),
    ({"prune": "structured", "epochs": 6, "schedule": "gradual", "lr_schedule": "cosine",
      "warmup_epochs": 2}, "--warmup-epochs 2", "fewer --warmup-epochs"),
    ({"schedule": "stepwise"}, "--schedule stepwise", "oneshot, gradual"),
])
def test_bad_schedules_name_the_option_and_the_fix(cli, needle, fix):
    with pytest.raises(RecipeError) as e:
        resolve_recipe({}, "t.toml", None, cli)
    assert needle in str(e.value) and fix in str(e.value), str(e.value)
    assert e.value.exit_code == 2


def test_the_schedule_options_reach_the_recipe():
    cli = _build_overrides("--prune", "hybrid", "--schedule", "gradual", "--steps", "4")
    r = resolve_recipe({"epochs": 10}, "t.toml", None, cli)
    assert (r.schedule, r.steps, r.cuts()) == ("gradual", 4, 4)
    assert resolve_recipe({"epochs": 10, "prune": "auto"}, "t.toml", None,
                          _build_overrides("--schedule", "gradual")).cuts() == 3  # default
    assert (Recipe().schedule, Recipe().steps, Recipe().cuts()) == ("oneshot", 0, 1)


def test_gradual_without_data_exits_2_before_the_slow_stages(tiny_files, tmp_path):
    from click.testing import CliRunner

    from edgeprune.cli import main

    r = CliRunner().invoke(main, ["build", "--target", "host", "--model",
                                  str(tiny_files["model"]), "--calib", str(tiny_files["calib"]),
                                  "--prune", "structured", "--schedule", "gradual", "--epochs",
                                  "3", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--schedule gradual" in r.output and "--data" in r.output, (
        r.output)
    assert "baseline" not in r.output and not (tmp_path / "o").exists()


GRADUAL_DEFAULTS = {"prune": "structured", "sparsity": 0.75, "schedule": "gradual", "steps": 3,
                    "distill": True, "epochs": 10, "quantize": "int8"}


@pytest.mark.parametrize(("cli", "has_train", "why"), [
    ({"prune": "magnitude"}, True, "channel pruning only"),
    ({"prune": "none"}, True, "channel pruning only"),
    ({"epochs": 2}, True, "--epochs 2"),
    ({"l1": 1e-4}, True, "--l1"),
    ({}, False, "no training data"),
])
def test_a_target_gradual_default_gives_way_to_the_users_choices(cli, has_train, why):
    from edgeprune.recipe import resolve_for_build

    r, notes = resolve_for_build(GRADUAL_DEFAULTS, "rpi4.toml", None, cli, has_train=has_train)
    assert (r.schedule, r.cuts()) == ("oneshot", 1)
    assert len(notes) == 1 and why in notes[0] and "rpi4.toml [build]" in notes[0]
    assert r.distill  # the rest of the target's recipe stays


def test_a_gradual_schedule_the_user_asks_for_is_still_refused(tmp_path):
    from edgeprune.recipe import resolve_for_build

    r, notes = resolve_for_build(GRADUAL_DEFAULTS, "rpi4.toml", None, {}, has_train=True)
    assert (r.schedule, r.cuts(), notes) == ("gradual", 3, [])
    with pytest.raises(RecipeError, match="--epochs 2"):
        resolve_for_build(GRADUAL_DEFAULTS, "rpi4.toml", None,
                          {"schedule": "gradual", "epochs": 2}, has_train=True)
    f = tmp_path / "r.toml"
    f.write_text('schedule = "gradual"\nprune = "magnitude"\n')
    with pytest.raises(RecipeError, match="channel pruning only"):
        resolve_for_build(GRADUAL_DEFAULTS, "rpi4.toml", f, {}, has_train=True)


def test_the_users_oneshot_drops_the_targets_gradual_steps(tmp_path):
    """`--schedule oneshot` on a target whose default is gradual with steps = 3 (rpi4)."""
    from edgeprune.recipe import resolve_for_build

    r, _ = resolve_for_build(GRADUAL_DEFAULTS, "rpi4.toml", None, {"schedule": "oneshot"},
                             has_train=True)
    assert (r.schedule, r.steps, r.sparsity) == ("oneshot", 0, 0.75)
    f = tmp_path / "r.toml"
    f.write_text('schedule = "oneshot"\n')
    assert resolve_for_build(GRADUAL_DEFAULTS, "rpi4.toml", f, {}, has_train=True)[0].steps == 0
    r, _ = resolve_for_build({**GRADUAL_DEFAULTS, "steps": 4}, "t.toml", None,
                             {"schedule": "gradual"}, has_train=True)
    assert r.cuts() == 4  # the target's steps stay with its own schedule
    with pytest.raises(RecipeError, match="--steps 2 with --schedule oneshot"):
        resolve_for_build(GRADUAL_DEFAULTS, "rpi4.toml", None,
                          {"schedule": "oneshot", "steps": 2}, has_train=True)
