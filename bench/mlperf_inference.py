"""The image classifiers of the Cortex-A ruy anchors (MLPerf Inference on a Raspberry Pi 4),
rebuilt with random weights: the estimator needs only the graph (layer shapes).

- ``MobileNet`` (width ``alpha``, input ``size``) and ``ResNet50``: keras.applications.
- ``efficientnet_lite0`` … ``efficientnet_lite4``: EfficientNet-Lite as defined by the
  TensorFlow TPU repository's ``models/official/efficientnet/lite/efficientnet_lite_builder.py``
  (https://github.com/tensorflow/tpu): the EfficientNet-B0 block list with squeeze-and-excite
  removed, ReLU6 for swish, and the stem (32 filters), the head (1280 filters) and the repeats
  of the first and last block kept fixed while width and depth scale. (width, depth,
  resolution): lite0 (1.0, 1.0, 224), lite1 (1.0, 1.1, 240), lite2 (1.1, 1.2, 260), lite3
  (1.2, 1.4, 280), lite4 (1.4, 1.8, 300). Published parameter counts (that repository's lite
  README): 4.7 M, 5.4 M, 6.1 M, 8.2 M, 13.0 M; ``PARAMS`` records them and
  ``check_params`` compares the rebuilt networks with them.
"""

from __future__ import annotations

import math
from typing import Any

from _common import cached, convert, keras

# (repeats, kernel, stride, expand ratio, input filters, output filters): EfficientNet-B0.
BLOCKS = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
          (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
          (1, 3, 1, 6, 192, 320))
LITE = {0: (1.0, 1.0, 224), 1: (1.0, 1.1, 240), 2: (1.1, 1.2, 260), 3: (1.2, 1.4, 280),
        4: (1.4, 1.8, 300)}
PARAMS = {0: 4.7e6, 1: 5.4e6, 2: 6.1e6, 3: 8.2e6, 4: 13.0e6}  # published, in the lite README


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * scaled else new)


def efficientnet_lite(n: int):
    width, depth, size = LITE[n]
    k = keras()
    L = k.layers

    def bn_relu6(x, act=True):
        x = L.BatchNormalization()(x)
        return L.ReLU(6.0)(x) if act else x

    x = inp = k.Input((size, size, 3), batch_size=1)
    x = bn_relu6(L.Conv2D(32, 3, strides=2, padding="same", use_bias=False)(x))  # fixed stem
    for i, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(BLOCKS):
        f_in, f_out = _round_filters(f_in, width), _round_filters(f_out, width)
        if 0 < i < len(BLOCKS) - 1:  # the first and last block keep their repeats
            repeats = math.ceil(depth * repeats)
        for r in range(repeats):
            s, c_in = (stride, f_in) if r == 0 else (1, f_out)
            y = x
            if expand != 1:
                y = bn_relu6(L.Conv2D(c_in * expand, 1, use_bias=False)(y))
            y = bn_relu6(L.DepthwiseConv2D(kernel, strides=s, padding="same",
                                           use_bias=False)(y))
            y = bn_relu6(L.Conv2D(f_out, 1, use_bias=False)(y), act=False)
            x = L.Add()([x, y]) if s == 1 and c_in == f_out else y
    x = bn_relu6(L.Conv2D(1280, 1, use_bias=False)(x))  # fixed head
    x = L.GlobalAveragePooling2D()(x)
    return k.Model(inp, L.Dense(1000, activation="softmax")(x),
                   name=f"efficientnet_lite{n}")


def check_params() -> dict[str, tuple[int, float]]:
    """Rebuilt vs published parameter counts, by network."""
    return {f"efficientnet_lite{n}": (efficientnet_lite(n).count_params(), PARAMS[n])
            for n in LITE}


def build(row: dict[str, Any]):
    k = keras()
    model = row["model"]
    if model.startswith("efficientnet_lite"):
        return efficientnet_lite(int(model[-1]))
    inp = k.Input((row["size"], row["size"], 3), batch_size=1)
    if model == "MobileNet":
        return k.applications.MobileNet(input_tensor=inp, alpha=row.get("alpha", 1.0),
                                        weights=None)
    return getattr(k.applications, model)(input_tensor=inp, weights=None)


def blob(row: dict[str, Any]) -> bytes:
    """The anchor row's network as a .tflite: float32, or int8 (float I/O) for dtype int8."""
    kind = "int8" if row["dtype"] == "int8" else "float"
    if row["model"] == "MobileNet" and row.get("alpha", 1.0) == 1.0 and row["size"] == 224:
        key = f"calib_mobilenet_v1_224_{kind}"  # calibrate_cortex_a.py's cached conversion
    else:
        key = (f"ruy_{row['model']}_{row.get('alpha', 1.0):g}_{row.get('size', 0)}_{kind}"
               .replace(".", "p"))
    return cached(key, lambda: convert(build(row), kind))


if __name__ == "__main__":
    for name, (got, published) in check_params().items():
        print(f"{name}: {got:,} parameters rebuilt, {published / 1e6:.1f} M published "
              f"({got / published - 1:+.1%})")
