"""Target profiles: ``targets/*.toml`` loaded into frozen, validated dataclasses.

A profile names the hardware, the runtime and the budgets a model must meet. Users add their own
with ``--target path/to/file.toml``; ``inherit = "other"`` starts from another profile (a shipped
name, or a path relative to the inheriting file). Every error names the file, the key, the value
and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.errors import TargetError
from edgeprune.files import not_a_file
from edgeprune.resources import bundled_dir

HARDWARE_KINDS = ("host", "cortex-a", "cortex-m", "edgetpu", "ethos-u")
# What `uname -m` says on a Linux device; "" lets it follow from [hardware] cpu.
ARCHES = ("", "aarch64", "armv7l", "armv6l", "x86_64", "riscv64")
ENGINES = ("litert-xnnpack", "litert-ruy-2021", "tflm-cmsis-nn", "tflm-cmsis-nn-2022",
           "tflm-reference", "edgetpu", "vela")
# The engines a Cortex-A profile can run (its [estimator.macs_per_cycle.<engine>] prices the
# ops): LiteRT + XNNPACK, or TFLite 2.4's default CPU kernels (ruy GEMM, no XNNPACK).
CPU_ENGINES = ("litert-xnnpack", "litert-ruy-2021")
# Op classes with a MACs-per-cycle figure in [estimator.macs_per_cycle.<engine>], keyed
# "<class>_<dtype>" (see edgeprune/estimate/opclass.py for which ops fall in each class).
# A latency model needs every core class; a refinement, when a profile gives it, prices its
# ops instead of its parent class (e.g. int8 HARD_SWISH is far slower than other activations
# under XNNPACK). "movement" ops are priced by bytes alone unless a figure is given.
OP_CLASSES = ("conv", "depthwise", "fc", "elementwise", "activation", "pool", "convert")
OP_REFINEMENTS = {
    "mul": "elementwise", "sigmoid": "activation", "hardswish": "activation",
    "softmax": "activation", "avgpool": "pool", "reduce": "pool", "pad": "movement",
    "movement": None,
}  # fmt: skip
OP_DTYPES = ("int8", "float32")


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
    arch: str = ""

    def __post_init__(self) -> None:
        _choice("hardware.kind", self.kind, HARDWARE_KINDS)
        _choice("hardware.arch", self.arch, ARCHES)
        for name in ("cores", "channel_multiple"):
            _at_least(f"hardware.{name}", getattr(self, name), 1)
        for name in ("clock_mhz", "ram_kb", "flash_kb", "simd_bits"):
            _at_least(f"hardware.{name}", getattr(self, name), 0)

    @property
    def machine(self) -> str:
        """The `uname -m` of a Linux device this profile describes ("" for a microcontroller):
        ``arch`` when given, else what the CPU implies (a 64-bit OS on a Cortex-A)."""
        if self.arch or self.kind in ("cortex-m", "ethos-u"):
            return self.arch
        if self.cpu.startswith("cortex-a"):
            return "aarch64"
        return "x86_64" if self.cpu in ("x86-64", "x86_64") else ""


@dataclass(frozen=True)
class Runtime:
    engine: str
    threads: int = 1

    def __post_init__(self) -> None:
        _choice("runtime.engine", self.engine, ENGINES)
        _at_least("runtime.threads", self.threads, 1)

    @property
    def cpu_engine(self) -> str:
        """The engine whose [estimator.macs_per_cycle.<engine>] rates price CPU ops: this one
        where it is a CPU engine, else XNNPACK (the Edge TPU's host CPU)."""
        return self.engine if self.engine in CPU_ENGINES else CPU_ENGINES[0]


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
class Estimator:
    """Parameters of the target's latency/RAM model (``edgeprune/estimate``); each optional here,
    but the model for the profile's hardware kind needs its own (see ``required_keys``)."""

    # engine -> "<class>_<dtype>" -> sustained MACs per clock cycle of one core
    macs_per_cycle: dict[str, dict[str, float]] = field(default_factory=dict)
    # dtype -> fixed cost per output element of conv/depthwise/FC, in MACs (the GEMM
    # epilogue: bias, requantisation, clamp, store); makes short reductions (a 3-channel stem
    # conv, a 3×3 depthwise) cost what they do
    output_cost_macs: dict[str, float] = field(default_factory=dict)
    # dtype -> multiple each kernel tap's input channels are padded to (XNNPACK's IGEMM reads
    # a tap's channels a tile at a time: with a tile of 8 a 3-channel stem does the work of 8)
    conv_channel_tile: dict[str, float] = field(default_factory=dict)
    mem_gbps: float | None = None  # bytes moved per op / this = its memory-bound time
    # Weights are read once per inference: when a model's weights exceed the last-level cache
    # (cache_kb), the share that does not fit streams from DRAM at dram_gbps instead.
    dram_gbps: float | None = None
    cache_kb: float | None = None
    op_overhead_us: float | None = None  # per op on a Cortex-A (and the Edge TPU's host)
    gemm_overhead_us: float | None = None  # extra per conv/depthwise/FC op (operator setup)
    # engine -> dtype -> gemm_overhead_us for that engine's ops of that dtype (a CPU engine
    # whose per-op cost differs from the profile's: litert-ruy-2021's float32 GEMMs)
    gemm_overhead_us_by_engine: dict[str, dict[str, float]] = field(default_factory=dict)
    invoke_overhead_us: float | None = None  # per inference, fixed
    thread_speedup: tuple[float, ...] = ()  # whole-model speedup at 1, 2, … threads
    runtime_rss_kb: float | None = None  # resident memory of the runtime with no model loaded
    op_overhead_cycles: float | None = None  # per op on a Cortex-M (TFLM dispatch)
    tpu_gmacs: float | None = None  # effective Edge TPU rate, 1e9 MACs/s
    tpu_op_overhead_us: float | None = None  # per op mapped to the Edge TPU
    usb_mbps: float | None = None  # host link, MB/s: I/O tensors and streamed parameters
    param_cache_mib: float | None = None  # Edge TPU on-chip parameter cache usable by a model
    # The latency model's stated uncertainty per engine, in %: the spread of that engine's
    # leave-one-out errors on published figures (bench/estimator_loo.py --write); an engine
    # not listed: not established.
    uncertainty_pct: dict[str, float] = field(default_factory=dict)
    # "<class>_<dtype>" figures a published anchor on this hardware sets; every other class's
    # figure rests on an assumed ratio, and estimates say so (with the share of the latency it
    # prices). Absent: the profile makes no such claim (e.g. bench/host-estimate.toml, where
    # every class is fitted to micro-benchmarks).
    anchored_classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in (*_PER_DTYPE, *_LISTS, *_BY_ENGINE) or value is None:
                continue
            (_positive if f.name in _RATES else _at_least)(f"estimator.{f.name}", value, 0)
        for name in _LISTS:
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, tuple | list):
                raise _Invalid(f"estimator.{name} = {value!r} must be a list")
            object.__setattr__(self, name, tuple(value))
        for i, v in enumerate(self.thread_speedup):
            _positive(f"estimator.thread_speedup[{i}]", v)
        allowed = [f"{c}_{d}" for c in (*OP_CLASSES, *OP_REFINEMENTS) for d in OP_DTYPES]
        for key in self.anchored_classes or ():
            _choice("estimator.anchored_classes entry", key, tuple(allowed))
        for name, low in _PER_DTYPE.items():
            table = getattr(self, name)
            if not isinstance(table, dict):
                raise _Invalid(f"estimator.{name} must be a table of dtypes")
            for key, v in table.items():
                _choice(f"estimator.{name} key", key, OP_DTYPES)
                _at_least(f"estimator.{name}.{key}", v, low)
        if not isinstance(self.uncertainty_pct, dict):
            raise _Invalid("estimator.uncertainty_pct must be a table of engines "
                           "(e.g. { edgetpu = 55 })")
        for engine, pct in self.uncertainty_pct.items():
            _choice("estimator.uncertainty_pct engine", engine, ENGINES)
            _positive(f"estimator.uncertainty_pct.{engine}", pct)
        if not isinstance(self.gemm_overhead_us_by_engine, dict):
            raise _Invalid("estimator.gemm_overhead_us_by_engine must be a table of engines")
        for engine, table in self.gemm_overhead_us_by_engine.items():
            key = f"estimator.gemm_overhead_us_by_engine.{engine}"
            _choice("estimator.gemm_overhead_us_by_engine engine", engine, CPU_ENGINES)
            if not isinstance(table, dict):
                raise _Invalid(f"{key} must be a table of dtypes")
            for dtype, v in table.items():
                _choice(f"{key} key", dtype, OP_DTYPES)
                _at_least(f"{key}.{dtype}", v, 0)
        if not isinstance(self.macs_per_cycle, dict):
            raise _Invalid("estimator.macs_per_cycle must be a table of engines")
        for engine, table in self.macs_per_cycle.items():
            _choice("estimator.macs_per_cycle engine", engine, ENGINES)
            if not isinstance(table, dict):
                raise _Invalid(f"estimator.macs_per_cycle.{engine} must be a table")
            for key, v in table.items():
                _choice(f"estimator.macs_per_cycle.{engine} key", key, tuple(allowed))
                _positive(f"estimator.macs_per_cycle.{engine}.{key}", v)

    def required_keys(self, kind: str, engine: str) -> list[str]:
        """Keys the latency/RAM model of ``kind``/``engine`` needs (dotted, as in the TOML)."""
        cpu = Runtime(engine).cpu_engine
        if kind == "cortex-a":
            return [*_table_keys(cpu, OP_DTYPES), "mem_gbps", "dram_gbps", "cache_kb",
                    "op_overhead_us", "invoke_overhead_us", "thread_speedup", "runtime_rss_kb"]
        if kind == "cortex-m":  # float32 figures are optional: float ops are then flagged
            return [*_table_keys(engine, ("int8",)), "op_overhead_cycles"]
        if kind == "edgetpu":
            return ["tpu_gmacs", "tpu_op_overhead_us", "invoke_overhead_us", "usb_mbps",
                    "param_cache_mib", *_table_keys(cpu, OP_DTYPES), "mem_gbps", "dram_gbps",
                    "cache_kb", "op_overhead_us", "thread_speedup"]
        return []  # host: measured; ethos-u: Vela

    def missing(self, kind: str, engine: str) -> list[str]:
        out = []
        for key in self.required_keys(kind, engine):
            if key.startswith("macs_per_cycle."):
                _, eng, cls = key.split(".")
                if cls not in self.macs_per_cycle.get(eng, {}):
                    out.append(key)
            elif getattr(self, key) in (None, ()):
                out.append(key)
        return out


