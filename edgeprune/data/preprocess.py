"""The resolved preprocessing: a ``[data]`` section applied to one model's input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeprune.dataspec import DataSpec
from edgeprune.errors import DataError


@dataclass(frozen=True)
class Affine:
    """x = stored value · scale + offset, as float32 (every format)."""

    scale: float = 1.0
    offset: float = 0.0

    def apply(self, values: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, which the loaders refuse
            x = np.asarray(values, dtype=np.float32)
            if self.scale != 1.0 or self.offset != 0.0:
                x = x * np.float32(self.scale) + np.float32(self.offset)
        return x


IDENTITY = Affine()


@dataclass(frozen=True)
class Preprocessing(Affine):
    """What image folders and TFRecord images go through; ``apply`` is the last step."""

    height: int = 0
    width: int = 0
    channels: int = 1  # 1: grayscale, 3: rgb
    interpolation: str = "bilinear"

    @property
    def color_mode(self) -> str:
        return "grayscale" if self.channels == 1 else "rgb"

    def to_dict(self) -> dict[str, Any]:
        return {"image_size": [self.height, self.width], "color_mode": self.color_mode,
                "scale": self.scale, "offset": self.offset,
                "interpolation": self.interpolation,
                "formula": f"x = pixel * {self.scale:g} + {self.offset:g}"}


def resolve(spec: DataSpec, input_shape: tuple[int | None, ...], what: str) -> Preprocessing:
    """``spec`` with its defaults taken from the model's (N, H, W, C) input."""
    dims = tuple(input_shape[1:])
    if len(dims) != 3 or dims[-1] not in (1, 3, None):
        raise DataError(what, f"holds images, but the model input is (N, "
                        f"{', '.join('?' if d is None else str(d) for d in dims)}), not "
                        "(N, height, width, 1 or 3)", "Give samples as an .npz instead")
    height, width = spec.image_size or (dims[0], dims[1])
    if height is None or width is None:
        raise DataError(what, "the model input has no fixed height/width to resize images to",
                        "Set image_size = [height, width] in the recipe's [data] section")
    channels = {"grayscale": 1, "rgb": 3}.get(spec.color_mode, dims[2] or 3)
    if dims[2] is not None and channels != dims[2]:
        raise DataError(what, f"[data] color_mode = {spec.color_mode!r} gives {channels} "
                        f"channel(s) but the model takes {dims[2]}",
                        "Drop color_mode (it defaults from the model) or fix it")
    return Preprocessing(scale=spec.scale, offset=spec.offset, height=int(height),
                         width=int(width), channels=channels, interpolation=spec.interpolation)
