"""A build prints edgeprune's own lines only; ``-v`` lets TensorFlow's and LiteRT's through.

A real subprocess build of the tiny model (int8, so the converter and LiteRT both run), with
the logging environment of a user who set nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from test_demo import NATIVE_LINES


def _build(tiny_files, out, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "EDGEPRUNE_NATIVE_LOGS")}
    return subprocess.run(
        [sys.executable, "-m", "edgeprune", *flags, "build", "--target", "host",
         "--model", str(tiny_files["model"]), "--data", str(tiny_files["data"]),
         "--prune", "none", "--epochs", "0", "--quantize", "int8", "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_native_lines_only_with_verbose(tiny_files, tmp_path):
    quiet = _build(tiny_files, tmp_path / "quiet")
    assert quiet.returncode in (0, 1), quiet.stderr[-3000:]
    assert not NATIVE_LINES.findall(quiet.stdout + quiet.stderr), quiet.stderr
    assert "convert" in quiet.stderr  # edgeprune's own stage lines are still there
    verbose = _build(tiny_files, tmp_path / "verbose", "-v")
    assert verbose.returncode == quiet.returncode, verbose.stderr[-3000:]
    assert NATIVE_LINES.findall(verbose.stdout + verbose.stderr)  # the capture is what hid them
