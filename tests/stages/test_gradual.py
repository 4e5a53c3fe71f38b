"""Gradual channel pruning (``schedule = "gradual"``) in real builds: the bundled digits example
reaches the one-shot plan in cubic steps, and hybrid's weight pruning runs on the last step."""

from __future__ import annotations

import json

import pytest

from edgeprune.drivers import pipeline
from edgeprune.pruning.schedule import kept_per_step


@pytest.fixture(scope="module")
def digits_gradual(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gradual") / "out"
    request = pipeline.BuildRequest(out=out, overrides={
        "prune": "structured", "sparsity": 0.75, "epochs": 3, "schedule": "gradual",
        "steps": 3, "quantize": "none"})
    outcome = pipeline.build(request, "host")  # the bundled digits example
    report = json.loads((outcome.folder / "report.json").read_text())
    report["_md"] = (outcome.folder / "report.md").read_text()
    return report


def test_the_report_records_each_cut_and_the_last_is_the_one_shot_plan(digits_gradual):
    r = digits_gradual
    rows = r["schedule"]["rows"]
    assert [row["step"] for row in rows] == [1, 2, 3] and r["schedule"]["steps"] == 3
    # the one-shot plan (the prune stage's groups) and the cubic counts towards it
    plan = {g["layers"][0]: g for g in r["pruning_groups"]}
    expected = kept_per_step({n: g["channels"] for n, g in plan.items()},
                             {n: g["kept"] for n, g in plan.items()}, 3)
    assert [row["kept"] for row in rows] == expected
    assert rows[-1]["kept"] == {n: g["kept"] for n, g in plan.items()}
    shipped = {layer["name"]: layer["channels_after"] for layer in r["layers"]}
    assert all(shipped[n] == g["kept"] for n, g in plan.items())
    # the share of prunable channels removed rises along the cubic curve to the plan's
    prunable = sum(g["prunable"] for g in plan.values())
    final = sum(g["channels"] - g["kept"] for g in plan.values()) / prunable
    assert final == pytest.approx(0.75, abs=0.02)
    for row in rows:
        assert row["ratio"] == pytest.approx(row["fraction_of_final"] * final, abs=0.02)
    assert [row["fraction_of_final"] for row in rows] == pytest.approx([0.7037, 0.963, 1.0],
                                                                       abs=1e-4)
    # one epoch each: the steps share the recipe's 3
    assert [(row["epochs"], row["epochs_run"]) for row in rows] == [(1, 1)] * 3
    assert r["finetune"]["epochs_run"] == 3 and "schedule" not in r["finetune"]
    assert all(0 <= row["monitor_accuracy"] <= 1 for row in rows)
    assert "gradual" in r["timings_s"] and "finetune" not in r["timings_s"]
    assert any(n.startswith("gradual schedule:") for n in r["notes"])
    assert "## Gradual schedule" in r["_md"]
    assert r["result"]["accuracy"] > 0.8  # 3 epochs at 75 %: recovered, not chance


@pytest.mark.slow  # ~7 s; the structured path above is the one benchmarked
def test_hybrid_gradual_zeros_weights_of_the_final_architecture(tiny_files, tmp_path):
    # host's channel multiple (8) would leave the tiny model's 8 channels uncut
    target = tmp_path / "host1.toml"
    target.write_text('inherit = "host"\n[hardware]\nchannel_multiple = 1\n')
    request = pipeline.BuildRequest(
        model=tiny_files["model"], data=tiny_files["data"], val=tiny_files["val"],
        out=tmp_path / "o", overrides={"prune": "hybrid", "sparsity": 0.5, "epochs": 4,
                                       "schedule": "gradual", "steps": 2, "quantize": "none"})
    r = pipeline.build(request, str(target)).report
    rows = r["schedule"]["rows"]
    assert [row["epochs"] for row in rows] == [2, 2]
    assert rows[-1]["kept"] == {g["layers"][0]: g["kept"] for g in r["pruning_groups"]}
    assert r["result"]["sparsity"] > 0.3  # TF-MOT's zeros, stripped into the shipped model
    assert any("TF-MOT magnitude" in n for n in r["schedule"]["notes"])


def test_a_plan_that_cuts_nothing_fine_tunes_once_and_says_so(tiny_files, tmp_path):
    request = pipeline.BuildRequest(  # host rounds the tiny model's 4 kept channels up to 8
        model=tiny_files["model"], data=tiny_files["data"], val=tiny_files["val"],
        out=tmp_path / "o", overrides={"prune": "structured", "sparsity": 0.5, "epochs": 3,
                                       "schedule": "gradual", "quantize": "none"})
    r = pipeline.build(request, "host").report
    assert r["schedule"]["rows"] == [] and r["finetune"]["epochs_run"] >= 1
    assert any("removes no channel" in n for n in r["notes"])
