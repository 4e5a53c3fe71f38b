"""Every bad input of the pipeline and hostile-input issues: exit 2, a message naming the
file/option/value and what to do, no output folder left behind, and the input files untouched.

Each case is one `edgeprune build` run whose other options are the valid tiny fixture files.
Bad input is detected while loading (before any heavy stage), so each case takes well under a
second; the hostile model files are built once per module.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeprune import _tf
from edgeprune.cli import main


def _tiny_keras_with(src: Path, dest: Path, mutate) -> Path:
    """A copy of the tiny .keras file whose config.json was changed by ``mutate``
    (called with the model config and its list of layers)."""
    with zipfile.ZipFile(src) as z:
        files = {n: z.read(n) for n in z.namelist()}
    config = json.loads(files["config.json"])
    mutate(config, config["config"]["layers"])
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(dest, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return dest


def _layer(layers, class_name):
    return next(layer for layer in layers if layer["class_name"] == class_name)


@pytest.fixture(scope="module")
def hostile(tiny_files, tmp_path_factory) -> dict[str, Path]:
    """Hostile and unusable model files, built once for the module."""
    keras = _tf.keras()
    tf = _tf.tf()
    root = tmp_path_factory.mktemp("hostile")
    tiny = tiny_files["model"]
    paths: dict[str, Path] = {}

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Lambda(lambda t: t + 1.0, name="plus_one")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    lam = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    for name, kw in (("lambda.keras", {}), ("lambda.h5", {}),
                     ("lambda_savedmodel", {"save_format": "tf"})):
        paths[name] = root / name
        lam.save(paths[name], **kw)

    a, b = keras.Input((8, 8, 1)), keras.Input((8, 8, 1))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Add()([a, b]))
    keras.Model([a, b], keras.layers.Dense(3)(pooled)).save(root / "two_in.keras")
    pooled = keras.layers.GlobalAveragePooling2D()(a)
    keras.Model(a, [keras.layers.Dense(3)(pooled), keras.layers.Dense(2)(pooled)]).save(
        root / "two_out.keras")
    flat = keras.Input(batch_shape=(64,))
    keras.Model(flat, keras.layers.Activation("sigmoid")(flat)).save(root / "no_batch.keras")
    free = keras.Input((None, None, 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(free))
    keras.Model(free, keras.layers.Dense(3, activation="softmax")(x)).save(root / "any_hw.keras")
    m = tf.Module()
    m.v = tf.Variable(1.0)
    tf.saved_model.save(m, str(root / "plain_savedmodel"))  # no Keras metadata, no signatures

    def import_module(config, layers):  # Keras imports the model class's module on load
        config.update(module="antigravity", class_name="Functional")

    def os_system(config, layers):
        _layer(layers, "Dense")["config"]["activation"] = {
            "module": "os", "class_name": "function", "config": "system",
            "registered_name": "system"}

    def unknown_class(config, layers):
        conv = _layer(layers, "Conv2D")
        conv.update(class_name="FancyConv", module=None, registered_name="FancyConv")

    def write_file_op(config, layers):  # a TFOpLambda calling tf.io.write_file when the model runs
        relu = _layer(layers, "ReLU")
        relu.update(class_name="TFOpLambda", module="keras.layers", registered_name=None)
        relu["config"] = {"name": "relu", "trainable": True, "dtype": "float32",
                          "function": "io.write_file"}

    for name, mutate in (("module.keras", import_module), ("os_system.keras", os_system),
                         ("custom.keras", unknown_class), ("write_file.keras", write_file_op)):
        paths[name] = _tiny_keras_with(tiny, root / name, mutate)
    paths.update({p.name: p for p in root.iterdir() if p.name not in paths})

    data = tiny.read_bytes()
    (root / "cut.keras").write_bytes(data[: len(data) // 2])
    h5 = root / "whole.h5"
    _tf.keras().models.load_model(tiny).save(h5)
    (root / "cut.h5").write_bytes(h5.read_bytes()[: h5.stat().st_size // 2])
    (root / "model.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(120))
    with zipfile.ZipFile(root / "junk.keras", "w") as z:
        z.writestr("junk.txt", "not a model")
    for name in ("cut.keras", "cut.h5", "model.tflite", "junk.keras"):
        paths[name] = root / name
    return paths


def _npz(tmp: Path, name: str, **arrays) -> str:
    np.savez(tmp / name, **arrays)
    return str(tmp / name)


def _toml(tmp: Path, name: str, text: str) -> str:
    (tmp / name).write_text(text)
    return str(tmp / name)


X = np.zeros((4, 8, 8, 1), np.float32)
Y = np.zeros(4, np.int64)


def _case(name, tmp, hostile):
    """(CLI args replacing the defaults, text the message must contain)."""
    model = {k: str(v) for k, v in hostile.items()}
    # -- model files ----------------------------------------------------------------------
    if name == "missing-model":
        return {"--model": str(tmp / "nope.keras")}, ["nope.keras", "no such file"]
    if name == "random-bytes-model":
        (tmp / "r.keras").write_bytes(np.random.default_rng(1).bytes(4096))
        return {"--model": str(tmp / "r.keras")}, ["r.keras", "not a Keras model"]
    if name == "text-model":
        (tmp / "t.h5").write_text("this is not a model\n")
        return {"--model": str(tmp / "t.h5")}, ["t.h5", "not a Keras model"]
    if name == "truncated-keras":
        return {"--model": model["cut.keras"]}, ["cut.keras", "truncated", "Re-save"]
    if name == "truncated-h5":
        return {"--model": model["cut.h5"]}, ["cut.h5", "truncated", "Re-save"]
    if name == "tflite-as-model":
        return {"--model": model["model.tflite"]}, ["model.tflite", ".tflite", "edgeprune check"]
    if name == "zip-of-junk":
        return {"--model": model["junk.keras"]}, ["junk.keras", "config.json", "Re-save"]
    if name == "lambda-keras":
        return {"--model": model["lambda.keras"]}, ["plus_one", "--trust-model"]
    if name == "lambda-h5":
        return {"--model": model["lambda.h5"]}, ["plus_one", "--trust-model"]
    if name == "lambda-savedmodel":
        return {"--model": model["lambda_savedmodel"]}, ["plus_one", "--trust-model"]
    if name == "config-imports-module":
        return {"--model": model["module.keras"]}, ["module.keras", "'antigravity'",
                                                    "--trust-model"]
    if name == "config-names-os-system":
        return {"--model": model["os_system.keras"]}, ["'system'", "'os'", "--trust-model"]
    if name == "tfop-write-file":
        return {"--model": model["write_file.keras"]}, ["tf.io.write_file", "--trust-model"]
    if name == "unknown-layer-class":
        return {"--model": model["custom.keras"]}, ["custom.keras", "FancyConv",
                                                    "built-in layers"]
    if name == "savedmodel-without-keras-metadata":
        # The target's recipe prunes nothing, so it would be converted as it is, but it has
        # no serving signature; with pruning it is refused for having no layers (test_keras3).
        return {"--model": model["plain_savedmodel"]}, ["plain_savedmodel", "serving_default",
                                                        "model.export()"]
    if name == "multi-input-model":
        return {"--model": model["two_in.keras"]}, ["two_in.keras", "2 inputs", "split"]
    if name == "multi-output-model":
        return {"--model": model["two_out.keras"]}, ["two_out.keras", "2 outputs", "split"]
    if name == "model-without-batch-dim":
        return {"--model": model["no_batch.keras"]}, ["no_batch.keras", "no batch dimension",
                                                      "keras.Input"]
    if name == "model-with-free-input-size":
        return {"--model": model["any_hw.keras"]}, ["any_hw.keras", "(None, None, None, 1)",
                                                    "fixed"]
    # -- data and calibration files -------------------------------------------------------
    if name == "data-without-y":
        return {"--data": _npz(tmp, "d.npz", x=X)}, ["d.npz", "'y'", "savez"]
    if name == "data-without-x":
        return {"--data": _npz(tmp, "d.npz", inputs=X, y=Y)}, ["d.npz", "'x'"]
    if name == "mismatched-lengths":
        return {"--val": _npz(tmp, "d.npz", x=X, y=np.zeros(5, int))}, \
            ["--val", "d.npz", "4 samples"]
    if name == "data-shape":
        return {"--data": _npz(tmp, "d.npz", x=np.zeros((4, 16, 16, 1)), y=Y)}, \
            ["--data", "d.npz", "(N, 8, 8, 1)", "reshape"]
    if name == "calib-shape":
        return {"--calib": _npz(tmp, "c.npz", x=np.zeros((60, 16, 16, 1)))}, \
            ["--calib", "c.npz", "(N, 8, 8, 1)"]
    if name == "string-samples":
        return {"--data": _npz(tmp, "s.npz", x=np.full((4, 8, 8, 1), "a"), y=Y)}, \
            ["s.npz", "dtype <U1", "numbers"]
    if name == "string-labels":
        return {"--val": _npz(tmp, "s.npz", x=X, y=np.array(["cat"] * 4))}, \
            ["--val", "s.npz", "dtype <U3", "integer labels"]
    if name == "string-one-hot-labels":
        return {"--data": _npz(tmp, "s.npz", x=X, y=np.full((4, 3), "a"))}, \
            ["s.npz", "dtype <U1", "integer labels"]
    if name == "pickled-object-array":
        return {"--data": _npz(tmp, "o.npz", x=np.array([{"a": 1}] * 4, dtype=object), y=Y)}, \
            ["o.npz", "pickled", "never loads", "numeric"]
    if name == "pickled-calib-npy":
        np.save(tmp / "o.npy", np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
        return {"--calib": str(tmp / "o.npy")}, ["--calib", "o.npy", "pickled", "never loads"]
    if name == "pickle-file-as-npz":
        import pickle

        (tmp / "p.npz").write_bytes(pickle.dumps({"x": [1, 2, 3]}))
        return {"--data": str(tmp / "p.npz")}, ["p.npz", "not a zip", "savez"]
    if name == "nan-data":
        x = X.copy()
        x[2, 0, 0, 0] = np.nan
        return {"--data": _npz(tmp, "n.npz", x=x, y=Y)}, ["n.npz", "NaN or inf", "sample 2"]
    if name == "inf-calib":
        x = np.zeros((60, 8, 8, 1))
        x[0, 1, 1, 0] = np.inf
        return {"--calib": _npz(tmp, "i.npz", x=x)}, ["i.npz", "NaN or inf"]
    if name == "overflowing-float64":
        return {"--data": _npz(tmp, "h.npz", x=np.full((4, 8, 8, 1), 1e300), y=Y)}, \
            ["h.npz", "NaN or inf", "Clean"]
    if name == "empty-arrays":
        return {"--data": _npz(tmp, "e.npz", x=np.zeros((0, 8, 8, 1)), y=np.zeros(0, int))}, \
            ["e.npz", "(0, 8, 8, 1)", "N ≥ 1"]
    if name == "label-out-of-range":
        return {"--data": _npz(tmp, "l.npz", x=X, y=np.array([0, 1, 2, 7]))}, \
            ["l.npz", "label 7", "3 outputs", "0..2"]
    if name == "negative-label":
        return {"--data": _npz(tmp, "l.npz", x=X, y=np.array([0, 1, -1, 2]))}, \
            ["l.npz", "negative label -1"]
    if name == "huge-uint64-label":
        return {"--data": _npz(tmp, "l.npz", x=X, y=np.full(4, 2**63 + 5, np.uint64))}, \
            ["l.npz", "too large", "0..K-1"]
    if name == "data-is-a-folder":
        (tmp / "dir.npz").mkdir()
        return {"--data": str(tmp / "dir.npz")}, ["dir.npz", "is a folder"]
    # -- target and recipe TOML -----------------------------------------------------------
    if name == "unknown-target":
        return {"--target": "rpi9"}, ["rpi9", "rpi4", "cortex-m4"]
    if name == "target-syntax-error":
        return {"--target": _toml(tmp, "t.toml", "[budgets]\nlatency_ms = = 3\n")}, \
            ["t.toml", "line 2"]
    if name == "target-unknown-key":
        return {"--target": _toml(tmp, "t.toml", 'inherit = "rpi4"\n[budgets]\nlatency = 3\n')}, \
            ["t.toml", "budgets.latency", "latency_ms"]
    if name == "target-bad-enum":
        return {"--target": _toml(tmp, "t.toml", 'inherit = "host"\n[hardware]\nkind = "gpu"\n')}, \
            ["t.toml", "hardware.kind = 'gpu'", "cortex-m"]
    if name == "target-wrong-type":
        return {"--target": _toml(tmp, "t.toml", 'inherit = "host"\n[runtime]\nthreads = 1.5\n')}, \
            ["t.toml", "runtime.threads = 1.5", "whole number"]
    if name == "target-nan-budget":
        return {"--target": _toml(tmp, "t.toml", 'inherit = "host"\n[budgets]\nram_kb = nan\n')}, \
            ["t.toml", "budgets.ram_kb = nan", "finite"]
    if name == "target-inherit-cycle":
        _toml(tmp, "b.toml", 'inherit = "a.toml"\n')
        return {"--target": _toml(tmp, "a.toml", 'inherit = "b.toml"\n')}, \
            ["a.toml", "inherit cycle", "b.toml"]
    if name == "target-inherit-missing":
        return {"--target": _toml(tmp, "t.toml", 'inherit = "rpi9"\n')}, \
            ["t.toml", "inherit = 'rpi9'", "unknown target", "rpi4"]
    if name == "recipe-syntax-error":
        return {"--recipe": _toml(tmp, "r.toml", "prune = \n")}, ["r.toml", "line 1"]
    if name == "recipe-unknown-key":
        return {"--recipe": _toml(tmp, "r.toml", 'prunning = "structured"\n')}, \
            ["r.toml", "'prunning'", "Allowed keys"]
    if name == "recipe-wrong-type":
        return {"--recipe": _toml(tmp, "r.toml", 'epochs = "3"\n')}, \
            ["r.toml", "epochs = '3'", "expected int"]
    if name == "recipe-bad-value":
        return {"--recipe": _toml(tmp, "r.toml", 'quantize = "int4"\n')}, \
            ["--quantize int4", "int8"]
    if name == "recipe-huge-seed":
        return {"--recipe": _toml(tmp, "r.toml", "seed = 9223372036854775807\n")}, \
            ["--seed 9223372036854775807", "4294967295"]
    if name == "recipe-infinite-learning-rate":
        return {"--recipe": _toml(tmp, "r.toml", "learning_rate = inf\n")}, \
            ["--learning-rate inf", "finite"]
    # -- CLI values -----------------------------------------------------------------------
    if name == "sparsity-1":
        return {"--sparsity": "1.0"}, ["--sparsity", "[0, 1)"]
    if name == "sparsity-negative":
        return {"--sparsity": "-0.2"}, ["--sparsity", "[0, 1)"]
    if name == "sparsity-nan":
        return {"--sparsity": "nan"}, ["--sparsity nan", "[0, 1)"]
    if name == "negative-epochs":
        return {"--epochs": "-3"}, ["--epochs", "≥ 0"]
    if name == "unknown-prune-method":
        return {"--prune": "fast"}, ["'--prune'", "'fast'", "structured"]
    if name == "unknown-quantize-mode":
        return {"--quantize": "int4"}, ["'--quantize'", "'int4'", "int8"]
    # -- device URIs ----------------------------------------------------------------------
    if name == "device-bad-scheme":
        return {"--device": "http://pi"}, ["http://pi", "scheme", "ssh://"]
    if name == "device-missing-host":
        return {"--device": "ssh://pi@"}, ["ssh://pi@", "host ''", "ssh://"]
    if name == "device-shell-in-user":
        return {"--device": "ssh://pi;reboot@host"}, ["pi;reboot", "not a valid user name"]
    if name == "device-shell-in-path":
        return {"--device": "ssh://pi@host/x;rm -rf ~"}, ["no path", "ssh://"]
    if name == "device-option-as-user":
        return {"--device": "ssh://-oProxyCommand=sh@host"}, ["-oProxyCommand=sh", "user"]
    if name == "device-bad-port":
        return {"--device": "ssh://pi@host:99999"}, ["port '99999'", "1 to 65535"]
    if name == "device-missing-known-hosts":
        return {"--device": "ssh://pi@host", "--known-hosts": str(tmp / "nope")}, \
            ["--known-hosts", "nope", "no such file"]
    raise AssertionError(name)


CASES = [
    "missing-model", "random-bytes-model", "text-model", "truncated-keras", "truncated-h5",
    "tflite-as-model", "zip-of-junk", "lambda-keras", "lambda-h5", "lambda-savedmodel",
    "config-imports-module", "config-names-os-system", "tfop-write-file", "unknown-layer-class",
    "savedmodel-without-keras-metadata", "multi-input-model", "multi-output-model",
    "model-without-batch-dim", "model-with-free-input-size",
    "data-without-y", "data-without-x", "mismatched-lengths", "data-shape", "calib-shape",
    "string-samples", "string-labels", "string-one-hot-labels", "pickled-object-array",
    "pickled-calib-npy", "pickle-file-as-npz", "nan-data", "inf-calib", "overflowing-float64",
    "empty-arrays", "label-out-of-range", "negative-label", "huge-uint64-label",
    "data-is-a-folder",
    "unknown-target", "target-syntax-error", "target-unknown-key", "target-bad-enum",
    "target-wrong-type", "target-nan-budget", "target-inherit-cycle", "target-inherit-missing",
    "recipe-syntax-error", "recipe-unknown-key", "recipe-wrong-type", "recipe-bad-value",
    "recipe-huge-seed", "recipe-infinite-learning-rate",
    "sparsity-1", "sparsity-negative", "sparsity-nan", "negative-epochs", "unknown-prune-method",
    "unknown-quantize-mode",
    "device-bad-scheme", "device-missing-host", "device-shell-in-user", "device-shell-in-path",
    "device-option-as-user", "device-bad-port", "device-missing-known-hosts",
]


def _digests(paths: list[Path]) -> dict[str, str]:
    """sha256 of every input file (folders: of each file inside)."""
    out = {}
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if f.is_file():
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("name", CASES)
def test_bad_input_exit_2_with_message_and_no_folder(name, tiny_files, hostile, tmp_path):
    override, needles = _case(name, tmp_path, hostile)
    out = tmp_path / "out"
    opts = {"--target": "host", "--model": str(tiny_files["model"]),
            "--data": str(tiny_files["data"]), "--val": str(tiny_files["val"]),
            "--calib": str(tiny_files["calib"]), "--out": str(out), **override}
    inputs = [Path(v) for k, v in opts.items() if k != "--out" and Path(v).exists()]
    before = _digests(inputs)
    args = ["build"] + [x for kv in opts.items() for x in kv]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    for needle in needles:
        assert needle in r.output, (needle, r.output)
    assert "Traceback" not in r.output and "internal failure" not in r.output
    assert not out.exists()
    assert _digests(inputs) == before  # the inputs were only read
    assert before, "the case reads at least one input file"


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


@pytest.mark.parametrize("extra,needle", [
    (["--prune", "structured", "--keep", "convv"], "did you mean conv"),
    (["--prune", "magnitude", "--epochs", "0"], "--epochs 1"),
    (["--prune", "hybrid", "--epochs", "0"], "--epochs 1"),
])
def test_pruner_refusals_come_before_the_slow_stages(tiny_files, tmp_path, extra, needle):
    r = CliRunner().invoke(main, ["build", "--target", "host", "--model",
                                  str(tiny_files["model"]), "--data", str(tiny_files["data"]),
                                  "--out", str(tmp_path / "o"), *extra])
    assert r.exit_code == 2 and needle in r.output, r.output
    assert "baseline" not in r.output  # refused right after loading
    assert not (tmp_path / "o").exists()
