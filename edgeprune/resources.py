"""Where shipped files live: inside the wheel (``_bundled/``) or at the repository root."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def bundled_dir(relative: str) -> Path:
    """``targets``, ``examples/digits``, ``calib_data/digits``: the wheel copy, else the repo's."""
    for root in (_PACKAGE / "_bundled", _PACKAGE.parent):
        candidate = root / relative
        if candidate.exists():
            return candidate
    return _PACKAGE.parent / relative


def example_inputs() -> dict[str, Path]:
    """The bundled example: the embedded default when ``build`` gets no ``--model``."""
    digits = bundled_dir("examples/digits")
    return {
        "model": digits / "model.keras",
        "data": digits / "train.npz",
        "val": digits / "val.npz",
        "calib": bundled_dir("calib_data/digits") / "calib.npz",
    }
