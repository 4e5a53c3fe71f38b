"""The real TFLite-Micro arena (measured by probing) and TFLM outputs vs LiteRT."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from edgeprune.errors import BadInputError
from edgeprune.runners import tflm
from edgeprune.runners.tflm import measure_arena, probe_arena, run_tflm
from edgeprune.tflite.graph import parse_tflite
from edgeprune.tflite.planner import plan_arena


@pytest.fixture(scope="module")
def small_arena(tflm_models):
    return measure_arena(tflm_models["small"])


def test_measured_minimum_is_tight(tflm_models, small_arena):
    m, path = small_arena, tflm_models["small"]
    assert m.step_bytes == 16 and m.min_bytes % 16 == 0
    # Re-checked in fresh processes: the minimum runs, one step less does not.
    assert probe_arena(path, m.min_bytes)
    assert not probe_arena(path, m.min_bytes - m.step_bytes)
    assert m.head_bytes + m.tail_bytes == m.min_bytes  # TFLM's own record agrees
    assert m.recommended_bytes % 1024 == 0
    assert m.min_bytes * 1.10 <= m.recommended_bytes < m.min_bytes * 1.10 + 1024
    assert m.probes <= 4  # generous probe + the recorded total and one step below


def test_planner_matches_tflm(tflm_models, small_arena):
    """Measured here: head == planner peak exactly; estimate within ~1-2 % of the minimum."""
    for name in ("small", "big"):
        m = small_arena if name == "small" else measure_arena(tflm_models[name])
        plan = plan_arena(parse_tflite(tflm_models[name]))
        assert m.head_bytes == pytest.approx(plan.peak_bytes, rel=0.10), name
        assert plan.arena_bytes == pytest.approx(m.min_bytes, rel=0.10), name
        assert m.tail_bytes == pytest.approx(plan.tail_bytes, rel=0.25), name


def test_100kb_model_measures_fast(tflm_models):
    path = tflm_models["big"]
    assert 100_000 < path.stat().st_size < 200_000
    m = measure_arena(path, sample=np.random.default_rng(0).normal(size=(32, 32, 3)))
    assert m.seconds < 15
    assert probe_arena(path, m.min_bytes)


@pytest.mark.slow
def test_bisection_without_tflm_record(tflm_models, small_arena, monkeypatch):
    # Force the fallback: no print_allocations total, plain parallel bisection.
    monkeypatch.setattr(tflm, "_RECORDED", re.compile(r"(?!)(x)(y)"))
    m = measure_arena(tflm_models["small"])
    assert m.min_bytes == small_arena.min_bytes and m.probes > 4
    assert m.head_bytes is None


def litert_outputs(path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))  # default resolver: XNNPACK, as users run it
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    results = []
    for sample in x:
        interp.set_tensor(inp["index"], sample[None])
        interp.invoke()
        results.append(interp.get_tensor(out["index"])[0])
    return np.stack(results)


def test_tflm_int8_within_one_step_of_litert(tflm_models, small_arena):
    path = tflm_models["small"]
    x = np.random.default_rng(1).integers(-128, 128, size=(40, 16, 16, 3), dtype=np.int8)
    got = run_tflm(path, x, small_arena.recommended_bytes)
    want = litert_outputs(path, x)
    assert got.shape == want.shape == (40, 10) and got.dtype == np.int8
    diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
    # Not bit-exact: TFLM's reference kernels and LiteRT's XNNPACK round differently.
    assert diff.max() <= 1
    assert (diff == 0).mean() > 0.9


def test_tflm_float_matches_litert(tflm_models):
    path = tflm_models["float"]
    x = np.random.default_rng(2).normal(size=(10, 16, 16, 3)).astype(np.float32)
    got = run_tflm(path, x, 64 * 1024)
    np.testing.assert_allclose(got, litert_outputs(path, x), rtol=1e-5, atol=1e-6)


def test_float_samples_are_quantized_for_int8_input(tflm_models, small_arena):
    path = tflm_models["small"]
    t = parse_tflite(path).tensors[parse_tflite(path).inputs[0]]
    x = np.random.default_rng(3).normal(size=(3, 16, 16, 3)).astype(np.float32)
    q = np.clip(np.round(x / t.scale[0]) + t.zero_point[0], -128, 127).astype(np.int8)
    got = run_tflm(path, x, small_arena.recommended_bytes)
    np.testing.assert_array_equal(got, run_tflm(path, q, small_arena.recommended_bytes))


def test_unsupported_op_is_named(tflm_models):
    with pytest.raises(BadInputError, match="TOPK_V2") as err:
        measure_arena(tflm_models["topk"])
    assert "topk.tflite" in str(err.value)
    with pytest.raises(BadInputError, match="TOPK_V2"):
        run_tflm(tflm_models["topk"], np.zeros((1, 8), np.float32), 64 * 1024)


def test_too_small_arena_is_bad_input(tflm_models, small_arena):
    with pytest.raises(BadInputError, match="arena_size=1024.*too small"):
        run_tflm(tflm_models["small"], np.zeros((1, 16, 16, 3), np.int8), 1024)


@pytest.mark.parametrize(
    ("x", "match"),
    [(np.zeros((2, 8, 8, 3), np.int8), "shape"), (np.zeros((2, 16, 16, 3), np.int64) + 999,
     "int64")],
)  # fmt: skip
def test_bad_inputs_are_rejected(tflm_models, x, match):
    with pytest.raises(BadInputError, match=match):
        run_tflm(tflm_models["small"], x, 64 * 1024)


def test_probe_does_not_import_tensorflow(tflm_models):
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['probe', 'probe', {str(tflm_models['small'])!r}, '65536']\n"
        "try:\n"
        f"    runpy.run_path({str(tflm._PROBE)!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
