"""--prune auto: the anchored cost model, the NetAdapt-style search, its time and budget limits."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from tiny_models import blobs

from edgeprune import _tf
from edgeprune.converter import to_tflite
from edgeprune.data import Labelled
from edgeprune.pruning import layer_stats, prune_structured
from edgeprune.pruning.graph import build_graph
from edgeprune.search.anchor import AnchoredCostModel, estimate_costs
from edgeprune.search.loop import SearchConfig, search
from edgeprune.targets import load_target

keras = _tf.keras()
L = keras.layers
FAST = {"short_steps": 2, "background": False}


def two_conv(seed: int = 0):
    """Two prunable 16-channel groups (conv1, and conv2 + the residual it is added to)."""
    keras.utils.set_random_seed(seed)
    x = inputs = keras.Input((8, 8, 1), name="image")
    x = L.ReLU(name="r1")(L.BatchNormalization(name="bn1")(L.Conv2D(16, 3, padding="same",
                                                                    name="c1")(x)))
    y = L.ReLU(name="r2")(L.BatchNormalization(name="bn2")(L.Conv2D(16, 3, padding="same",
                                                                    name="c2")(x)))
    y = L.Conv2D(16, 1, name="c3")(y)
    x = L.Add(name="add")([x, y])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(3, activation="softmax", name="head")(x), name="two")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    x, y = blobs(96)
    calib = x[:16]
    model = two_conv()
    target = load_target("cortex-m7")
    dense = to_tflite(model, "int8", calib, target)
    return model, Labelled(x, y, "blobs"), calib, dense, tmp_path_factory.mktemp("targets")


def _profile(folder, name, **budgets) -> str:
    lines = [f'inherit = "{budgets.pop("inherit", "cortex-m7")}"', f'name = "{name}"',
             "[budgets]", *[f"{k} = {v}" for k, v in budgets.items()]]
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_layer_channels_follow_the_group(setup):
    model = setup[0]
    graph = build_graph(model)
    coupled = next(g for g in graph.prunable_groups() if "c3" in g.layers)
    channels = graph.layer_channels({coupled.id: 8})
    assert channels["c3"] == channels["add"] == channels["c1"] == 8
    assert channels["c2"] == 16 and channels["head"] == 3


def test_anchored_cost_model_matches_a_real_conversion(setup):
    model, _, calib, dense, _ = setup
    target = load_target("cortex-m7")
    stats = {r["name"]: r["out_channels"] for r in layer_stats(model)}
    cost_model = AnchoredCostModel(dense, target, stats)
    pruned = prune_structured(model, sparsity={0: 0.5, 1: 0.75}, channel_multiple=4).model
    real = estimate_costs(to_tflite(pruned, "int8", calib, target), target)
    predicted = cost_model.predict({r["name"]: r["out_channels"] for r in layer_stats(pruned)})
    assert predicted.flash_bytes == pytest.approx(real.flash_bytes, rel=0.01)
    assert predicted.latency_ms == pytest.approx(real.latency_ms, rel=0.01)
    assert predicted.ram_bytes == pytest.approx(real.ram_bytes, rel=0.02)


# background: the chosen models are converted by the child process (slower to start).
@pytest.mark.parametrize("background", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_auto_meets_a_latency_budget_and_records_the_trajectory(setup, background):
    model, train, calib, dense, folder = setup
    target = load_target("cortex-m7")
    latency = estimate_costs(dense, target).latency_ms
    tight = load_target(_profile(folder, "m7-tight", latency_ms=round(latency * 0.7, 5)))
    config = SearchConfig(short_steps=2, background=background)
    result = search(model, tight, train, calib=calib, config=config)
    rep = result.report
    assert rep["stopped"] == "every budget met"
    steps = rep["trajectory"]
    assert steps[0]["group"] is None and len(steps) >= 2
    for s in steps[1:]:
        assert s["channels_after"] < s["channels_before"]
        assert s["channels_after"] % 4 == 0  # cortex-m7's channel_multiple
        assert s["estimated"]["latency_ms"] == pytest.approx(s["predicted"]["latency_ms"],
                                                             rel=0.01)
        assert 0 <= s["accuracy"] <= 1 and s["proposals"]
    final = estimate_costs(to_tflite(result.model, "int8", calib, target), tight)
    assert final.latency_ms <= tight.budgets.latency_ms
    # The refinement compared the greedy and the uniform allocation and climbed from the
    # better; what it kept is never worse by its proxy, and the report says which model won.
    refine = rep["refine"]
    assert [s["from"] for s in refine["starts"]] == ["greedy", "uniform"]
    assert refine["loss"] <= min(s["loss"] for s in refine["starts"])
    replaced = refine["outcome"] == "replaced the greedy model"
    if "tuned_loss" in refine:  # a refined cut competed with the greedy model, equally tuned
        assert refine["finetune_steps"] == (len(steps) - 1) * config.short_steps
        assert replaced <= (refine["tuned_loss"] < refine["greedy_loss"])
    shipped = refine["estimated"] if replaced else steps[-1]["estimated"]
    assert shipped["latency_ms"] == pytest.approx(final.latency_ms, rel=1e-3)
    kept = {r["name"]: r["out_channels"] for r in layer_stats(result.model)}
    graph = build_graph(model)
    if replaced:
        assert {g.id: kept[g.layers[0]] for g in graph.prunable_groups()} == {
            int(k): v for k, v in refine["kept"].items()}
    assert model.count_params() > result.model.count_params()  # the input model is untouched
    _check_rendering(json.loads(json.dumps(rep)))  # report.json-ready, and rendered


def _check_rendering(search_report):
    from edgeprune.stages.report import render_html, render_md

    rep = {"target": {"name": "t", "description": ""}, "recipe": {}, "baseline": {},
           "result": {}, "measurements": [], "checks": [], "passed": True, "layers": [],
           "timings_s": {}, "versions": {}}
    assert "Budget search" not in render_html(rep)
    page = render_html({**rep, "search": search_report})
    assert "Budget search (--prune auto)" in page and "alt='search trajectory'" in page
    md = render_md({**rep, "search": search_report})
    assert "## Budget search (--prune auto)" in md and "input model" in md
    refine = search_report.get("refine")
    if refine:
        assert "Refinement at the budget: " + refine["outcome"] in md
        assert ("| refined |" in md) == (refine["outcome"] == "replaced the greedy model")


def test_time_limit_stops_the_search(setup):
    model, train, calib, dense, folder = setup
    latency = estimate_costs(dense, load_target("cortex-m7")).latency_ms
    tight = load_target(_profile(folder, "m7-deadline", latency_ms=round(latency * 0.3, 5)))
    result = search(model, tight, train, calib=calib,
                    config=SearchConfig(minutes=1e-4, **FAST))
    assert result.report["stopped"] == "time limit"
    assert len(result.report["trajectory"]) == 1  # the deadline passed during the anchor
    assert any("time limit" in n and "latency" in n for n in result.notes)


def test_unmeetable_flash_budget_is_named_with_its_shortfall(setup):
    model, train, calib, _, folder = setup
    tight = load_target(_profile(folder, "m7-flash", flash_kb=1, latency_ms=1000))
    result = search(model, tight, train, calib=calib, config=SearchConfig(**FAST))
    assert [i["budget"] for i in result.report["infeasible"]] == ["flash"]
    gap = result.report["infeasible"][0]["shortfall"]
    assert gap > 0
    note = next(n for n in result.notes if "flash budget" in n)
    assert "cannot be met" in note and f"{gap:,.0f} B" in note
    assert result.report["trajectory"][-1]["step"] == 0  # nothing else to meet: no pruning


@pytest.mark.slow
def test_build_with_an_unmeetable_budget_exits_1(tiny_files, tmp_path):
    from edgeprune.cli import main

    target = _profile(tmp_path, "rpi4-flash", inherit="rpi4", flash_kb=1)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, [
        "build", "--target", target, "--model", str(tiny_files["model"]), "--data",
        str(tiny_files["data"]), "--val", str(tiny_files["val"]), "--calib",
        str(tiny_files["calib"]), "--out", str(out), "--prune", "auto", "--epochs", "1",
        "--search-minutes", "2"])
    assert r.exit_code == 1, r.output + str(r.exception)
    rep = json.loads((out / "rpi4-flash" / "report.json").read_text())
    flash = next(c for c in rep["checks"] if c["name"] == "flash")
    assert flash["passed"] is False
    assert any("flash budget" in n and "over" in n for n in rep["notes"])
    assert rep["recipe"]["prune"] == "auto" and rep["recipe"]["search_minutes"] == 2.0
    # the trajectory reaches report.json and its plot report.html
    assert rep["search"]["trajectory"][0]["step"] == 0 and rep["search"]["infeasible"]
    page = (out / "rpi4-flash" / "report.html").read_text()
    assert "Budget search (--prune auto)" in page


def test_a_model_that_already_fits_is_neither_pruned_nor_fine_tuned(setup):
    from edgeprune.data import Inputs
    from edgeprune.recipe import Recipe
    from edgeprune.stages import finetune, prune

    model, train, calib, _, _ = setup
    inputs = Inputs(train=train, val=None, calib=calib)
    recipe = Recipe(prune="auto", epochs=1)
    pruned = prune.run(model, recipe, load_target("cortex-m7"), inputs)  # 25 ms: fits
    assert pruned.search["stopped"] == "every budget met"
    assert pruned.skip_finetune and any("not pruned" in n for n in pruned.notes)
    model, trained = finetune.run(pruned, inputs, recipe, None)
    assert model is pruned.model
    assert trained == {"epochs": 1, "epochs_run": 0, "skipped": "--prune auto took no pruning step"}


def test_without_data_steps_are_scored_against_the_input_model(setup):
    from edgeprune.data import Inputs
    from edgeprune.errors import BadInputError
    from edgeprune.recipe import Recipe
    from edgeprune.search.budgets import own_labels
    from edgeprune.stages.prune import run

    model, train, _, _, _ = setup
    labelled = own_labels(model, train.x)
    expected = np.asarray(model(train.x, training=False)).argmax(axis=1)
    assert (labelled.y == expected).all() and labelled.x is train.x
    with pytest.raises(BadInputError, match="at least --calib"):
        run(model, Recipe(prune="auto", quantize="none"), load_target("cortex-m7"),
            Inputs(train=None, val=None, calib=None))
