"""Helpers for the pruning tests: tiny models and planting dead channels.

A planted *dead* channel has zero kernel columns and bias in every producer of its group, a zero
depthwise bias, and BN beta = moving_mean = 0 (so BN maps 0 to 0). Every layer on its path maps
0 to 0, so the channel is exactly zero everywhere and removing it must not change the outputs.
"""

from __future__ import annotations

import numpy as np

from edgeprune import _tf
from edgeprune.pruning.graph import build_graph
from edgeprune.pruning.policy import kept_count

keras = _tf.keras()
L = keras.layers


def randomize_bn(model, seed: int = 0) -> None:
    """Give every batch norm non-trivial statistics (defaults would make BN an identity)."""
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if isinstance(layer, L.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) if i in (0, 3)
                               else rng.normal(0, 0.2, w.shape).astype(np.float32)
                               for i, w in enumerate(layer.get_weights())])  # fmt: skip


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


def n_dead(size: int, n_prunable: int, sparsity: float) -> int:
    """How many channels the uniform policy removes from a group (min 1, multiple 1)."""
    return size - kept_count(size, size - n_prunable, size - n_prunable * sparsity, 1, 1)


def plant_dead(model, sparsity: float, seed: int = 0) -> dict[int, np.ndarray]:
    """Zero as many channels per group as `prune_structured(sparsity=…)` will remove."""
    rng = np.random.default_rng(seed)
    graph = build_graph(model)
    dead: dict[int, np.ndarray] = {}
    for g in graph.prunable_groups():
        k = n_dead(g.size, g.n_prunable, sparsity)
        dead[g.id] = rng.choice(np.flatnonzero(g.prunable), size=k, replace=False)
    ops = graph.flat.layer_ops()
    for name, calls in ops.items():
        op = calls[0]
        layer = op.layer
        if not op.outputs or graph.slots(op.outputs[0]) is None:
            continue
        gids, pos = graph.slots(op.outputs[0])
        idx = np.array(
            [i for i in range(len(gids)) if gids[i] in dead and pos[i] in dead[gids[i]]],
            dtype=np.int64,
        )
        if not len(idx):
            continue
        member_kinds = {m.kind for m in graph.members if m.layer == name}
        weights = {id(v): v for v in layer.weights}
        if "producer" in member_kinds:
            kernel = getattr(layer, "pointwise_kernel", None)
            kernel = layer.kernel if kernel is None else kernel
            w = kernel.numpy()
            if type(layer).__name__.endswith("Transpose"):
                w[..., idx, :] = 0
            else:
                w[..., idx] = 0
            kernel.assign(w)
        if "producer" in member_kinds or isinstance(layer, L.DepthwiseConv2D | L.DepthwiseConv1D):
            bias = getattr(layer, "bias", None)
            if bias is not None and id(bias) in weights:
                b = bias.numpy()
                b[idx] = 0
                bias.assign(b)
        if isinstance(layer, L.BatchNormalization):
            for var in (layer.beta, layer.moving_mean):
                if var is not None:
                    v = var.numpy()
                    v[idx] = 0
                    var.assign(v)
    return dead


def max_diff(a, b, x) -> float:
    ya, yb = a(x, training=False), b(x, training=False)
    ya = ya if isinstance(ya, list | tuple) else [ya]
    yb = yb if isinstance(yb, list | tuple) else [yb]
    pairs = zip(ya, yb, strict=True)
    return max(float(np.max(np.abs(np.asarray(p) - np.asarray(q)))) for p, q in pairs)


def sample(model, n: int = 4, seed: int = 1):
    rng = np.random.default_rng(seed)
    xs = [rng.normal(0, 1, (n, *t.shape[1:])).astype(np.float32) for t in model.inputs]
    return xs if len(xs) > 1 else xs[0]


def snapshot(model) -> list[np.ndarray]:
    return [w.copy() for w in model.get_weights()]


