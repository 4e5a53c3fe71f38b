"""Render a local HTML file in Debian's headless Chromium and check it like a person would."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def render(page: Path, workdir: Path) -> tuple[np.ndarray, list[str]]:
    """Screenshot pixels (RGB) and the console lines Chromium logged while rendering."""
    from PIL import Image

    shot = workdir / "shot.png"
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={workdir / 'profile'}", "--enable-logging=stderr",
         "--v=0", "--window-size=1200,2400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("RGB"))
    return pixels, [line for line in proc.stderr.splitlines() if "CONSOLE" in line]


def has_colour(pixels: np.ndarray, rgb: tuple[int, int, int]) -> bool:
    return bool((np.abs(pixels.astype(int) - rgb).sum(axis=2) < 30).any())
