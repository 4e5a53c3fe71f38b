"""Datasets: labelled ``.npz`` files, calibration samples (.npz/.npy/image folder), splits.

Everything is validated before any work starts: keys, lengths, dtypes, finiteness, label range
and the model's input shape. Errors name the file and the option it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprune.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
HOLDOUT_FRACTION = 0.15
MAX_LABEL = 2**31 - 1  # larger labels are not class indices (and would wrap in int64)


@dataclass(frozen=True)
class Labelled:
    x: np.ndarray
    y: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class Inputs:
    """What a build works on. ``val`` is never trained on; ``calib`` is unlabelled."""

    train: Labelled | None
    val: Labelled | None
    calib: np.ndarray | None
    val_is_holdout: bool = False

    def model_inputs(self) -> tuple[np.ndarray, str] | None:
        """Samples to compare the model on (runtimes, translations) and where they come from:
        the held-out data, else the calibration samples."""
        if self.val is not None:
            return self.val.x, f"held-out data {self.val.source}"
        if self.calib is not None:
            return self.calib, "calibration samples"
        return None


_NPZ_FIX = "Save it with numpy.savez(path, x=inputs, y=labels)"
_PICKLED = "allow_pickle=False"  # numpy's message when an array holds pickled Python objects
NPY_MAGIC, ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"


def _read_head(path: Path, what: str, wanted: str) -> bytes:
    """The first bytes of a data file; a folder or missing file is named as such."""
    if path.is_dir():
        raise DataError(what, "is a folder, not a file", f"Give the path to {wanted}")
    if not path.is_file():
        raise DataError(what, "no such file", f"Give the path to {wanted}")
    try:
        with path.open("rb") as f:
            return f.read(8)
    except OSError as exc:
        raise DataError(what, f"cannot be read ({exc.strerror or exc})",
                        "Check its permissions") from exc


def _load_error(what: str, kind: str, exc: Exception, fix: str) -> DataError:
    if _PICKLED in str(exc):  # never unpickle: a pickle runs code when loaded
        return DataError(what, "holds pickled Python objects (an object array), which "
                         "edgeprune never loads", "Save plain numeric arrays (np.asarray(x, "
                         "dtype=np.float32)) with numpy.savez")
    return DataError(what, f"is not a readable {kind} ({exc})", fix)


def _open_npz(path: Path, option: str) -> dict[str, np.ndarray]:
    what = f"{option} {path}"
    head = _read_head(path, what, "an .npz file")
    if head.startswith(NPY_MAGIC):
        raise DataError(what, "is an .npy array, not an .npz", _NPZ_FIX)
    if not head.startswith(ZIP_MAGIC):
        raise DataError(what, "is not a readable .npz (not a zip archive)", _NPZ_FIX)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as exc:  # numpy/zipfile raise many types for corrupt archives
        raise _load_error(what, ".npz", exc, _NPZ_FIX) from exc


def _check_samples(x: np.ndarray, what: str) -> np.ndarray:
    if x.ndim < 2 or len(x) == 0:
        raise DataError(what, f"x has shape {x.shape}; expected (N, ...) with N ≥ 1", _NPZ_FIX)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(what, f"x has dtype {x.dtype}; expected numbers", _NPZ_FIX)
    with np.errstate(over="ignore"):  # values beyond float32 become inf, reported below
        x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.argwhere(bad.reshape(len(x), -1).any(axis=1))[0][0])
        raise DataError(
            what,
            f"x contains NaN or inf ({int(bad.sum())} values; first in sample {first})",
            "Clean or drop those samples",
        )
    return x


def load_labelled(path: Path, option: str) -> Labelled:
    what = f"{option} {path}"
    arrays = _open_npz(path, option)
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(
            what, f"has no array {missing[0]!r} (found: {', '.join(arrays) or 'none'})", _NPZ_FIX
        )
    x = _check_samples(arrays["x"], what)
    y = arrays["y"]
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise DataError(what, f"y has dtype {y.dtype}; expected integer labels", _NPZ_FIX)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot labels
        y = y.argmax(axis=1)
    y = y.reshape(len(y)) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(
            what,
            f"x has {len(x)} samples but y has shape {y.shape}",
            "Give one integer label per sample",
        )
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.isfinite(y)):
            raise DataError(what, f"y has dtype {y.dtype}; expected integer labels", _NPZ_FIX)
        if not np.all(y == np.round(y)):
            raise DataError(what, "y has non-integer labels", "Give class indices 0..K-1")
    if y.min() < 0:
        raise DataError(what, f"y has negative label {y.min()}", "Use class indices 0..K-1")
    if y.max() > MAX_LABEL:
        raise DataError(what, f"y has label {y.max()}, too large for a class index",
                        "Use class indices 0..K-1")
    y = y.astype(np.int64)
    return Labelled(x, y, str(path))


def load_calib(path: Path, option: str = "--calib") -> np.ndarray:
    """Unlabelled samples: an .npz (array ``x``, or its only array), an .npy, or image folder."""
    what = f"{option} {path}"
    if path.is_dir():
        return _load_image_folder(path, what)
    if not path.exists():
        raise DataError(what, "no such file or folder", "Give an .npz, .npy or an image folder")
    head = _read_head(path, what, "an .npz, .npy or an image folder")
    if path.suffix == ".npy" and not head.startswith(NPY_MAGIC):
        raise DataError(what, "is not an .npy file (no NUMPY header)", "Re-save it with numpy.save")
    if head.startswith(NPY_MAGIC):
        try:
            x = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise _load_error(what, ".npy", exc, "Re-save it with numpy.save") from exc
        return _check_samples(np.asarray(x), what)
    arrays = _open_npz(path, option)
    if "x" in arrays:
        x = arrays["x"]
    elif len(arrays) == 1:
        x = next(iter(arrays.values()))
    else:
        raise DataError(what, f"has arrays {', '.join(arrays)} but no 'x'", _NPZ_FIX)
    return _check_samples(x, what)


def _load_image_folder(path: Path, what: str) -> np.ndarray:
    from PIL import Image  # Pillow: only needed for image folders

    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(
            what, f"has no images ({', '.join(IMAGE_SUFFIXES)})", "Put sample images in it"
        )
    images = []
    for file in files:
        try:
            with Image.open(file) as img:
                images.append(np.asarray(img, dtype=np.float32) / 255.0)
        except Exception as exc:
            raise DataError(str(file), f"is not a readable image ({exc})", "Remove it") from exc
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(what, f"images differ in shape {sorted(shapes)}", "Resize them alike")
    x = np.stack(images)
    return x[..., None] if x.ndim == 3 else x


def check_against_model(
    x: np.ndarray, input_shape: tuple[int | None, ...], what: str
) -> np.ndarray:
    """Samples must match the model input (batch excluded); a missing channel axis of 1 is added."""
    expected = tuple(input_shape[1:])
    if x.ndim == len(expected) and expected[-1] == 1:
        x = x[..., None]
    ok = x.ndim == len(expected) + 1 and all(
        e is None or e == s for e, s in zip(expected, x.shape[1:], strict=True)
    )
    if not ok:
        shown = "(N, " + ", ".join("?" if e is None else str(e) for e in expected) + ")"
        raise DataError(
            what,
            f"samples have shape {x.shape} but the model expects {shown}",
            "Resize or reshape the samples to the model input",
        )
    return x


def check_labels(data: Labelled, num_classes: int, option: str) -> None:
    if int(data.y.max()) >= num_classes:
        raise DataError(
            f"{option} {data.source}",
            f"has label {int(data.y.max())} but the model has {num_classes} outputs",
            f"Use labels 0..{num_classes - 1}",
        )


def holdout_split(data: Labelled, seed: int) -> tuple[Labelled, Labelled]:
    """A seeded 15 % held out (never trained on); the same seed gives the same split."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data))
    n_val = max(1, round(len(data) * HOLDOUT_FRACTION))
    if len(data) - n_val < 1:
        raise DataError(
            f"--data {data.source}",
            f"has {len(data)} samples, too few to hold out a validation split",
            "Give more samples or a separate --val file",
        )
    val, train = order[:n_val], order[n_val:]
    src = data.source
    return (
        Labelled(data.x[train], data.y[train], f"{src} (85 % train split)"),
        Labelled(data.x[val], data.y[val], f"{src} (15 % held out, seed {seed})"),
    )


def calibration_sample(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` samples, seeded, for the representative dataset."""
    if len(x) <= n:
        return x
    idx = np.random.default_rng(seed).choice(len(x), size=n, replace=False)
    return x[np.sort(idx)]


MIN_MONITOR_TRAIN = 40  # below this, every sample trains and early stopping is skipped


def fit_split(train: Labelled, seed: int) -> tuple[Labelled, Labelled | None]:
    """Training samples and an early-stopping monitor split carved from them (seeded)."""
    if len(train) < MIN_MONITOR_TRAIN:
        return train, None
    return holdout_split(train, seed)
