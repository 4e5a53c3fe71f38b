"""Per-target estimators: the registry, the generic rule, profile validation, RAM."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from tiny_models import convert

from edgeprune.errors import BadInputError
from edgeprune.estimate import ESTIMATORS, estimate_target
from edgeprune.estimate.opclass import OP_CLASS, class_chain
from edgeprune.stages.check import best, run
from edgeprune.targets import OP_CLASSES, OP_REFINEMENTS, load_target
from edgeprune.tflite.graph import parse_tflite
from edgeprune.tflite.planner import plan_arena

ESTIMATED = ["rpi4", "rpi5", "coral-usb", "cortex-m4", "cortex-m7"]
# One shipped profile per registry entry: every estimator is exercised.
REGISTRY_TARGETS = {"cortex-a": "rpi4", "cortex-m": "cortex-m4", "edgetpu": "coral-usb"}


def test_registry_covers_the_estimated_kinds():
    assert set(ESTIMATORS) == set(REGISTRY_TARGETS)


@pytest.mark.parametrize("kind", sorted(REGISTRY_TARGETS))
def test_each_registry_entry_estimates(cnn_tflite, kind):
    target = load_target(REGISTRY_TARGETS[kind])
    assert target.hardware.kind == kind
    blob = Path(cnn_tflite["int8"]).read_bytes()
    graph = parse_tflite(blob)
    est = ESTIMATORS[kind](blob, graph, target)
    assert est.latency_ms is not None and est.latency_ms > 0
    assert len(est.per_op) == len(graph.ops)
    assert all(t.ms > 0 for t in est.per_op)  # never silently zero
    assert est.latency_ms >= sum(t.ms for t in est.per_op) * 0.999
    assert est.detail


@pytest.mark.parametrize("name", ESTIMATED)
def test_shipped_targets_get_latency_and_ram_checks(cnn_tflite, name):
    target = load_target(name)
    blob = Path(cnn_tflite["int8"]).read_bytes()
    result = estimate_target(blob, target)
    quantities = {m.quantity for m in result.measurements}
    assert "latency_ms" in quantities
    assert all(m.method == "estimate" and m.where == name for m in result.measurements)
    checks = {c.name: c for c in run(result.measurements, target, None)}
    assert checks["latency"].passed is not None and checks["latency"].method == "estimate"
    if target.budgets.ram_kb is not None:
        assert checks["ram"].passed is not None and checks["ram"].method == "estimate"
    assert best(result.measurements, "latency_ms", target).detail


@pytest.mark.parametrize("name", ["host", "ethos-u55"])
def test_host_and_ethos_u_are_not_estimated(cnn_tflite, name):
    result = estimate_target(Path(cnn_tflite["int8"]).read_bytes(), load_target(name))
    assert result.measurements == [] and result.note


def test_mcu_ram_is_the_tflm_arena_plan(cnn_tflite):
    blob = Path(cnn_tflite["int8"]).read_bytes()
    ram = next(m for m in estimate_target(blob, load_target("cortex-m4")).measurements
               if m.quantity == "ram_bytes")
    assert ram.value == plan_arena(parse_tflite(blob)).arena_bytes


def test_cortex_a_ram_adds_runtime_model_weights_and_arena(cnn_tflite):
    blob = Path(cnn_tflite["float"]).read_bytes()
    target = load_target("rpi4")
    ram = next(m for m in estimate_target(blob, target).measurements
               if m.quantity == "ram_bytes")
    graph = parse_tflite(blob)
    floor = target.estimator.runtime_rss_kb * 1024 + len(blob) + plan_arena(graph).peak_bytes
    assert floor < ram.value < floor + len(blob)  # + packed weights, at most the model again


def test_mcu_reference_kernels_are_slower_than_cmsis_nn(cnn_tflite):
    blob = Path(cnn_tflite["int8"]).read_bytes()
    m4 = load_target("cortex-m4")
    ref = dataclasses.replace(m4, runtime=dataclasses.replace(m4.runtime,
                                                              engine="tflm-reference"))
    fast, slow = (estimate_target(blob, t).measurements[0].value for t in (m4, ref))
    assert slow > 2 * fast


def test_more_threads_help_but_not_linearly(cnn_tflite):
    blob = Path(cnn_tflite["float"]).read_bytes()
    rpi4 = load_target("rpi4")
    one = dataclasses.replace(rpi4, runtime=dataclasses.replace(rpi4.runtime, threads=1))
    t1, t4 = (estimate_target(blob, t).measurements[0].value for t in (one, rpi4))
    assert t4 < t1 < 4 * t4


@pytest.fixture(scope="module")
def cumsum_tflite() -> bytes:
    """Conv → CUMSUM (no latency model for it anywhere) → dense, float32."""
    from edgeprune import _tf

    tf, keras = _tf.tf(), _tf.keras()
    inp = keras.Input((8, 8, 3), batch_size=1)
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)
    x = keras.layers.Lambda(lambda t: tf.math.cumsum(t, axis=-1))(x)
    out = keras.layers.Dense(2)(keras.layers.Flatten()(x))
    return convert(keras.Model(inp, out), None)


@pytest.mark.parametrize("name", ["rpi4", "cortex-m4", "coral-usb"])
def test_op_without_a_model_is_estimated_generically_and_flagged(cumsum_tflite, name):
    assert "CUMSUM" not in OP_CLASS
    result = estimate_target(cumsum_tflite, load_target(name))
    row = next(r for r in result.per_op if r["op_type"] == "CUMSUM")
    assert row["generic"] and row["ms"] > 0
    assert any("CUMSUM" in f and "generic rule" in f for f in result.flagged)
    if name != "cortex-m4":  # (the MCU profile has no float figures: its float conv is flagged)
        assert not any(r["generic"] for r in result.per_op if r["op_type"] == "CONV_2D")
    latency = next(m for m in result.measurements if m.quantity == "latency_ms")
    assert "generic rule" in latency.detail


def test_float_ops_on_an_mcu_without_float_figures_are_flagged(cnn_tflite):
    target = load_target("cortex-m4")
    assert not any(k.endswith("float32")
                   for k in target.estimator.macs_per_cycle[target.runtime.engine])
    result = estimate_target(Path(cnn_tflite["float"]).read_bytes(), target)
    assert any("CONV_2D" in f and "conv_float32" in f for f in result.flagged)


def test_every_op_class_and_refinement_has_ops_and_a_root():
    classes = set(OP_CLASS.values())
    assert classes == set(OP_CLASSES) | set(OP_REFINEMENTS)
    for cls in classes:
        assert class_chain(cls)[-1] in (*OP_CLASSES, "movement")


# --- profile validation ---------------------------------------------------------------------


def _profile(tmp_path, estimator: str, inherit: str = "rpi4") -> Path:
    p = tmp_path / "mine.toml"
    p.write_text(f'inherit = "{inherit}"\nname = "mine"\n{estimator}')
    return p


def test_missing_estimator_parameter_names_file_and_key(tmp_path):
    shipped = Path(load_target("cortex-m4").source).read_text()
    # A profile that writes its own [estimator] without the per-op overhead.
    text = shipped.replace("op_overhead_cycles", "# op_overhead_cycles")
    p = tmp_path / "m4.toml"
    p.write_text(text)
    with pytest.raises(BadInputError) as e:
        load_target(str(p))
    assert "m4.toml" in str(e.value) and "estimator.op_overhead_cycles" in str(e.value)


def test_missing_class_figure_names_the_dotted_key(tmp_path):
    rpi4 = load_target("rpi4")
    table = dict(rpi4.estimator.macs_per_cycle["litert-xnnpack"])
    del table["depthwise_int8"]
    lines = "\n".join(f"{k} = {v}" for k, v in table.items())
    p = _profile(tmp_path, f"[estimator.macs_per_cycle.litert-xnnpack]\n{lines}\n")
    with pytest.raises(BadInputError) as e:
        load_target(str(p))
    assert "mine.toml" in str(e.value)
    assert "estimator.macs_per_cycle.litert-xnnpack.depthwise_int8" in str(e.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[estimator]\nturbo = 2\n", "estimator.turbo"),
        ("[estimator]\nmem_gbps = -1\n", "mem_gbps"),
        ("[estimator]\nthread_speedup = [1.0, 0]\n", "thread_speedup[1]"),
        ("[estimator.macs_per_cycle.litert-xnnpack]\nwarp_int8 = 2\n", "warp_int8"),
        ("[estimator.macs_per_cycle.gpu]\nconv_int8 = 2\n", "'gpu'"),
    ],
)
def test_bad_estimator_values_name_the_key(tmp_path, text, needle):
    with pytest.raises(BadInputError) as e:
        load_target(str(_profile(tmp_path, text)))
    assert "mine.toml" in str(e.value) and needle in str(e.value)


def test_unknown_estimator_key_lists_the_allowed_ones(tmp_path):
    with pytest.raises(BadInputError) as e:
        load_target(str(_profile(tmp_path, "[estimator]\nturbo = 2\n")))
    assert "mem_gbps" in str(e.value) and "op_overhead_cycles" in str(e.value)


def test_a_profile_without_estimator_section_is_not_estimated(tmp_path):
    p = tmp_path / "bare.toml"
    p.write_text('[hardware]\nkind = "cortex-a"\nclock_mhz = 1000\n'
                 '[runtime]\nengine = "litert-xnnpack"\n[budgets]\nlatency_ms = 5\n')
    target = load_target(str(p))
    assert target.estimator is None
    result = estimate_target(b"not even parsed", target)
    assert result.measurements == [] and "[estimator]" in result.note


def test_shipped_estimators_round_trip_to_dict():
    for name in ESTIMATED:
        d = load_target(name).to_dict()
        assert d["estimator"]["macs_per_cycle"]


def test_check_command_estimates_the_target(tiny_tflite):
    import json

    from click.testing import CliRunner

    from edgeprune.cli import main

    def checked(name: str) -> dict:
        r = CliRunner().invoke(main, ["check", str(tiny_tflite), "--target", name, "--json"])
        assert r.exit_code in (0, 1), r.output
        return json.loads(r.stdout)  # stdout alone: logging goes to stderr

    before = sorted(tiny_tflite.parent.iterdir())
    rpi4 = {c["name"]: c for c in checked("rpi4")["checks"]}
    assert rpi4["latency"]["method"] == "estimate"
    assert rpi4["ram"]["method"] == "estimate" and rpi4["ram"]["value"] > 0

    # As in a build, the artifacts stage's figures outrank the generic estimates: the RAM of a
    # Cortex-M model is the TFLite-Micro arena measured by running it, an Ethos-U model's
    # latency and SRAM are Vela's.
    from edgeprune.runners import host, tflm

    m4 = checked("cortex-m4")
    ram = {c["name"]: c for c in m4["checks"]}["ram"]
    graph = parse_tflite(tiny_tflite.read_bytes())
    x = np.zeros((1, *graph.tensors[graph.inputs[0]].shape[1:]), np.float32)
    arena = tflm.measure_arena(tiny_tflite, host.quantize_input(tiny_tflite, x)[0])
    assert ram["method"] == "tflm" and ram["value"] == arena.min_bytes > 0
    assert m4["artifacts"]["outputs_match"]["result"] in ("equal", "within_one_step")
    u55 = checked("ethos-u55")
    latency = {c["name"]: c for c in u55["checks"]}["latency"]
    assert latency["value"] == pytest.approx(u55["artifacts"]["inference_time_ms"])
    assert "Vela" in next(m["detail"] for m in u55["measurements"]
                          if m["quantity"] == "latency_ms")
    assert sorted(tiny_tflite.parent.iterdir()) == before  # nothing written beside the input


def _latency(blob: bytes, target):
    return next(m for m in estimate_target(blob, target).measurements
                if m.quantity == "latency_ms")


def test_estimates_name_the_classes_that_rest_on_an_assumed_ratio(cnn_tflite):
    blob = Path(cnn_tflite["int8"]).read_bytes()
    m4 = load_target("cortex-m4")
    assert m4.estimator.anchored_classes == ("conv_int8",)
    est = estimate_target(blob, m4)
    assumed = est.extra["assumed_classes_ms"]
    assert "conv_int8" not in assumed and {"depthwise_int8", "fc_int8"} <= assumed.keys()
    share = sum(assumed.values()) / _latency(blob, m4).value
    assert 0 < share < 1
    assert f"{share:.0%} of it priced by op-class figures that rest on an assumption" in \
        _latency(blob, m4).detail
    # A profile that makes no claim about its anchors gets no such statement.
    silent = dataclasses.replace(m4, estimator=dataclasses.replace(m4.estimator,
                                                                   anchored_classes=None))
    assert "assumed_classes_ms" not in estimate_target(blob, silent).extra


def test_latency_estimates_carry_the_profiles_stated_uncertainty(cnn_tflite):
    blob = Path(cnn_tflite["int8"]).read_bytes()
    for name in ESTIMATED:
        target = load_target(name)
        m = _latency(blob, target)
        pct = target.estimator.uncertainty_pct.get(target.runtime.engine)
        if pct:
            assert m.uncertainty == pytest.approx(pct / 100)
            assert f"stated uncertainty ± {pct:g} %" in m.detail
        else:
            assert m.uncertainty is None and "uncertainty not established" in m.detail
    stated = dataclasses.replace(load_target("cortex-m4"), estimator=dataclasses.replace(
        load_target("cortex-m4").estimator, uncertainty_pct={"tflm-cmsis-nn": 12.0}))
    assert _latency(blob, stated).uncertainty == pytest.approx(0.12)


def test_the_uncertainty_is_the_selected_engines(cnn_tflite, tmp_path):
    """rpi4 states ± x % for litert-ruy-2021, not for its own litert-xnnpack: a profile that
    selects ruy states it, and rpi4 itself does not borrow it."""
    blob = Path(cnn_tflite["float"]).read_bytes()
    rpi4 = load_target("rpi4")
    pct = rpi4.estimator.uncertainty_pct["litert-ruy-2021"]
    assert "litert-xnnpack" not in rpi4.estimator.uncertainty_pct
    profile = tmp_path / "ruy.toml"
    profile.write_text('inherit = "rpi4"\nname = "rpi4-ruy"\n[runtime]\n'
                       'engine = "litert-ruy-2021"\n')
    ruy = _latency(blob, load_target(str(profile)))
    assert ruy.uncertainty == pytest.approx(pct / 100)
    assert f"± {pct:g} %" in ruy.detail and "litert-ruy-2021" in ruy.detail
    assert _latency(blob, rpi4).uncertainty is None


def test_check_command_marks_a_budget_inside_the_uncertainty_marginal(tiny_tflite, tmp_path):
    """coral-usb states a leave-one-out uncertainty: a budget 10 % above the estimate passes,
    marked marginal, in the JSON and in the text; one far above it is a plain pass."""
    import json

    from click.testing import CliRunner

    from edgeprune.cli import main

    target = load_target("coral-usb")
    pct = target.estimator.uncertainty_pct.get("edgetpu")
    assert pct and pct > 10  # the band this test relies on (bench/estimator_loo.md)
    estimate = _latency(tiny_tflite.read_bytes(), target).value

    def latency_check(budget: float, *extra: str):
        profile = tmp_path / f"coral-{budget:g}.toml"
        profile.write_text(f'inherit = "coral-usb"\nname = "coral-b"\n[budgets]\n'
                           f"latency_ms = {budget!r}\n")
        r = CliRunner().invoke(main, ["check", str(tiny_tflite), "--target", str(profile),
                                      *extra])
        assert r.exit_code in (0, 1), r.output
        return r.stdout

    near = json.loads(latency_check(estimate * 1.1, "--json"))
    check = {c["name"]: c for c in near["checks"]}["latency"]
    assert (check["passed"], check["marginal"], check["method"]) == (True, True, "estimate")
    measured = next(m for m in near["measurements"]
                    if m["quantity"] == "latency_ms" and m["method"] == "estimate")
    assert measured["uncertainty"] == pytest.approx(pct / 100)
    assert "(estimate, marginal)" in latency_check(estimate * 1.1)
    far = json.loads(latency_check(estimate * 10, "--json"))
    assert {c["name"]: c for c in far["checks"]}["latency"]["marginal"] is False


def _rpi4_with_engine(tmp_path, engine: str, extra: str = ""):
    profile = tmp_path / f"rpi4-{engine}.toml"
    profile.write_text(f'inherit = "rpi4"\nname = "rpi4-{engine}"\n[runtime]\n'
                       f'engine = "{engine}"\nthreads = 4\n{extra}')
    return load_target(str(profile))


def test_a_profile_selecting_the_ruy_engine_loads_and_uses_its_figures(cnn_tflite, tmp_path):
    """litert-ruy-2021 (TFLite 2.4.1's default kernels, fitted by
    bench/calibrate_cortex_a_ruy.py): its own rates and its own float32 GEMM overhead."""
    ruy, xnn = _rpi4_with_engine(tmp_path, "litert-ruy-2021"), load_target("rpi4")
    assert xnn.runtime.engine == "litert-xnnpack"  # the shipped engine is unchanged
    table = ruy.estimator.macs_per_cycle["litert-ruy-2021"]
    assert table != ruy.estimator.macs_per_cycle["litert-xnnpack"]
    gemm_us = ruy.estimator.gemm_overhead_us_by_engine["litert-ruy-2021"]["float32"]
    assert gemm_us > ruy.estimator.gemm_overhead_us
    blob = Path(cnn_tflite["float"]).read_bytes()
    est = _latency(blob, ruy)
    assert "E of litert-ruy-2021" in est.detail and "E of litert-xnnpack" in \
        _latency(blob, xnn).detail
    gemm_ops = sum(op.op_type in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
                   for op in parse_tflite(blob).ops)
    assert est.value > gemm_ops * gemm_us / 1e3  # every float GEMM op pays the ruy overhead
    # The estimate follows the ruy table, and only it.
    slower = dataclasses.replace(ruy, estimator=dataclasses.replace(
        ruy.estimator, macs_per_cycle={**ruy.estimator.macs_per_cycle, "litert-ruy-2021": {
            k: v / 10 for k, v in table.items()}}))
    assert _latency(blob, slower).value > est.value
    xnn_slower = dataclasses.replace(slower, runtime=xnn.runtime)
    assert _latency(blob, xnn_slower).value == pytest.approx(_latency(blob, xnn).value)


def test_ruy_engine_without_its_table_names_the_missing_key(tmp_path):
    profile = tmp_path / "ruy5.toml"
    profile.write_text('inherit = "rpi5"\nname = "ruy5"\n[runtime]\n'
                       'engine = "litert-ruy-2021"\n')
    with pytest.raises(BadInputError, match=r"macs_per_cycle\.litert-ruy-2021\.conv_int8"):
        load_target(str(profile))  # rpi5 has no ruy figures (Pi 4 anchors only)


@pytest.mark.parametrize("text, needle", [
    ('[estimator.gemm_overhead_us_by_engine.tflm-cmsis-nn]\nint8 = 1.0\n', "tflm-cmsis-nn"),
    ('[estimator.gemm_overhead_us_by_engine.litert-ruy-2021]\nint4 = 1.0\n', "int4"),
    ('[estimator.gemm_overhead_us_by_engine.litert-ruy-2021]\nint8 = -1.0\n', "int8"),
])
def test_bad_engine_gemm_overheads_name_the_key(tmp_path, text, needle):
    with pytest.raises(BadInputError, match=needle):
        _rpi4_with_engine(tmp_path, "litert-ruy-2021", text)
