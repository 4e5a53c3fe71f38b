"""Int8 .tflite models for the runners (built once per session), and a loopback SSH "device"
(tests/sshd.py: the device is this machine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sshd import SshServer, running_sshd
from tiny_models import convert


def _keras():
    from edgeprune import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    return keras


def small_cnn():
    """Conv → depthwise → residual add → pools → GAP → dense → softmax, 16x16x3 input."""
    keras = _keras()
    layers = keras.layers
    inp = keras.Input((16, 16, 3), batch_size=1)
    a = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = layers.Add()([a, layers.DepthwiseConv2D(3, padding="same")(a)])
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(16, 3, strides=2)(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Softmax()(layers.Dense(10)(x)))


def cnn_100k():
    """A 5-conv 32x32 CNN: ~150 kB as int8, the size class measure_arena must handle fast."""
    keras = _keras()
    layers = keras.layers
    x = inp = keras.Input((32, 32, 3), batch_size=1)
    for channels, stride in [(16, 1), (32, 2), (64, 2), (64, 1), (128, 2)]:
        x = layers.Conv2D(channels, 3, strides=stride, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(64, activation="relu")(x)
    return keras.Model(inp, layers.Dense(10)(x))


def topk_model():
    """TOPK_V2: a builtin that LiteRT runs and TFLite-Micro does not have."""
    keras = _keras()
    from edgeprune import _tf

    tf = _tf.tf()
    inp = keras.Input((8,), batch_size=1)
    out = keras.layers.Lambda(lambda t: tf.math.top_k(t, k=3).values)(inp)
    return keras.Model(inp, out)


@pytest.fixture(scope="session")
def tflm_models(tmp_path_factory) -> dict[str, Path]:
    """'small': int8 in/out; 'big': ~150 kB int8 with float in/out; 'float'; 'topk'."""
    root = tmp_path_factory.mktemp("tflm_models")
    blobs = {
        "small": convert(small_cnn(), "int8", io_int8=True),
        "big": convert(cnn_100k(), "int8"),
        "float": convert(small_cnn(), None),
        "topk": convert(topk_model(), None),
    }
    paths = {}
    for name, data in blobs.items():
        paths[name] = root / f"{name}.tflite"
        paths[name].write_bytes(data)
    return paths


# -- device (SSH) and emulator (QEMU) runners -------------------------------------------------
SHAPE = (8, 8, 1)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, *SHAPE)).astype(np.float32)


def small_conv_model():
    """Conv → ReLU → depthwise conv → GAP → Dense: untrained, a second to build."""
    keras = _keras()
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory) -> SshServer:
    """sshd on 127.0.0.1: the "device" is this machine (see tests/sshd.py)."""
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def _convert(target_name: str, path: Path) -> Path:
    from edgeprune.converter import to_tflite
    from edgeprune.targets import load_target

    path.write_bytes(to_tflite(small_conv_model(), "int8", images(64), load_target(target_name)))
    return path


@pytest.fixture(scope="session")
def rpi4_tflite(tmp_path_factory) -> Path:
    """A small int8 conv model converted for rpi4 (int8 inside, float input/output)."""
    return _convert("rpi4", tmp_path_factory.mktemp("rpi4") / "small_rpi4_int8.tflite")


@pytest.fixture(scope="session")
def int8_io_tflite(tmp_path_factory) -> Path:
    """The same model with int8 input and output tensors (as for a Cortex-M target)."""
    return _convert("cortex-m4", tmp_path_factory.mktemp("m4") / "small_int8_io.tflite")


@pytest.fixture(scope="session")
def samples() -> np.ndarray:
    return images(24, seed=1)
