"""TFLite-Micro artifacts: C sources that compile, an exact op resolver, the measured arena."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from artifact_models import images

from edgeprune.artifacts import tflm as tflm_artifacts
from edgeprune.data import Inputs, Labelled
from edgeprune.errors import BadInputError
from edgeprune.targets import load_target
from edgeprune.tflite.graph import parse_tflite

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")


@pytest.fixture(scope="module")
def built(m4_tflite, tmp_path_factory):
    """The cortex-m4 artifacts of the int8 model, with labelled held-out data."""
    work = tmp_path_factory.mktemp("m4-artifacts")
    model = work / "model.tflite"
    shutil.copy(m4_tflite, model)
    val = Labelled(images(30, seed=3), np.zeros(30, np.int64), "val.npz")
    inputs = Inputs(train=None, val=val, calib=None)
    return work, tflm_artifacts.build(model, work, load_target("cortex-m4"), inputs)


def _array_bytes(cc: str) -> bytes:
    body = cc.split("g_model_data[] = {", 1)[1].split("};", 1)[0]
    return bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", body))


def test_three_c_files_with_the_model_bytes(built):
    work, arts = built
    assert sorted(p.name for p in arts.files) == ["model_data.cc", "model_data.h", "op_resolver.h"]
    blob = (work / "model.tflite").read_bytes()
    cc = (work / "model_data.cc").read_text()
    assert "alignas(16) const uint8_t g_model_data[]" in cc
    assert f"const unsigned int g_model_data_len = {len(blob)};" in cc
    assert _array_bytes(cc) == blob
    includes = re.findall(r"#include\s+(\S+)", cc)
    assert includes == ['"model_data.h"', "<cstdint>"]  # nothing from TFLM
    h = (work / "model_data.h").read_text()
    assert "extern const uint8_t g_model_data[];" in h
    assert "extern const unsigned int g_model_data_len;" in h
    assert f"kModelArenaMinSize = {arts.report['arena']['min_bytes']};" in h


@needs_gxx
def test_model_data_compiles_links_and_is_aligned(built, tmp_path):
    work, _ = built
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-c", "model_data.cc", "-o",
                    str(tmp_path / "model_data.o")], cwd=work, check=True)
    (tmp_path / "main.cc").write_text(
        '#include <cstdint>\n#include <cstdio>\n#include "model_data.h"\n'
        "int main() {\n"
        "  if (reinterpret_cast<std::uintptr_t>(g_model_data) % 16 != 0) return 2;\n"
        "  fwrite(g_model_data, 1, g_model_data_len, stdout);\n  return 0;\n}\n"
    )
    subprocess.run(["g++", "-std=c++17", f"-I{work}", "main.cc", "model_data.o", "-o", "dump"],
                   cwd=tmp_path, check=True)
    out = subprocess.run([str(tmp_path / "dump")], capture_output=True, check=True).stdout
    assert out == (work / "model.tflite").read_bytes()


def _resolver(text: str) -> tuple[int, list[str]]:
    n = int(re.search(r"constexpr unsigned int kModelOpCount = (\d+);", text).group(1))
    assert "tflite::MicroMutableOpResolver<kModelOpCount>" in text
    return n, re.findall(r"resolver\.(Add\w+)\(\)", text)


def test_op_resolver_lists_exactly_the_models_ops(built):
    work, arts = built
    ops = parse_tflite(work / "model.tflite").op_types()
    n, methods = _resolver((work / "op_resolver.h").read_text())
    assert n == len(ops) == len(methods) == arts.report["op_count"]
    assert methods == [tflm_artifacts.BUILTIN_METHODS[op] for op in ops]
    assert {"AddConv2D", "AddDepthwiseConv2D", "AddFullyConnected", "AddMaxPool2D"} <= set(methods)


def _stub_tflm(root: Path) -> None:
    """A stand-in micro_mutable_op_resolver.h: every real AddXxx() name, capacity-checked."""
    names = sorted({*tflm_artifacts.BUILTIN_METHODS.values(),
                    *tflm_artifacts.CUSTOM_METHODS.values()})
    header = root / "tensorflow/lite/micro/micro_mutable_op_resolver.h"
    header.parent.mkdir(parents=True)
    methods = "".join(f"  TfLiteStatus {m}() {{ return Add(); }}\n" for m in names)
    header.write_text(
        "#pragma once\ntypedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;\n"
        "namespace tflite {\ntemplate <unsigned int N> class MicroMutableOpResolver {\n"
        f" public:\n{methods}  unsigned int used = 0;\n"
        " private:\n  TfLiteStatus Add() { return used < N ? (++used, kTfLiteOk) : kTfLiteError; }"
        "\n};\n}  // namespace tflite\n"
    )


@needs_gxx
def test_op_resolver_compiles_and_fills_its_capacity(built, tmp_path):
    work, _ = built
    _stub_tflm(tmp_path / "stub")
    (tmp_path / "main.cc").write_text(
        '#include "op_resolver.h"\nint main() {\n'
        "  auto* r = edgeprune::GetModelOpResolver();\n"
        "  return r != nullptr && r->used == edgeprune::kModelOpCount ? 0 : 1;\n}\n"
    )
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", f"-I{work}", f"-I{tmp_path}/stub",
                    "main.cc", "-o", "resolver"], cwd=tmp_path, check=True)
    subprocess.run([str(tmp_path / "resolver")], check=True)


def test_arena_is_the_smallest_that_works(built):
    from edgeprune.runners import tflm

    work, arts = built
    arena = arts.report["arena"]
    assert arena["min_bytes"] % arena["step_bytes"] == 0
    assert arena["recommended_bytes"] >= arena["min_bytes"]
    model = work / "model.tflite"
    assert tflm.probe_arena(model, arena["min_bytes"])
    assert not tflm.probe_arena(model, arena["min_bytes"] - arena["step_bytes"])
    ram = [m for m in arts.measurements if m.quantity == "ram_bytes"]
    assert [(m.value, m.method, m.where) for m in ram] == [(arena["min_bytes"], "tflm",
                                                             "cortex-m4")]
    flash = next(m for m in arts.measurements if m.quantity == "flash_bytes")
    assert flash.value == model.stat().st_size and "runtime" in flash.detail


def test_tflm_outputs_match_litert(built):
    match = built[1].report["outputs_match"]
    assert match["result"] in ("equal", "within_one_step"), match
    assert match["samples"] == 30 and match["dtype"] == "int8"
    assert match["top1_agreement"] == 1.0 and "BUILTIN_REF" in match["against"]
    # LiteRT's optimised kernels round differently; reported, not required to be equal
    assert match["litert_default"]["result"] in ("equal", "within_one_step", "mismatch")


def test_output_bytes_are_deterministic(built, tmp_path):
    work, _ = built
    shutil.copy(work / "model.tflite", tmp_path / "model.tflite")
    again = tflm_artifacts.build(tmp_path / "model.tflite", tmp_path, load_target("cortex-m4"),
                                 None)
    for path in again.files:
        assert path.read_bytes() == (work / path.name).read_bytes(), path.name


def test_compare_outputs_verdicts():
    a = np.array([[1, 2, 3]], np.int8)
    assert tflm_artifacts.compare_outputs(a, a)["result"] == "equal"
    assert tflm_artifacts.compare_outputs(a + 1, a)["result"] == "within_one_step"
    far = tflm_artifacts.compare_outputs(a + 3, a)
    assert far["result"] == "mismatch" and far["max_diff_steps"] == 3


def _topk_tflite() -> bytes:
    from edgeprune import _tf

    keras, tf = _tf.keras(), _tf.tf()
    inputs = keras.Input((8,), batch_size=1)
    out = keras.layers.Lambda(lambda t: tf.math.top_k(t, k=3).values)(inputs)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, out))
    return converter.convert()


def test_unsupported_op_is_named():
    graph = parse_tflite(_topk_tflite(), name="topk.tflite")
    with pytest.raises(BadInputError, match="TOPK_V2") as e:
        tflm_artifacts.resolver_methods(graph)
    assert "topk.tflite" in str(e.value) and "TFLite-Micro" in str(e.value)


def test_every_builtin_in_the_table_is_a_tflm_kernel():
    """Each mapped builtin is a real op name with a kernel in the installed TFLM build."""
    import importlib.util

    from ai_edge_litert import schema_py_generated as fb

    names = {k for k in vars(fb.BuiltinOperator) if not k.startswith("_")}
    spec = importlib.util.find_spec("tflite_micro.python.tflite_micro._runtime")
    runtime = Path(spec.origin).read_bytes()
    for op, method in tflm_artifacts.BUILTIN_METHODS.items():
        assert op in names, op
        assert f"Register_{op}".encode() in runtime, op
        assert re.fullmatch(r"Add[A-Z][A-Za-z0-9]*", method), method
