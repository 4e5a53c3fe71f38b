"""The bundled digits example built for cortex-m4 and ethos-u55 (slow: full pipeline)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from edgeprune.artifacts import vela
from edgeprune.artifacts.tflm import BUILTIN_METHODS
from edgeprune.cli import main
from edgeprune.runners import tflm
from edgeprune.tflite.graph import parse_tflite

pytestmark = pytest.mark.slow


def _build(out, target, *extra):
    r = CliRunner().invoke(main, ["build", "--target", target, "--out", str(out), *extra])
    assert r.exit_code in (0, 1), r.output + str(r.exception)
    folder = out / target
    return folder, json.loads((folder / "report.json").read_text())


def test_example_for_cortex_m4(tmp_path):
    import re

    folder, rep = _build(tmp_path, "cortex-m4")  # the target's default recipe
    for name in ("model_data.cc", "model_data.h", "op_resolver.h"):
        assert (folder / name).is_file(), name
    if shutil.which("g++"):
        subprocess.run(["g++", "-std=c++17", "-c", "model_data.cc", "-o",
                        str(tmp_path / "model_data.o")], cwd=folder, check=True)
    ops = parse_tflite(folder / "model.tflite").op_types()
    text = (folder / "op_resolver.h").read_text()
    assert re.findall(r"resolver\.(Add\w+)\(\)", text) == [BUILTIN_METHODS[o] for o in ops]
    assert f"kModelOpCount = {len(ops)};" in text
    arena = rep["artifacts"]["arena"]
    assert tflm.probe_arena(folder / "model.tflite", arena["min_bytes"])
    assert not tflm.probe_arena(folder / "model.tflite", arena["min_bytes"] - 16)
    match = rep["artifacts"]["outputs_match"]
    assert match["result"] in ("equal", "within_one_step"), match
    ram = next(c for c in rep["checks"] if c["name"] == "ram")
    assert ram["method"] == "tflm" and ram["value"] == arena["min_bytes"]
    assert rep["fidelity"]["top1_agreement"] >= 0.97


@pytest.mark.skipif(not vela.available(), reason="ethos-u-vela not installed")
def test_example_for_ethos_u55(tmp_path):
    folder, rep = _build(tmp_path, "ethos-u55", "--epochs", "2")
    art = rep["artifacts"]
    assert art["cycles_total"] > 0 and art["sram_bytes"] > 0
    assert (folder / "model_vela.tflite").is_file()
    assert (folder / f"model_summary_{art['system_config']}.csv").is_file()
    checks = {c["name"]: c for c in rep["checks"]}
    assert checks["latency"]["method"] == "estimate"
    assert checks["latency"]["value"] == pytest.approx(art["inference_time_ms"])
    assert checks["ram"]["value"] == art["sram_bytes"]
    assert checks["flash"]["value"] == (folder / "model_vela.tflite").stat().st_size


def test_example_qat_after_half_magnitude_pruning(tmp_path):
    _, rep = _build(tmp_path, "cortex-m4", "--prune", "magnitude", "--sparsity", "0.5",
                    "--quantize", "qat", "--epochs", "4")
    q = rep["quantization"]
    # TF-MOT prunes conv and dense kernels, not depthwise ones (its registry lists no weights
    # for DepthwiseConv2D), so the whole-model figure is ~48 %; every pruned kernel keeps
    # its 50 % in int8, and no zero is lost overall.
    pruned = [t for t in q["tensors"] if t["op_type"] in ("CONV_2D", "FULLY_CONNECTED")]
    assert pruned and all(t["zeros"] / t["elements"] >= 0.49 for t in pruned), pruned
    assert q["sparsity_tflite"] >= q["sparsity_keras"] >= 0.47, q
    assert rep["artifacts"]["outputs_match"]["result"] in ("equal", "within_one_step")
