"""Builds with the fine-tuning options of issue 20: the warning when channels are cut and
nothing fine-tunes them, distillation from calibration samples alone, and reproducibility."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from click.testing import CliRunner

from edgeprune.cli import main
from edgeprune.data import Inputs, Labelled
from edgeprune.recipe import Recipe
from edgeprune.stages import finetune


def _build(files, out, *extra, data=True, target="host"):
    args = ["build", "--target", target, "--model", str(files["model"]), "--val",
            str(files["val"]), "--calib", str(files["calib"]), "--out", str(out),
            *(["--data", str(files["data"])] if data else []), *extra]
    r = CliRunner().invoke(main, args)
    assert r.exit_code in (0, 1), r.output + repr(r.exception)
    return out / target


@pytest.mark.parametrize(("recipe", "labelled", "calib", "warned"), [
    ({"prune": "structured", "epochs": 0}, True, True, "epochs = 0"),
    ({"prune": "auto", "epochs": 0}, True, True, "epochs = 0; the search's short fine-tunes"),
    ({"prune": "structured", "epochs": 5}, False, True, "no training data"),
    ({"prune": "structured", "epochs": 5}, True, True, None),
    ({"prune": "structured", "epochs": 5, "distill": True}, False, True, None),  # teacher only
    ({"prune": "structured", "epochs": 5, "distill": True}, False, False, "no training data"),
    ({"prune": "none", "epochs": 0}, True, True, None),  # nothing cut
], ids=str)
def test_the_warning_when_channels_are_cut_and_nothing_fine_tunes_them(
        recipe, labelled, calib, warned, caplog):
    x = np.zeros((50, 8, 8, 1), np.float32)
    inputs = Inputs(train=Labelled(x, np.zeros(50, np.int64), "t") if labelled else None,
                    val=None, calib=x if calib else None)
    with caplog.at_level(logging.WARNING, logger="edgeprune.stages.finetune"):
        notes = finetune.untrained_cut_notes(Recipe(**recipe), inputs)
    if warned is None:
        assert notes == [] and not caplog.records
        return
    (note,) = notes
    assert warned in note and "--epochs N" in note and "--data" in note
    assert caplog.records[0].levelno == logging.WARNING and note in caplog.text


def test_the_warning_reaches_the_terminal_before_the_slow_stages_and_the_report(
        tiny_files, tmp_path):
    out = tmp_path / "o"
    r = CliRunner().invoke(main, [
        "build", "--target", "host", "--model", str(tiny_files["model"]), "--data",
        str(tiny_files["data"]), "--out", str(out), "--prune", "structured", "--sparsity",
        "0.5", "--epochs", "0"])
    assert r.exit_code in (0, 1), r.output
    lines = r.stderr.splitlines()
    warning = next(i for i, line in enumerate(lines) if "will not train the cut model" in line)
    assert lines[warning].startswith("warning: --prune structured cuts channels")
    assert warning < next(i for i, line in enumerate(lines) if line.startswith("baseline"))
    notes = json.loads((out / "host" / "report.json").read_text())["notes"]
    assert any("will not train the cut model" in n and "epochs = 0" in n for n in notes)
    assert "will not train the cut model" in (out / "host" / "report.md").read_text()


def test_distillation_from_calibration_samples_alone(tiny_files, tmp_path):
    """No --data: the cut model fine-tunes on --calib against the input model only."""
    folder = _build(tiny_files, tmp_path / "o", "--prune", "structured", "--sparsity", "0.5",
                    "--epochs", "2", "--distill", "--alpha", "0.7", data=False)
    rep = json.loads((folder / "report.json").read_text())
    assert rep["finetune"]["epochs_run"] >= 1
    assert rep["finetune"]["distill"] == {
        "teacher": "input model", "temperature": 4.0, "alpha": 0.0,
        "labels": "none (teacher only)", "samples": rep["finetune"]["distill"]["samples"]}
    assert rep["finetune"]["monitor"] == "val_distill_loss"
    assert not any("will not train the cut model" in n for n in rep["notes"])
    assert "none (teacher only)" in (folder / "report.md").read_text()
    assert "none (teacher only)" in (folder / "report.html").read_text()


def test_two_distillation_builds_are_byte_identical(tiny_files, tmp_path):
    recipe = ("--prune", "structured", "--sparsity", "0.5", "--epochs", "2", "--distill",
              "--lr-schedule", "cosine", "--seed", "3")
    a = _build(tiny_files, tmp_path / "a", *recipe)
    b = _build(tiny_files, tmp_path / "b", *recipe)
    assert (a / "model.tflite").read_bytes() == (b / "model.tflite").read_bytes()
    rep = json.loads((a / "report.json").read_text())
    assert rep["finetune"]["distill"]["labels"] == "data"
    assert rep["finetune"]["monitor"] == "val_shipped_loss"
