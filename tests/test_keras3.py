"""Keras 3 models in (issue 19): translated exactly, pruned by every method, and written back
as a Keras 3 model.keras; the bad Keras 3 inputs, each exit 2 naming file, layer and fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import keras3_models as k3m
import numpy as np
import pytest
from click.testing import CliRunner
from tiny_models import blobs

from edgeprune import _tf, model_io
from edgeprune.cli import main
from edgeprune.errors import ModelLoadError
from edgeprune.keras3 import bridge

REPO = Path(__file__).resolve().parents[1]


def _build(model: Path, out: Path, *extra: str, data: dict[str, Path] | None = None,
           target: str = "host") -> tuple[int, str, Path]:
    args = ["build", "--target", target, "--model", str(model), "--out", str(out), *extra]
    for option, path in (data or {}).items():
        args += [f"--{option}", str(path)]
    r = CliRunner().invoke(main, args)
    return r.exit_code, r.output, out / Path(target).stem


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Trained Keras 3 models (functional CNN, Sequential) and their data."""
    root = tmp_path_factory.mktemp("k3")
    x, y = blobs(160)
    paths = {"data": root / "train.npz", "val": root / "val.npz"}
    np.savez(paths["data"], x=x[:120], y=y[:120])
    np.savez(paths["val"], x=x[120:], y=y[120:])
    for name, build in (("cnn", k3m.cnn), ("seq", k3m.sequential)):
        paths[name] = k3m.train_and_save(build(), x[:120], y[:120], root / f"{name}.keras", 5)
    return paths


def _keras3_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    import keras

    return np.asarray(keras.saving.load_model(path)(x, training=False))


# --- translation ----------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("name", ["cnn", "sequential"])
def test_translation_is_exact_and_keeps_the_names(tmp_path, name, suffix):
    source = getattr(k3m, name)()
    k3m.randomize_bn(source)
    path = tmp_path / f"m{suffix}"
    source.save(path)
    model = model_io.load_model(path)
    x = np.random.default_rng(1).normal(size=(8, 8, 8, 1)).astype(np.float32)
    assert bridge.max_diff(source, model, x) < 1e-6
    assert model.count_params() == source.count_params()
    ours = {layer.name for layer in model.layers}
    assert {layer.name for layer in source.layers} <= ours
    assert type(model).__module__.startswith("tf_keras")


def test_nested_model_translates_exactly(tmp_path):
    keras = k3m.keras3()
    inner_in = keras.Input((8, 8, 4))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="hard_sigmoid", name="in_conv")(
        inner_in)
    backbone = keras.Model(inner_in, keras.layers.BatchNormalization(name="in_bn")(h),
                           name="backbone")
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 1, name="lift")(inputs)
    x = backbone(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    source = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    k3m.randomize_bn(source)
    source.save(tmp_path / "nested.keras")
    model = model_io.load_model(tmp_path / "nested.keras")
    x = np.random.default_rng(2).normal(size=(4, 8, 8, 1)).astype(np.float32)
    assert bridge.max_diff(source, model, x) < 1e-6
    assert model.get_layer("backbone").get_layer("in_conv").filters == 8


def test_a_mistranslation_is_refused_not_warned(files):
    model = model_io.load_model(files["cnn"])
    kernel, bias = model.get_layer("head").get_weights()
    model.get_layer("head").set_weights([kernel * 1.01, bias])  # what a wrong mapping would do
    x = np.load(files["val"])["x"]
    with pytest.raises(ModelLoadError, match=r"cnn.keras.*differs from the Keras 3 model by up "
                       r"to .* on 40 samples of val.npz"):
        bridge.verify(model, x, "val.npz")


def _amplifier(path: Path) -> Path:
    """A Keras 3 model whose outputs reach ~4e7: 1×1 convolutions with gain 4, each followed by
    BatchNormalization, which Keras 3 and tf_keras (fused) round differently."""
    keras = _tf.keras3()
    rng = np.random.default_rng(0)
    inp = keras.Input((4, 4, 16))
    x = inp
    for _ in range(10):
        x = keras.layers.BatchNormalization()(keras.layers.Conv2D(16, 1, use_bias=False)(x))
    model = keras.Model(inp, x)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            q = np.linalg.qr(rng.normal(size=(16, 16)))[0]
            layer.set_weights([(4 * q).reshape(1, 1, 16, 16)])
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 2, 16), rng.normal(size=16),
                               rng.normal(size=16), rng.uniform(0.5, 2, 16)])
    model.save(path)
    return path


