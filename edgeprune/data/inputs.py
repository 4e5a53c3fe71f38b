"""What a build works on: labelled samples, held-out samples, calibration samples, and the
seeded splits between them. Samples are an in-memory array (a compressed ``.npz``) or ``Rows``
read in batches (image folders, TFRecord, memory-mapped arrays); nothing here reads them all."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeprune.data.rows import Rows, subset
from edgeprune.errors import DataError

Samples = np.ndarray | Rows
HOLDOUT_FRACTION = 0.15
MIN_MONITOR_TRAIN = 40  # below this, every sample trains and early stopping is skipped


@dataclass(frozen=True)
class Labelled:
    x: Samples
    y: np.ndarray
    source: str
    found: dict[str, Any] = field(default_factory=dict)  # what loading found, for the report

    def __len__(self) -> int:
        return len(self.y)

    def take(self, positions: np.ndarray, source: str) -> Labelled:
        return Labelled(subset(self.x, positions), self.y[positions], source, self.found)


@dataclass(frozen=True)
class Inputs:
    """What a build works on. ``val`` is never trained on; ``calib`` is unlabelled (and small:
    at most the recipe's ``calib_samples``)."""

    train: Labelled | None
    val: Labelled | None
    calib: np.ndarray | None
    val_is_holdout: bool = False
    preprocessing: dict[str, Any] | None = None  # images' input contract, when images are read
    classes: list[str] = field(default_factory=list)  # class names of an image folder

    def model_inputs(self, n: int) -> tuple[np.ndarray, str] | None:
        """Up to ``n`` samples to compare the model on (runtimes, translations) and where they
        come from: the held-out data, else the calibration samples."""
        if self.val is not None:
            return np.asarray(self.val.x[:n]), f"held-out data {self.val.source}"
        if self.calib is not None:
            return self.calib[:n], "calibration samples"
        return None


    def report(self) -> dict[str, Any]:
        """report.json's ``data``: what was found in each input, and the input contract."""
        out: dict[str, Any] = {}
        for name, part in (("train", self.train), ("val", self.val)):
            if part is not None:
                out[name] = {"source": part.source, "samples": len(part), **part.found}
        if self.calib is not None:
            out["calib"] = {"samples": len(self.calib)}
        if self.preprocessing is not None:
            out["preprocessing"] = self.preprocessing
        if self.classes:
            out["classes"] = {name: i for i, name in enumerate(self.classes)}
        return out


def check_against_model(
    x: Samples, input_shape: tuple[int | None, ...], what: str
) -> Samples:
    """Samples must match the model input (batch excluded); a missing channel axis of 1 is added."""
    expected = tuple(input_shape[1:])
    if isinstance(x, np.ndarray) and x.ndim == len(expected) and expected[-1] == 1:
        x = x[..., None]
    ok = x.ndim == len(expected) + 1 and all(
        e is None or e == s for e, s in zip(expected, x.shape[1:], strict=True)
    )
    if not ok:
        shown = "(N, " + ", ".join("?" if e is None else str(e) for e in expected) + ")"
        raise DataError(
            what,
            f"samples have shape {x.shape} but the model expects {shown}",
            "Resize or reshape the samples to the model input, or for images set "
            "image_size in the recipe's [data] section",
        )
    return x


def check_labels(data: Labelled, num_classes: int, option: str) -> None:
    classes = data.found.get("classes")
    if classes is not None and len(classes) != num_classes:
        raise DataError(f"{option} {data.source}", f"has {len(classes)} class folders but "
                        f"the model has {num_classes} outputs",
                        "Give one sub-folder per model output class (sorted names map to "
                        "indices 0..K-1)")
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
    return (data.take(train, f"{src} (85 % train split)"),
            data.take(val, f"{src} (15 % held out, seed {seed})"))


def sample_positions(n: int, k: int, seed: int) -> np.ndarray:
    """Up to ``k`` of ``n`` positions, seeded, in increasing order."""
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def calibration_sample(x: Samples, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` samples, seeded, for the representative dataset (read into memory)."""
    return np.asarray(x[sample_positions(len(x), n, seed)])


def fit_split(train: Labelled, seed: int) -> tuple[Labelled, Labelled | None]:
    """Training samples and an early-stopping monitor split carved from them (seeded)."""
    if len(train) < MIN_MONITOR_TRAIN:
        return train, None
    return holdout_split(train, seed)
