"""Edge TPU: the compatibility rules, the single-subgraph partition, the compiler's log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_models import convert

from edgeprune.estimate import edgetpu_compiler as compiler
from edgeprune.estimate import estimate_target
from edgeprune.estimate.edgetpu_compat import (
    AFTER_CUT,
    BAD_DTYPE,
    MAPPED,
    NOT_SUPPORTED,
    SUPPORTED,
    UNSPECIFIED,
    analyse,
    write_compat_json,
)
from edgeprune.targets import load_target
from edgeprune.tflite.graph import parse_tflite

CACHE = 7 * 2**20


def _analyse(blob: bytes, cache: int = CACHE):
    return analyse(parse_tflite(blob), blob, cache)


@pytest.fixture(scope="module")
def unsupported_in_the_middle() -> bytes:
    """int8: conv → conv → LEAKY_RELU (int8 in TFLite, not on the Edge TPU) → conv → GAP →
    dense → softmax. (ELU would stay float: the converter wraps it in DEQUANTIZE/QUANTIZE.)"""
    from edgeprune import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inp = keras.Input((16, 16, 3), batch_size=1)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = layers.LeakyReLU(0.1)(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(4, activation="softmax")(x)
    return convert(keras.Model(inp, out), "int8")


def test_ops_after_an_unsupported_op_run_on_the_cpu(unsupported_in_the_middle):
    report = _analyse(unsupported_in_the_middle)
    ops = report.ops
    types = [s.op_type for s in ops]
    assert "LEAKY_RELU" in types
    elu = types.index("LEAKY_RELU")
    assert ops[0].op_type == "QUANTIZE" and ops[0].status == UNSPECIFIED  # float input
    assert all(s.mapped and s.status == MAPPED for s in ops[1:elu])  # the two convs
    assert ops[elu].status == NOT_SUPPORTED and not ops[elu].mapped
    after = ops[elu + 1:]
    assert after and not any(s.mapped for s in after)
    assert all(s.status in (AFTER_CUT, BAD_DTYPE) for s in after)
    assert next(s for s in after if s.op_type == "CONV_2D").status == AFTER_CUT
    assert report.ops_on_edgetpu == elu - 1 and report.edgetpu_subgraphs == 1
    assert report.ops_on_cpu == len(ops) - report.ops_on_edgetpu
    # The log table groups by operator and status, as edgetpu_compiler's does.
    assert {"operator": "CONV_2D", "count": 2, "status": MAPPED} in report.rows
    assert {"operator": "CONV_2D", "count": 1, "status": AFTER_CUT} in report.rows


def test_partition_latency_puts_cpu_ops_on_the_host(unsupported_in_the_middle):
    result = estimate_target(unsupported_in_the_middle, load_target("coral-usb"))
    devices = {r["op_type"]: r["device"] for r in result.per_op}
    assert devices["LEAKY_RELU"] == "cpu" and devices["FULLY_CONNECTED"] == "cpu"
    assert [r["device"] for r in result.per_op if r["op_type"] == "CONV_2D"] == [
        "edgetpu", "edgetpu", "cpu"]
    compat = result.extra["edgetpu_compat"]
    assert compat["ops_on_edgetpu"] == 2 and compat["rows"]


def test_fully_int8_cnn_maps_entirely(cnn_tflite):
    report = _analyse(Path(cnn_tflite["int8"]).read_bytes())
    statuses = {s.op_type: s.status for s in report.ops}
    assert statuses["QUANTIZE"] == UNSPECIFIED and statuses["DEQUANTIZE"] == BAD_DTYPE
    mapped = [s.op_type for s in report.ops if s.mapped]
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MAX_POOL_2D", "AVERAGE_POOL_2D",
            "MEAN", "FULLY_CONNECTED", "SOFTMAX"} == set(mapped)
    assert report.off_chip_param_bytes == 0 and report.on_chip_param_bytes > 0


def test_float_model_maps_nothing(cnn_tflite):
    report = _analyse(Path(cnn_tflite["float"]).read_bytes())
    assert report.ops_on_edgetpu == 0 and report.edgetpu_subgraphs == 0
    assert report.ops[0].status == BAD_DTYPE


def test_parameters_beyond_the_cache_stream_from_the_host(cnn_tflite):
    blob = Path(cnn_tflite["int8"]).read_bytes()
    small = _analyse(blob, cache=1024)
    assert small.on_chip_param_bytes == 1024 and small.off_chip_param_bytes > 0
    assert any("stream" in n for n in small.notes)
    target = load_target("coral-usb")
    base = estimate_target(blob, target).measurements[0].value
    import dataclasses

    tiny = dataclasses.replace(target, estimator=dataclasses.replace(target.estimator,
                                                                     param_cache_mib=0.001))
    assert estimate_target(blob, tiny).measurements[0].value > base


@pytest.fixture(scope="module")
def rank_and_softmax_tflite() -> bytes:
    """int8: a 2-D softmax (the Edge TPU maps only 1-D softmax)."""
    from edgeprune import _tf

    keras = _tf.keras()
    inp = keras.Input((4, 6), batch_size=1)
    x = keras.layers.Dense(6)(inp)  # FULLY_CONNECTED with keep_num_dims: 2 non-unit dims
    out = keras.layers.Softmax()(x)
    return convert(keras.Model(inp, out), "int8")


def test_documented_limitations_are_specific_reasons(rank_and_softmax_tflite):
    report = _analyse(rank_and_softmax_tflite)
    first_unmapped = next(s for s in report.ops if not s.mapped and s.op_type != "QUANTIZE")
    assert first_unmapped.status not in (MAPPED, AFTER_CUT, UNSPECIFIED)
    softmax = next(s for s in report.ops if s.op_type == "SOFTMAX")
    assert not softmax.mapped


def test_supported_table_has_the_documented_core_ops():
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MUL",
               "AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN", "SOFTMAX", "CONCATENATION",
               "RESHAPE", "LOGISTIC", "TANH", "RELU", "RELU6", "PAD", "QUANTIZE"):
        assert op in SUPPORTED
    for op in ("ELU", "HARD_SWISH", "DEQUANTIZE", "CUMSUM", "LEAKY_RELU"):
        assert op not in SUPPORTED


def test_compat_json(tmp_path, unsupported_in_the_middle):
    report = _analyse(unsupported_in_the_middle)
    path = write_compat_json(tmp_path, report)
    assert path.name == "edgetpu_compat.json"
    data = json.loads(path.read_text())
    assert data["ops_on_edgetpu"] == report.ops_on_edgetpu
    assert {"operator", "count", "status"} <= set(data["rows"][0])
    assert data["ops"][0]["op_type"] == "QUANTIZE"


# A compiler run's stdout with -s, written from the documented format (compiler v16).
COMPILER_STDOUT = """\
Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 1354 ms.

