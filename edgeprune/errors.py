"""Errors with structured fields. Every message ends with what the user should do.

The CLI maps ``EdgepruneError.exit_code`` to the process exit code:
2 for bad input or usage, 3 for a tool or runtime failure.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The process exit codes, a contract CI pipelines rely on."""

    OK = 0  # every budget met (or, without --strict, not checkable)
    BUDGET_FAILED = 1  # built, but a budget is not met
    BAD_INPUT = 2  # bad input or usage
    TOOL_FAILED = 3  # a tool or runtime failed
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it


class EdgepruneError(Exception):
    """Base class: ``what`` names the file/option/value, ``fix`` says what to do."""

    exit_code: ExitCode = ExitCode.BAD_INPUT

    def __init__(self, what: str, problem: str, fix: str) -> None:
        self.what = what
        self.problem = problem
        self.fix = fix
        super().__init__(f"{what}: {problem}. {fix}")


class BadInputError(EdgepruneError):
    """A file, option or value given by the user is unusable (exit 2)."""


class TargetError(BadInputError):
    """A target profile is unknown or invalid (exit 2)."""


class RecipeError(BadInputError):
    """A recipe file or option is invalid (exit 2)."""


class ModelLoadError(BadInputError):
    """A model file cannot be loaded safely (exit 2)."""


class DataError(BadInputError):
    """A data or calibration file is unusable (exit 2)."""


class ToolError(EdgepruneError):
    """An external tool or runtime failed (exit 3); ``fix`` says how to reproduce."""

    exit_code = ExitCode.TOOL_FAILED
