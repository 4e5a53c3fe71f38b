"""Folders that appear complete or not at all: every folder edgeprune writes goes through here.

Work happens in a hidden temporary folder beside the final one (``.NAME.partial-*``), renamed
into place only when complete, so a failed or interrupted writer leaves nothing half-written and
never half-replaces what was there.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from edgeprune.errors import BadInputError


@contextlib.contextmanager
def staged_folder(final: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary folder to fill; when the block ends it becomes ``final``.

    An existing ``final`` is replaced (and removed only after the rename), or, with
    ``replace=False``, kept and the new folder dropped (another writer finished first). On an
    error or interrupt the temporary folder is removed and ``final`` is untouched.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    work.chmod(0o755)  # mkdtemp's 0700 would make the finished folder private
    try:
        yield work
        if replace:
            replace_folder(work, final)
        elif not final.exists():
            work.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # already gone when it was renamed


def replace_folder(work: Path, final: Path) -> None:
    """Rename the finished folder into place; the previous one is removed only afterwards."""
    if final.exists() and not final.is_dir():
        raise BadInputError(str(final), "exists and is not a folder", "Move it away")
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{time.time_ns()}")
        final.rename(old)
    try:
        work.rename(final)
    except OSError:
        if old is not None:
            old.rename(final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
