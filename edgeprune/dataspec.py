"""The recipe's ``[data]`` section: how image folders and TFRecord files become model inputs.

Declared once and applied identically wherever samples are read (training, calibration,
evaluation, on-target comparisons); the resolved form is the deployed model's input contract
and is written to report.json and the TFLite-Micro header. Unset fields default from the
model's input shape (an image folder for a 28×28×1 model is read as 28×28 greyscale, pixel
values as stored).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from edgeprune.errors import RecipeError

COLOR_MODES = ("grayscale", "rgb")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area", "lanczos")
ENCODINGS = ("image", "raw", "float")  # TFRecord image feature: encoded file, uint8 bytes, floats
FLIPS = ("none", "horizontal", "vertical", "both")


@dataclass(frozen=True)
class DataSpec:
    image_size: tuple[int, ...] = ()  # (height, width); () = the model's
    color_mode: str = ""  # "" = from the model's channels (1 grayscale, 3 rgb)
    scale: float = 1.0  # x = pixel · scale + offset
    offset: float = 0.0
    interpolation: str = "bilinear"  # resizing, when an image differs from image_size
    image_key: str = "image"  # TFRecord: the tf.train.Example feature holding the image
    label_key: str = "label"
    encoding: str = "image"  # image: PNG/JPEG/BMP bytes; raw: uint8 pixels; float: float list
    flip: str = "none"  # fine-tuning augmentation (off by default)
    translate: float = 0.0  # fine-tuning augmentation: random shift, fraction of height/width
    crop_padding: int = 0  # fine-tuning augmentation: pad by N pixels, crop back at random

    def __post_init__(self) -> None:
        for name, allowed in (("color_mode", ("", *COLOR_MODES)), ("flip", FLIPS),
                              ("interpolation", INTERPOLATIONS), ("encoding", ENCODINGS)):
            if getattr(self, name) not in allowed:
                raise _error(name, getattr(self, name), f"is not one of "
                             f"{', '.join(a for a in allowed if a)}", "Pick one of those")
        if self.image_size and (len(self.image_size) != 2
                                or not all(isinstance(v, int) and 1 <= v <= 16384
                                           for v in self.image_size)):
            raise _error("image_size", list(self.image_size), "must be [height, width] in "
                         "pixels (1 to 16384)", "Use e.g. image_size = [96, 96]")
        if not (abs(self.scale) < float("inf") and self.scale != 0):
            raise _error("scale", self.scale, "must be finite and not 0", "Use e.g. 0.00392")
        if not abs(self.offset) < float("inf"):
            raise _error("offset", self.offset, "must be finite", "Use e.g. -1.0")
        if not 0.0 <= self.translate < 0.5:
            raise _error("translate", self.translate, "must be in [0, 0.5) (a fraction of "
                         "the image size)", "Use e.g. 0.1")
        if not (isinstance(self.crop_padding, int) and 0 <= self.crop_padding <= 256):
            raise _error("crop_padding", self.crop_padding, "must be a whole number of "
                         "pixels from 0 to 256", "Use e.g. 4")
        for name in ("image_key", "label_key"):
            if not getattr(self, name):
                raise _error(name, "", "must name a feature", "Use e.g. \"image\"")

    @property
    def augments(self) -> bool:
        return self.flip != "none" or self.translate > 0 or self.crop_padding > 0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.image_size)
        return d


def _error(key: str, value: Any, problem: str, fix: str) -> RecipeError:
    return RecipeError(f"[data] {key} = {value!r}", problem, fix)


_FIELDS = {f.name: f for f in dataclasses.fields(DataSpec)}


def data_spec(source: str, table: Any) -> DataSpec:
    """A ``[data]`` table (from ``source``, for the error message) checked into a DataSpec."""
    if isinstance(table, DataSpec):
        return table
    if not isinstance(table, dict):
        raise RecipeError(source, f"data = {table!r} must be a table ([data])",
                          "Write the keys under a [data] heading")
    values: dict[str, Any] = {}
    for key, value in table.items():
        field = _FIELDS.get(key)
        if field is None:
            raise RecipeError(f"{source} [data]", f"unknown key {key!r}",
                              f"Allowed keys: {', '.join(_FIELDS)}")
        default = field.default
        if isinstance(default, tuple):
            ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool)
                                                 for v in value)
            value = tuple(value) if ok else value
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str)
        if not ok:
            raise RecipeError(f"{source} [data]", f"{key} = {value!r} has the wrong type "
                              f"(expected {type(default).__name__})", "Fix the value")
        values[key] = value
    return DataSpec(**values)
