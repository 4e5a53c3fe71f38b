"""Every bad input of the pipeline issue: exit 2, a message naming the thing and what to do,
and no output folder left behind."""

import numpy as np
import pytest
from click.testing import CliRunner

from edgeprune import _tf
from edgeprune.cli import main


def _lambda_keras(path):
    keras = _tf.keras()
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Lambda(lambda t: t + 1.0, name="plus_one")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)).save(path)
    return path


def _case(name, tmp):
    """(CLI args replacing the defaults, text the message must contain)."""
    if name == "missing-model":
        return {"--model": str(tmp / "nope.keras")}, ["nope.keras", "no such file"]
    if name == "random-bytes-model":
        (tmp / "r.keras").write_bytes(np.random.default_rng(1).bytes(4096))
        return {"--model": str(tmp / "r.keras")}, ["r.keras", "not a Keras model"]
    if name == "text-model":
        (tmp / "t.h5").write_text("this is not a model\n")
        return {"--model": str(tmp / "t.h5")}, ["t.h5", "not a Keras model"]
    if name == "lambda-keras":
        return {"--model": str(_lambda_keras(tmp / "l.keras"))}, ["plus_one", "--trust-model"]
    if name == "lambda-h5":
        return {"--model": str(_lambda_keras(tmp / "l.h5"))}, ["plus_one", "--trust-model"]
    if name == "data-without-y":
        np.savez(tmp / "d.npz", x=np.zeros((4, 8, 8, 1)))
        return {"--data": str(tmp / "d.npz")}, ["d.npz", "'y'", "savez"]
    if name == "data-without-x":
        np.savez(tmp / "d.npz", inputs=np.zeros((4, 8, 8, 1)), y=np.zeros(4, int))
        return {"--data": str(tmp / "d.npz")}, ["d.npz", "'x'"]
    if name == "mismatched-lengths":
        np.savez(tmp / "d.npz", x=np.zeros((4, 8, 8, 1)), y=np.zeros(5, int))
        return {"--val": str(tmp / "d.npz")}, ["--val", "d.npz", "4 samples"]
    if name == "calib-shape":
        np.savez(tmp / "c.npz", x=np.zeros((60, 16, 16, 1)))
        return {"--calib": str(tmp / "c.npz")}, ["--calib", "c.npz", "(N, 8, 8, 1)"]
    if name == "nan-data":
        x = np.zeros((4, 8, 8, 1))
        x[2, 0, 0, 0] = np.nan
        np.savez(tmp / "n.npz", x=x, y=np.zeros(4, int))
        return {"--data": str(tmp / "n.npz")}, ["n.npz", "NaN or inf", "sample 2"]
    if name == "inf-calib":
        x = np.zeros((60, 8, 8, 1))
        x[0, 1, 1, 0] = np.inf
        np.savez(tmp / "i.npz", x=x)
        return {"--calib": str(tmp / "i.npz")}, ["i.npz", "NaN or inf"]
    if name == "unknown-target":
        return {"--target": "rpi9"}, ["rpi9", "rpi4", "cortex-m4"]
    if name == "target-syntax-error":
        (tmp / "t.toml").write_text('[budgets]\nlatency_ms = = 3\n')
        return {"--target": str(tmp / "t.toml")}, ["t.toml", "line 2"]
    if name == "target-unknown-key":
        (tmp / "t.toml").write_text('inherit = "rpi4"\n[budgets]\nlatency = 3\n')
        return {"--target": str(tmp / "t.toml")}, ["t.toml", "budgets.latency", "latency_ms"]
    if name == "sparsity-1":
        return {"--sparsity": "1.0"}, ["--sparsity", "[0, 1)"]
    if name == "sparsity-negative":
        return {"--sparsity": "-0.2"}, ["--sparsity", "[0, 1)"]
    if name == "negative-epochs":
        return {"--epochs": "-3"}, ["--epochs", "≥ 0"]
    if name == "label-out-of-range":
        np.savez(tmp / "l.npz", x=np.zeros((4, 8, 8, 1)), y=np.array([0, 1, 2, 7]))
        return {"--data": str(tmp / "l.npz")}, ["l.npz", "label 7", "3 outputs"]
    raise AssertionError(name)


CASES = [
    "missing-model", "random-bytes-model", "text-model", "lambda-keras", "lambda-h5",
    "data-without-y", "data-without-x", "mismatched-lengths", "calib-shape", "nan-data",
    "inf-calib", "unknown-target", "target-syntax-error", "target-unknown-key", "sparsity-1",
    "sparsity-negative", "negative-epochs", "label-out-of-range",
]


@pytest.mark.parametrize("name", CASES)
def test_bad_input_exit_2_with_message_and_no_folder(name, tiny_files, tmp_path):
    override, needles = _case(name, tmp_path)
    out = tmp_path / "out"
    opts = {"--target": "host", "--model": str(tiny_files["model"]),
            "--data": str(tiny_files["data"]), "--val": str(tiny_files["val"]),
            "--calib": str(tiny_files["calib"]), "--out": str(out), **override}
    args = ["build"] + [x for kv in opts.items() for x in kv]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    for needle in needles:
        assert needle in r.output, (needle, r.output)
    assert not out.exists()


def test_out_pointing_at_a_file(tiny_files, tmp_path):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    r = CliRunner().invoke(main, ["build", "--target", "host", "--model",
                                  str(tiny_files["model"]), "--out", str(target),
                                  "--calib", str(tiny_files["calib"])])
    assert r.exit_code == 2 and "--out" in r.output and "a-file" in r.output
    assert target.read_text() == "keep me"


def test_int8_without_calibration_or_data(tiny_files, tmp_path):
    r = CliRunner().invoke(main, ["build", "--target", "host", "--model",
                                  str(tiny_files["model"]), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--calib" in r.output
    assert not (tmp_path / "o").exists()


def test_magnitude_without_epochs(tiny_files, tmp_path):
    r = CliRunner().invoke(main, ["build", "--target", "host", "--model",
                                  str(tiny_files["model"]), "--data", str(tiny_files["data"]),
                                  "--prune", "magnitude", "--epochs", "0",
                                  "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--epochs" in r.output
    assert not (tmp_path / "o").exists()
