"""The MLPerf Tiny reference networks, rebuilt (weights random) for the Cortex-M anchors.

The latency anchors of bench/anchors.toml name these builders in their ``model`` field; the
estimator needs only the graph (layer shapes), never trained weights. Architectures follow
the reference training code of https://github.com/mlcommons/tiny (benchmark/training/):

- ``ds_cnn``: keyword spotting DS-CNN (49×10 MFCC input, 64 channels, 4 DS blocks).
- ``mlperf_vww``: visual wake words, MobileNet v1 alpha 0.25 at 96×96×3, 2 classes.
- ``resnet8``: image classification, image_classification/keras_model.py
  ``resnet_v1_eembc`` with 16/32/64 filters (CIFAR-10, 32×32×3).
- ``fc_autoencoder``: anomaly detection, the DCASE 2020 task 2 baseline (640 inputs, four
  Dense-128 layers, an 8-wide bottleneck, four Dense-128 layers, Dense-640), each hidden
  layer with batch normalisation and ReLU (anomaly_detection/README.md names the baseline).
"""

from __future__ import annotations

from collections.abc import Callable

from _common import cached, convert, keras


def ds_cnn():
    k = keras()
    L = k.layers
    x = inp = k.Input((49, 10, 1), batch_size=1)
    x = L.Conv2D(64, (10, 4), strides=(2, 2), padding="same", use_bias=False)(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    for _ in range(4):
        x = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
        x = L.ReLU()(L.BatchNormalization()(x))
        x = L.Conv2D(64, 1, use_bias=False)(x)
        x = L.ReLU()(L.BatchNormalization()(x))
    x = L.AveragePooling2D(pool_size=(25, 5))(x)
    x = L.Dense(12)(L.Flatten()(x))
    return k.Model(inp, L.Softmax()(x))


def mlperf_vww():
    k = keras()
    inp = k.Input((96, 96, 3), batch_size=1)
    return k.applications.MobileNet(input_tensor=inp, alpha=0.25, weights=None, classes=2)


def resnet8():
    k = keras()
    L = k.layers

    def conv(x, f, size=3, stride=1):
        return L.Conv2D(f, size, strides=stride, padding="same")(x)

    x = inp = k.Input((32, 32, 3), batch_size=1)
    x = L.ReLU()(L.BatchNormalization()(conv(x, 16)))
    for f, stride in ((16, 1), (32, 2), (64, 2)):
        y = L.ReLU()(L.BatchNormalization()(conv(x, f, stride=stride)))
        y = L.BatchNormalization()(conv(y, f))
        if stride != 1:
            x = conv(x, f, size=1, stride=stride)
        x = L.ReLU()(L.Add()([x, y]))
    x = L.Flatten()(L.AveragePooling2D(pool_size=8)(x))
    return k.Model(inp, L.Dense(10, activation="softmax")(x))


def fc_autoencoder():
    k = keras()
    L = k.layers
    x = inp = k.Input((640,), batch_size=1)
    for width in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        x = L.ReLU()(L.BatchNormalization()(L.Dense(width)(x)))
    return k.Model(inp, L.Dense(640)(x))


BUILDERS: dict[str, Callable] = {"ds_cnn": ds_cnn, "mlperf_vww": mlperf_vww,
                                 "resnet8": resnet8, "fc_autoencoder": fc_autoencoder}


def int8(name: str) -> bytes:
    """The network ``name`` as full-integer int8 (int8 I/O, as the MLPerf Tiny harness runs)."""
    # ds_cnn keeps the cache key calibrate_mcu.py has always used.
    key = "calib_ds_cnn_int8io" if name == "ds_cnn" else f"mlperf_{name}_int8io"
    return cached(key, lambda: convert(BUILDERS[name](), "int8io"))
