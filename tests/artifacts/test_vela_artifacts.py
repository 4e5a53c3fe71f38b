"""Ethos-U: Vela's optimised model and summary become estimates for the ethos-u55 target."""

from __future__ import annotations

import shutil

import pytest

from edgeprune.artifacts import vela
from edgeprune.errors import ToolError
from edgeprune.stages import artifacts
from edgeprune.targets import load_target
from edgeprune.tflite.graph import parse_tflite

needs_vela = pytest.mark.skipif(not vela.available(), reason="ethos-u-vela not installed")


@pytest.fixture(scope="module")
def compiled(m4_tflite, tmp_path_factory):
    work = tmp_path_factory.mktemp("u55")
    shutil.copy(m4_tflite, work / "model.tflite")
    return work, artifacts.run(work / "model.tflite", work, load_target("ethos-u55"))


@needs_vela
def test_vela_files_are_kept(compiled):
    work, arts = compiled
    names = sorted(p.name for p in arts.files)
    assert names == ["model_summary_Ethos_U55_High_End_Embedded.csv", "model_vela.tflite"]
    assert all((work / n).is_file() for n in names)
    ops = parse_tflite(work / "model_vela.tflite").op_types()
    assert "CUSTOM:ethos-u" in ops  # the NPU command stream


@needs_vela
def test_cycles_sram_and_flash_in_report_and_measurements(compiled):
    work, arts = compiled
    rep = arts.report
    assert rep["accelerator"] == "ethos-u55-128"
    assert rep["system_config"] == "Ethos_U55_High_End_Embedded"
    assert rep["memory_mode"] == "Shared_Sram" and rep["clock_mhz"] == 500
    assert rep["cycles_total"] >= rep["cycles_npu"] > 0
    assert rep["sram_bytes"] > 0 and rep["off_chip_flash_bytes"] > 0
    assert rep["npu_operators"] > 0 and rep["cpu_operators"] == 0 and rep["cpu_ops"] == []
    # inference time = cycles / clock
    assert rep["inference_time_ms"] == pytest.approx(rep["cycles_total"] / 500e3, rel=0.01)
    got = {(m.quantity, m.method): m.value for m in arts.measurements}
    assert all(m.where == "ethos-u55" for m in arts.measurements)
    assert got[("latency_ms", "estimate")] == rep["inference_time_ms"]
    assert got[("ram_bytes", "estimate")] == rep["sram_bytes"]
    assert got[("flash_bytes", "estimate")] == rep["off_chip_flash_bytes"]
    assert got[("flash_bytes", "artifact")] == (work / "model_vela.tflite").stat().st_size
    # the artifact size comes first so the check prefers it over model.tflite's size
    assert (arts.measurements[0].quantity, arts.measurements[0].method) == ("flash_bytes",
                                                                            "artifact")


def test_without_vela_the_build_notes_the_skip(m4_tflite, tmp_path, monkeypatch):
    monkeypatch.setattr(vela, "available", lambda: False)
    shutil.copy(m4_tflite, tmp_path / "model.tflite")
    arts = vela.build(tmp_path / "model.tflite", tmp_path, load_target("ethos-u55"))
    assert arts.measurements == [] and arts.files == []
    assert "pip install 'edgeprune[vela]'" in arts.report["skipped"]


@needs_vela
def test_vela_failure_is_a_tool_error_with_a_reproduction(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"TFL3" * 16)
    with pytest.raises(ToolError, match="Reproduce with: vela --accelerator-config"):
        vela.compile_model(bad, tmp_path, "ethos-u55-128")


def test_other_kinds_get_no_artifacts(m4_tflite, tmp_path):
    arts = artifacts.run(m4_tflite, tmp_path, load_target("rpi4"))
    assert (arts.measurements, arts.report, arts.files) == ([], {}, [])
