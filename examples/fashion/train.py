"""Train edgeprune's Fashion-MNIST example: a small MobileNetV2-style network (inverted residuals).

Regenerates, deterministically for a given ``--seed``:

- ``examples/fashion/model.keras``  the float tf_keras model (native .keras format)
- ``examples/fashion/train.npz``    training images, ``x`` (N,28,28,1) uint8 0..255, ``y`` int64
- ``examples/fashion/val.npz``      validation images, same keys
- ``calib_data/fashion/calib.npz``  256 unlabelled training images (``x`` only), int8 calibration

Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist``
(0.0~git20200523.55506a9-1, architecture all), which holds the original IDX files. The .deb is
fetched with ``apt-get download`` (no installation, no root) and checked against its SHA-256;
it is an ``ar`` archive whose ``data.tar.xz`` is read here with the standard library. Both the
training and the validation split are drawn, disjoint and stratified by class, from Fashion's
60,000 training images; its 10,000 test images are never used. Usage (from the repository
root)::

    python examples/fashion/train.py --seed 0 [--deb dataset-fashion-mnist_…_all.deb]
"""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
from edgeprune import _tf  # noqa: E402
from edgeprune.training import seed_everything  # noqa: E402
from examples.digits.train import fit_and_save, make_parser  # noqa: E402

PACKAGE = "dataset-fashion-mnist=0.0~git20200523.55506a9-1"
DEB = "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb"
DEB_SHA256 = "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"
DATA_DIR = "./usr/share/datasets/fashion-mnist"
IMAGE_SIZE = 28
NUM_CLASSES = 10
TRAIN_SAMPLES = 10_000
VAL_SAMPLES = 5_000


def _deb(path: Path | None) -> bytes:
    if path is None:
        with tempfile.TemporaryDirectory() as tmp:
            # apt-get download fetches into the working directory without installing.
            subprocess.run(["apt-get", "download", "-q", PACKAGE], check=True, cwd=tmp)
            blob = (Path(tmp) / DEB).read_bytes()
    else:
        blob = path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != DEB_SHA256:
        raise SystemExit(f"{DEB}: SHA-256 {digest}, expected {DEB_SHA256}")
    return blob


def ar_members(blob: bytes) -> dict[str, bytes]:
    """The members of an ``ar`` archive (a .deb): 8-byte magic, then per member a 60-byte
    header (name 16, mtime 12, uid 6, gid 6, mode 8, size 10, ``\\x60\\n``) and its data,
    padded to an even length."""
    if not blob.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive (no !<arch> magic)")
    members, pos = {}, 8
    while pos + 60 <= len(blob):
        header = blob[pos:pos + 60]
        if header[58:60] != b"`\n":
            raise ValueError(f"corrupt ar member header at byte {pos}")
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        members[name] = blob[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)
    return members


def read_idx(raw: bytes) -> np.ndarray:
    """An IDX file (LeCun's MNIST format): zero bytes, type 0x08 (uint8), the number of
    dimensions, each a big-endian uint32, then the data."""
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"not a uint8 IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"IDX shape {shape} does not match its {data.size} bytes")
    return data.reshape(shape)


def fashion_train(deb: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's 60,000 training images (N,28,28) uint8 and labels (N,) uint8."""
    data = ar_members(_deb(deb))["data.tar.xz"]
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:xz") as tar:
        def member(name: str) -> np.ndarray:
            handle = tar.extractfile(f"{DATA_DIR}/{name}")
            if handle is None:
                raise ValueError(f"{DEB}: {DATA_DIR}/{name} is not a file")
            return read_idx(gzip.decompress(handle.read()))

        return member("train-images-idx3-ubyte.gz"), member("train-labels-idx1-ubyte.gz")


def disjoint_stratified(labels: np.ndarray, counts: tuple[int, ...], rng: np.random.Generator
                        ) -> list[np.ndarray]:
    """Disjoint index sets of the given sizes, each class an equal share of every set (sorted).
    Fashion-MNIST's training classes hold 6,000 images each, so equal shares are exact."""
    if any(c % NUM_CLASSES for c in counts):
        raise ValueError(f"sizes {counts} are not multiples of {NUM_CLASSES} classes")
    picked: list[list[np.ndarray]] = [[] for _ in counts]
    for cls in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == cls))
        start = 0
        for i, count in enumerate(counts):
            share = count // NUM_CLASSES
            picked[i].append(members[start:start + share])
            start += share
    return [np.sort(np.concatenate(p)) for p in picked]


def load_splits(seed: int, deb: Path | None) -> tuple[np.ndarray, ...]:
    images, labels = fashion_train(deb)
    train_idx, val_idx = disjoint_stratified(labels, (TRAIN_SAMPLES, VAL_SAMPLES),
                                             np.random.default_rng(seed))
    splits = []
    for idx in (train_idx, val_idx):
        splits += [images[idx][..., np.newaxis].copy(), labels[idx].astype(np.int64)]
    return tuple(splits)


def _conv_bn(keras: ModuleType, x: Any, filters: int, kernel: int, strides: int, name: str,
             relu6: bool = True) -> Any:
    # No bias before BatchNormalization (beta does its job).
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                            name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu")(x) if relu6 else x


def inverted_residual(keras: ModuleType, x: Any, expand: int, out: int, strides: int,
                      name: str) -> Any:
    """MobileNetV2's block: 1×1 expand + BN + ReLU6, 3×3 depthwise + BN + ReLU6, 1×1 linear
    projection + BN, and a residual Add when the shape is kept (stride 1, same width)."""
    shortcut = x
    x = _conv_bn(keras, x, expand, 1, 1, f"{name}_expand")
    x = keras.layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False,
                                     name=f"{name}_dw")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    x = _conv_bn(keras, x, out, 1, 1, f"{name}_project", relu6=False)
    if strides == 1 and shortcut.shape[-1] == out:
        x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return x


# (expand channels, output channels, stride) per block; resolutions 28, 14, 7, 4.
BLOCKS = (
    (48, 16, 1),  # b1: 28×28, residual with the stem
    (64, 24, 2),  # b2: → 14×14
    (96, 24, 1),  # b3: 14×14, residual
    (96, 32, 2),  # b4: → 7×7
    (128, 32, 1),  # b5: 7×7, residual
    (128, 64, 2),  # b6: → 4×4
    (256, 64, 1),  # b7: 4×4, residual
)
HEAD_CHANNELS = 256


def build_model(keras: ModuleType) -> Any:
    """28×28×1 uint8 → 10 classes: a MobileNetV2-style network (stem, seven inverted-residual
    blocks at 28, 14, 7 and 4 pixels, a 1×1 head conv, GAP, softmax). Expansion widths grow
    where resolution falls, so a channel costs very different MACs in different groups."""
    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
    x = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
    x = _conv_bn(keras, x, 16, 3, 1, "stem")  # 28×28×16
    for i, (expand, out, strides) in enumerate(BLOCKS, start=1):
        x = inverted_residual(keras, x, expand, out, strides, f"b{i}")
    x = _conv_bn(keras, x, HEAD_CHANNELS, 1, 1, "head")  # 4×4×256
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="fashion_mobilenet")


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__, epochs=10, batch_size=64)
    parser.add_argument("--deb", type=Path, help=f"a downloaded {DEB} (default: apt-get download)")
    args = parser.parse_args(argv)
    seed_everything(args.seed)
    splits = load_splits(args.seed, args.deb)
    fit_and_save(build_model(_tf.keras()), splits, "fashion", args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
