"""build --sweep: one build per sparsity, a comparison that marks the variants meeting budgets."""

import json

import chromium
import pytest
from click.testing import CliRunner

from edgeprune.cli import main
from edgeprune.drivers.sweep import best, parse_ratios
from edgeprune.errors import BadInputError


def _sweep(tiny_files, out, *extra):
    args = ["build", "--model", str(tiny_files["model"]), "--data", str(tiny_files["data"]),
            "--val", str(tiny_files["val"]), "--calib", str(tiny_files["calib"]),
            "--prune", "structured", "--epochs", "0", "--out", str(out), *extra]
    return CliRunner().invoke(main, args)


@pytest.fixture(scope="module")
def swept(tiny_files, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    # Channel steps of 1 (the tiny model has 8 channels); without fine-tuning (--epochs 0, for
    # speed) the tiny model may lose a few points: this test is about the sweep, not accuracy.
    fine = root / "fine.toml"
    fine.write_text('inherit = "rpi4"\nname = "fine"\n[hardware]\nchannel_multiple = 1\n'
                    "[budgets]\naccuracy_drop = 50\n")
    tight = root / "tight.toml"  # no pruning of the tiny model gets under 1 ns
    tight.write_text('inherit = "rpi4"\nname = "tight"\n[budgets]\nlatency_ms = 1e-6\n')
    ok = _sweep(tiny_files, root / "ok", "--target", str(fine), "--sweep", "0.75,0.25")
    bad = _sweep(tiny_files, root / "bad", "--target", str(tight), "--sweep", "0.25,0.5")
    return {"ok": (ok, root / "ok" / "fine-sweep"), "bad": (bad, root / "bad" / "tight-sweep")}


def test_every_variant_is_a_complete_build_and_the_comparison_lists_them(swept):
    result, folder = swept["ok"]
    assert result.exit_code == 0, result.output
    summary = json.loads((folder / "sweep.json").read_text())
    assert [v["sparsity"] for v in summary["variants"]] == [0.25, 0.75]  # sorted
    for v in summary["variants"]:
        assert (folder / v["folder"] / "model.tflite").is_file()
        assert json.loads((folder / v["folder"] / "report.json").read_text())["recipe"][
            "sparsity"] == v["sparsity"]
        assert v["latency_method"] == "estimate"  # rpi4 without --device: never measured
    small, large = summary["variants"]
    assert large["params"] < small["params"] and large["tflite_bytes"] < small["tflite_bytes"]
    assert summary["best"] in (0.25, 0.75) and all(v["passed"] for v in summary["variants"])
    md = (folder / "sweep.md").read_text()
    assert "(estimate)" in md and "(best)" in md and (folder / "sweep.png").stat().st_size > 1000
    assert "fine-sweep" in result.output and not list(folder.parent.glob(".*.partial-*"))


def test_a_sweep_where_no_variant_fits_exits_1_and_says_so(swept):
    result, folder = swept["bad"]
    assert result.exit_code == 1, result.output
    summary = json.loads((folder / "sweep.json").read_text())
    assert summary["best"] is None and not any(v["passed"] for v in summary["variants"])
    assert all("latency" in row for row in (folder / "sweep.md").read_text().splitlines()
               if row.startswith("| 0."))  # the failed check is named per variant
    assert "no variant meets every budget" in result.output
    # rpi4 steps channels by 8: the tiny model's 8 channels stay 8 at both sparsities
    assert "| 0.5 (same channels as 0.25) |" in (folder / "sweep.md").read_text()


@pytest.mark.skipif(chromium.CHROMIUM is None, reason="Debian's chromium: .ci/run installs it")
@pytest.mark.parametrize("which", ["ok", "bad"])
def test_sweep_page_renders_in_headless_chromium(swept, which, tmp_path):
    pixels, console = chromium.render(swept[which][1] / "sweep.html", tmp_path)
    assert console == []
    assert chromium.has_colour(pixels, (26, 127, 55) if which == "ok" else (180, 35, 24))


@pytest.mark.parametrize("text", ["0.5", "0.2,x", "0.2,1.5", "0.3,0.3", "-0.1,0.2"])
def test_bad_ratio_lists_are_refused(text):
    with pytest.raises(BadInputError, match="--sweep"):
        parse_ratios(text)


@pytest.mark.parametrize("extra", [["--prune", "auto"], ["--sparsity", "0.5"],
                                   ["--junit", "j.xml"], ["--sweep", "0.2"]])
def test_bad_sweep_options_exit_2_before_building(tiny_files, tmp_path, extra):
    sweep = [] if "--sweep" in extra else ["--sweep", "0.25,0.5"]
    result = _sweep(tiny_files, tmp_path / "out", "--target", "rpi4", *sweep, *extra)
    assert result.exit_code == 2, result.output
    assert "--sweep" in result.output or "--sparsity" in result.output
    assert not (tmp_path / "out").exists()


def test_best_is_the_most_accurate_variant_that_meets_every_budget():
    rows = [{"sparsity": 0.25, "passed": False, "accuracy": 0.99, "latency_ms": 2.0},
            {"sparsity": 0.5, "passed": True, "accuracy": 0.97, "latency_ms": 1.0},
            {"sparsity": 0.75, "passed": True, "accuracy": 0.97, "latency_ms": 0.5}]
    assert best(rows) == 0.75  # equal accuracy: the faster
    assert best([{**r, "passed": False} for r in rows]) is None
