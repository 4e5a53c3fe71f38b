"""`--quantize qat` through the pipeline, and the artifacts stage inside `edgeprune build`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgeprune.cli import main


def _build(files, out, *extra, target="host", data=True):
    args = ["build", "--target", target, "--model", str(files["model"]), "--val",
            str(files["val"]), "--calib", str(files["calib"]), "--out", str(out), *extra]
    if data:
        args += ["--data", str(files["data"])]
    return CliRunner().invoke(main, args)


def _report(out, target):
    return json.loads((out / target / "report.json").read_text())


def test_qat_after_magnitude_pruning_keeps_the_zeros(tiny_files, tmp_path):
    r = _build(tiny_files, tmp_path / "o", "--prune", "magnitude", "--sparsity", "0.5",
               "--epochs", "3", "--quantize", "qat")
    assert r.exit_code in (0, 1), r.output + str(r.exception)
    rep = _report(tmp_path / "o", "host")
    q = rep["quantization"]
    assert q["mode"] == "qat" and q["tflite_weight_dtypes"] == ["int8"]
    assert q["sparsity_keras"] >= 0.49
    assert q["sparsity_tflite"] >= 0.49  # pruning-preserving QAT: the zeros survive int8
    assert rep["result"]["sparsity_tflite"] == q["sparsity_tflite"]
    assert "qat" in rep["timings_s"]
    # both trainings are reported; in 3 epochs early stopping (patience 3) cannot end either
    assert rep["finetune"]["epochs_run"] == rep["qat_finetune"]["epochs"] == 3
    assert any("Default8BitPrunePreserveQuantizeScheme" in n for n in rep["notes"])
    # the emitted model is int8 inside and follows its float twin closely
    assert rep["fidelity"]["top1_agreement"] >= 0.9
    assert rep["result"]["accuracy"] >= rep["baseline"]["accuracy"] - 0.1


def test_plain_qat_uses_the_default_scheme(tiny_files, tmp_path):
    r = _build(tiny_files, tmp_path / "o", "--prune", "none", "--epochs", "1",
               "--quantize", "qat", target="cortex-m4")
    assert r.exit_code in (0, 1), r.output + str(r.exception)
    rep = _report(tmp_path / "o", "cortex-m4")
    assert any("QAT (Default8BitQuantizeScheme)" in n for n in rep["notes"])
    assert rep["quantization"]["tflite_weight_dtypes"] == ["int8"]
    assert rep["artifacts"]["runtime"] == "tflite-micro"  # integer I/O: TFLM runs it


@pytest.mark.parametrize("extra,needle", [
    (("--epochs", "0"), "--epochs 1 or more"),
    ((), "needs labelled training data"),
])
def test_qat_needs_data_and_epochs(tiny_files, tmp_path, extra, needle):
    out = tmp_path / "o"
    r = _build(tiny_files, out, "--prune", "none", "--quantize", "qat", *extra,
               data=bool(extra))
    assert r.exit_code == 2, r.output
    assert "--quantize qat" in r.output and needle in r.output
    assert not out.exists()


def test_cortex_m4_build_reports_artifacts_and_uses_the_tflm_arena(tiny_files, tmp_path):
    r = _build(tiny_files, tmp_path / "o", "--prune", "none", "--epochs", "0",
               target="cortex-m4")
    assert r.exit_code in (0, 1), r.output + str(r.exception)
    folder = tmp_path / "o" / "cortex-m4"
    assert {"model_data.cc", "model_data.h", "op_resolver.h"} <= {p.name for p in
                                                                  folder.iterdir()}
    rep = _report(tmp_path / "o", "cortex-m4")
    arena = rep["artifacts"]["arena"]
    ram = next(c for c in rep["checks"] if c["name"] == "ram")
    assert ram["method"] == "tflm" and ram["value"] == arena["min_bytes"]
    assert "artifacts" in rep["timings_s"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {"model_data.cc", "model_data.h", "op_resolver.h"} <= set(manifest["artifacts"])
    assert rep["fidelity"]["top1_agreement"] is not None


def test_int16x8_build_for_cortex_m4(tiny_files, tmp_path):
    r = _build(tiny_files, tmp_path / "o", "--prune", "none", "--epochs", "0",
               "--quantize", "int16x8", target="cortex-m4")
    assert r.exit_code in (0, 1), r.output + str(r.exception)
    rep = _report(tmp_path / "o", "cortex-m4")
    assert rep["artifacts"]["outputs_match"]["dtype"] == "int16"
    assert rep["artifacts"]["outputs_match"]["result"] in ("equal", "within_one_step")
    assert rep["fidelity"]["outputs"][0]["sqnr_db"] > 40  # 16-bit activations


def test_unsupported_op_for_cortex_m4_is_exit_2_naming_it(tmp_path):
    import numpy as np

    from edgeprune import _tf

    keras = _tf.keras()
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8, activation="gelu", name="hidden")(inputs)  # GELU: not in TFLM
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)).save(
        tmp_path / "gelu.keras")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).random((60, 8), np.float32))
    out = tmp_path / "o"
    r = CliRunner().invoke(main, [
        "build", "--target", "cortex-m4", "--model", str(tmp_path / "gelu.keras"),
        "--calib", str(tmp_path / "calib.npz"), "--prune", "none", "--epochs", "0",
        "--out", str(out)])
    assert r.exit_code == 2, r.output + str(r.exception)
    assert "uses op GELU" in r.output and "TFLite-Micro" in r.output
    assert not out.exists()


def test_qat_of_a_model_tfmot_cannot_wrap_is_bad_input():
    from edgeprune import _tf
    from edgeprune.errors import RecipeError
    from edgeprune.recipe import Recipe
    from edgeprune.stages import qat

    keras = _tf.keras()
    inner = keras.Sequential([keras.layers.Dense(4, input_shape=(4,))])
    inputs = keras.Input((4,))
    with pytest.raises(RecipeError, match="--quantize qat.*inside another") as e:
        qat.prepare(keras.Model(inputs, inner(inputs)), Recipe(quantize="qat", epochs=1))
    assert "Use --quantize int8" in str(e.value)