def test_amplified_rounding_is_judged_in_float64(tmp_path):
    model = model_io.load_model(_amplifier(tmp_path / "amp.keras"))
    x = np.random.default_rng(1).normal(size=(16, 4, 4, 16)).astype(np.float32)
    check = bridge.verify(model, x, "noise")
    assert check["max_abs_diff"] > bridge.MAX_DIFF  # float32 alone would refuse it
    assert check["max_abs_diff_float64"] <= 1e-6
    conv = model.layers[-2]  # a wrong translation still shows in float64
    conv.set_weights([conv.get_weights()[0] * 1.001])
    with pytest.raises(ModelLoadError, match=r"differs .* computed in float64"):
        bridge.verify(model, x, "noise")


def test_tf_keras_application_layers_reload(tmp_path):
    """tf_keras' own load_model cannot rebuild the layers its ConvNeXt defines without
    registering them ("'str' object is not callable"); edgeprune hands them over."""
    keras = _tf.keras()
    from tf_keras.src.applications.convnext import LayerScale

    inp = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 1)(inp)
    model = keras.Model(inp, keras.layers.Add()([inp, LayerScale(0.5, 4)(x)]))
    model.save(tmp_path / "scale.keras")
    with pytest.raises(TypeError, match="not callable"):  # the tf_keras defect this works around
        keras.models.load_model(tmp_path / "scale.keras", compile=False)
    loaded = model_io.load_model(tmp_path / "scale.keras")
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x), model(x))


# --- bad input ------------------------------------------------------------------------------
def _refused(model: Path, tmp_path: Path, *extra: str) -> str:
    code, output, _ = _build(model, tmp_path / "out", "--epochs", "0", *extra)
    assert code == 2, output
    assert "Traceback" not in output and not (tmp_path / "out").exists()
    return output


def test_layer_tf_keras_lacks_is_named(tmp_path):
    keras = k3m.keras3()
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.RMSNormalization(name="rms")(inputs)  # Keras 3 only
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(3)(x)).save(tmp_path / "rms.keras")
    out = _refused(tmp_path / "rms.keras", tmp_path)
    assert "rms.keras, layer 'rms' (RMSNormalization)" in out and "tf_keras" in out


def test_argument_tf_keras_lacks_is_named(tmp_path):
    keras = k3m.keras3()
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.LayerNormalization(rms_scaling=True, name="ln")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(3)(x)).save(tmp_path / "ln.keras")
    out = _refused(tmp_path / "ln.keras", tmp_path)
    assert "layer 'ln' (LayerNormalization)" in out and "rms_scaling=True" in out


def test_file_from_a_newer_keras_names_layer_key_and_versions(files, tmp_path):
    with zipfile.ZipFile(files["cnn"]) as z:
        members = {n: z.read(n) for n in z.namelist()}
    config = json.loads(members["config.json"])
    conv = next(e for e in config["config"]["layers"] if e["config"]["name"] == "conv2")
    conv["config"]["spectral_norm"] = True  # an argument from a future Keras
    members["config.json"] = json.dumps(config).encode()
    members["metadata.json"] = json.dumps({"keras_version": "3.99.0"}).encode()
    path = tmp_path / "future.keras"
    with zipfile.ZipFile(path, "w") as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    out = _refused(path, tmp_path)
    assert "future.keras, layer 'conv2' (Conv2D)" in out and "spectral_norm" in out
    assert "Keras 3.99.0" in out and "pip install keras==" in out


def test_several_inputs_are_refused_by_name(tmp_path):
    keras = k3m.keras3()
    a, b = keras.Input((4,), name="left"), keras.Input((4,), name="right")
    x = keras.layers.Concatenate()([a, b])
    keras.Model([a, b], keras.layers.Dense(3)(x)).save(tmp_path / "two.keras")
    out = _refused(tmp_path / "two.keras", tmp_path)
    assert "two.keras" in out and "2 inputs ('left', 'right')" in out and "sub-model" in out


