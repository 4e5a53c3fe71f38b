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
