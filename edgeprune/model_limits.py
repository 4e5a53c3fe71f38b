"""Model files checked from what they declare, before Keras reads them (``limits.py`` has the
limits; SECURITY.md lists them with their tests).

A ``.keras`` file is a zip archive: its member names must stay inside the archive (Keras
extracts it), its member count, uncompressed sizes and expansion are bounded, its
``config.json`` is bounded in size and nesting depth. Every HDF5 dataset (an ``.h5`` model, the
weights inside a ``.keras``) is bounded by its declared shape against memory and against what
it stores. A SavedModel folder holds regular files only.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import limits
from edgeprune.errors import ModelLoadError
from edgeprune.files import not_a_file

MiB = limits.MiB
WEIGHTS = ("model.weights.h5",)  # the HDF5 members of a .keras archive (Keras 3 and tf_keras)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)  # a JSON string, escapes included
_FIX = "Re-save the model with model.save('model.keras')"


def unsafe_member_name(name: str) -> str | None:
    """Why an archive member's name could point outside the folder it is extracted to."""
    if not name or "\x00" in name:
        return "an empty name or a NUL byte"
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "an absolute path"
    if "\\" in name:
        return "a backslash"
    if ".." in name.split("/"):
        return "a '..' part leading out of the archive"
    return None


def check_archive(archive: zipfile.ZipFile, what: str) -> None:
    """Member names, count, expansion and total uncompressed size, from the zip directory."""
    infos = archive.infolist()
    most = limits.current().archive_members
    if len(infos) > most:
        raise limits.refuse(what, f"{len(infos):,} files", f"{most:,} files", "archive_members",
                            ModelLoadError)
    for info in infos:
        why = unsafe_member_name(info.filename)
        if why is not None:
            raise ModelLoadError(what, f"has an archive member named {info.filename!r} ({why}); "
                                 "edgeprune never writes a file outside the archive's folder",
                                 _FIX)
        if info.compress_type != zipfile.ZIP_STORED:
            limits.check_ratio(what, info.file_size, info.compress_size,
                               f"member {info.filename}", ModelLoadError)
    limits.check_memory(what, sum(i.file_size for i in infos),
                        f"{len(infos)} archive members, uncompressed", ModelLoadError)


def keras_config(archive: zipfile.ZipFile, what: str) -> Any:
    """A .keras archive's config, after the archive, its config and its weights are checked."""
    check_archive(archive, what)
    info = archive.getinfo("config.json")
    cap = limits.current().config_mb
    if info.file_size > cap * MiB:
        raise limits.refuse(what, f"a config.json of {info.file_size:,} bytes",
                            f"{int(cap * MiB):,} bytes (config_mb={cap:g})", "config_mb",
                            ModelLoadError)
    config = parse_config(archive.read(info), what)
    names = set(archive.namelist())
    for name in WEIGHTS:
        if name in names:
            import h5py

            with h5py.File(io.BytesIO(archive.read(name)), "r") as weights:
                check_h5(weights, f"{what} ({name})")
    return config


def json_depth(raw: bytes) -> int:
    """How deeply lists and objects nest in a JSON text, counted without parsing it (Python's
    parser recurses once per level)."""
    marks = np.frombuffer(_STRING.sub(b"", raw), np.uint8)
    steps = np.isin(marks, (ord("["), ord("{"))).astype(np.int64) - \
        np.isin(marks, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def parse_config(raw: bytes, what: str) -> Any:
    """A model config's JSON, refused when nested deeper than the limit."""
    depth, cap = json_depth(raw), limits.current().config_depth
    if depth > cap:
        raise limits.refuse(what, f"a model config nested {depth:,} levels deep",
                            f"{cap} levels (config_depth={cap})", "config_depth", ModelLoadError)
    return json.loads(raw)


def check_h5(h5: Any, what: str) -> None:
    """Every HDF5 dataset's declared size against memory, and against what it stores (a small
    file can declare a huge dataset filled on read, or one compressed a thousandfold)."""
    import h5py

    datasets: list[tuple[str, Any]] = []
    h5.visititems(lambda name, obj: datasets.append((name, obj))
                  if isinstance(obj, h5py.Dataset) else None)
    total = 0
    for name, ds in datasets:
        declared = int(np.prod(ds.shape, dtype=object)) * ds.dtype.itemsize
        total += declared
        limits.check_ratio(what, declared, ds.id.get_storage_size(),
                           f"dataset {name} {ds.shape} {ds.dtype}", ModelLoadError)
    limits.check_memory(what, total, f"{len(datasets)} HDF5 datasets", ModelLoadError)


def check_folder(folder: Path, what: str) -> None:
    """A SavedModel folder: regular files only (a FIFO would block TensorFlow's reader), their
    total size within memory."""
    total = 0
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            continue
        problem = not_a_file(path)
        if problem is not None:
            raise ModelLoadError(f"{what}: {path.relative_to(folder)}", problem,
                                 "A SavedModel folder holds regular files only; re-export it")
        total += path.stat().st_size
    limits.check_memory(what, total, "the SavedModel's files", ModelLoadError)
