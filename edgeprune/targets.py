"""Target profiles: ``targets/*.toml`` loaded into frozen, validated dataclasses.

A profile names the hardware, the runtime and the budgets a model must meet. Users add their own
with ``--target path/to/file.toml``; ``inherit = "other"`` starts from another profile (a shipped
name, or a path relative to the inheriting file). Every error names the file, the key, the value
and what is allowed.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.errors import TargetError
from edgeprune.resources import bundled_dir

HARDWARE_KINDS = ("host", "cortex-a", "cortex-m", "edgetpu", "ethos-u")
ENGINES = ("litert-xnnpack", "tflm-cmsis-nn", "tflm-reference", "edgetpu", "vela")


@dataclass(frozen=True)
class Hardware:
    kind: str
    cpu: str = ""
    cores: int = 1
    clock_mhz: float = 0.0
    ram_kb: int = 0
    flash_kb: int = 0
    simd_bits: int = 0
    # Kept-channel counts are rounded to this (SIMD lanes / NPU width), see pruning policy.
    channel_multiple: int = 1
    accelerator: str = ""

    def __post_init__(self) -> None:
        _choice("hardware.kind", self.kind, HARDWARE_KINDS)
        for name in ("cores", "channel_multiple"):
            _at_least(f"hardware.{name}", getattr(self, name), 1)
        for name in ("clock_mhz", "ram_kb", "flash_kb", "simd_bits"):
            _at_least(f"hardware.{name}", getattr(self, name), 0)


@dataclass(frozen=True)
class Runtime:
    engine: str
    threads: int = 1

    def __post_init__(self) -> None:
        _choice("runtime.engine", self.engine, ENGINES)
        _at_least("runtime.threads", self.threads, 1)


@dataclass(frozen=True)
class Budgets:
    """Each budget is optional; an absent budget is simply not checked."""

    latency_ms: float | None = None
    ram_kb: float | None = None
    flash_kb: float | None = None
    accuracy_drop: float | None = None  # percentage points below the float baseline

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                _at_least(f"budgets.{f.name}", value, 0)


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    hardware: Hardware
    runtime: Runtime
    budgets: Budgets
    build: dict[str, Any] = field(default_factory=dict)  # recipe defaults, validated by Recipe
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS: dict[str, type] = {"hardware": Hardware, "runtime": Runtime, "budgets": Budgets}
_TOP_KEYS = {"name", "description", "inherit", "build", *_SECTIONS}


class _Invalid(ValueError):
    """Raised by field validators; the loader adds the file name."""


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _Invalid(f"{key} = {value!r} is not one of {', '.join(allowed)}")


def _at_least(key: str, value: Any, low: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(f"{key} = {value!r} must be a number")
    if value < low:
        raise _Invalid(f"{key} = {value!r} must be ≥ {low}")


def shipped_dir() -> Path:
    return bundled_dir("targets")


def shipped_names() -> list[str]:
    return sorted(p.stem for p in shipped_dir().glob("*.toml"))


def _resolve_path(spec: str, relative_to: Path | None = None) -> Path:
    """A target given as a shipped name, or as a path to a .toml file."""
    if spec.endswith(".toml") or "/" in spec or "\\" in spec:
        path = Path(spec)
        if relative_to is not None and not path.is_absolute():
            path = relative_to / path
        if not path.is_file():
            raise TargetError(
                spec, "no such target file", "Give a path to a .toml profile or a shipped name"
            )
        return path
    path = shipped_dir() / f"{spec}.toml"
    if not path.is_file():
        raise TargetError(
            f"--target {spec}",
            "unknown target",
            f"Use one of: {', '.join(shipped_names())}, or a path to a .toml profile",
        )
    return path


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message carries "(at line L, column C)".
        raise TargetError(str(path), f"TOML syntax error: {exc}", "Fix the file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetError(str(path), f"cannot be read ({exc})", "Check the path") from exc


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _raw_profile(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " → ".join(p.name for p in (*chain, resolved))
        raise TargetError(str(path), f"inherit cycle ({cycle})", "Remove one of the inherits")
    raw = _read_toml(path)
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise TargetError(
            str(path),
            f"unknown key {unknown[0]!r}",
            f"Allowed top-level keys: {', '.join(sorted(_TOP_KEYS))}",
        )
    parent = raw.pop("inherit", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise TargetError(str(path), f"inherit = {parent!r} must be a string", "Name a profile")
    base = _raw_profile(_resolve_path(parent, path.parent), (*chain, resolved))
    base.pop("name", None)
    return _merge(base, raw)


def _section(path: Path, raw: dict[str, Any], key: str) -> Any:
    cls = _SECTIONS[key]
    values = raw.get(key, {})
    if not isinstance(values, dict):
        raise TargetError(str(path), f"[{key}] must be a table", "See targets/host.toml")
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise TargetError(
            str(path),
            f"unknown key {key}.{unknown[0]} = {values[unknown[0]]!r}",
            f"Allowed keys in [{key}]: {', '.join(sorted(allowed))}",
        )
    try:
        return cls(**values)
    except TypeError as exc:  # a required key is missing
        raise TargetError(str(path), f"[{key}]: {exc}", "Add the missing key") from exc


def load_target(spec: str) -> TargetProfile:
    """Load a target by shipped name or path; raises TargetError (exit 2) on any problem."""
    path = _resolve_path(spec)
    raw = _raw_profile(path, ())
    try:
        hardware, runtime, budgets = (_section(path, raw, k) for k in _SECTIONS)
    except _Invalid as exc:
        raise TargetError(str(path), str(exc), "Fix the value") from exc
    build = raw.get("build", {})
    if not isinstance(build, dict):
        raise TargetError(str(path), "[build] must be a table", "See targets/host.toml")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise TargetError(str(path), f"name = {name!r} is not a usable folder name", "Rename it")
    return TargetProfile(
        name=name,
        description=str(raw.get("description", "")),
        hardware=hardware,
        runtime=runtime,
        budgets=budgets,
        build=build,
        source=str(path),
    )


def all_targets() -> list[TargetProfile]:
    return [load_target(name) for name in shipped_names()]
