"""Arrays: labelled ``.npz`` files and unlabelled ``.npz``/``.npy`` samples.

Everything is validated before any work starts: keys, lengths, dtypes, finiteness, label range
and the model's input shape. Errors name the file and the option it came from. An ``.npy``, and
an array stored uncompressed in an ``.npz`` (``numpy.savez``), is memory-mapped and read in
batches, so it may be larger than memory; a compressed member (``savez_compressed``) is loaded.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from edgeprune import limits
from edgeprune.data.preprocess import IDENTITY, Affine
from edgeprune.data.rows import Rows
from edgeprune.errors import DataError
from edgeprune.files import read_head

MAX_LABEL = 2**31 - 1  # larger labels are not class indices (and would wrap in int64)
CHECK_CHUNK = 4096  # samples checked for NaN/inf at a time in a memory-mapped array


_NPZ_FIX = "Save it with numpy.savez(path, x=inputs, y=labels)"
_PICKLED = "allow_pickle=False"  # numpy's message when an array holds pickled Python objects
_MAPPED_OBJECTS = "Python objects in dtype"  # ... and when such an array is memory-mapped
NPY_MAGIC, ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"


def _read_head(path: Path, what: str, wanted: str) -> bytes:
    """The first bytes of a data file; a folder, FIFO, device or missing file is named as such
    (and never opened in a way that could block)."""
    return read_head(path, 8, what, f"Give the path to {wanted}", DataError)


def _load_error(what: str, kind: str, exc: Exception, fix: str) -> DataError:
    if _PICKLED in str(exc) or _MAPPED_OBJECTS in str(exc):  # never unpickle: a pickle runs
        # code when loaded
        return DataError(what, "holds pickled Python objects (an object array), which "
                         "edgeprune never loads", "Save plain numeric arrays (np.asarray(x, "
                         "dtype=np.float32)) with numpy.savez")
    return DataError(what, f"is not a readable {kind} ({exc})", fix)


def _open_npz(path: Path, option: str) -> dict[str, np.ndarray]:
    """The arrays of an .npz: members stored uncompressed memory-mapped, the others loaded.
    Every member's declared sizes are checked before numpy allocates anything."""
    what = f"{option} {path}"
    head = _read_head(path, what, "an .npz file")
    if head.startswith(NPY_MAGIC):
        raise DataError(what, "is an .npy array, not an .npz", _NPZ_FIX)
    if not head.startswith(ZIP_MAGIC):
        raise DataError(what, "is not a readable .npz (not a zip archive)", _NPZ_FIX)
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                _check_member(archive, info, what)
        with np.load(path, allow_pickle=False) as npz, zipfile.ZipFile(path) as archive:
            mapped = {k: _stored_member(path, archive, f"{k}.npy") for k in npz.files}
            return {k: npz[k] if m is None else m for k, m in mapped.items()}
    except DataError:
        raise
    except Exception as exc:  # numpy/zipfile raise many types for corrupt archives
        raise _load_error(what, ".npz", exc, _NPZ_FIX) from exc


