"""Faults during `edgeprune flash` to a Linux device: the deployed model survives every one.

The "device" is this machine behind a real OpenSSH server (tests/sshd.py). After each fault the
device's current model must be byte-identical (sha256) to the release deployed before, the
``current`` link must still name that release, the command must end with exit 3 and a message
naming the device and what to do, and the next flash must succeed.

How each fault is made:

- connection cut mid-upload: real. Once paramiko's progress callback reports 2 MiB of a 24 MiB
  file sent, the test SIGKILLs that connection's sshd processes (by PID, children of our own
  sshd), so the TCP connection dies in the middle of the file (the partial file is checked).
- disk full: real. The install folder is a small tmpfs (``mount -t tmpfs -o size=…``; needs
  root, skipped otherwise).
- reboot between upload and switch: the sshd server and its sessions are SIGKILLed (like a power
  cut) from ``edgeprune.deploy.linux.checkpoint``, a no-op seam flash calls between device steps;
  then sshd is started again with the same host key and port.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sshd import SSHD, SshServer, _wait_for_banner, running_sshd, stop

import edgeprune.deploy.linux as flash_mod
from edgeprune.deploy.flash import flash
from edgeprune.deploy.linux import release_id
from edgeprune.device import parse_ssh
from edgeprune.errors import ToolError
from edgeprune.flash_cli import flash as flash_command
from edgeprune.targets import load_target

MiB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[SshServer]:
    # Our own sshd: cutting its sessions must not disturb other test modules.
    with running_sshd(tmp_path_factory.mktemp("sshd-faults")) as s:
        yield s


def make_release(folder: Path, model: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.tflite").write_bytes(model)
    manifest = {"artifacts": {"model.tflite": hashlib.sha256(model).hexdigest()},
                "inputs": {"model": {"path": "/models/tiny.keras"}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _id(artifacts: Path) -> str:
    """The release id flash gives these artifacts (the manifest travels along)."""
    entries = json.loads((artifacts / "manifest.json").read_text())["artifacts"]
    manifest = (artifacts / "manifest.json").read_bytes()
    entries["manifest.json"] = hashlib.sha256(manifest).hexdigest()
    return release_id(entries)


def _flash(server: SshServer, artifacts: Path, remote: Path):
    return flash(load_target("rpi4"), artifacts, server.uri, remote_dir=str(remote),
                 known_hosts=server.known_hosts, identity=server.identity, connect_timeout=5)


def _cli(server: SshServer, artifacts: Path, remote: Path):
    return CliRunner().invoke(flash_command, [
        "--target", "rpi4", "--artifacts", str(artifacts), "--device", server.uri,
        "--remote-dir", str(remote), "--known-hosts", str(server.known_hosts),
        "--identity", str(server.identity), "--connect-timeout", "5"])


def assert_runs(remote: Path, artifacts: Path) -> None:
    """The device's current model is exactly these artifacts' model, via the current link."""
    assert os.readlink(remote / "current") == f"releases/{_id(artifacts)}"
    device = hashlib.sha256((remote / "current" / "model.tflite").read_bytes()).hexdigest()
    assert device == hashlib.sha256((artifacts / "model.tflite").read_bytes()).hexdigest()


def assert_clear_failure(result, server: SshServer, *words: str) -> None:
    assert result.exit_code == 3, result.output
    message = result.output
    assert f"{server.user}@{server.host}:{server.port}" in message  # names the device
    assert "flash again" in message  # says what to do
    assert "internal failure" not in message and "Traceback" not in message
    for word in words:
        assert word in message


# -- processes of our own sshd ----------------------------------------------------------------
def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(stat.parent.name))
    return tree


def kill_sessions(server: SshServer, *, listener_too: bool = False) -> list[int]:
    """SIGKILL every process under our sshd (the open connections), and sshd itself if asked."""
    listener = int((server.workdir / "sshd.pid").read_text())
    tree, pids, todo = _children(), [], list(_children().get(listener, []))
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo += tree.get(pid, [])
    if listener_too:
        pids.insert(0, listener)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


# -- a. the connection drops in the middle of a file -------------------------------------------
def test_connection_cut_mid_upload_keeps_the_old_model(server, tmp_path, monkeypatch):
    import paramiko

    remote = tmp_path / "dev"
    v1 = make_release(tmp_path / "v1", b"old model " * 1000)
    assert _flash(server, v1, remote).changed
    size = 24 * MiB
    v2 = make_release(tmp_path / "v2", os.urandom(size))
    cut: dict[str, int] = {}
    real_put = paramiko.SFTPClient.put

    # paramiko counts a chunk as sent once it is queued: up to its 2 MiB channel window may not
    # have reached the device yet, so the cut waits for 8 MiB to be sure some bytes landed.
    def put_cut_after_8mib(self, localpath, remotepath, callback=None, confirm=True):
        def progress(sent: int, total: int) -> None:  # paramiko calls this after each chunk
            if sent >= 8 * MiB and not cut:
                cut["sent"], cut["pids"] = sent, len(kill_sessions(server))
        return real_put(self, localpath, remotepath, progress, confirm)

    monkeypatch.setattr(paramiko.SFTPClient, "put", put_cut_after_8mib)
    result = _cli(server, v2, remote)
    assert cut.get("pids") and cut["sent"] < size
    assert_clear_failure(result, server, "connection to the device was lost",
                         f"still runs release {_id(v1)}")
    assert_runs(remote, v1)
    partial = [p.stat().st_size for p in remote.glob(".incoming-*/model.tflite")]
    assert len(partial) == 1 and 0 < partial[0] < size  # the cut landed inside the file

    monkeypatch.undo()
    retry = _cli(server, v2, remote)
    assert retry.exit_code == 0, retry.output
    assert_runs(remote, v2)
    assert not list(remote.glob(".incoming-*"))  # the partial upload is gone
    assert os.readlink(remote / "previous") == f"releases/{_id(v1)}"


# -- b. the device's disk is full --------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 3 MiB tmpfs as the device's install folder (root only; remounted bigger by tests)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the device's disk needs root (as in CI)")
    mnt = tmp_path / "dev"
    mnt.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=755", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_is_refused_before_upload_and_the_advice_works(server, small_disk, tmp_path):
    """current (1.2 MiB) + previous (1.2 MiB) fill the 3 MiB disk: a third release cannot fit."""
    remote = small_disk
    v1 = make_release(tmp_path / "v1", os.urandom(1200 * 1024))
    v2 = make_release(tmp_path / "v2", os.urandom(1200 * 1024))
    v3 = make_release(tmp_path / "v3", os.urandom(1200 * 1024))
    _flash(server, v1, remote)
    _flash(server, v2, remote)

    full = _cli(server, v3, remote)
    assert_clear_failure(full, server, "free", f"still runs release {_id(v2)}")
    assert_runs(remote, v2)
    assert os.readlink(remote / "previous") == f"releases/{_id(v1)}"
    assert not list(remote.glob(".incoming-*"))

    # The message names the previous release as removable (a successful flash drops it anyway).
    assert f"rm -rf -- {remote}/releases/{_id(v1)}" in full.output
    subprocess.run(["rm", "-rf", "--", f"{remote}/releases/{_id(v1)}"], check=True)
    retry = _cli(server, v3, remote)
    assert retry.exit_code == 0, retry.output
    assert_runs(remote, v3)


def test_disk_full_mid_upload_keeps_the_old_model(server, small_disk, tmp_path, monkeypatch):
    """Without the free-space check (as when another writer fills the disk meanwhile), the
    device's own ENOSPC during the upload is reported, and nothing is switched."""
    monkeypatch.setattr(flash_mod, "_check_space", lambda *args: None)
    remote = small_disk
    v1 = make_release(tmp_path / "v1", os.urandom(1500 * 1024))
    v2 = make_release(tmp_path / "v2", os.urandom(2000 * 1024))
    _flash(server, v1, remote)

    full = _cli(server, v2, remote)
    assert_clear_failure(full, server, f"still runs release {_id(v1)}", "free space",
                         "had 0.0 MiB free")
    assert_runs(remote, v1)
    assert not list(remote.glob(".incoming-*"))  # the partial file was removed at once

    subprocess.run(["mount", "-o", "remount,size=8m", str(remote)], check=True)  # space freed
    retry = _cli(server, v2, remote)
    assert retry.exit_code == 0, retry.output
    assert_runs(remote, v2)