def int8_tflite(model, x) -> bytes:
    tf = _tf.tf()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i : i + 1]] for i in range(len(x)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def run_tflite(blob: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=blob, num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    scale, zero = inp["quantization"]
    it.set_tensor(inp["index"], np.round(x / scale + zero).clip(-128, 127).astype(np.int8))
    it.invoke()
    return it.get_tensor(out["index"])


# --- small models used across tests ------------------------------------------------------------
def residual_model():
    i = keras.Input((12, 12, 3))
    x = L.ReLU()(L.BatchNormalization(name="bn1")(L.Conv2D(8, 3, padding="same", name="c1")(i)))
    y = L.BatchNormalization(name="bn2")(L.Conv2D(8, 3, padding="same", name="c2")(x))
    x = L.ReLU()(L.Add()([x, y]))
    x = L.Conv2D(6, 1, name="c3")(x)
    out = L.Dense(3, name="head")(L.GlobalAveragePooling2D()(x))
    return keras.Model(i, out, name="residual")


def separable_model():
    i = keras.Input((12, 12, 3))
    x = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(8, 3, padding="same")(i)))
    x = L.DepthwiseConv2D(3, padding="same")(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.SeparableConv2D(8, 3, padding="same", depth_multiplier=2, activation="relu")(x)
    return keras.Model(i, L.Dense(3)(L.GlobalMaxPooling2D()(x)), name="separable")


def concat_flatten_model():
    i = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 3, padding="same", activation="relu")(i)
    b = L.Conv2D(6, 1, activation="relu")(i)
    x = L.Concatenate(name="cat")([a, b])
    x = L.Conv2D(8, 1, activation="relu")(x)
    x = L.MaxPooling2D(2)(L.Concatenate()([x, a]))
    x = L.Dense(8, activation="relu")(L.Flatten(name="flat")(x))
    return keras.Model(i, L.Dense(3)(x), name="concat_flatten")


def se_model():
    i = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="stem")(i)
    x = L.Activation("swish")(L.BatchNormalization()(x))
    s = L.GlobalAveragePooling2D(keepdims=True)(x)
    s = L.Conv2D(4, 1, activation="relu", name="se_reduce")(s)
    s = L.Conv2D(8, 1, activation="sigmoid", name="se_expand")(s)  # (N,1,1,C) x (N,H,W,C)
    x = L.Multiply()([x, s])
    g = L.Dense(4, activation="relu", name="gate_reduce")(L.GlobalAveragePooling2D()(x))
    g = L.Reshape((1, 1, 8))(L.Dense(8, activation="sigmoid", name="gate_expand")(g))
    x = L.Multiply()([x, g])
    return keras.Model(i, L.Dense(3, activation="softmax")(L.GlobalAveragePooling2D()(x)))


def sequential_model():
    return keras.Sequential(
        [
            keras.Input((10, 10, 2)),
            L.Conv2D(8, 3, activation="relu"),
            L.BatchNormalization(),
            L.MaxPooling2D(),
            L.Conv2D(6, 3, activation="relu"),
            L.Flatten(),
            L.Dense(8, activation="relu"),
            L.Dropout(0.2),
            L.Dense(3),
        ],
        name="seq",
    )


def nested_model():
    inner_in = keras.Input((8, 8, 8))
    y = L.Conv2D(8, 3, padding="same", name="inner_conv")(inner_in)
    y = L.BatchNormalization(name="conv")(y)
    y = L.Add()([inner_in, L.ReLU()(y)])
    inner = keras.Model(inner_in, y, name="block")
    head = keras.Sequential([keras.Input((8,)), L.Dense(6, activation="relu"), L.Dense(3)],
                            name="head")  # fmt: skip
    i = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="conv")(i)  # same name as a layer inside `block`
    x = inner(x, training=False)
    x = inner(x)  # shared nested model: both calls must keep the same channels
    return keras.Model(i, head(L.GlobalAveragePooling2D()(x)), name="outer")


def two_block_model(classes: int = 3, seed: int = 0):
    """Conv(8) → BN → ReLU → Conv(16) → BN → ReLU → GAP → softmax: two prunable groups."""
    keras.utils.set_random_seed(seed)
    i = keras.Input((8, 8, 1), name="image")
    x = L.ReLU()(L.BatchNormalization(name="bn1")(L.Conv2D(8, 3, padding="same", name="c1")(i)))
    x = L.ReLU()(L.BatchNormalization(name="bn2")(L.Conv2D(16, 3, padding="same", name="c2")(x)))
    out = L.Dense(classes, activation="softmax", name="head")(L.GlobalAveragePooling2D()(x))
    return keras.Model(i, out, name="two_block")


def stripes(n: int = 120, classes: int = 3, seed: int = 0):
    """8×8×1 textures (row stripes, column stripes, checkerboard) plus noise, integer labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    rows, cols = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    patterns = [rows % 2, cols % 2, (rows + cols) % 2]
    x = rng.normal(0, 0.1, (n, 8, 8, 1)).astype(np.float32)
    for k, label in enumerate(y):
        x[k, :, :, 0] += patterns[label % 3]
    return x, y.astype(np.int64)


def trained(model, x, y, epochs: int = 8, lr: float = 1e-2):
    loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(keras.optimizers.Adam(lr), loss, metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0)
    return model
