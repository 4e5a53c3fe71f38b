"""Train edgeprune's bundled example model: a compact CNN on scikit-learn's 8×8 digits.

Regenerates, deterministically for a given ``--seed``:

- ``examples/digits/model.keras``  the float tf_keras model (native .keras format)
- ``examples/digits/train.npz``    training split, ``x`` (N,32,32,1) float32 and ``y`` (N,) int64
- ``examples/digits/val.npz``      validation split, same keys
- ``calib_data/digits/calib.npz``  256 unlabelled training samples (``x`` only) for int8 calibration

scikit-learn is needed only here (``load_digits`` ships inside it, so this runs offline); the tool
itself only reads the files above.

Usage (from the repository root)::

    python examples/digits/train.py --seed 0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
# Import TensorFlow through edgeprune._tf so Keras is tf_keras (Keras 2), the Keras TF-MOT needs.
sys.path.insert(0, str(REPO_ROOT))
from edgeprune import _tf  # noqa: E402
from edgeprune.training import seed_everything  # noqa: E402

IMAGE_SIZE = 32
NUM_CLASSES = 10
VAL_FRACTION = 0.2
CALIB_SAMPLES = 256


def load_splits(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits scaled to [0, 1], upscaled to 32×32×1, stratified 80/20 train/validation split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    tf = _tf.tf()
    digits = load_digits()
    # load_digits pixels are counts 0..16 (4×4 blocks of a 32×32 bitmap), not 0..255.
    images = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]
    # 32×32 gives room for three stride-2 stages, like a real small-image edge model.
    images = tf.image.resize(images, (IMAGE_SIZE, IMAGE_SIZE), method="bilinear").numpy()
    images = np.clip(images, 0.0, 1.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    x_train, x_val, y_train, y_val = train_test_split(
        images, labels, test_size=VAL_FRACTION, stratify=labels, random_state=seed
    )
    return x_train, y_train, x_val, y_val


def _conv_bn_relu(
    keras: ModuleType, x: Any, filters: int, strides: int, name: str, relu: bool = True
) -> Any:
    # Bias is redundant before BatchNormalization (BN's beta does the same job).
    x = keras.layers.Conv2D(
        filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _separable(
    keras: ModuleType, x: Any, filters: int, strides: int, name: str, relu: bool = True
) -> Any:
    """DepthwiseConv2D+BN+ReLU then 1×1 Conv2D+BN(+ReLU), as explicit layers (not SeparableConv2D)
    so structural pruning sees a pointwise conv whose output channels it can cut."""
    x = keras.layers.DepthwiseConv2D(
        3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw"
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_dw_relu")(x)
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_pw_bn")(x)
    return keras.layers.ReLU(name=f"{name}_pw_relu")(x) if relu else x


def build_model(keras: ModuleType) -> Any:
    """32×32×1 → 10 classes, ~59 k params, ~4 M MACs. Plain, residual and depthwise-separable
    blocks so the example exercises each case the pruner handles (free channels, Add-coupled
    channel groups, pointwise convs). Width sits at low resolution, where it is cheap in MACs."""
    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
    # Stride-2 stem: the 32×32 input is a 4× upscale of 8×8, so full resolution holds no detail.
    x = _conv_bn_relu(keras, inputs, 24, 2, "stem")  # 16×16×24

    # Residual block: block1a's output channels are free to prune; block1b's are tied to the Add.
    shortcut = x
    x = _conv_bn_relu(keras, x, 24, 1, "block1a")
    x = _conv_bn_relu(keras, x, 24, 1, "block1b", relu=False)
    x = keras.layers.Add(name="block1_add")([shortcut, x])
    x = keras.layers.ReLU(name="block1_relu")(x)

    x = _conv_bn_relu(keras, x, 64, 2, "down2")  # 8×8×64
    shortcut = x
    x = _separable(keras, x, 64, 1, "block2", relu=False)
    x = keras.layers.Add(name="block2_add")([shortcut, x])
    x = keras.layers.ReLU(name="block2_relu")(x)

    x = _separable(keras, x, 128, 2, "down3")  # 4×4×128
    x = _separable(keras, x, 128, 1, "block3")  # no residual: its pointwise conv is free to cut

    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def fit_and_save(
    model: Any,
    splits: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    name: str,
    args: argparse.Namespace,
) -> None:
    """Train ``model`` (Adam, cosine-decayed 3e-3), then write examples/NAME/{model.keras,
    train.npz, val.npz} and calib_data/NAME/calib.npz under ``args.out_dir``."""
    keras = _tf.keras()
    x_train, y_train, x_val, y_val = splits
    steps_per_epoch = int(np.ceil(len(x_train) / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=3e-3, decay_steps=args.epochs * steps_per_epoch
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.summary(print_fn=print)

    start = time.perf_counter()
    # fit() shuffles each epoch from the global seed; validation is measured once, at the end.
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, verbose=2)
    train_seconds = time.perf_counter() - start
    _, val_acc = model.evaluate(x_val, y_val, verbose=0)

    example_dir = args.out_dir / "examples" / name
    calib_dir = args.out_dir / "calib_data" / name
    example_dir.mkdir(parents=True, exist_ok=True)
    calib_dir.mkdir(parents=True, exist_ok=True)
    # Recompile with a fresh optimizer before saving: the file keeps the loss and metrics that
    # fine-tuning reuses, without the Adam slots that would triple its size.
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.save(example_dir / "model.keras")
    np.savez_compressed(example_dir / "train.npz", x=x_train, y=y_train)
    np.savez_compressed(example_dir / "val.npz", x=x_val, y=y_val)
    # Calibration comes from the training split so int8 ranges never peek at validation data.
    calib_idx = np.random.default_rng(args.seed).choice(len(x_train), CALIB_SAMPLES, replace=False)
    np.savez_compressed(calib_dir / "calib.npz", x=x_train[np.sort(calib_idx)])

    print(
        f"params={model.count_params()} val_accuracy={val_acc:.4f} "
        f"train_seconds={train_seconds:.1f} train={len(x_train)} val={len(x_val)}"
    )


def make_parser(doc: str, epochs: int, batch_size: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=REPO_ROOT,
        help="root under which examples/NAME/ and calib_data/NAME/ are written",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser(__doc__, epochs=15, batch_size=32).parse_args(argv)
    seed_everything(args.seed)
    splits = load_splits(args.seed)
    fit_and_save(build_model(_tf.keras()), splits, "digits", args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
