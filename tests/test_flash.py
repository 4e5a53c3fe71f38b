"""edgeprune flash against a real OpenSSH server on 127.0.0.1, and Cortex-M bundles.

The "device" is this machine: tests/sshd.py starts Debian's sshd on a free loopback port with a
fresh host key and key-only login; releases are installed under a temporary folder standing in
for /opt/edgeprune/<model>.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from sshd import running_sshd

import edgeprune.deploy.linux as flash_mod
from edgeprune.deploy.flash import flash
from edgeprune.deploy.linux import read_manifest, release_id
from edgeprune.deploy.mcu import write_bundle
from edgeprune.errors import BadInputError, ToolError
from edgeprune.flash_cli import flash as flash_command
from edgeprune.targets import load_target


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_sshd(tmp_path_factory.mktemp("sshd")) as s:
        yield s


def make_artifacts(folder: Path, files: dict[str, bytes], model: str = "tiny") -> Path:
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    manifest = {"artifacts": {n: hashlib.sha256(d).hexdigest() for n, d in files.items()},
                "inputs": {"model": {"path": f"/models/{model}.keras"}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _flash(server, artifacts, remote_dir, **kw):
    return flash(load_target("rpi4"), artifacts, server.uri, remote_dir=str(remote_dir),
                 known_hosts=server.known_hosts, identity=server.identity, **kw)


def _current(remote_dir: Path) -> bytes:
    return (remote_dir / "current" / "model.tflite").read_bytes()


def test_flash_second_flash_and_rollback(server, tmp_path):
    v1 = make_artifacts(tmp_path / "v1", {"model.tflite": b"model one", "report.json": b"{}"})
    v2 = make_artifacts(tmp_path / "v2", {"model.tflite": b"model two", "extra/x.bin": b"x"})
    remote = tmp_path / "device" / "opt" / "edgeprune" / "tiny"

    first = _flash(server, v1, remote)
    assert first.changed and first.previous is None
    assert _current(remote) == b"model one"
    assert os.readlink(remote / "current") == f"releases/{first.release}"
    assert json.loads((remote / "current" / "manifest.json").read_text())["artifacts"]

    second = _flash(server, v2, remote)
    assert _current(remote) == b"model two"
    assert (remote / "current" / "extra" / "x.bin").read_bytes() == b"x"
    assert second.previous == first.release
    assert os.readlink(remote / "previous") == f"releases/{first.release}"

    again = _flash(server, v2, remote)  # same content: nothing to do
    assert not again.changed and _current(remote) == b"model two"

    back = _flash(server, v1, remote, rollback=True)
    assert _current(remote) == b"model one"
    assert (back.release, back.previous) == (first.release, second.release)
    forward = _flash(server, v1, remote, rollback=True)  # rollback again swaps back
    assert _current(remote) == b"model two" and forward.release == second.release
    assert sorted(p.name for p in (remote / "releases").iterdir()) == \
        sorted([first.release, second.release])
    assert not list(remote.glob(".incoming-*"))


def test_reflash_repairs_the_running_release_when_its_files_changed(server, tmp_path):
    v1 = make_artifacts(tmp_path / "v1", {"model.tflite": b"model one"})
    v2 = make_artifacts(tmp_path / "v2", {"model.tflite": b"model two"})
    remote = tmp_path / "dev"
    first, second = _flash(server, v1, remote), _flash(server, v2, remote)
    damaged = remote / "releases" / second.release / "model.tflite"
    damaged.write_bytes(b"model twX")  # a disk fault or an edit on the device

    repaired = _flash(server, v2, remote)
    assert repaired.changed and repaired.release == second.release
    assert _current(remote) == b"model two"
    assert repaired.previous == first.release  # previous is still the release before
    assert os.readlink(remote / "previous") == f"releases/{first.release}"
    assert sorted(p.name for p in (remote / "releases").iterdir()) == \
        sorted([first.release, second.release])
    assert not _flash(server, v2, remote).changed  # intact now: nothing to do


def test_third_release_prunes_the_oldest(server, tmp_path):
    remote = tmp_path / "dev"
    ids = []
    for i in range(3):
        art = make_artifacts(tmp_path / f"v{i}", {"model.tflite": f"m{i}".encode()})
        ids.append(_flash(server, art, remote).release)
    assert sorted(p.name for p in (remote / "releases").iterdir()) == sorted(ids[1:])


def test_corrupted_upload_leaves_the_old_model_in_use(server, tmp_path, monkeypatch):
    remote = tmp_path / "dev"
    v1 = make_artifacts(tmp_path / "v1", {"model.tflite": b"good old model"})
    old = _flash(server, v1, remote)
    v2 = make_artifacts(tmp_path / "v2", {"model.tflite": b"new model"})
    real_upload = flash_mod.upload

    def corrupting(session, local, dest):  # flips one byte on the way to the device
        bad = tmp_path / "corrupted"
        data = bytearray(Path(local).read_bytes())
        data[0] ^= 0xFF
        bad.write_bytes(bytes(data))
        real_upload(session, bad, dest)

    monkeypatch.setattr(flash_mod, "upload", corrupting)
    with pytest.raises(ToolError, match="checksum mismatch.*still runs its current release"):
        _flash(server, v2, remote)
    assert _current(remote) == b"good old model"
    assert os.readlink(remote / "current") == f"releases/{old.release}"
    assert not list(remote.glob(".incoming-*"))
    assert [p.name for p in (remote / "releases").iterdir()] == [old.release]


def test_interrupted_upload_leaves_the_old_model_in_use(server, tmp_path, monkeypatch):
    remote = tmp_path / "dev"
    v1 = make_artifacts(tmp_path / "v1", {"model.tflite": b"good old model"})
    _flash(server, v1, remote)
    v2 = make_artifacts(tmp_path / "v2", {"a.bin": b"a", "model.tflite": b"new"})
    calls = []
    real_upload = flash_mod.upload

    def dropping(session, local, dest):  # the link drops after the first file
        calls.append(dest)
        if len(calls) == 2:
            raise ToolError("upload", "connection lost", "retry")
        real_upload(session, local, dest)

    monkeypatch.setattr(flash_mod, "upload", dropping)
    with pytest.raises(ToolError, match="connection lost"):
        _flash(server, v2, remote)
    assert _current(remote) == b"good old model"
    assert not list(remote.glob(".incoming-*"))


def test_rollback_without_previous_is_refused(server, tmp_path):
    remote = tmp_path / "dev"
    _flash(server, make_artifacts(tmp_path / "v1", {"model.tflite": b"1"}), remote)
    with pytest.raises(BadInputError, match="no previous release"):
        _flash(server, tmp_path / "v1", remote, rollback=True)


def test_dry_run_prints_commands_and_changes_nothing(server, tmp_path):
    art = make_artifacts(tmp_path / "v1", {"model.tflite": b"1"})
    remote = tmp_path / "dev"
    result = CliRunner().invoke(flash_command, [
        "--target", "rpi4", "--artifacts", str(art), "--device", server.uri,
        "--remote-dir", str(remote), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "sha256sum" in result.output and "mv -Tf" in result.output
    assert f"put {art}/model.tflite" in result.output
    assert not remote.exists()


def test_cli_flash_and_unknown_host_key(server, tmp_path):
    art = make_artifacts(tmp_path / "v1", {"model.tflite": b"1"})
    base = ["--target", "rpi4", "--artifacts", str(art), "--device", server.uri,
            "--remote-dir", str(tmp_path / "dev"), "--identity", str(server.identity)]
    ok = CliRunner().invoke(flash_command, [*base, "--known-hosts", str(server.known_hosts)])
    assert ok.exit_code == 0, ok.output
    assert "flashed" in ok.output
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    refused = CliRunner().invoke(flash_command, [*base, "--known-hosts", str(empty)])
    assert refused.exit_code == 2 and "SHA256:" in refused.output


@pytest.mark.parametrize("remote_dir", ["/opt/../etc", "relative/dir", "/", "/opt/x;rm -rf /",
                                        "/opt/$(id)"])
def test_bad_remote_dir_is_rejected(server, tmp_path, remote_dir):
    art = make_artifacts(tmp_path / "v1", {"model.tflite": b"1"})
    with pytest.raises(BadInputError, match="--remote-dir"):
        _flash(server, art, remote_dir)


@pytest.mark.parametrize("name", ["../escape.bin", "/etc/passwd", "a/../../b", "x;id", "-rf"])
def test_manifest_names_with_dotdot_are_rejected(tmp_path, name):
    folder = tmp_path / "art"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"artifacts": {name: "0" * 64}}))
    with pytest.raises(BadInputError, match="plain relative path"):
        read_manifest(folder)


def test_manifest_mismatch_is_rejected(tmp_path):
    art = make_artifacts(tmp_path / "v1", {"model.tflite": b"1"})
    (art / "model.tflite").write_bytes(b"changed after the build")
    with pytest.raises(BadInputError, match="does not match its sha256"):
        read_manifest(art)


def test_release_id_is_content_addressed():
    assert release_id({"a": "1" * 64}) == release_id({"a": "1" * 64})
    assert release_id({"a": "1" * 64}) != release_id({"a": "2" * 64})


# -- Cortex-M ---------------------------------------------------------------------------------
MODEL_DATA_H = """#pragma once
extern const unsigned char g_model[];
extern const unsigned int g_model_len;
"""
OP_RESOLVER_H = """#pragma once
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
inline TfLiteStatus RegisterOps(tflite::MicroMutableOpResolver<4>& r) {
  return r.AddConv2D();
}
"""


def mcu_artifacts(folder: Path) -> Path:
    return make_artifacts(folder, {
        "model.tflite": b"tfl3",
        "model_data.cc": b'#include "model_data.h"\nalignas(16) const unsigned char g_model[] = '
                         b"{0};\nconst unsigned int g_model_len = 1;\n",
        "model_data.h": MODEL_DATA_H.encode(),
        "op_resolver.h": OP_RESOLVER_H.encode(),
        "report.json": json.dumps({"measurements": [
            {"quantity": "ram_bytes", "value": 20000, "method": "tflm", "where": "cortex-m4"}]
        }).encode(),
    })


def test_cortex_m_bundle(tmp_path):
    art = mcu_artifacts(tmp_path / "m4")
    bundle = write_bundle(load_target("cortex-m4"), art)
    assert bundle == art / "firmware"
    assert sorted(p.name for p in bundle.iterdir()) == sorted(
        ["model_data.cc", "model_data.h", "op_resolver.h", "main.cc", "edgeprune_protocol.h",
         "CMakeLists.txt"])
    main = (bundle / "main.cc").read_text()
    # the serial report (tests/runners/test_serial.py builds and reads it): DWT cycle counts,
    # guarded for cores without one, and the arena TFLM used
    assert "0xE0001004u)  // DWT->CYCCNT" in main and "defined(__ARM_ARCH_7EM__)" in main
    assert '#define EDGEPRUNE_COUNTER "none"' in main
    assert "epr_crc32(0, g_model, g_model_len)" in main
    assert 'epr_send("invoke", "i=%d cycles=%lu"' in main
    assert "interpreter.arena_used_bytes()" in main
    assert "tflite::GetModel(g_model)" in main
    assert "MicroMutableOpResolver<4> resolver;" in main and "RegisterOps(resolver);" in main
    assert "#define EDGEPRUNE_ARENA_BYTES 22016" in main  # measured 20000 B + 10 %, aligned
    assert "add_executable(edgeprune_app main.cc)" in (bundle / "CMakeLists.txt").read_text()
    write_bundle(load_target("cortex-m4"), art)  # replaced atomically, no leftovers
    assert sorted(p.name for p in art.iterdir() if p.name.startswith(".")) == []


def test_cortex_m_dry_run_prints_exact_commands(tmp_path):
    art = mcu_artifacts(tmp_path / "m4")
    result = CliRunner().invoke(flash_command, ["--target", "cortex-m4", "--artifacts", str(art),
                                                "--device", "pyocd:nrf52840", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"cmake -S {art}/firmware -B {art}/firmware/build" in result.output
    assert f"pyocd flash --target nrf52840 {art}/firmware/build/edgeprune_app.hex" in result.output
    assert not (art / "firmware").exists()
    esp = flash(load_target("cortex-m7"), art, "esptool:/dev/ttyUSB0", dry_run=True)
    assert "--port /dev/ttyUSB0 write_flash 0x10000" in esp.commands[-1]


def test_cortex_m_without_image_says_how_to_build(tmp_path):
    art = mcu_artifacts(tmp_path / "m4")
    with pytest.raises(ToolError, match="Build the bundle first: cmake -S"):
        flash(load_target("cortex-m4"), art, "pyocd:nrf52840")
    assert (art / "firmware" / "main.cc").is_file()


def test_cortex_m_rejects_ssh_and_linux_rejects_probe(tmp_path):
    art = mcu_artifacts(tmp_path / "m4")
    with pytest.raises(BadInputError, match="microcontroller"):
        flash(load_target("cortex-m4"), art, "ssh://root@127.0.0.1:22")
    with pytest.raises(BadInputError, match="serial: device is read for measurements"):
        flash(load_target("cortex-m4"), art, "serial:/dev/ttyACM0")
    with pytest.raises(BadInputError, match="Linux device"):
        flash(load_target("rpi4"), art, "pyocd:nrf52840")