def read_header(f: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """An .npy header at ``f``: (shape, fortran order, dtype, declared data bytes)."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    shape, fortran, dtype = (fmt.read_array_header_1_0(f) if version == (1, 0)
                             else fmt.read_array_header_2_0(f))
    if any(d < 0 for d in shape):
        raise ValueError(f"the header declares a negative dimension in shape {shape}")
    # Python integers: a product of forged dimensions must not wrap around as int64 would
    return shape, fortran, dtype, math.prod(shape) * dtype.itemsize


def _forged(what: str, name: str, shape: tuple[int, ...], dtype: np.dtype, declared: int,
            held: int) -> DataError:
    return DataError(what, f"array {name} declares {declared:,} bytes ({shape} {dtype}) but "
                     f"holds {max(held, 0):,}: the header is forged or the file truncated",
                     "Re-save it with numpy.savez")


def _check_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> None:
    """A member's declared sizes against what it holds, the compression limit and memory,
    from its header alone (zipfile never yields more than the member's declared size)."""
    if not info.filename.endswith(".npy"):
        return  # numpy ignores other members
    if info.compress_type != zipfile.ZIP_STORED:
        limits.check_ratio(what, info.file_size, info.compress_size,
                           f"member {info.filename}", DataError)
    with archive.open(info) as f:  # reads the header's bytes only
        shape, fortran, dtype, declared = read_header(f)
        header = f.tell()
    name = info.filename[:-4]
    if dtype.hasobject:
        return  # np.load refuses pickles
    if declared > info.file_size - header:
        raise _forged(what, repr(name), shape, dtype, declared, info.file_size - header)
    if info.compress_type != zipfile.ZIP_STORED or fortran:  # loaded, not memory-mapped
        limits.check_memory(what, declared, f"array {name!r} {shape} {dtype}", DataError)


def _stored_member(path: Path, archive: zipfile.ZipFile, name: str) -> np.ndarray | None:
    """An uncompressed ``.npy`` member mapped in place (read-only), or None when compressed."""
    info = archive.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with path.open("rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)  # the local file header: name and extra-field lengths at 26 and 28
        start = (info.header_offset + 30 + int.from_bytes(local[26:28], "little")
                 + int.from_bytes(local[28:30], "little"))
        f.seek(start)
        return _map_npy(path, f, start + info.file_size)


def _map_npy(path: Path, f: BinaryIO, end: int) -> np.ndarray | None:
    """The array whose .npy header ``f`` is at, mapped; None for what np.load must handle."""
    shape, fortran, dtype, size = read_header(f)
    if dtype.hasobject or fortran or size == 0:
        return None  # np.load refuses pickles and handles the rest
    if f.tell() + size > min(end, path.stat().st_size):
        raise ValueError(f"declares {size:,} bytes of data but holds fewer")
    return np.memmap(path, dtype=dtype, mode="r", offset=f.tell(), shape=shape)


def _check_npy(path: Path, what: str) -> None:
    """An .npy file's header against the file's size (it is memory-mapped, not loaded, unless
    it is in Fortran order)."""
    try:
        with path.open("rb") as f:
            shape, fortran, dtype, declared = read_header(f)
            held = path.stat().st_size - f.tell()
    except Exception as exc:
        raise _load_error(what, ".npy", exc, "Re-save it with numpy.save") from exc
    if dtype.hasobject:
        return
    if declared > held:
        raise _forged(what, "x", shape, dtype, declared, held)
    if fortran:
        limits.check_memory(what, declared, f"array {shape} {dtype}", DataError)


def _check_samples(x: np.ndarray, what: str, pre: Affine) -> np.ndarray | Rows:
    """Samples as float32 model inputs; a memory-mapped array stays on disk, checked in chunks
    and read by ``Rows`` in batches."""
    if x.ndim < 2 or len(x) == 0:
        raise DataError(what, f"x has shape {x.shape}; expected (N, ...) with N ≥ 1", _NPZ_FIX)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(what, f"x has dtype {x.dtype}; expected numbers", _NPZ_FIX)
    if isinstance(x, np.memmap):
        for start in range(0, len(x), CHECK_CHUNK):
            _check_finite(pre.apply(x[start:start + CHECK_CHUNK]), what, start)
        mapped = x
        return Rows.over(lambda index: pre.apply(mapped[np.sort(index)][
            np.argsort(np.argsort(index))]), len(x), x.shape[1:])
    return _check_finite(pre.apply(x), what, 0)


def _check_finite(x: np.ndarray, what: str, first_index: int) -> np.ndarray:
    bad = ~np.isfinite(x)
    if bad.any():
        first = first_index + int(np.argwhere(bad.reshape(len(x), -1).any(axis=1))[0][0])
        raise DataError(
            what,
            f"x contains NaN or inf ({int(bad.sum())} values; first in sample {first})",
            "Clean or drop those samples",
        )
    return x


def load_labelled(path: Path, option: str, pre: Affine = IDENTITY) -> tuple[
        np.ndarray | Rows, np.ndarray]:
    """(x, y) of a labelled .npz, checked; one-hot labels become class indices."""
    what = f"{option} {path}"
    if path.suffix == ".npy":
        raise DataError(what, "is an .npy array, which holds no labels", "Save samples and "
                        "labels with numpy.savez(path, x=inputs, y=labels) (uncompressed "
                        ".npz files are memory-mapped too)")
    arrays = _open_npz(path, option)
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(
            what, f"has no array {missing[0]!r} (found: {', '.join(arrays) or 'none'})", _NPZ_FIX
        )
    x = _check_samples(arrays["x"], what, pre)
    return x, _labels(np.asarray(arrays["y"]), len(x), what)


def _labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise DataError(what, f"y has dtype {y.dtype}; expected integer labels", _NPZ_FIX)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot labels
        y = y.argmax(axis=1)
    y = y.reshape(len(y)) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or len(y) != n:
        raise DataError(
            what,
            f"x has {n} samples but y has shape {y.shape}",
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
    return y.astype(np.int64)


def load_samples(path: Path, option: str, pre: Affine = IDENTITY) -> np.ndarray | Rows:
    """Unlabelled samples: an .npz (array ``x``, or its only array) or an .npy."""
    what = f"{option} {path}"
    head = _read_head(path, what, "an .npz, .npy or an image folder")
    if path.suffix == ".npy" and not head.startswith(NPY_MAGIC):
        raise DataError(what, "is not an .npy file (no NUMPY header)", "Re-save it with numpy.save")
    if head.startswith(NPY_MAGIC):
        _check_npy(path, what)
        try:
            x = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise _load_error(what, ".npy", exc, "Re-save it with numpy.save") from exc
        return _check_samples(x, what, pre)
    arrays = _open_npz(path, option)
    if "x" in arrays:
        x = arrays["x"]
    elif len(arrays) == 1:
        x = next(iter(arrays.values()))
    else:
        raise DataError(what, f"has arrays {', '.join(arrays)} but no 'x'", _NPZ_FIX)
    return _check_samples(x, what, pre)
