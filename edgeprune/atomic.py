"""Folders that appear complete or not at all: every folder edgeprune writes goes through here.

Work happens in a hidden temporary folder beside the final one (``.NAME.partial-PID-*``),
renamed into place only when complete, so a failed, interrupted or killed writer leaves nothing
half-written and never half-replaces what was there: an existing folder is swapped with the new
one in one ``renameat2(RENAME_EXCHANGE)``. A writer killed with SIGKILL cannot clean up, so the
folders it leaves carry its pid; the next writer removes those whose process is gone
(``clean_stale``). ``folder_lock`` gives a folder one writer at a time, naming the holder's pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from edgeprune.errors import BadInputError, ToolError

log = logging.getLogger(__name__)
_LEFT = re.compile(r"\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)-")
_RENAME_EXCHANGE = 2  # linux/fs.h


@contextlib.contextmanager
def staged_folder(final: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary folder to fill; when the block ends it becomes ``final``.

    An existing ``final`` is replaced (and removed only after the rename), or, with
    ``replace=False``, kept and the new folder dropped (another writer finished first). On an
    error or interrupt the temporary folder is removed and ``final`` is untouched.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-{os.getpid()}-",
                                 dir=final.parent))
    work.chmod(0o755)  # mkdtemp's 0700 would make the finished folder private
    try:
        yield work
        if replace:
            replace_folder(work, final)
        elif not final.exists():
            work.rename(final)
    except Exception as exc:
        if disk_full(exc) and not isinstance(exc, ToolError):
            raise no_space(exc, final, folder_bytes(work)) from exc
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)  # already gone when it was renamed


def replace_folder(work: Path, final: Path) -> None:
    """Put the finished folder in place; the previous one is removed only afterwards. Where the
    filesystem can, the two are exchanged atomically, so ``final`` never goes missing."""
    if final.exists() and not final.is_dir():
        raise BadInputError(str(final), "exists and is not a folder", "Move it away")
    if final.exists() and _exchange(work, final):
        shutil.rmtree(work, ignore_errors=True)  # now the previous folder
        return
    old = None
    if final.exists():  # no atomic exchange here: a kill between the renames leaves `old`,
        # which clean_stale puts back
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.time_ns()}")
        final.rename(old)
    try:
        work.rename(final)
    except OSError:
        if old is not None:
            old.rename(final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def abandoned(path: Path) -> bool:
    """A ``.NAME.partial-PID-*``/``.NAME.old-PID-*`` folder whose writer is no longer running."""
    left = _LEFT.match(path.name)
    return left is not None and not alive(int(left["pid"]))


def clean_stale(final: Path) -> list[Path]:
    """Remove the partial folders that writers of ``final`` killed before they could clean up
    (their pid is in the name and no such process runs), and put back a previous folder a
    writer set aside for a rename it never finished. Returns what was removed or restored."""
    found = []
    with contextlib.suppress(OSError):
        found = list(final.parent.iterdir())
    cleaned = []
    for path in sorted(found):
        left = _LEFT.match(path.name)
        if not left or left["name"] != final.name or not abandoned(path):
            continue
        if left["kind"] == "old" and not final.exists():
            path.rename(final)
            log.warning("%s: restored the previous folder that process %s (no longer running) "
                        "had set aside", final, left["pid"])
        else:
            shutil.rmtree(path, ignore_errors=True)
            log.warning("%s: removed %s, left by process %s (no longer running)", final,
                        path.name, left["pid"])
        cleaned.append(path)
    return cleaned


@contextlib.contextmanager
def folder_lock(final: Path, what: str) -> Iterator[Path]:
    """Hold ``.NAME.lock`` beside ``final`` (an flock, so the kernel releases it when the
    holder dies, even by SIGKILL); a second writer gets exit 2 naming the holder's pid."""
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = final.with_name(f".{final.name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise BadInputError(what, f"{final} is being written by process {holder} (it "
                                f"holds {lock})", "Wait for that build to finish or stop it, "
                                "or give another --out") from None
        with contextlib.suppress(FileNotFoundError):  # a holder that unlinked it as we opened
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        os.close(fd)
    previous = os.pread(fd, 32, 0).decode(errors="replace").strip()
    if previous.isdigit() and int(previous) != os.getpid():
        log.warning("%s: lock of process %s (no longer running) taken over", final, previous)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # fails on a full disk: no lock left
        yield lock
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)


# --- full disks: a user's disk filling is exit 3 with the path and the size, never a "bug" ----

MiB = 2**20
SPACE_MARGIN = 64 * 1024  # filesystem metadata and small files beside the bytes themselves


def disk_full(exc: BaseException | None) -> bool:
    """Whether an error (or one it was raised from) is a full disk or an exceeded quota;
    libraries such as h5py re-raise the OSError in their own words."""
    return any((isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT))
               or "No space left on device" in str(e) or "Disk quota exceeded" in str(e)
               for e in _chain(exc))


def folder_bytes(folder: Path) -> int:
    with contextlib.suppress(OSError):
        return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return 0


def free_bytes(folder: Path) -> int:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _space_fix(final: Path, need: int) -> str:
    return (f"Free at least {need / MiB:.1f} MiB on the filesystem of {final.parent} (df -h "
            f"{final.parent}) or write elsewhere, then rerun (--resume reuses finished stages); "
            f"the previous {final.name}, if any, is untouched")


def no_space(exc: BaseException, final: Path, written: int) -> ToolError:
    """The exit-3 error for a disk that filled while ``final`` was written (``written``
    bytes of it done). What it needs: at least what it had written, or the previous folder's
    size when that is more."""
    where = next((Path(e.filename) for e in _chain(exc) if isinstance(e, OSError)
                  and e.filename), final.parent)
    previous = folder_bytes(final) if final.is_dir() else 0
    need = max(written, previous) + SPACE_MARGIN
    like = f", as the previous {final.name} took" if previous > written else ""
    return ToolError(
        str(where), f"no space left on the device while writing {final} ({written / MiB:.1f} "
        f"MiB written when it filled, {free_bytes(final.parent) / MiB:.1f} MiB free now; it "
        f"needs about {need / MiB:.1f} MiB{like})", _space_fix(final, need))


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def check_space(path: Path, need: int, final: Path) -> None:
    """Before writing ``need`` bytes to ``path`` (inside the folder that becomes ``final``):
    exit 3 saying so when the filesystem has less free."""
    free = free_bytes(path.parent)
    if free < need + SPACE_MARGIN:
        raise ToolError(str(path), f"needs {need / MiB:.1f} MiB ({need:,} bytes) and its "
                        f"filesystem has {free / MiB:.1f} MiB free; nothing was written to "
                        f"{final}", _space_fix(final, need + SPACE_MARGIN - free))


def write_bytes(path: Path, data: bytes, final: Path) -> None:
    """``path.write_bytes`` after checking the free space for it."""
    check_space(path, len(data), final)
    path.write_bytes(data)
