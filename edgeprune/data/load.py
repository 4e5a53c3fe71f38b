"""Any supported data path to samples: ``.npz``/``.npy`` arrays, an image folder, TFRecord
files (a file or a glob). The format is told by the path: a folder is an image folder, a
``.tfrecord``/``.tfrecords``/``.tfrec`` name (or a glob of them) is TFRecord, anything else an
array file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.data import arrays, images, tfrecord
from edgeprune.data.inputs import Labelled, Samples, check_against_model
from edgeprune.data.preprocess import Affine, Preprocessing, resolve
from edgeprune.dataspec import DataSpec
from edgeprune.errors import DataError

log = logging.getLogger(__name__)
Shape = tuple[int | None, ...]
FORMATS = ".npz, .npy, an image folder, or TFRecord files (.tfrecord, or a glob of them)"


def kind(path: Path) -> str:
    text = str(path)
    if tfrecord.is_tfrecord(text) or any(c in text for c in "*?["):
        return "tfrecord"
    # a folder named like an array file is a mistake the arrays loader names ("is a folder")
    return "images" if path.is_dir() and path.suffix.lower() not in (".npz", ".npy") else "arrays"


def preprocessing(spec: DataSpec, input_shape: tuple[int | None, ...], paths: list[Path | None],
                  ) -> Preprocessing | None:
    """The resolved preprocessing when any of ``paths`` holds images, else None."""
    image_paths = [p for p in paths if p is not None and kind(p) != "arrays"]
    if not image_paths:
        return None
    return resolve(spec, input_shape, f"{image_paths[0]}")


def load_labelled(path: Path, option: str, input_shape: Shape | None = None,
                  spec: DataSpec | None = None) -> Labelled:
    """Labelled samples of any format, checked against the model's input shape (needed to
    read images)."""
    spec = spec or DataSpec()
    what = f"{option} {path}"
    form = kind(path)
    if form == "arrays":
        x, y = arrays.load_labelled(path, option, Affine(spec.scale, spec.offset))
        found: dict[str, Any] = {"format": "arrays", "samples": len(y)}
    elif form == "images":
        folder = images.scan_classes(path, what)
        x, y = images.rows(folder, _resolve(spec, input_shape, what)), folder.labels
        found = folder.summary()
    else:
        records = tfrecord.index(str(path), spec, what)
        x, y = tfrecord.rows(records, _resolve(spec, input_shape, what), what), records.labels
        found = records.summary()
    _log_found(what, found)
    return Labelled(_checked(x, input_shape, what), np.asarray(y), str(path), found)


def load_samples(path: Path, option: str, input_shape: Shape | None = None,
                 spec: DataSpec | None = None) -> Samples:
    """Unlabelled samples (``--calib``; a TFRecord's labels are ignored), checked against the
    model's input shape."""
    spec = spec or DataSpec()
    what = f"{option} {path}"
    form = kind(path)
    if form == "arrays":
        if not path.exists():
            raise DataError(what, "no such file or folder", f"Give {FORMATS}")
        x = arrays.load_samples(path, option, Affine(spec.scale, spec.offset))
    elif form == "images":
        folder = images.scan_images(path, what)
        _log_found(what, folder.summary())
        x = images.rows(folder, _resolve(spec, input_shape, what))
    else:
        records = tfrecord.index(str(path), spec, what)
        _log_found(what, records.summary())
        x = tfrecord.rows(records, _resolve(spec, input_shape, what), what)
    return _checked(x, input_shape, what)


def _checked(x: Samples, input_shape: Shape | None, what: str) -> Samples:
    return x if input_shape is None else check_against_model(x, input_shape, what)


def _resolve(spec: DataSpec, input_shape: Shape | None, what: str) -> Preprocessing:
    if input_shape is None:
        raise ValueError(f"{what}: reading images needs the model's input shape")
    return resolve(spec, input_shape, what)


def _log_found(what: str, found: dict[str, Any]) -> None:
    if found.get("format") == "image folder":
        per_class = found.get("images_per_class")
        classes = (f" in {len(per_class)} classes ("
                   + ", ".join(f"{k}: {v}" for k, v in list(per_class.items())[:10])
                   + (", …" if len(per_class) > 10 else "") + ")") if per_class else ""
        skipped = found["skipped"]
        log.info("%s: %d images%s%s", what, found["images"], classes,
                 f"; {len(skipped)} skipped (not decodable)" if skipped else "")
    elif found.get("format") == "TFRecord":
        log.info("%s: %d records in %d file(s)", what, found["records"], len(found["files"]))
