"""ONNX export: `build --export onnx`, `edgeprune export DIR`, and onnxruntime against LiteRT."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from tiny_models import convert

from edgeprune.cli import main
from edgeprune.errors import RecipeError, ToolError
from edgeprune.exporters import onnx as export_onnx
from edgeprune.recipe import resolve_recipe


def _run_onnx(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _agreement(tmp_path, tflite: bytes, x):
    path = tmp_path / "model.tflite"
    path.write_bytes(tflite)
    onnx_model = export_onnx.convert(path)
    return onnx_model, export_onnx.agreement(tflite, onnx_model, x, "test samples")


@pytest.fixture(scope="module")
def tiny(tiny_files):
    from edgeprune.model_io import load_model

    return load_model(tiny_files["model"]), np.load(tiny_files["val"])["x"]


def test_int8_is_qdq_and_equals_litert(tiny, tmp_path):
    import onnx

    model, x = tiny
    for io_int8 in (False, True):  # float I/O (CPU targets) and int8 I/O (MCU targets)
        onnx_model, rep = _agreement(tmp_path, convert(model, "int8", io_int8), x)
        ops = {n.op_type for n in onnx.load_from_string(onnx_model).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        assert rep["identical"] and rep["max_diff_steps"] == 0 and rep["top1_agreement"] == 1.0
        assert rep["samples"] == len(x) and rep["opset"] == export_onnx.OPSET


def test_float_agrees_with_litert(tiny, tmp_path):
    model, x = tiny
    _, rep = _agreement(tmp_path, convert(model, None), x)
    assert rep["max_abs_diff"] < 1e-5 and rep["top1_agreement"] == 1.0
    assert rep["max_diff_steps"] is None  # a float model has no quantization steps


def test_agreement_reports_a_difference(tiny, tmp_path):
    """The float model's ONNX against the int8 .tflite: the figures must show the difference,
    in output steps of the int8 model (the comparison is not vacuous)."""
    model, x = tiny
    float_onnx, _ = _agreement(tmp_path, convert(model, None), x)
    rep = export_onnx.agreement(convert(model, "int8"), float_onnx, x, "test samples")
    assert not rep["identical"] and rep["max_abs_diff"] > 0
    assert rep["max_diff_steps"] > 0  # step: the scale of the int8 tensor the output reads


def test_canonical_bytes_do_not_depend_on_the_hash_seed(tiny_tflite):
    """tf2onnx's own names and node order change with PYTHONHASHSEED; model.onnx must not."""
    code = ("import hashlib, sys; from pathlib import Path; "
            "from edgeprune.exporters import onnx as export_onnx; "
            "print(hashlib.sha256(export_onnx.convert(Path(sys.argv[1]))).hexdigest())")
    digests = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "TF_CPP_MIN_LOG_LEVEL": "3"}
        out = subprocess.run([sys.executable, "-c", code, str(tiny_tflite)], env=env,
                             capture_output=True, text=True, check=True).stdout
        digests.add(out.split()[-1])
    digests.add(hashlib.sha256(export_onnx.convert(tiny_tflite)).hexdigest())  # this process
    assert len(digests) == 1


def test_ops_tf2onnx_leaves_unconverted_are_refused(tiny_tflite, monkeypatch):
    import tf2onnx
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("TFL_MADE_UP", ["x"], ["y"])], "g", [value],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    monkeypatch.setattr(tf2onnx.convert, "from_tflite",
                        lambda *a, **k: (helper.make_model(graph), None))
    with pytest.raises(ToolError, match="TFL_MADE_UP"):
        export_onnx.convert(tiny_tflite)


def test_export_is_a_recipe_key(tmp_path):
    recipe_file = tmp_path / "r.toml"
    recipe_file.write_text('export = ["onnx"]\n')
    assert resolve_recipe({}, "t", recipe_file, {}).export == ("onnx",)
    assert resolve_recipe({}, "t", None, {"export": ("onnx",)}).to_dict()["export"] == ["onnx"]
    recipe_file.write_text('export = "tflm"\n')
    with pytest.raises(RecipeError, match="--export tflm"):
        resolve_recipe({}, "t", recipe_file, {})


