"""Models built with Keras 3 itself (``import keras``), as a user of TF ≥ 2.16 saves them
(imported by name, like tiny_models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def keras3():
    from edgeprune import _tf

    _tf.tf()  # TF_USE_LEGACY_KERAS is set first, as in edgeprune; `import keras` is Keras 3
    import keras

    assert keras.__version__.startswith("3."), keras.__version__
    return keras


def cnn(input_shape=(8, 8, 1), classes: int = 3, seed: int = 0):
    """Functional CNN: residual Add, DepthwiseConv2D, SeparableConv2D, Concatenate, Dropout,
    LeakyReLU (renamed argument) and a hard_silu activation (a different function in tf_keras)."""
    keras = keras3()
    keras.utils.set_random_seed(seed)
    L = keras.layers
    inputs = keras.Input(input_shape, name="image")
    x = L.Conv2D(16, 3, padding="same", name="stem")(inputs)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.LeakyReLU(negative_slope=0.1, name="stem_act")(x)
    y = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = L.BatchNormalization(name="dw_bn")(y)
    y = L.Conv2D(16, 1, activation="hard_silu", name="pw")(y)
    x = L.Add(name="residual")([x, y])
    z = L.SeparableConv2D(8, 3, padding="same", activation="relu", name="sep")(x)
    x = L.Concatenate(name="concat")([x, z])
    x = L.Conv2D(24, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(0.2, name="drop")(x)
    outputs = L.Dense(classes, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="k3cnn")


def sequential(input_shape=(8, 8, 1), classes: int = 3, seed: int = 0):
    keras = keras3()
    keras.utils.set_random_seed(seed)
    L = keras.layers
    return keras.Sequential([
        keras.Input(input_shape),
        L.Conv2D(16, 3, padding="same", name="c1"),
        L.BatchNormalization(name="bn1"),
        L.ReLU(name="act1"),
        L.Conv2D(16, 3, padding="same", activation="relu", name="c2"),
        L.MaxPooling2D(name="pool"),
        L.Flatten(name="flat"),
        L.Dense(16, activation="relu", name="fc"),
        L.Dense(classes, activation="softmax", name="head"),
    ], name="k3seq")


def application(name: str, input_shape=(32, 32, 3), classes: int = 3):
    """A keras.applications model, untrained (weights=None), with a small head."""
    keras = keras3()
    keras.utils.set_random_seed(0)
    return getattr(keras.applications, name)(weights=None, input_shape=input_shape,
                                             classes=classes)


def randomize_bn(model, seed: int = 0) -> None:
    """Untrained BN statistics are 0/1 everywhere; random ones make output checks meaningful."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if hasattr(layer, "layers"):
            randomize_bn(layer, seed)
        elif type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape)])


def train_and_save(model, x, y, path: Path, epochs: int = 10) -> Path:
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0)
    model.save(path)
    return path
