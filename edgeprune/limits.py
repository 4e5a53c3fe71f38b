"""Resource limits on untrusted files, checked from declared sizes before anything is allocated
or decompressed. SECURITY.md lists each limit with its test.

A file declares sizes (an ``.npy`` header's shape, a zip member's uncompressed size, an HDF5
dataset's shape, an image's width × height, a TFRecord record's length) that a loader would
trust when it allocates. Each is checked here against the file's real size, against what the
machine has, and against a documented limit; exceeding one is exit 2 naming the file, the
declared size and the limit. ``--limit NAME=VALUE`` raises a limit for a file that is genuine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass

from edgeprune.errors import BadInputError

MiB = 2**20
MEMORY_SHARE = 0.8  # of the memory available when the check runs, by default
RATIO_FLOOR = 16 * MiB  # smaller members may compress as well as they like


@dataclass(frozen=True)
class Limits:
    """Every limit, by the name ``--limit NAME=VALUE`` uses."""

    memory_mb: float | None = None  # data loaded into memory; None: 80 % of what is available
    compression_ratio: float = 200.0  # expansion of a zip member / HDF5 dataset over 16 MiB
    image_pixels: int = 64_000_000  # width × height of one image, from its header
    record_mb: float = 64.0  # one TFRecord record's declared length
    config_mb: float = 32.0  # a .keras archive's config.json, uncompressed
    config_depth: int = 100  # nesting of lists/objects in a model config
    archive_members: int = 10_000  # files in a .keras archive


NAMES = tuple(f.name for f in dataclasses.fields(Limits))
HELP = {
    "memory_mb": "data loaded into memory at once (default: 80 % of the memory available)",
    "compression_ratio": "how many times a zip member or HDF5 dataset over 16 MiB may expand",
    "image_pixels": "width × height of one image, read from its header before decoding",
    "record_mb": "one TFRecord record",
    "config_mb": "a .keras archive's config.json",
    "config_depth": "nesting depth of a model config",
    "archive_members": "files in a .keras archive",
}
DEFAULTS = Limits()
# Process-wide, not a context variable: images are decoded in tf.data's threads too.
_current = [DEFAULTS]


def current() -> Limits:
    return _current[-1]


@contextlib.contextmanager
def using(limits: Limits) -> Iterator[Limits]:
    """Make ``limits`` the ones every loader checks against, inside the block."""
    _current.append(limits)
    try:
        yield limits
    finally:
        _current.remove(limits)


def parse(values: tuple[str, ...] | list[str]) -> Limits:
    """``--limit NAME=VALUE`` options (repeatable) over the defaults."""
    changes: dict[str, float | int] = {}
    for value in values:
        name, sep, number = value.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in NAMES:
            raise BadInputError(f"--limit {value}", "is not NAME=VALUE with a known NAME",
                                f"Use one of: {', '.join(NAMES)} (SECURITY.md explains each)")
        kind = int if name in ("image_pixels", "config_depth", "archive_members") else float
        try:
            parsed = kind(float(number)) if kind is int else float(number)
        except ValueError:
            parsed = -1
        if not parsed > 0 or parsed == float("inf"):
            raise BadInputError(f"--limit {value}", f"{number!r} is not a positive finite number",
                                f"Give e.g. --limit {name}=2{'000' if kind is int else ''}")
        changes[name] = parsed
    return dataclasses.replace(DEFAULTS, **changes)


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable), or physical memory where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_bytes() -> tuple[int, str]:
    """The memory limit in bytes and how it was set, for messages."""
    limit = current().memory_mb
    if limit is not None:
        return int(limit * MiB), f"memory_mb={limit:g}"
    avail = available_memory()
    return int(avail * MEMORY_SHARE), (f"memory_mb={avail * MEMORY_SHARE / MiB:,.0f}: "
                                       f"{MEMORY_SHARE:.0%} of the {avail / MiB:,.0f} MiB "
                                       "of memory available")


def refuse(what: str, declared: str, limit: str, name: str,
           error: type[BadInputError] = BadInputError) -> BadInputError:
    """The error for a declared size over a limit: the file, the size, the limit, the option."""
    return error(what, f"declares {declared}, over the limit of {limit}",
                 f"Check the file; if it is genuine and the machine can take it, raise the "
                 f"limit with --limit {name}=…")


def check_memory(what: str, declared: int, about: str,
                 error: type[BadInputError] = BadInputError) -> None:
    """``declared`` bytes (of ``about``, e.g. "array x (1000, 28, 28) float32") must fit."""
    limit, how = memory_bytes()
    if declared > limit:
        raise refuse(what, f"{declared:,} bytes ({about})", f"{limit:,} bytes ({how})",
                     "memory_mb", error)


def check_ratio(what: str, declared: int, stored: int, about: str,
                error: type[BadInputError] = BadInputError) -> None:
    """A member ``declared`` to expand from ``stored`` bytes: a deflate bomb is refused."""
    ratio = current().compression_ratio
    if declared > RATIO_FLOOR and declared > stored * ratio:
        raise refuse(what, f"{declared:,} bytes from {stored:,} stored ({about}, "
                     f"{declared / max(stored, 1):,.0f}× expansion)",
                     f"{ratio:g}× for data over {RATIO_FLOOR // MiB} MiB", "compression_ratio",
                     error)
