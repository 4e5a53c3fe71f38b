"""What every click command shares: context settings, error-to-exit-code mapping, logging.

Kept apart from ``cli.py`` so command modules (``flash_cli.py``) use it without importing the
command group that registers them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from edgeprune import native_output
from edgeprune.atomic import disk_full
from edgeprune.errors import EdgepruneError, ExitCode

log = logging.getLogger("edgeprune")
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def handle_errors(fn: Callable[..., int | None]) -> Callable[..., None]:
    """Run a command body; turn its result or error into the process exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = fn(*args, **kwargs) or ExitCode.OK
        except EdgepruneError as exc:
            click.echo(f"error: {exc}", err=True)
            code = exc.exit_code
        except KeyboardInterrupt:
            click.echo("interrupted: no output folder was left behind; finished stages stay "
                       "cached, rerun with --resume to reuse them", err=True)
            code = ExitCode.INTERRUPTED
        except Exception as exc:  # a library or runtime failed in a way we did not foresee
            log.debug("traceback", exc_info=True)
            if disk_full(exc):  # the user's disk, not a bug: name the path
                where = getattr(exc, "filename", None) or "a file"
                click.echo(f"error: no space left on the device while writing {where} ({exc})."
                           f" Free space on that filesystem (df -h) and rerun", err=True)
                sys.exit(int(ExitCode.TOOL_FAILED))
            click.echo(
                f"error: internal failure: {type(exc).__name__}: {exc}. No output folder was "
                "left behind; rerun with -v for the traceback and report it",
                err=True,
            )
            code = ExitCode.TOOL_FAILED
        sys.exit(int(code))

    return wrapper


def setup_logging(verbosity: int) -> None:
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    native_output.show(verbosity >= 1)
    if verbosity < 1:  # TF/absl chatter is noise unless asked for
        for noisy in ("tensorflow", "absl", "h5py"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