def test_missing_extra_exits_2_naming_it(tiny_files, tmp_path, monkeypatch):
    """Simulates the missing extra: the packages are installed here, so each module is made
    unimportable (a None entry in sys.modules makes import and find_spec fail)."""
    for name in export_onnx.MODULES:
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["build", "--target", "host", "--model",
                                  str(tiny_files["model"]), "--export", "onnx", "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "edgeprune[onnx]" in r.output and "pip install 'edgeprune[onnx]'" in r.output
    assert not out.exists()  # refused before any work
    r = CliRunner().invoke(main, ["export", str(tmp_path), "--format", "onnx"])
    assert r.exit_code == 2 and "pip install 'edgeprune[onnx]'" in r.output, r.output


def test_int16x8_is_refused(tiny_files, tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["build", "--target", "host", "--model",
                                  str(tiny_files["model"]), "--calib", str(tiny_files["calib"]),
                                  "--quantize", "int16x8", "--export", "onnx", "--out", str(out)])
    assert r.exit_code == 2 and "int16x8" in r.output and "int64" in r.output, r.output
    assert not out.exists()


def test_export_bad_input(tmp_path):
    r = CliRunner().invoke(main, ["export", str(tmp_path)])
    assert r.exit_code == 2 and str(tmp_path) in r.output and "not an edgeprune build" in r.output
    r = CliRunner().invoke(main, ["export", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "no such folder" in r.output
    r = CliRunner().invoke(main, ["export", str(tmp_path), "--format", "tflm"])
    assert r.exit_code == 2 and "'tflm'" in r.output and "onnx" in r.output


def _build(files, out, *extra):
    args = ["build", "--target", "host", "--model", str(files["model"]), "--data",
            str(files["data"]), "--val", str(files["val"]), "--calib", str(files["calib"]),
            "--prune", "none", "--epochs", "0", "--out", str(out), *extra]
    r = CliRunner().invoke(main, args)
    assert r.exit_code in (0, 1), r.output + str(r.exception)
    return out / "host"


def _verified(folder):
    r = CliRunner().invoke(main, ["verify", str(folder)])
    assert r.exit_code == 0, r.output
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.slow
def test_int8_build_and_export_command(tiny_files, tmp_path):
    from edgeprune.runners import host

    built = _build(tiny_files, tmp_path / "a", "--quantize", "int8", "--export", "onnx")
    rep = json.loads((built / "report.json").read_text())["onnx"]
    assert rep["identical"] and rep["max_diff_steps"] == 0 and rep["top1_agreement"] == 1.0
    assert rep["samples_from"].startswith("held-out data")
    assert "ONNX export" in (built / "report.md").read_text()
    assert "ONNX export" in (built / "report.html").read_text()
    # Independently of export_onnx's own comparison: the file as a user would run it.
    x = np.load(tiny_files["val"])["x"].astype(np.float32)
    lite = host.predict(built / "model.tflite", x)
    assert np.array_equal(_run_onnx(built / "model.onnx", x), lite)
    _verified(built)

    # The same model built without --export, then exported: the same file and figures.
    later = _build(tiny_files, tmp_path / "b", "--quantize", "int8")
    assert not (later / "model.onnx").exists()
    r = CliRunner().invoke(main, ["export", str(later.parent)])
    assert r.exit_code == 0, r.output
    assert (later / "model.onnx").read_bytes() == (built / "model.onnx").read_bytes()
    again = json.loads((later / "report.json").read_text())["onnx"]
    assert again["written_by"] == "edgeprune export" and "--val" in again["samples_from"]
    assert {k: again[k] for k in ("identical", "max_diff_steps", "samples", "top1_agreement")} \
        == {k: rep[k] for k in ("identical", "max_diff_steps", "samples", "top1_agreement")}
    assert "ONNX export" in (later / "report.md").read_text()
    _verified(later)

    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 5, 5, 1), np.float32))
    r = CliRunner().invoke(main, ["export", str(later), "--samples", str(bad)])
    assert r.exit_code == 2 and str(bad) in r.output and "(N, 8, 8, 1)" in r.output, r.output
    manifest = json.loads((later / "manifest.json").read_text())
    for entry in manifest["inputs"].values():
        entry["path"] = str(tmp_path / "moved")
    (later / "manifest.json").write_text(json.dumps(manifest))
    r = CliRunner().invoke(main, ["export", str(later)])
    assert r.exit_code == 2 and "--samples" in r.output, r.output


@pytest.mark.slow
def test_float_build_exports_onnx(tiny_files, tmp_path):
    built = _build(tiny_files, tmp_path / "f", "--quantize", "none", "--export", "onnx")
    rep = json.loads((built / "report.json").read_text())
    assert rep["recipe"]["export"] == ["onnx"]
    onnx_rep = rep["onnx"]
    assert onnx_rep["max_abs_diff"] < 1e-5 and onnx_rep["top1_agreement"] == 1.0
    assert onnx_rep["max_diff_steps"] is None
    x = np.load(tiny_files["val"])["x"].astype(np.float32)
    from edgeprune.runners import host

    np.testing.assert_allclose(_run_onnx(built / "model.onnx", x),
                               host.predict(built / "model.tflite", x), atol=1e-5)
    _verified(built)
