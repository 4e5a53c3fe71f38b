"""The Docker image, built from the unchanged Dockerfile and run for real, with podman.

No Docker engine or image registry is available, so the base image the Dockerfile names is a
local stand-in (tests/container_base.py). podman runs as root here; the flags it needs:

- build: ``--pull=never`` (the base is local) and ``--isolation=chroot`` (no nested OCI runtime
  needed; RUN steps share the host's network, so pip reaches PyPI without ``--network=host``);
  ``--layers`` keeps the dependency layer cached in podman's storage between runs.
- run: ``--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024``; the runs also use
  ``--network=none`` because a build needs no network.

Ownership on the mounted folder: with ``--user UID:GID`` of the invoking user the artifacts
belong to that user; without it they belong to the image's uid 1000.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from container_base import ensure_base_image

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("podman") is None or os.geteuid() != 0,
                       reason="podman (as root, like CI) is installed by .ci/run"),
]

REPO = Path(__file__).resolve().parents[1]
IMAGE = "localhost/edgeprune:test"
RUN = ["podman", "run", "--rm", "--runtime", "runc", "--ulimit", "nofile=1024:1024",
       "--ulimit", "nproc=1024:1024", "--network=none"]


@pytest.fixture(scope="module")
def image() -> str:
    ensure_base_image()
    previous = _image_id(IMAGE)
    start = time.perf_counter()
    proc = subprocess.run(
        ["podman", "build", "--pull=never", "--isolation=chroot", "--layers", "-t", IMAGE,
         str(REPO)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=3600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    print(f"podman build: {time.perf_counter() - start:.0f} s")  # shown with pytest -s
    if previous not in (None, _image_id(IMAGE)):
        # The last run's image and its own layers; shared (cached) layers stay. Bounds storage.
        subprocess.run(["podman", "rmi", previous], capture_output=True)
    return IMAGE


def _image_id(name: str) -> str | None:
    res = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", name],
                         capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else None


def _inspect(image: str) -> dict:
    out = subprocess.run(["podman", "image", "inspect", image], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)[0]


def _edgeprune(image: str, work: Path, *args: str, user: str | None = None):
    cmd = [*RUN, "-v", f"{work}:/work"]
    if user is not None:
        cmd += ["--user", user]
    return subprocess.run([*cmd, image, *args], capture_output=True, text=True, timeout=1800)


def test_image_is_non_root_without_compilers(image):
    info = _inspect(image)
    config = info["Config"]
    assert config["User"] == "1000:1000"
    assert config["Entrypoint"] == ["edgeprune"]
    assert config["WorkingDir"] == "/work"
    print(f"image size: {info['Size'] / 1e6:.0f} MB")
    probe = subprocess.run(
        [*RUN, "--entrypoint", "sh", image, "-c",
         "for c in gcc cc g++ clang; do command -v $c; done; "
         "python -c 'import edgeprune, ethosu.vela, paramiko'"],
        capture_output=True, text=True, timeout=300,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == ""  # no compiler on PATH


def test_build_rpi4_on_a_mounted_folder_exit_0(image, tmp_path):
    uid, gid = os.getuid(), os.getgid()
    proc = _edgeprune(image, tmp_path, "build", "--target", "rpi4", user=f"{uid}:{gid}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    folder = tmp_path / "build" / "rpi4"
    for name in ("model.tflite", "report.json", "report.md", "report.html", "manifest.json"):
        assert (folder / name).is_file(), name
        assert (folder / name).stat().st_uid == uid  # owned by whoever ran the test
    rep = json.loads((folder / "report.json").read_text())
    assert not any(c["passed"] is False for c in rep["checks"])
    assert rep["versions"]["edgeprune"]


def test_budget_not_met_exits_1(image, tmp_path):
    # The image's own user (uid 1000) writes here: the folder must let it.
    tmp_path.chmod(0o777)
    (tmp_path / "tight.toml").write_text(
        'inherit = "rpi4"\nname = "rpi4-tight"\n\n[budgets]\nflash_kb = 1\n')
    proc = _edgeprune(image, tmp_path, "build", "--target", "tight.toml", "--epochs", "0",
                      "--prune", "none", "--junit", "build/junit.xml")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-4000:]
    folder = tmp_path / "build" / "rpi4-tight"
    rep = json.loads((folder / "report.json").read_text())
    flash = next(c for c in rep["checks"] if c["name"] == "flash")
    assert flash["passed"] is False and flash["budget"] == 1024
    assert (folder / "model.tflite").stat().st_uid == 1000  # no --user: the image's user
    assert "budget not met" in (tmp_path / "build" / "junit.xml").read_text()