_PER_DTYPE = {"output_cost_macs": 0, "conv_channel_tile": 1}  # dtype tables, their minimum
_LISTS = ("thread_speedup", "anchored_classes")
_BY_ENGINE = ("macs_per_cycle", "gemm_overhead_us_by_engine", "uncertainty_pct")
_RATES = frozenset({"mem_gbps", "dram_gbps", "tpu_gmacs", "usb_mbps"})  # divisors: must be > 0


def _table_keys(engine: str, dtypes: tuple[str, ...]) -> list[str]:
    return [f"macs_per_cycle.{engine}.{c}_{d}" for c in OP_CLASSES for d in dtypes]


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    hardware: Hardware
    runtime: Runtime
    budgets: Budgets
    build: dict[str, Any] = field(default_factory=dict)  # recipe defaults, validated by Recipe
    source: str = ""
    # None: the profile has no [estimator]; its latency/RAM are then not estimated.
    estimator: Estimator | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS: dict[str, type] = {"hardware": Hardware, "runtime": Runtime, "budgets": Budgets}
_TOP_KEYS = {"name", "description", "inherit", "build", "estimator", *_SECTIONS}


class _Invalid(ValueError):
    """Raised by field validators; the loader adds the file name."""


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _Invalid(f"{key} = {value!r} is not one of {', '.join(allowed)}")


