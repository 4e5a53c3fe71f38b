"""Property-based tests: the loaders of user-controlled files never crash.

For arbitrary text, arbitrary TOML tables (biased toward the real keys, so validation is
reached, not just the unknown-key check) and arbitrary or damaged .tflite bytes, the target and
recipe loaders and the .tflite parser either succeed or raise an EdgepruneError subclass meant
for bad input (exit 2) — never another exception, never a hang. Runs are derandomized (the
same examples every run) and sizes are bounded so the module stays well under a minute.
"""

from __future__ import annotations

import math
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeprune import recipe as recipe_mod
from edgeprune import targets as targets_mod
from edgeprune.errors import BadInputError, EdgepruneError
from edgeprune.tflite.graph import parse_tflite
from edgeprune.tflite.planner import plan_arena

SETTINGS = settings(
    derandomize=True, database=None, deadline=timedelta(seconds=2), max_examples=150,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def scratch() -> Path:
    with tempfile.TemporaryDirectory(prefix="edgeprune-props-") as tmp:
        yield Path(tmp)


def _bad_input_only(fn, *args: Any) -> Any:
    """Run fn; an exception must be an EdgepruneError of exit code 2 with a full message."""
    try:
        return fn(*args)
    except EdgepruneError as exc:
        assert exc.exit_code == 2, exc
        assert exc.what and exc.problem and exc.fix, exc
        return exc


# -- TOML text and tables -------------------------------------------------------------------
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in value.items()) \
        + "}"


def _toml_string(text: str) -> str:
    """A TOML basic string: quote, backslash and control characters escaped."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def to_toml(table: dict[str, Any]) -> str:
    """A TOML document for a table of values (sub-tables inline)."""
    return "".join(f"{_toml_string(k)} = {_toml_value(v)}\n" for k, v in table.items())


SCALARS = st.one_of(
    st.integers(min_value=0, max_value=64),
    st.floats(min_value=0, max_value=100),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["host", "rpi4", "cortex-m", "cortex-a", "litert-xnnpack", "int8",
                     "structured", "l1", "uniform", "bn", "finetune", "x.toml", "../x"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def _section(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    real = st.sampled_from(fields)
    keys = st.one_of(real, real, real, st.text(max_size=6))  # mostly real keys
    return st.dictionaries(keys, VALUES, max_size=len(fields) + 1)


INHERIT = st.sampled_from(["host", "rpi4", "cortex-m4", "coral-usb", "nope", "nope.toml",
                           "t.toml"])
_TARGET_KEYS = {
    "name": VALUES, "description": VALUES,
    "hardware": _section(["kind", "cpu", "cores", "clock_mhz", "ram_kb", "flash_kb",
                          "simd_bits", "channel_multiple", "accelerator"]),
    "runtime": _section(["engine", "threads"]),
    "budgets": _section(["latency_ms", "ram_kb", "flash_kb", "accuracy_drop"]),
    "build": _section(list(recipe_mod._FIELDS)),
    "estimator": _section(["mem_gbps", "dram_gbps", "cache_kb", "op_overhead_us",
                           "macs_per_cycle", "thread_speedup", "output_cost_macs"]),
}
TARGET_TABLES = st.one_of(  # most tables inherit, so their values reach the validators
    st.fixed_dictionaries({"inherit": INHERIT}, optional=_TARGET_KEYS),
    st.fixed_dictionaries({}, optional={"inherit": INHERIT, **_TARGET_KEYS}),
)
RECIPE_TABLES = _section(list(recipe_mod._FIELDS))


def _load_target_and_recipe(path: Path) -> Any:
    target = targets_mod.load_target(str(path))
    return recipe_mod.resolve_recipe(target.build, target.source, None, {})


def _load_recipe(path: Path) -> Any:
    return recipe_mod.resolve_recipe({}, "host.toml", path, {})


@SETTINGS
@given(text=st.text(max_size=300))
def test_target_loader_on_arbitrary_text(scratch, text):
    path = scratch / "t.toml"
    path.write_text(text, encoding="utf-8")
    _bad_input_only(_load_target_and_recipe, path)


@SETTINGS
@given(table=TARGET_TABLES)
def test_target_loader_on_arbitrary_tables(scratch, table):
    path = scratch / "t.toml"
    path.write_text(to_toml(table), encoding="utf-8")
    result = _bad_input_only(_load_target_and_recipe, path)
    if not isinstance(result, EdgepruneError):  # it loaded: then the values are sane
        assert isinstance(result, recipe_mod.Recipe)


@SETTINGS
@given(text=st.text(max_size=300))
def test_recipe_loader_on_arbitrary_text(scratch, text):
    path = scratch / "r.toml"
    path.write_text(text, encoding="utf-8")
    _bad_input_only(_load_recipe, path)


@SETTINGS
@given(table=RECIPE_TABLES, under_build=st.booleans())
def test_recipe_loader_on_arbitrary_tables(scratch, table, under_build):
    path = scratch / "r.toml"
    path.write_text(to_toml({"build": table} if under_build else table), encoding="utf-8")
    result = _bad_input_only(_load_recipe, path)
    if isinstance(result, recipe_mod.Recipe):
        assert 0 <= result.sparsity < 1 and 0 <= result.seed < 2**32
        assert math.isfinite(result.learning_rate) and result.learning_rate > 0


def test_toml_writer_round_trips():
    """The tables above reach the loaders as written (a check of the test's own writer)."""
    import tomllib

    table = {"a": 1, "b": [1.5, "x", True], "c": {"d": float("inf"), "e ü": "q\"\n"}}
    assert tomllib.loads(to_toml(table)) == table


# -- .tflite flatbuffers ----------------------------------------------------------------------
def _parse_and_plan(data: bytes) -> Any:
    graph = parse_tflite(data, name="fuzz.tflite")
    plan_arena(graph)  # whatever parses must also plan and count without crashing
    assert graph.total_macs >= 0 and graph.weight_bytes >= 0
    graph.lifetimes()
    return graph


@SETTINGS
@given(data=st.binary(max_size=2048))
def test_tflite_parser_on_arbitrary_bytes(data):
    result = _bad_input_only(_parse_and_plan, data)
    if isinstance(result, EdgepruneError):
        assert isinstance(result, BadInputError) and "fuzz.tflite" in str(result)


@SETTINGS
@given(data=st.binary(min_size=4, max_size=512))
def test_tflite_parser_on_bytes_with_the_tflite_identifier(data):
    """Garbage that passes the TFL3 identifier check reaches the table walker."""
    _bad_input_only(_parse_and_plan, data[:4] + b"TFL3" + data[4:])


@pytest.fixture(scope="module")
def tflite_bytes(tiny_tflite) -> bytes:
    return tiny_tflite.read_bytes()


@settings(SETTINGS, max_examples=300)
@given(
    cut=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0)),
    patches=st.lists(st.tuples(st.floats(min_value=0.0, max_value=0.9999),
                               st.integers(min_value=0, max_value=255)), max_size=16),
    words=st.lists(st.tuples(st.floats(min_value=0.0, max_value=0.9999),
                             st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 4, 24])),
                   max_size=4),
)
def test_tflite_parser_on_damaged_real_model(tflite_bytes, cut, patches, words):
    """Truncated, byte-patched and offset-clobbered copies of a real int8 model."""
    buf = bytearray(tflite_bytes)
    for where, value in patches:
        buf[int(where * len(buf))] = value
    for where, value in words:  # a whole 32-bit offset or length replaced
        at = int(where * (len(buf) - 4)) & ~3
        buf[at:at + 4] = value.to_bytes(4, "little")
    if cut is not None:
        buf = buf[: int(cut * len(buf))]
    _bad_input_only(_parse_and_plan, bytes(buf))


