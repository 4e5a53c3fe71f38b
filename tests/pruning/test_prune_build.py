"""`edgeprune build` with channel pruning: clamps and groups reach report.json, the new options
reach the recipe, and criteria without their data exit 2 naming the option."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgeprune.cli import main


@pytest.fixture
def narrow_target(tmp_path):
    """The host profile without channel rounding, so the tiny model's 8 channels can shrink."""
    path = tmp_path / "narrow.toml"
    path.write_text('inherit = "host"\nname = "narrow"\n[hardware]\nchannel_multiple = 1\n')
    return path


def _build(files, out, target, *extra):
    args = ["build", "--target", str(target), "--model", str(files["model"]), "--out", str(out),
            "--calib", str(files["calib"]), "--prune", "structured", *extra]
    return CliRunner().invoke(main, args)


def _data(files):
    return ["--data", str(files["data"]), "--val", str(files["val"])]


def test_a_ratio_that_would_empty_a_layer_is_clamped_and_reported(tiny_files, tmp_path,
                                                                  narrow_target):
    out = tmp_path / "out"
    r = _build(tiny_files, out, narrow_target, *_data(tiny_files), "--sparsity", "0.99")
    assert r.exit_code in (0, 1), r.output
    rep = json.loads((out / "narrow" / "report.json").read_text())
    clamp = [n for n in rep["notes"] if "clamped to 1" in n]
    assert clamp and "conv" in clamp[0] and "keep 0 of 8" in clamp[0]
    conv = next(row for row in rep["layers"] if row["name"] == "conv")
    assert (conv["channels_before"], conv["channels_after"]) == (8, 1)


def test_report_carries_the_pruning_groups(tiny_files, tmp_path, narrow_target):
    out = tmp_path / "out"
    r = _build(tiny_files, out, narrow_target, *_data(tiny_files), "--sparsity", "0.5")
    assert r.exit_code in (0, 1), r.output
    rep = json.loads((out / "narrow" / "report.json").read_text())
    groups = {g["layers"][0]: g for g in rep["pruning_groups"]}
    assert (groups["conv"]["channels"], groups["conv"]["kept"]) == (8, 4)
    assert groups["head"]["frozen_by"][0] == "model output"


@pytest.mark.slow
def test_new_channel_options_reach_the_recipe_and_notes(tiny_files, tmp_path, narrow_target):
    out = tmp_path / "out"
    r = _build(tiny_files, out, narrow_target, *_data(tiny_files), "--sparsity", "0.5",
               "--epochs", "1", "--criterion", "bn", "--l1", "0.01", "--l1-epochs", "1",
               "--allocation", "sensitivity", "--after-prune", "retrain")
    assert r.exit_code in (0, 1), r.output
    rep = json.loads((out / "narrow" / "report.json").read_text())
    recipe = rep["recipe"]
    assert (recipe["l1"], recipe["l1_on"], recipe["l1_epochs"]) == (0.01, "bn", 1)
    assert (recipe["allocation"], recipe["after_prune"]) == ("sensitivity", "retrain")
    notes = " | ".join(rep["notes"])
    for needle in ("L1 sparsity phase", "sensitivity allocation", "re-initialised"):
        assert needle in notes
    # the scan behind the allocation reaches report.json and its chart report.html
    assert {row["ratio"] for row in rep["sensitivity"]} == {0.25, 0.5, 0.75}
    page = (out / "narrow" / "report.html").read_text()
    assert "<h2>Sensitivity</h2><img src='data:image/png;base64," in page


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--criterion", "taylor"], ["--criterion taylor", "--data"]),
        (["--allocation", "sensitivity"], ["--allocation sensitivity", "--data"]),
        (["--l1", "1e-4", "--epochs", "2"], ["--l1 0.0001", "--data"]),
        (["--after-prune", "retrain", "--epochs", "2"], ["--after-prune retrain", "--data"]),
        # apoz only needs samples: it refuses when neither --calib nor --data is given
        (["--criterion", "apoz", "--quantize", "none", "--no-calib"], ["--criterion apoz",
                                                                      "--calib"]),
    ],
)
def test_options_without_the_data_they_need_exit_2(tiny_files, tmp_path, extra, needles):
    out = tmp_path / "out"
    args = ["build", "--target", "host", "--model", str(tiny_files["model"]), "--out", str(out),
            "--prune", "structured", *[a for a in extra if a != "--no-calib"]]
    if "--no-calib" not in extra:
        args += ["--calib", str(tiny_files["calib"])]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    for needle in needles:
        assert needle in r.output, (needle, r.output)
    assert not out.exists()