def test_exported_savedmodel_says_pruning_needs_layers(files, tmp_path):
    import keras

    keras.saving.load_model(files["seq"]).export(tmp_path / "exported", verbose=False)
    out = _refused(tmp_path / "exported", tmp_path, "--prune", "structured")
    assert "exported" in out and "no Keras layers" in out and "model.save(" in out
    assert "--prune none" in out


def test_exported_savedmodel_converts_with_prune_none(files, tmp_path):
    """Keras 3's model.export(): no layers, so nothing is pruned, but it is quantized,
    converted and checked, and its float conversion is the SavedModel's own function."""
    import keras

    keras.saving.load_model(files["cnn"]).export(tmp_path / "exported", verbose=False)
    code, output, folder = _build(tmp_path / "exported", tmp_path / "f32", "--prune", "none",
                                  "--quantize", "none", "--epochs", "0", data={"val": files["val"]})
    assert code in (0, 1), output
    x = np.load(files["val"])["x"][:16]
    from edgeprune.runners import host

    got = host.predict((folder / "model.tflite").read_bytes(), x)
    assert np.abs(got - _keras3_outputs(files["cnn"], x)).max() < 1e-5
    rep = json.loads((folder / "report.json").read_text())
    assert rep["result"]["params"] == rep["baseline"]["params"] > 0
    assert not (folder / "model.keras").exists()
    assert any("no model.keras" in n for n in rep["notes"])
    code, output, folder = _build(tmp_path / "exported", tmp_path / "i8", "--prune", "none",
                                  "--quantize", "int8", "--epochs", "0",
                                  data={"data": files["data"], "val": files["val"]})
    assert code in (0, 1), output
    rep = json.loads((folder / "report.json").read_text())
    assert rep["result"]["accuracy"] >= rep["baseline"]["accuracy"] - 0.05


def test_custom_layer_is_refused_naming_class_and_layer(tmp_path):
    keras = k3m.keras3()

    @keras.saving.register_keras_serializable(package="edgeprune_test")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    inputs = keras.Input((8, 8, 1))
    x = Doubler(name="doubler")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(3)(x)).save(tmp_path / "custom.keras")
    out = _refused(tmp_path / "custom.keras", tmp_path)
    assert "class 'Doubler' (layer 'doubler')" in out and "--trust-model" in out




CUSTOM_MODULE = """
import keras


@keras.saving.register_keras_serializable(package="edgeprune_test")
class Gain(keras.layers.Layer):
    def build(self, input_shape):
        self.gain = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="gain")

    def call(self, x):
        return x * self.gain
"""


def test_trusted_custom_layer_runs_as_itself_and_is_a_boundary(files, tmp_path, monkeypatch):
    (tmp_path / "edgeprune_gain_layer.py").write_text(CUSTOM_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import edgeprune_gain_layer

    keras = k3m.keras3()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", name="c1")(inputs)
    x = edgeprune_gain_layer.Gain(name="gain")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    source = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(x))
    source.get_layer("gain").set_weights([np.linspace(0.5, 1.5, 16)])
    source.save(tmp_path / "custom.keras")
    _refused(tmp_path / "custom.keras", tmp_path)  # not without --trust-model
    code, output, folder = _build(tmp_path / "custom.keras", tmp_path / "out", "--trust-model",
                                  "--prune", "structured", "--sparsity", "0.5", "--epochs", "1",
                                  data={"data": files["data"], "val": files["val"]})
    assert code in (0, 1), output
    rep = json.loads((folder / "report.json").read_text())
    assert rep["model_in"]["max_abs_diff"] <= 1e-6
    assert any("'gain'" in note and "boundary" in note for note in rep["notes"])
    c1 = next(row for row in rep["layers"] if row["name"] == "c1")
    assert c1["channels_after"] == c1["channels_before"] == 16  # feeds the boundary: kept
    out = keras.saving.load_model(folder / "model.keras")
    assert type(out.get_layer("gain")).__name__ == "Gain"
    assert out.count_params() == rep["result"]["params"]
    gain = out.get_layer("gain").get_weights()[0]  # the user's (fine-tuned), not re-initialised
    assert gain.shape == (16,) and np.ptp(gain) > 0.5

