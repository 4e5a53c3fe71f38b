"""Paths given where a regular file is expected.

Opening a FIFO blocks until a writer appears, and reading a device (``/dev/zero``) never ends,
so every input file is checked with ``stat`` (which never opens it) before it is read, and the
first bytes are read through a non-blocking open checked with ``fstat``: a FIFO, device, socket
or folder is refused at once with what it is.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edgeprune.errors import BadInputError

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISDIR, "a folder"))


def kind_problem(mode: int) -> str | None:
    """Why a file of this ``st_mode`` is not a regular file, or None."""
    if stat.S_ISREG(mode):
        return None
    return next((f"is {name}, not a regular file" for test, name in _KINDS if test(mode)),
                "is not a regular file")


def not_a_file(path: Path) -> str | None:
    """Why ``path`` is not a regular file to read ("no such file", "is a FIFO …"), or None.
    Symlinks are followed: a link to ``/dev/zero`` is a device."""
    try:
        mode = path.stat().st_mode  # stat never opens the file: a FIFO cannot block it
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return kind_problem(mode)


def require_file(path: Path, what: str, fix: str,
                 error: type[BadInputError] = BadInputError) -> Path:
    """``path`` when it is a regular file; else ``error`` (exit 2) saying what it is."""
    problem = not_a_file(path)
    if problem is not None:
        raise error(what, problem, fix)
    return path


def read_head(path: Path, size: int, what: str, fix: str,
              error: type[BadInputError] = BadInputError) -> bytes:
    """The first ``size`` bytes of a regular file. The open never blocks (O_NONBLOCK) and the
    opened file is checked with fstat, so a FIFO swapped in after a check is refused too."""
    require_file(path, what, fix, error)  # a socket cannot even be opened
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(what, "no such file", fix) from None
    except OSError as exc:
        raise error(what, f"cannot be read ({exc.strerror or exc})",
                    "Check the path and its permissions") from exc
    try:
        problem = kind_problem(os.fstat(fd).st_mode)
        if problem is not None:
            raise error(what, problem, fix)
        return os.read(fd, size)
    except OSError as exc:
        raise error(what, f"cannot be read ({exc.strerror or exc})",
                    "Check the path and its permissions") from exc
    finally:
        os.close(fd)
