"""End-to-end `edgeprune build` on a tiny model (in-process via click's runner)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from interrupt import interrupt_in_finetune

from edgeprune.cli import main
from edgeprune.manifest import sha256_file

REPORT_KEYS = {"schema", "target", "recipe", "baseline", "result", "measurements", "checks",
               "passed", "layers", "timings_s", "versions"}


def _build(files, out, *extra, target="host"):
    args = ["build", "--target", target, "--model", str(files["model"]), "--data",
            str(files["data"]), "--val", str(files["val"]), "--calib", str(files["calib"]),
            "--out", str(out), *extra]
    return CliRunner().invoke(main, args)


def test_int8_build_writes_a_complete_folder(tiny_files, tmp_path):
    out = tmp_path / "out"
    r = _build(tiny_files, out, "--prune", "none", "--quantize", "int8")
    assert r.exit_code in (0, 1), r.output + str(r.exception)
    folder = out / "host"
    names = {p.name for p in folder.iterdir()}
    assert {"model.tflite", "report.json", "report.md", "report.html", "manifest.json"} <= names
    # no temporary folder left; the stage cache (for --resume) stays
    assert sorted(p.name for p in out.iterdir()) == [".edgeprune-cache", "host"]
    rep = json.loads((folder / "report.json").read_text())
    assert set(rep) >= REPORT_KEYS
    assert rep["schema"] == "edgeprune.report/1"
    assert rep["recipe"]["quantize"] == "int8" and rep["target"]["name"] == "host"
    # accuracy is measured on the emitted .tflite (int8 on a model this small: close to float)
    assert abs(rep["result"]["accuracy"] - rep["baseline"]["accuracy"]) <= 0.05
    assert rep["result"]["tflite_bytes"] == (folder / "model.tflite").stat().st_size
    # same architecture: MACs agree up to the int8 model's QUANTIZE/DEQUANTIZE element ops
    assert rep["result"]["macs"] == pytest.approx(rep["baseline"]["macs"], rel=0.05)
    methods = {(m["quantity"], m["method"], m["where"]) for m in rep["measurements"]}
    assert ("latency_ms", "host", "host") in methods
    assert ("flash_bytes", "artifact", "host") in methods
    checks = {c["name"]: c for c in rep["checks"]}
    assert set(checks) == {"latency", "flash", "accuracy_drop"}
    assert all(c["passed"] is not None and c["rule"] for c in checks.values())
    assert rep["passed"] == all(c["passed"] for c in checks.values())
    assert r.exit_code == (0 if rep["passed"] else 1)
    manifest = json.loads((folder / "manifest.json").read_text())
    for name, digest in manifest["artifacts"].items():
        assert sha256_file(folder / name) == digest
    assert {"model", "data", "val", "calib", "target"} <= set(manifest["inputs"])
    assert "✓" in (folder / "report.md").read_text() or "✗" in (folder / "report.md").read_text()


def test_non_host_target_never_uses_a_host_latency(tiny_files, tmp_path):
    r = _build(tiny_files, tmp_path / "o", "--prune", "none", "--epochs", "0", target="rpi4")
    assert r.exit_code in (0, 1), r.output
    rep = json.loads((tmp_path / "o" / "rpi4" / "report.json").read_text())
    latency = next(c for c in rep["checks"] if c["name"] == "latency")
    assert latency["method"] == "estimate" and latency["passed"] is not None
    host = next(m for m in rep["measurements"] if m["quantity"] == "latency_ms"
                and m["method"] == "host")
    estimate = next(m for m in rep["measurements"] if m["quantity"] == "latency_ms"
                    and m["method"] == "estimate")
    assert host["where"] == "host" and estimate["where"] == "rpi4"
    assert latency["value"] == estimate["value"]
    ram = next(c for c in rep["checks"] if c["name"] == "ram")
    assert ram["method"] == "estimate" and ram["passed"] is not None


def test_a_profile_without_an_estimator_leaves_latency_unchecked(tiny_files, tmp_path):
    profile = tmp_path / "bare.toml"
    profile.write_text('[hardware]\nkind = "cortex-a"\nclock_mhz = 1500\n'
                       '[runtime]\nengine = "litert-xnnpack"\n[budgets]\nlatency_ms = 5\n'
                       '[build]\nquantize = "int8"\n')
    r = _build(tiny_files, tmp_path / "o", "--prune", "none", "--epochs", "0",
               target=str(profile))
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "o" / "bare" / "report.json").read_text())
    latency = next(c for c in rep["checks"] if c["name"] == "latency")
    assert latency["passed"] is None and latency["value"] is None
    assert "host figure is not the target's" in latency["rule"]
    assert rep["passed"] is False  # unchecked is not passed
    strict = _build(tiny_files, tmp_path / "s", "--prune", "none", "--epochs", "0", "--strict",
                    target=str(profile))
    assert strict.exit_code == 1


def test_magnitude_pruning_reaches_the_sparsity(tiny_files, tmp_path):
    r = _build(tiny_files, tmp_path / "o", "--prune", "magnitude", "--sparsity", "0.5",
               "--epochs", "3", "--quantize", "none")
    assert r.exit_code in (0, 1), r.output
    rep = json.loads((tmp_path / "o" / "host" / "report.json").read_text())
    assert rep["result"]["sparsity"] == pytest.approx(0.5, abs=0.03)
    assert rep["baseline"]["params"] == rep["result"]["params"]  # unstructured: shape unchanged
    assert rep["result"]["gzip_bytes"] < rep["result"]["tflite_bytes"]


def test_float16_and_dynamic_modes(tiny_files, tmp_path):
    sizes = {}
    for mode in ("float16", "dynamic"):
        r = _build(tiny_files, tmp_path / mode, "--prune", "none", "--quantize", mode)
        assert r.exit_code in (0, 1), r.output
        rep = json.loads((tmp_path / mode / "host" / "report.json").read_text())
        sizes[mode] = rep["result"]["tflite_bytes"]
        assert rep["result"]["accuracy"] is not None
    assert all(size > 0 for size in sizes.values())


def test_recipe_file_and_cli_override_reach_the_report(tiny_files, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('quantize = "dynamic"\nseed = 7\n')
    r = _build(tiny_files, tmp_path / "o", "--recipe", str(recipe), "--seed", "9")
    assert r.exit_code in (0, 1), r.output
    rep = json.loads((tmp_path / "o" / "host" / "report.json").read_text())
    assert rep["recipe"]["quantize"] == "dynamic" and rep["recipe"]["seed"] == 9


def test_without_val_a_seeded_holdout_is_used(tiny_files, tmp_path):
    args = ["build", "--target", "host", "--model", str(tiny_files["model"]), "--data",
            str(tiny_files["data"]), "--out", str(tmp_path / "o"), "--quantize", "none"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code in (0, 1), r.output
    rep = json.loads((tmp_path / "o" / "host" / "report.json").read_text())
    acc = next(m for m in rep["measurements"] if m["quantity"] == "accuracy")
    assert "18 samples" in acc["detail"] and "held out" in acc["detail"]


def test_no_data_means_accuracy_unchecked(tiny_files, tmp_path):
    args = ["build", "--target", "host", "--model", str(tiny_files["model"]), "--calib",
            str(tiny_files["calib"]), "--out", str(tmp_path / "o")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code in (0, 1), r.output
    rep = json.loads((tmp_path / "o" / "host" / "report.json").read_text())
    acc = next(c for c in rep["checks"] if c["name"] == "accuracy_drop")
    assert acc["passed"] is None and "--data" in acc["rule"]


def test_previous_build_is_replaced_only_on_success(tiny_files, tmp_path):
    out = tmp_path / "o"
    assert _build(tiny_files, out, "--quantize", "none").exit_code in (0, 1)
    before = (out / "host" / "model.tflite").read_bytes()
    bad = dict(tiny_files, data=tmp_path / "missing.npz")
    assert _build(bad, out, "--quantize", "none").exit_code == 2
    assert (out / "host" / "model.tflite").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == [".edgeprune-cache", "host"]


@pytest.mark.slow
def test_ctrl_c_during_finetune_leaves_no_folder(tiny_files, tmp_path):
    out = tmp_path / "o"
    cmd = ["build", "--target", "host", "--model",
           str(tiny_files["model"]), "--data", str(tiny_files["data"]), "--out", str(out),
           "--prune", "magnitude", "--epochs", "400"]
    code, err, visible = interrupt_in_finetune(cmd, out, timeout=120)
    assert not visible and out.exists()  # the partial folder is hidden
    assert code == 130 and "interrupted" in err, err
    assert [p.name for p in out.iterdir()] == [".edgeprune-cache"]  # for --resume


def test_check_command(tiny_tflite, tiny_files, tmp_path):
    r = CliRunner().invoke(main, ["check", str(tiny_tflite), "--target", "host", "--data",
                                  str(tiny_files["val"]), "--json"])
    assert r.exit_code in (0, 1), r.output
    result = json.loads(r.stdout)
    assert {c["name"] for c in result["checks"]} == {"latency", "flash", "accuracy_drop"}
    flash = next(c for c in result["checks"] if c["name"] == "flash")
    assert flash["value"] == tiny_tflite.stat().st_size and flash["passed"] is True
    acc = next(m for m in result["measurements"] if m["quantity"] == "accuracy")
    assert 0.8 <= acc["value"] <= 1.0
    garbage = tmp_path / "g.tflite"
    garbage.write_bytes(np.random.default_rng(0).bytes(500))
    r = CliRunner().invoke(main, ["check", str(garbage), "--target", "host"])
    assert r.exit_code == 2 and "g.tflite" in r.output