def test_the_undamaged_model_parses(tflite_bytes):
    graph = _parse_and_plan(tflite_bytes)
    assert "CONV_2D" in graph.op_types() and graph.total_macs > 0


# -- .npz/.npy headers and .keras archives (issue 25) -----------------------------------------

DIMS = st.one_of(st.integers(0, 8), st.integers(0, 2**20), st.integers(2**31, 2**62))
DTYPES = st.sampled_from(["<f4", "<f8", "<i8", "|u1", ">f4", "<f2"])


@settings(SETTINGS, max_examples=200)
@given(shape=st.lists(DIMS, min_size=1, max_size=4).map(tuple), descr=DTYPES,
       held=st.integers(0, 4096), fortran=st.booleans(),
       form=st.sampled_from(["npy", "stored", "deflated"]))
def test_array_headers_never_allocate_what_the_file_does_not_hold(scratch, shape, descr, held,
                                                                  fortran, form):
    """Whatever an .npy header declares, the loader returns no more than the file holds, or
    refuses with exit 2 — never a MemoryError, never a wrapped-around size."""
    import zipfile

    from hostile_files import npy_header, npz

    from edgeprune import limits
    from edgeprune.data import arrays

    payload = npy_header(shape, descr, fortran) + bytes(held)
    if form == "npy":
        path = scratch / "a.npy"
        path.write_bytes(payload)
    else:
        path = npz(scratch / "a.npz", {"x": payload}, zipfile.ZIP_STORED if form == "stored"
                   else zipfile.ZIP_DEFLATED)
    with limits.using(limits.Limits(memory_mb=1)):
        got = _bad_input_only(arrays.load_samples, path, "--calib")
    if not isinstance(got, EdgepruneError):
        declared = math.prod(shape) * int(descr[-1])
        assert declared <= held and len(got) == shape[0]


NAMES = st.one_of(
    st.sampled_from(["config.json", "metadata.json", "assets/a.txt", "../escape", "a/../../b",
                     "/abs/path", "C:evil", "a\\..\\b", "./ok", "x/.."]),
    st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
            min_size=1, max_size=12))


@settings(SETTINGS, max_examples=200)
@given(names=st.lists(NAMES, max_size=5, unique=True), depth=st.integers(1, 400),
       pad=st.integers(0, 3))
def test_keras_archive_members_and_configs_are_checked_before_keras(scratch, names, depth,
                                                                    pad):
    """A .keras archive with any member names and a config of any nesting depth: read_config
    returns the config only when every name stays inside the archive and the nesting is within
    the limit, else refuses with exit 2 naming the member or the depth."""
    import zipfile

    from edgeprune import limits, model_io
    from edgeprune.model_limits import unsafe_member_name

    config = ("[" * depth + "]" * depth + " " * pad).encode()
    path = scratch / "m.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", config)
        for name in names:
            if name != "config.json":
                info = zipfile.ZipInfo("placeholder")
                info.filename = name
                z.writestr(info, b"x")
    with zipfile.ZipFile(path) as z:
        stored = z.namelist()
    got = _bad_input_only(model_io.read_config, path, "keras")
    unsafe = [n for n in stored if unsafe_member_name(n)]
    too_deep = depth > limits.current().config_depth
    if isinstance(got, EdgepruneError):
        assert unsafe or too_deep, got
        assert (unsafe and repr(unsafe[0]) in got.problem) or (
            not unsafe and f"nested {depth:,} levels" in got.problem), got
    else:
        assert not unsafe and not too_deep
