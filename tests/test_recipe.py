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