# --- the safety check: built-ins by exact class ---------------------------------------------
@pytest.mark.parametrize(("module", "cls", "config", "refused"), [
    ("tensorflow.python.ops.init_ops_v2", "Constant", {}, False),  # tf_keras applications
    ("keras.layers", "Conv2D", {}, False),
    ("keras.src.ops.numpy", "Add", {}, False),  # `x + y` in a Keras 3 functional graph
    ("keras.src.applications.convnext", "LayerScale", {}, False),
    ("keras.activations", "function", "relu", False),
    ("keras.layers", "TFSMLayer", {}, True),  # built in, but loads a SavedModel named in config
    ("keras.layers", "TorchModuleWrapper", {}, True),  # unpickles
    ("keras.src.utils.io_utils", "print_msg", {}, True),  # a Keras function, not a model part
    ("keras.activations", "function", "deserialize", True),
    ("tensorflow.python.lib.io.file_io", "FileIO", {}, True),
    ("tensorflow", "function", "py_function", True),
    ("keras_evil", "Conv2D", {}, True),  # a prefix is not enough
    ("builtins", "eval", {}, True),
])
def test_only_keras_and_tf_builtins_pass_by_exact_class(module, cls, config, refused):
    entry = {"module": module, "class_name": cls, "config": config, "registered_name": None}
    found = model_io.untrusted_parts({"config": {"layers": [
        {"class_name": "Dense", "config": {"name": "d", "kernel_initializer": entry},
         "inbound_nodes": []}]}})
    assert bool(found) == refused, found
    if refused:
        assert "(layer 'd')" in found[0] and module in found[0]


def test_tf_keras_application_with_tf_initializer_loads_untrusted(tmp_path):
    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    model = keras.applications.EfficientNetV2B0(weights=None, input_shape=(32, 32, 3),
                                                classes=3)
    model.save(tmp_path / "effv2.keras")
    with zipfile.ZipFile(tmp_path / "effv2.keras") as z:  # what the check used to refuse
        assert b'"tensorflow.python.ops.init_ops_v2"' in z.read("config.json")
    assert model_io.load_model(tmp_path / "effv2.keras").count_params() == model.count_params()


