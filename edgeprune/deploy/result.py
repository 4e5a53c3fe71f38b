"""What a flash did (or, in a dry run, would do)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class FlashResult:
    device: str
    dry_run: bool
    commands: list[str]  # run, or (dry run) to be run, in order
    changed: bool = True
    release: str | None = None  # the release now current (Linux)
    previous: str | None = None  # the release kept for rollback (Linux)
    remote_dir: str | None = None
    bundle: Path | None = None  # the Cortex-M bundle folder
    notes: list[str] = field(default_factory=list)
