"""Builds under hostile conditions (issue 25 items 3-5): two real concurrent processes into one
--out, a real SIGKILL at logged stage boundaries followed by --resume, and a real tmpfs that
fills at every point of a build. `edgeprune verify` must pass on whatever folder results."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from interrupt import start, wait_for

from edgeprune import atomic
from edgeprune.cli import main

PREVIOUS = ("--prune", "structured", "--sparsity", "0.5", "--epochs", "1")
NEXT = ("--prune", "structured", "--sparsity", "0.25", "--epochs", "1")


def _args(files, out: Path, *recipe: str, data: Path | None = None) -> list[str]:
    return ["build", "--target", "host", "--model", str(files["model"]), "--data",
            str(data or files["data"]), "--val", str(files["val"]), "--calib",
            str(files["calib"]), "--seed", "3", "--out", str(out), *recipe]


def _verify(folder: Path) -> None:
    result = CliRunner().invoke(main, ["verify", str(folder)])
    assert result.exit_code == 0 and "ok, matches manifest.json" in result.output, result.output


def _sparsity(folder: Path) -> float:
    return json.loads((folder / "report.json").read_text())["recipe"]["sparsity"]


@pytest.fixture(scope="module")
def previous_build(tiny_files, tmp_path_factory) -> Path:
    """An OUT folder holding a finished build of PREVIOUS (copied for each test)."""
    out = tmp_path_factory.mktemp("previous") / "out"
    result = CliRunner().invoke(main, _args(tiny_files, out, *PREVIOUS))
    assert result.exit_code in (0, 1), result.output
    return out


def test_a_second_folder_lock_names_the_holder_and_a_dead_holders_lock_is_taken(tmp_path):
    final = tmp_path / "host"
    with atomic.folder_lock(final, "--out x") as lock:
        assert lock.read_text().strip() == str(os.getpid())
        other = subprocess.run(  # a real second process
            ["python3", "-c", "import fcntl, sys; f = open(sys.argv[1], 'r+');"
             "fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)", str(lock)], capture_output=True)
        assert other.returncode != 0 and b"BlockingIOError" in other.stderr
    assert not lock.exists()
    dead = subprocess.Popen(["sleep", "0"])
    dead.wait()
    lock.write_text(f"{dead.pid}\n")  # what a SIGKILLed holder leaves: the kernel freed the lock
    (tmp_path / f".host.partial-{dead.pid}-abc").mkdir()
    (tmp_path / f".host.old-{dead.pid}-1").mkdir()  # set aside, never swapped back
    with atomic.folder_lock(final, "--out x"):
        assert sorted(p.name for p in atomic.clean_stale(final)) == [
            f".host.old-{dead.pid}-1", f".host.partial-{dead.pid}-abc"]
    assert final.is_dir()  # the set-aside folder was put back: the previous build


@pytest.mark.slow
def test_two_concurrent_builds_into_one_out(tiny_files, tmp_path):
    """The second build is refused at once naming the first's pid; the first finishes and its
    folder verifies: never an interleaved folder."""
    small = tmp_path / "small.npz"  # under 40 samples every epoch runs: a long fine-tune
    with np.load(tiny_files["data"]) as d:
        np.savez(small, x=d["x"][:36], y=d["y"][:36])
    out = tmp_path / "out"
    first = start(_args(tiny_files, out, "--prune", "structured", "--epochs", "300", data=small))
    try:
        wait_for(first, "baseline  …")
        second = start(_args(tiny_files, out, *NEXT))
        err = second.communicate(timeout=300)[1]
        assert first.poll() is None, "the first build ended before the second tried"
        assert second.returncode == 2, err
        assert f"is being written by process {first.pid}" in err and "another --out" in err
        first_err = first.communicate(timeout=600)[1]
    finally:
        with contextlib.suppress(ProcessLookupError):
            first.kill()
    assert first.returncode in (0, 1), first_err
    _verify(out / "host")
    assert _sparsity(out / "host") == 0.5
    assert not list(out.glob(".host.*"))  # no partial folder, no lock file


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["prune", "convert", "report"])
def test_sigkill_at_a_stage_boundary_then_resume(stage, tiny_files, previous_build, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(previous_build, out)
    proc = start(_args(tiny_files, out, *NEXT))
    try:
        wait_for(proc, f"{stage:<9} …")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # The previous build is whole and untouched; the killed one left only pid-named leftovers.
    _verify(out / "host")
    assert _sparsity(out / "host") == 0.5
    assert (out / ".host.lock").read_text().strip() == str(proc.pid)
    left = sorted(p.name for p in out.glob(".host.*"))
    assert all(n == ".host.lock" or n.startswith(f".host.partial-{proc.pid}-") for n in left)

    resumed = CliRunner().invoke(main, _args(tiny_files, out, *NEXT, "--resume"))
    assert resumed.exit_code in (0, 1), resumed.output
    assert f"lock of process {proc.pid} (no longer running) taken over" in resumed.output
    if len(left) > 1:
        assert f"left by process {proc.pid} (no longer running)" in resumed.output
    _verify(out / "host")
    assert _sparsity(out / "host") == 0.25
    assert not list(out.glob(".host.*"))
    reused = json.loads((out / "host" / "report.json").read_text())["reused_stages"]
    assert reused == {"prune": ["baseline"], "convert": ["baseline", "prune", "finetune"],
                      "report": ["baseline", "prune", "finetune", "convert"]}[stage]


@contextlib.contextmanager
def _tmpfs(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): the full-disk "
                    "test needs root and mount permission")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _leave_free(disk: Path, free: int) -> None:
    """Fill ``disk`` with a filler file until ``free`` bytes are left."""
    filler = disk / "filler"
    filler.unlink(missing_ok=True)
    with filler.open("wb") as f:
        f.write(bytes(max(shutil.disk_usage(disk).free - free, 0)))


@pytest.mark.slow
def test_a_disk_that_fills_at_any_point_is_exit_3_and_keeps_the_previous_build(
        tiny_files, previous_build, tmp_path):
    """Free space from none to plenty: each build either completes (and verifies) or ends with
    exit 3 naming the path and the space needed; the previous build always verifies."""
    outcomes = {}
    with _tmpfs(tmp_path / "disk", "16m") as disk:
        out = disk / "out"
        shutil.copytree(previous_build, out)
        shutil.rmtree(out / ".edgeprune-cache")  # each build below writes its own cache
        manifest = (out / "host" / "manifest.json").read_text()
        for free in (0, 64, 96, 128, 160, 192, 256, 4096):
            shutil.rmtree(out / ".edgeprune-cache", ignore_errors=True)
            _leave_free(disk, free * 1024)
            start_s = time.monotonic()
            result = CliRunner().invoke(main, _args(tiny_files, out, *NEXT))
            assert time.monotonic() - start_s < 60
            assert "internal failure" not in result.output and "Traceback" not in result.output
            assert not list(out.glob(".host.*")), result.output  # nothing half-written left
            if result.exit_code == 3:
                assert str(disk) in result.output and "MiB" in result.output, result.output
                assert "Free at least" in result.output and "df -h" in result.output
                assert (out / "host" / "manifest.json").read_text() == manifest
                outcomes[free] = ("written when it filled" if "written when it filled" in
                                  result.output else "checked before writing")
            else:
                assert result.exit_code in (0, 1), result.output
                outcomes[free] = "built"
            _verify(out / "host")
            if outcomes[free] == "built":
                break
    print(outcomes)
    assert outcomes[0] != "built" and "built" in outcomes.values(), outcomes
    assert {"written when it filled", "checked before writing"} <= set(outcomes.values()), \
        outcomes