# -- c. the device reboots between the upload and the switch -----------------------------------
@contextlib.contextmanager
def restarted(server: SshServer) -> Iterator[None]:
    """sshd again on the same port with the same host key and keys (the device is back)."""
    config = server.workdir / "sshd_config"
    log = server.workdir / "sshd-after-reboot.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_banner(server.port, proc, log)
        yield
    finally:
        stop(proc)


def test_reboot_between_upload_and_switch(tmp_path, monkeypatch):
    with running_sshd(tmp_path / "sshd") as device:  # its own sshd: this test kills it
        remote = tmp_path / "dev"
        v1 = make_release(tmp_path / "v1", b"old model " * 1000)
        _flash(device, v1, remote)
        v2 = make_release(tmp_path / "v2", b"new model " * 1000)
        steps: list[str] = []

        def power_cut(step: str) -> None:
            steps.append(step)
            if step == "uploaded":
                kill_sessions(device, listener_too=True)
                time.sleep(0.2)  # let the client notice the dead connection

        monkeypatch.setattr(flash_mod, "checkpoint", power_cut)
        result = _cli(device, v2, remote)
        assert "uploaded" in steps
        assert_clear_failure(result, device, f"still runs release {_id(v1)}")
        assert_runs(remote, v1)
        # The verified but never-switched upload is still on the device...
        assert [p.name.startswith(".incoming-") for p in remote.iterdir()].count(True) == 1
        assert (remote / "releases").exists() and _id(v2) not in os.listdir(remote / "releases")

        monkeypatch.setattr(flash_mod, "checkpoint", lambda step: None)
        with restarted(device):
            retry = _cli(device, v2, remote)
            assert retry.exit_code == 0, retry.output
            assert_runs(remote, v2)
            # ... and is cleaned up by the next flash, not reused or switched to.
            assert not list(remote.glob(".incoming-*"))
            assert sorted(os.listdir(remote / "releases")) == sorted([_id(v1), _id(v2)])