Input model: model.tflite
Input size: 5.10MiB
Output model: out/model_edgetpu.tflite
Output size: 6.28MiB
On-chip memory used for caching model parameters: 6.03MiB
On-chip memory remaining for caching model parameters: 1.21MiB
Off-chip memory used for streaming uncached model parameters: 512.00KiB
Number of Edge TPU subgraphs: 1
Total number of operations: 143
Operation log: out/model_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A \
percentage of the model will instead run on the CPU, which is slower. If possible, consider \
updating your model to use only operations supported by the Edge TPU. For details, visit \
g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 139
Number of operations that will run on CPU: 4

Operator                       Count      Status

CONV_2D                        98         Mapped to Edge TPU
DEPTHWISE_CONV_2D              35         Mapped to Edge TPU
QUANTIZE                       1          Operation is otherwise supported, but not mapped \
due to some unspecified limitation
ADD                            6          Mapped to Edge TPU
ELU                            1          Operation not supported
FULLY_CONNECTED                1          More than one subgraph is not supported
DEQUANTIZE                     1          Operation is working on an unsupported data type
Compilation child process completed within timeout period.
Compilation succeeded!
"""


def test_compiler_log_parser():
    r = compiler.parse_compiler_log(COMPILER_STDOUT)
    assert r.source == "edgetpu_compiler 16.0.384591198"
    assert r.model == "model.tflite"
    assert r.ops_on_edgetpu == 139 and r.ops_on_cpu == 4 and r.edgetpu_subgraphs == 1
    assert r.on_chip_param_bytes == round(6.03 * 2**20)
    assert r.param_cache_bytes == round(6.03 * 2**20) + round(1.21 * 2**20)
    assert r.off_chip_param_bytes == 512 * 1024
    assert r.rows[0] == {"operator": "CONV_2D", "count": 98, "status": MAPPED}
    assert {"operator": "QUANTIZE", "count": 1, "status": UNSPECIFIED} in r.rows
    assert {"operator": "FULLY_CONNECTED", "count": 1, "status": AFTER_CUT} in r.rows
    assert len(r.rows) == 7


def test_compiler_log_file_alone_is_enough():
    log_file = "Edge TPU Compiler version 15.0.340273435\nInput: m.tflite\n"
    log_file += "Output: m_edgetpu.tflite\n\n"
    log_file += "Operator                       Count      Status\n\n"
    log_file += "CONV_2D                        3          Mapped to Edge TPU\n"
    log_file += "ELU                            1          Operation not supported\n"
    r = compiler.parse_compiler_log(log_file)
    assert r.ops_on_edgetpu == 3 and r.ops_on_cpu == 1 and r.model == "m.tflite"


def test_artifacts_without_the_compiler_use_the_rules(
    tmp_path, monkeypatch, unsupported_in_the_middle
):
    monkeypatch.setattr(compiler.shutil, "which", lambda name: None)
    model = tmp_path / "model.tflite"
    model.write_bytes(unsupported_in_the_middle)
    report = compiler.edgetpu_artifacts(model, tmp_path, CACHE)
    assert (tmp_path / "edgetpu_compat.json").is_file()
    assert not (tmp_path / "model_edgetpu.tflite").exists()
    assert any("not on PATH" in n for n in report.notes)


def test_artifacts_with_a_compiler_keep_its_model_and_log(tmp_path, monkeypatch):
    """A stand-in edgetpu_compiler (a script printing the documented output) on PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "edgetpu_compiler"
    out = tmp_path / "out"
    out.mkdir()
    stdout = tmp_path / "stdout.txt"
    stdout.write_text(COMPILER_STDOUT)
    fake.write_text(f"#!/bin/sh\ncat {stdout}\ntouch {out}/model_edgetpu.tflite\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    model = tmp_path / "model.tflite"
    model.write_bytes(b"unused by the stand-in")
    report = compiler.edgetpu_artifacts(model, out, CACHE)
    assert report.source.startswith("edgetpu_compiler 16")
    assert (out / "model_edgetpu.tflite").is_file() and (out / "edgetpu_compat.json").is_file()


def test_a_failing_compiler_is_a_tool_error(tmp_path, monkeypatch):
    from edgeprune.errors import ToolError

    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "edgetpu_compiler"
    fake.write_text("#!/bin/sh\necho 'Compilation failed: Model failed in Tflite interpreter'\n"
                    "exit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    with pytest.raises(ToolError) as e:
        compiler.run_compiler(tmp_path / "model.tflite", tmp_path)
    assert e.value.exit_code == 3 and "Reproduce with" in str(e.value)


def test_build_for_coral_writes_compat_json_and_estimates(tiny_files, tmp_path):
    from click.testing import CliRunner

    from edgeprune.cli import main

    out = tmp_path / "o"
    r = CliRunner().invoke(main, [
        "build", "--target", "coral-usb", "--model", str(tiny_files["model"]),
        "--data", str(tiny_files["data"]), "--val", str(tiny_files["val"]),
        "--calib", str(tiny_files["calib"]), "--prune", "none", "--epochs", "0",
        "--out", str(out)])
    assert r.exit_code in (0, 1), r.output
    folder = out / "coral-usb"
    compat = json.loads((folder / "edgetpu_compat.json").read_text())
    assert compat["ops_on_edgetpu"] > 0 and compat["rows"]
    rep = json.loads((folder / "report.json").read_text())
    latency = next(c for c in rep["checks"] if c["name"] == "latency")
    assert latency["method"] == "estimate" and latency["value"] > 0


def test_dynamic_sizes_do_not_map_but_a_dynamic_batch_does(cnn_tflite):
    from edgeprune import _tf
    from edgeprune.estimate.edgetpu_compat import DYNAMIC

    keras = _tf.keras()
    inp = keras.Input((None, 8, 3))  # height known only at run time
    model = keras.Model(inp, keras.layers.Conv2D(4, 3, padding="same")(inp))
    dynamic = _analyse(convert(model, "int8"))
    assert any(s.status == DYNAMIC for s in dynamic.ops)
    assert any("rejects" in n for n in dynamic.notes)
    # The every-op CNN's batch is -1 in the signature (Keras), and it still maps.
    assert _analyse(Path(cnn_tflite["int8"]).read_bytes()).ops_on_edgetpu > 0


def test_streaming_fills_the_cache_in_order_and_overlaps_compute():
    from edgeprune.estimate.edgetpu import tpu_op_ms

    # 1 MAC/ns and 1 byte/µs: the cache (1000 B) holds the first op's 600 B and 400 B of the
    # second's; the third streams all of its 600 B but computes for longer (1 s).
    out = tpu_op_ms([(0, 600), (0, 600), (10**9, 600)], cache_bytes=1000, gmacs=1.0,
                    op_overhead_us=10.0, usb_mbps=1.0)
    assert [b for _, b in out] == [0, 200, 600]
    assert [ms for ms, _ in out] == pytest.approx([0.01, 0.21, 1000.01])
