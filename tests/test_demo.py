"""The README's demo: `edgeprune build --target rpi4` on the bundled example, as a user runs it."""

import json
import os
import re
import subprocess
import sys

import chromium
import pytest

from edgeprune.tflite.graph import parse_tflite

# What TensorFlow, the converter and LiteRT print from C++ on their own (absl's "I0000 …"
# lines, the converter's quantizer settings, LiteRT's delegate line): never on a user's terminal.
NATIVE_LINES = re.compile(
    r"^[IWEF]\d{4} |oneDNN custom operations|cudart_stub|absl::InitializeLog|fully_quantize: |"
    r"inference_type: |Created TensorFlow Lite XNNPACK delegate|cpu_feature_guard", re.M)


@pytest.mark.slow
def test_demo_build_for_rpi4(tmp_path):
    env = {k: v for k, v in os.environ.items()  # as a user runs it: no logging settings
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "EDGEPRUNE_NATIVE_LOGS")}
    proc = subprocess.run(
        [sys.executable, "-m", "edgeprune", "build", "--target", "rpi4", "--out", "out"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env,
    )
    assert not NATIVE_LINES.findall(proc.stdout + proc.stderr), proc.stdout + proc.stderr
    folder = tmp_path / "out" / "rpi4"
    rep = json.loads((folder / "report.json").read_text())
    assert proc.returncode == (0 if not any(c["passed"] is False for c in rep["checks"]) else 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("model.tflite", "report.json", "report.md", "manifest.json"):
        assert (folder / name).is_file()
    # int8 model: weights are int8 tensors, accuracy within 1.5 points of the float baseline
    graph = parse_tflite(folder / "model.tflite")
    assert any(t.dtype == "int8" and t.is_constant for t in graph.tensors)
    assert rep["baseline"]["accuracy"] >= 0.97
    assert rep["result"]["accuracy"] >= rep["baseline"]["accuracy"] - 0.015
    # structural pruning at the rpi4 default physically removed channels
    assert rep["result"]["params"] < 0.6 * rep["baseline"]["params"]
    # rpi4 defaults to the gradual schedule: its cuts and fine-tunes are the "gradual" stage
    assert set(rep["timings_s"]) >= {"load", "baseline", "prune", "gradual", "convert"}
    if chromium.CHROMIUM is not None:  # the report a person opens renders, with no errors
        pixels, console = chromium.render(folder / "report.html", tmp_path)
        assert console == [] and (pixels.min(axis=2) < 200).mean() > 0.01
