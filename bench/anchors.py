"""The published figures of bench/anchors.toml, by family and role (see that file's header)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

PATH = Path(__file__).resolve().parent / "anchors.toml"
FAMILIES = ("cortex-a", "cortex-m", "edgetpu")


def load(family: str | None = None, role: str | None = None) -> list[dict[str, Any]]:
    rows = tomllib.loads(PATH.read_text())["anchor"]
    return [r for r in rows if (family is None or r["family"] == family)
            and (role is None or r["role"] == role)]


def by_id(anchor_id: str) -> dict[str, Any]:
    return next(r for r in load() if r["id"] == anchor_id)
