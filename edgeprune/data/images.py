"""Image folders: one sub-folder per class (``keras.utils.image_dataset_from_directory``'s
convention: class index = position in the sorted folder names), or any images for ``--calib``.

Every file is checked when the folder is loaded (header and integrity, pixel count before any
decoding); pixels are decoded only when a batch is read. A file that is not a decodable image
is skipped and listed when such files are under 1 % of the folder, and refused otherwise.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import limits
from edgeprune.data.preprocess import Preprocessing
from edgeprune.data.rows import Rows
from edgeprune.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")  # what Keras' loader accepts
MAX_BAD_FRACTION = 0.01
_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "area": 4}  # PIL codes


@dataclass(frozen=True)
class Folder:
    files: list[Path]
    labels: np.ndarray | None  # None: unlabelled (--calib)
    classes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "path: reason"
    ignored: int = 0  # files without an image suffix

    def summary(self) -> dict[str, Any]:
        """What the data stage found, for the log and report.json."""
        out: dict[str, Any] = {"format": "image folder", "images": len(self.files),
                               "skipped": self.skipped, "ignored_non_images": self.ignored}
        if self.labels is not None:
            counts = np.bincount(self.labels, minlength=len(self.classes))
            out["classes"] = {name: i for i, name in enumerate(self.classes)}
            out["images_per_class"] = {n: int(c) for n, c in zip(self.classes, counts,
                                                                 strict=True)}
        return out


def _image_files(folder: Path) -> tuple[list[Path], int]:
    files, ignored = [], 0
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            if p.suffix.lower() in IMAGE_SUFFIXES:
                files.append(p)
            else:
                ignored += 1
    return files, ignored


@contextlib.contextmanager
def opened(source: Any, where: str) -> Iterator[Any]:
    """A Pillow image whose header declares at most the ``image_pixels`` limit (else exit 2);
    nothing is decoded yet. Our limit replaces Pillow's own, which only warns below twice its
    89 M pixels and raises an error Pillow names as an attack above."""
    from PIL import Image

    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        img = Image.open(source)
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    with img:
        (width, height), most = img.size, limits.current().image_pixels
        if width * height > most:
            raise limits.refuse(where, f"{width}×{height} = {width * height:,} pixels",
                                f"{most:,} pixels (image_pixels)", "image_pixels", DataError)
        yield img


def _problem(file: Path, what: str) -> str | None:
    """Why ``file`` is not a usable image, or None; reads the header and checks integrity.
    An image declaring more pixels than the limit is refused outright (exit 2)."""
    try:
        with opened(file, f"{what}: {file}") as img:
            img.verify()  # integrity (PNG CRCs, truncation) without decoding the pixels
    except DataError:
        raise
    except Exception as exc:  # Pillow raises many types for broken files
        return f"not a decodable image ({type(exc).__name__}: {exc})"
    return None


def _checked(files: list[Path], what: str) -> tuple[list[Path], list[str]]:
    bad = [(f, why) for f in files if (why := _problem(f, what)) is not None]
    if not bad:
        return files, []
    listed = [f"{f}: {why}" for f, why in bad]
    if len(bad) / len(files) >= MAX_BAD_FRACTION:
        shown = "; ".join(listed[:3]) + (f"; … ({len(bad)} in all)" if len(bad) > 3 else "")
        raise DataError(what, f"{len(bad)} of {len(files)} image files cannot be used "
                        f"({shown})", f"Remove or replace them (under "
                        f"{MAX_BAD_FRACTION:.0%} of a folder are skipped and listed)")
    for line in listed:
        log.warning("warning: skipped %s", line)
    bad_set = {f for f, _ in bad}
    return [f for f in files if f not in bad_set], listed


def scan_classes(root: Path, what: str) -> Folder:
    """A labelled folder: its class sub-folders (sorted names) and their images."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(what, "has no class sub-folders", "Put each class's images in a "
                        "sub-folder named after the class (e.g. train/cat/1.png, train/dog/…)")
    files: list[Path] = []
    labels: list[int] = []
    ignored = 0
    for index, name in enumerate(classes):
        found, n_other = _image_files(root / name)
        ignored += n_other
        if not found:
            raise DataError(f"{what}: class folder {root / name}", "has no images "
                            f"({', '.join(IMAGE_SUFFIXES)})", "Add its images or remove it")
        files += found
        labels += [index] * len(found)
    kept, skipped = _checked(files, what)
    keep = set(kept)
    y = np.array([label for f, label in zip(files, labels, strict=True) if f in keep],
                 dtype=np.int64)
    for index, name in enumerate(classes):
        if not np.any(y == index):
            raise DataError(f"{what}: class folder {root / name}", "has no usable images",
                            "Add images or remove the folder")
    return Folder(kept, y, classes, skipped, ignored)


def scan_images(root: Path, what: str) -> Folder:
    """An unlabelled folder (``--calib``): every image under it."""
    files, ignored = _image_files(root)
    if not files:
        raise DataError(what, f"has no images ({', '.join(IMAGE_SUFFIXES)})",
                        "Put sample images in it")
    kept, skipped = _checked(files, what)
    return Folder(kept, None, [], skipped, ignored)


def decode(file: Path, pre: Preprocessing) -> np.ndarray:
    """One image as the model takes it: colour mode, size (resized if needed), scale/offset."""
    return decode_bytes(file, pre, str(file))


def decode_bytes(source: Any, pre: Preprocessing, where: str) -> np.ndarray:
    """``decode`` of a file or file-like object; ``where`` names it in errors."""
    try:
        with opened(source, where) as img:
            img = img.convert("L" if pre.channels == 1 else "RGB")
            if img.size != (pre.width, pre.height):
                img = img.resize((pre.width, pre.height), _RESAMPLE[pre.interpolation])
            pixels = np.asarray(img)
    except DataError:
        raise
    except Exception as exc:  # checked at load; a file changed or truncated since
        raise DataError(where, f"cannot be decoded as an image ({type(exc).__name__}: {exc})",
                        "Remove or replace it, then rerun") from exc
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return pre.apply(pixels)


def reader(files: list[Path], pre: Preprocessing) -> Callable[[np.ndarray], np.ndarray]:
    def read(index: np.ndarray) -> np.ndarray:
        return np.stack([decode(files[i], pre) for i in index])

    return read


def rows(folder: Folder, pre: Preprocessing) -> Rows:
    return Rows.over(reader(folder.files, pre), len(folder.files),
                     (pre.height, pre.width, pre.channels))