# --- the pruned model out -------------------------------------------------------------------
def test_tf_keras_input_gives_a_tf_keras_model_keras(tiny_files, tmp_path):
    code, output, folder = _build(tiny_files["model"], tmp_path / "out", "--prune", "structured",
                                  "--sparsity", "0.5", "--epochs", "1", "--quantize", "int8",
                                  data={"data": tiny_files["data"], "val": tiny_files["val"]})
    assert code in (0, 1), output
    rep = json.loads((folder / "report.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "model.keras" in manifest["artifacts"]
    assert rep["model_out"]["flavour"] == "tf_keras" and rep["model_in"] is None
    keras = _tf.keras()
    out = keras.models.load_model(folder / "model.keras", compile=False)
    assert out.count_params() == rep["result"]["params"]
    assert not any("Prune" in type(layer).__name__ for layer in out.layers)


def _reload_in_plain_keras3(path: Path) -> int:
    """Parameter count of ``path`` loaded by a fresh Python with Keras 3 and no
    TF_USE_LEGACY_KERAS, as a user without edgeprune would."""
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    code = ("import sys, keras; assert keras.__version__.startswith('3.');"
            "print(keras.models.load_model(sys.argv[1]).count_params())")
    r = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True,
                       text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    return int(r.stdout.strip().splitlines()[-1])


# --- Keras 3 models through whole builds (slow) ---------------------------------------------
APPS = ("MobileNetV3Small", "EfficientNetB0", "ResNet50")


@pytest.fixture(scope="module")
def app_files(tmp_path_factory) -> dict[str, Path]:
    """Untrained keras.applications models (random BN statistics) and random 32×32 images."""
    root = tmp_path_factory.mktemp("apps")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    paths = {"val": root / "val.npz", "calib": root / "calib.npz"}
    np.savez(paths["val"], x=x, y=rng.integers(0, 3, len(x)))
    np.savez(paths["calib"], x=x)
    return paths


def _model_file(name: str, files: dict[str, Path], app_files: dict[str, Path],
                tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    if name in ("cnn", "seq"):
        return files[name], {"data": files["data"], "val": files["val"]}
    model = k3m.application(name)
    k3m.randomize_bn(model)
    model.save(tmp_path / f"{name}.keras")
    return tmp_path / f"{name}.keras", {"val": app_files["val"], "calib": app_files["calib"]}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn", "seq", *APPS])
def test_keras3_model_prunes_converts_exactly_and_comes_back(name, files, app_files, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    path, data = _model_file(name, files, app_files, tmp_path)
    # Structured pruning at 0.5: at most 60 % of the parameters stay. (Float: int8 calibration
    # of these models costs minutes and is shown on the small ones elsewhere.)
    code, output, pruned = _build(path, tmp_path / "s", "--prune", "structured", "--sparsity",
                                  "0.5", "--epochs", "0", "--quantize", "none", data=data)
    assert code in (0, 1), output
    rep = json.loads((pruned / "report.json").read_text())
    assert rep["result"]["params"] <= 0.6 * rep["baseline"]["params"]
    assert rep["model_in"]["max_abs_diff"] <= 1e-4 and rep["model_in"]["samples"] > 0
    assert _reload_in_plain_keras3(pruned / "model.keras") == rep["result"]["params"]
    # No pruning, float: the .tflite computes what the user's Keras 3 model computes.
    code, output, plain = _build(path, tmp_path / "n", "--prune", "none", "--epochs", "0",
                                 "--quantize", "none", data=data)
    assert code in (0, 1), output
    x = np.load(data["val"])["x"][:8]
    interpreter = Interpreter(model_path=str(plain / "model.tflite"))
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    ours = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert np.max(np.abs(ours - _keras3_outputs(path, x))) <= 1e-5
    rep = json.loads((plain / "report.json").read_text())
    assert rep["model_out"]["flavour"] == "keras3"
    assert rep["model_out"]["params"] == rep["result"]["params"] == rep["baseline"]["params"]


def _auto_target(folder: Path) -> str:
    """rpi4 with a flash budget the dense CNN's int8 .tflite (15.1 KB) misses and its narrowest
    pruning (9.4 KB) meets, so --prune auto has to prune."""
    path = folder / "rpi4-tight.toml"
    path.write_text('inherit = "rpi4"\nname = "rpi4-tight"\n[budgets]\nflash_kb = 12\n')
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("method", [
    ("--prune", "magnitude", "--sparsity", "0.5"),
    ("--prune", "m-by-n"),
    ("--prune", "hybrid", "--sparsity", "0.3", "--weight-sparsity", "0.5"),
    ("--prune", "structured", "--l1", "1e-4", "--criterion", "bn"),
    ("--prune", "structured", "--after-prune", "retrain"),
    ("--prune", "none", "--quantize", "qat"),
    ("--prune", "auto", "--search-minutes", "0.3"),
], ids=lambda m: "-".join(a.strip("-") for a in m[1:4:2]))
def test_every_method_on_a_keras3_model(method, files, tmp_path):
    target = _auto_target(tmp_path) if "auto" in method else "host"
    # TF-MOT's QAT cannot clone TFOpLambda layers (tf_keras' own `x + 3.0` fails the same way),
    # which the CNN's hard_silu becomes: QAT is shown on the Sequential model.
    model = files["seq"] if "qat" in method else files["cnn"]
    code, output, folder = _build(model, tmp_path / "out", "--epochs", "1", *method,
                                  data={"data": files["data"], "val": files["val"]},
                                  target=target)
    assert code in (0, 1), output
    rep = json.loads((folder / "report.json").read_text())
    base, res = rep["baseline"], rep["result"]
    if method[1] in ("magnitude", "m-by-n", "hybrid"):
        assert res["sparsity"] >= 0.25 + base["sparsity"]
    if method[1] in ("structured", "hybrid", "auto"):
        assert res["params"] < base["params"]
    if method[1] == "auto":
        assert rep["search"]["trajectory"]
    if "qat" in method:
        assert rep["recipe"]["quantize"] == "qat" and "qat_finetune" in rep
    import keras

    out = keras.saving.load_model(folder / "model.keras")
    assert out.count_params() == res["params"]
    names = {layer.name for layer in out.layers}
    assert ("c1" if "qat" in method else "stem") in names  # the user's names


def test_analyze_sensitivity_uses_the_users_layer_names(files, tmp_path):
    r = CliRunner().invoke(main, ["analyze", str(files["cnn"]), "--data", str(files["val"]),
                                  "--sensitivity", "--samples", "40", "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.output[r.output.index("{"):])
    rows = result["sensitivity"]["rows"]
    assert rows and any("stem" in row["layers"] for row in rows)
