import h5py
import pytest

from edgeprune import _tf
from edgeprune.errors import ModelLoadError
from edgeprune.model_io import load_model


def _lambda_model():
    keras = _tf.keras()
    inputs = keras.Input((4,))
    x = keras.layers.Lambda(lambda t: t * 2, name="double")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def test_missing_path(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model(tmp_path / "nope.keras")


@pytest.mark.parametrize("content", [b"\x00\x01garbage" * 50, b"just some text\n"])
def test_not_a_model(tmp_path, content):
    p = tmp_path / "model.keras"
    p.write_bytes(content)
    with pytest.raises(ModelLoadError) as e:
        load_model(p)
    assert "model.keras" in str(e.value) and "not a Keras model" in str(e.value)


def test_truncated_keras_file(tmp_path, tiny_files):
    p = tmp_path / "cut.keras"
    p.write_bytes(tiny_files["model"].read_bytes()[:300])
    with pytest.raises(ModelLoadError, match="cut.keras"):
        load_model(p)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_refused_unless_trusted(tmp_path, suffix):
    path = tmp_path / f"lam{suffix}"
    _lambda_model().save(path)
    with pytest.raises(ModelLoadError) as e:
        load_model(path)
    assert "double" in str(e.value) and "--trust-model" in str(e.value)
    assert load_model(path, trust_model=True).layers[1].name == "double"


def test_h5_weights_only_is_refused(tmp_path):
    p = tmp_path / "w.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("w", data=[1.0])
    with pytest.raises(ModelLoadError, match="without a model config"):
        load_model(p)


def test_loads_keras_h5_and_savedmodel(tmp_path, tiny_files):
    model = load_model(tiny_files["model"])
    assert model.input_shape == (None, 8, 8, 1)
    model.save(tmp_path / "m.h5")
    assert load_model(tmp_path / "m.h5").count_params() == model.count_params()
    model.save(tmp_path / "sm", save_format="tf")
    assert load_model(tmp_path / "sm").count_params() == model.count_params()


def test_multi_output_refused(tmp_path):
    keras = _tf.keras()
    inputs = keras.Input((4,))
    model = keras.Model(inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(3)(inputs)])
    model.save(tmp_path / "two.keras")
    with pytest.raises(ModelLoadError, match="2 outputs"):
        load_model(tmp_path / "two.keras")