def test_half_installed_release_never_becomes_current(server, tmp_path):
    """A release folder cut short (moved into releases/ but truncated before a reboot) is
    re-verified, replaced, and only then switched to."""
    remote = tmp_path / "dev"
    v1 = make_release(tmp_path / "v1", b"old model " * 1000)
    _flash(server, v1, remote)
    v2 = make_release(tmp_path / "v2", b"new model " * 1000)
    half = remote / "releases" / _id(v2)
    half.mkdir()
    (half / "model.tflite").write_bytes(b"new mo")  # truncated; manifest.json missing
    stale = remote / ".incoming-0123456789ab"
    stale.mkdir()
    (stale / "model.tflite").write_bytes(b"junk")

    _flash(server, v2, remote)
    assert_runs(remote, v2)
    manifest = (remote / "current" / "manifest.json").read_bytes()
    assert manifest == (v2 / "manifest.json").read_bytes()
    assert not stale.exists()


def test_switch_syncs_the_release_to_disk_before_naming_it_current(server, tmp_path):
    """A power cut right after the switch must not leave `current` naming files still in the
    page cache only: the commit step runs sync before the rename (and after)."""
    remote = tmp_path / "dev"
    result = _flash(server, make_release(tmp_path / "v1", b"model"), remote)
    commit = next(c for c in result.commands if "mv -T" in c)
    assert 0 <= commit.index("\nsync\n") < commit.index("mv -T")


# -- the switch itself is atomic ---------------------------------------------------------------
READER = """
import json, os, sys
path, stop = sys.argv[1], sys.argv[2]
seen, errors = {}, 0
while not os.path.exists(stop):
    try:
        with open(path, "rb") as f:
            data = f.read()
        seen[data.decode()] = seen.get(data.decode(), 0) + 1
    except OSError:
        errors += 1
print(json.dumps({"seen": seen, "errors": errors}))
"""


def _switch_under_reader(root: Path, script: str, switches: int) -> dict:
    """Switch `current` between two releases `switches` times with ``script`` (run exactly as
    flash runs it on the device) while another process keeps reading current/model.tflite."""
    for name in "ab":
        (root / "releases" / name).mkdir(parents=True)
        (root / "releases" / name / "model.tflite").write_text(name)
    os.symlink("releases/a", root / "current")
    stop = root / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(root / "current/model.tflite"),
                               str(stop)], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.2)  # the reader is reading
        loop = ('i=0; while [ $i -lt "$1" ]; do sh -c "$2" edgeprune "$3" releases/b releases/a;'
                ' sh -c "$2" edgeprune "$3" releases/a releases/b; i=$((i+1)); done')
        subprocess.run(["sh", "-c", loop, "edgeprune", str(switches // 2), script, str(root)],
                       check=True, timeout=60)
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=10)
    return json.loads(out)


def test_switch_is_atomic_for_a_reader(tmp_path):
    seen = _switch_under_reader(tmp_path / "atomic", flash_mod._SWITCH.strip(), 200)
    assert seen["errors"] == 0
    assert set(seen["seen"]) == {"a", "b"}  # the reader did read during the switches
    assert os.readlink(tmp_path / "atomic" / "current") == "releases/a"

    # The probe does catch a non-atomic switch: unlink, then link (BusyBox's `ln -sfn`).
    naive = 'rm -f -- "$1/current" && ln -s -- "$2" "$1/current"'
    assert _switch_under_reader(tmp_path / "naive", naive, 200)["errors"] > 0


def test_lost_connection_during_a_command_is_a_tool_error(server, tmp_path):
    """A command whose connection dies says so (exit 3), instead of 'exited with -1'."""
    from edgeprune.runners.ssh import SshSession

    with SshSession(parse_ssh(server.uri), server.known_hosts, server.identity, 5) as s:
        timer = threading.Timer(0.8, kill_sessions, [server])
        timer.start()
        try:
            with pytest.raises(ToolError, match="connection .*lost") as err:
                s.run(["sleep", "30"])
        finally:
            timer.cancel()
    assert err.value.exit_code == 3 and server.host in str(err.value)