def _positive(key: str, value: Any, _low: float = 0) -> None:
    _at_least(key, value, 0)
    if value == 0:
        raise _Invalid(f"{key} = {value!r} must be > 0")


MAX_NUMBER = 1e15  # far above any real clock, size or rate; larger means a typo


def _at_least(key: str, value: Any, low: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(f"{key} = {value!r} must be a number")
    if isinstance(value, float) and not math.isfinite(value):  # TOML allows nan and inf
        raise _Invalid(f"{key} = {value!r} must be a finite number (omit a budget to skip it)")
    if value > MAX_NUMBER:
        raise _Invalid(f"{key} = {value!r} is implausibly large")
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
        problem = not_a_file(path)
        if problem is not None:
            raise TargetError(spec, "no such target file" if problem == "no such file" else
                              problem, "Give a path to a .toml profile or a shipped name")
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
    try:
        parent_path = _resolve_path(parent, path.parent)
    except TargetError as exc:  # name the inheriting file, not just the missing one
        raise TargetError(str(path), f"inherit = {parent!r}: {exc.problem}", exc.fix) from None
    base = _raw_profile(parent_path, (*chain, resolved))
    base.pop("name", None)
    return _merge(base, raw)


def _section(path: Path, raw: dict[str, Any], key: str) -> Any:
    cls = _SECTIONS.get(key, Estimator)
    values = raw.get(key, {})
    if not isinstance(values, dict):
        raise TargetError(str(path), f"[{key}] must be a table", "See targets/host.toml")
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise TargetError(
            str(path),
            f"unknown key {key}.{unknown[0]} = {values[unknown[0]]!r}",
            f"Allowed keys in [{key}]: {', '.join(sorted(types))}",
        )
    for name, value in values.items():  # whole numbers and text; numbers are checked by cls
        kind = {"int": int, "str": str}.get(str(types[name]))
        if kind is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            raise _Invalid(f"{key}.{name} = {value!r} must be "
                           + ("a whole number" if kind is int else "a string"))
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
        estimator = _section(path, raw, "estimator") if "estimator" in raw else None
    except _Invalid as exc:
        raise TargetError(str(path), str(exc), "Fix the value") from exc
    if estimator is not None:
        missing = estimator.missing(hardware.kind, runtime.engine)
        if missing:
            raise TargetError(
                str(path),
                f"estimator.{missing[0]} is missing; the {hardware.kind} latency/RAM model "
                f"({runtime.engine}) needs it" + (f" (and {len(missing) - 1} more)"
                                                  if len(missing) > 1 else ""),
                "Add it to [estimator] (targets/rpi4.toml and targets/cortex-m4.toml document "
                "every parameter), or remove the [estimator] section to skip estimates",
            )
    build = raw.get("build", {})
    if not isinstance(build, dict):
        raise TargetError(str(path), "[build] must be a table", "See targets/host.toml")
    if not isinstance(raw.get("description", ""), str):
        raise TargetError(str(path), "description must be a string", "Quote it")
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
        estimator=estimator,
    )


def all_targets() -> list[TargetProfile]:
    return [load_target(name) for name in shipped_names()]
