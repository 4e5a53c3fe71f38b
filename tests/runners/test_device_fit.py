"""A device figure is a target's only when the device is that target's machine (issue 26).

The "device" is this x86-64 machine over a real OpenSSH server on 127.0.0.1 (tests/sshd.py).
tests/runners/profiles/loopback.toml and coral-x86.toml are profiles that describe it, as a
user with another board writes one. For the Edge TPU, ``profiles/standin_edgetpu.c`` is a
STAND-IN for Coral's libedgetpu.so.1 (no Edge TPU exists here): it exports the delegate API
LiteRT loads, records the load and delegates nothing; the path to it, the runner's arguments
and the refusals are the real ones.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from sshd import REMOTE_PYTHON

from edgeprune.cli import main
from edgeprune.runners.device_info import DeviceInfo, mismatch
from edgeprune.targets import load_target

PROFILES = Path(__file__).with_name("profiles")
LOOPBACK = str(PROFILES / "loopback.toml")
CORAL_X86 = str(PROFILES / "coral-x86.toml")


def _device_args(server, remote_python: str = REMOTE_PYTHON) -> list[str]:
    return ["--device", server.uri, "--known-hosts", str(server.known_hosts),
            "--identity", str(server.identity), "--remote-python", remote_python]


def _build(tiny_files, out: Path, targets: list[str], server) -> tuple[int, str]:
    args = ["build", "--model", str(tiny_files["model"]), "--data", str(tiny_files["data"]),
            "--val", str(tiny_files["val"]), "--calib", str(tiny_files["calib"]),
            "--prune", "none", "--epochs", "0", "--out", str(out), *_device_args(server)]
    for t in targets:
        args += ["--target", t]
    r = CliRunner().invoke(main, args)
    return r.exit_code, r.output


def _check(model: Path, target: str, server, remote_python: str = REMOTE_PYTHON) -> dict:
    r = CliRunner().invoke(main, ["check", str(model), "--target", target, "--json",
                                  *_device_args(server, remote_python)])
    assert r.exit_code in (0, 1), r.output
    return json.loads(r.stdout)


# -- what the device says it is ------------------------------------------------------------

def test_cpuinfo_parts_name_the_cores_and_decide_the_match():
    pi4 = DeviceInfo.from_report({"machine": "aarch64", "cores": 4, "board": "Raspberry Pi 4",
                                  "cpu_parts": [["0x41", "0xd08"]] * 4})
    assert pi4.cpus == ("cortex-a72",)
    assert mismatch(pi4, load_target("rpi4")) == ""
    assert "cortex-a76" in mismatch(pi4, load_target("rpi5"))  # a Pi 4 is not a Pi 5
    assert "aarch64" in mismatch(pi4, load_target("host"))
    pi4_32bit = DeviceInfo.from_report({"machine": "armv7l", "cores": 4,
                                        "cpu_parts": [["0x41", "0xd08"]]})
    assert "armv7l" in mismatch(pi4_32bit, load_target("rpi4"))  # a 32-bit OS: other kernels
    big_little = DeviceInfo.from_report({"machine": "aarch64", "cores": 8, "cpu_parts": [
        ["0x41", "0xd05"], ["0x41", "0xd0b"]]})
    assert big_little.cpus == ("cortex-a55", "cortex-a76")
    assert mismatch(big_little, load_target("rpi5")) == ""
    unknown = DeviceInfo.from_report({"machine": "aarch64", "cores": 4,
                                      "cpu_parts": [["0x51", "0x801"]]})
    assert unknown.cpus == () and "0x801" in unknown.describe()
    assert mismatch(unknown, load_target("rpi4")) == ""  # arch matches; CPU not identified


def test_probe_reports_the_loopback_machine(ssh_server):
    from edgeprune.runners.ssh import probe_device

    info = probe_device(ssh_server.uri, ssh_server.known_hosts, ssh_server.identity,
                        remote_python=REMOTE_PYTHON)
    assert info.machine == os.uname().machine and info.cores == os.cpu_count()
    assert mismatch(info, load_target(LOOPBACK)) == ""


# -- the checks ----------------------------------------------------------------------------

def test_targets_of_other_machines_use_no_x86_figure(ssh_server, tiny_files, tmp_path):
    """coral-usb, cortex-m4 and rpi4 against the x86 loopback: refused before any build,
    saying for each why the device is not its machine."""
    out = tmp_path / "o"
    code, output = _build(tiny_files, out, ["coral-usb", "cortex-m4", "rpi4"], ssh_server)
    assert code == 2, output
    assert "x86_64" in output and "coral-usb describes aarch64" in output
    assert "rpi4 describes aarch64 (cortex-a72)" in output
    assert "cortex-m4 is a microcontroller" in output and "serial:PORT" in output
    assert not out.exists()


def test_device_figures_stand_only_for_the_profile_that_describes_it(
        ssh_server, tiny_files, tmp_path):
    out = tmp_path / "o"
    code, output = _build(tiny_files, out, [LOOPBACK, "rpi4"], ssh_server)
    assert code in (0, 1), output
    loop = json.loads((out / "loopback" / "report.json").read_text())
    device = {m["quantity"]: m for m in loop["measurements"] if m["method"] == "device"}
    assert {m["where"] for m in device.values()} == {"loopback"}
    checks = {c["name"]: c for c in loop["checks"]}
    assert checks["latency"]["method"] == "device" and checks["ram"]["method"] == "device"
    assert device["latency_ms"]["used_by"] == ["latency"]
    assert "x86_64" in device["latency_ms"]["ran_on"] and "ai_edge_litert" in \
        device["latency_ms"]["ran_on"]
    assert "device_not_used" not in loop

    pi = json.loads((out / "rpi4" / "report.json").read_text())
    device = [m for m in pi["measurements"] if m["method"] == "device"]
    assert device and all(m["where"].startswith("device ") and not m["used_by"]
                          for m in device)
    checks = {c["name"]: c for c in pi["checks"]}
    for name in ("latency", "ram"):
        assert checks[name]["method"] == "estimate"
        assert "device's figure was not used" in checks[name]["rule"]
        assert "rpi4 describes aarch64" in checks[name]["rule"]
    assert "| ran on | used by |" in (out / "rpi4" / "report.md").read_text()


# -- the Edge TPU on the device ------------------------------------------------------------

@pytest.fixture(scope="module")
def standin_delegate(tmp_path_factory) -> tuple[Path, Path]:
    """libedgetpu.so.1 built from standin_edgetpu.c, and the file it records loads in."""
    root = tmp_path_factory.mktemp("standin")
    record = root / "loads.txt"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", f'-DRECORD_PATH="{record}"',
                    "-o", str(root / "libedgetpu.so.1"), str(PROFILES / "standin_edgetpu.c")],
                   check=True)
    return root, record


@pytest.fixture
def standin_compiler(tmp_path, monkeypatch):
    """A stand-in edgetpu_compiler on PATH: writes the input model, unchanged, as the
    compiled one (the real compiler is not installable here)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "edgetpu_compiler"
    fake.write_text('#!/bin/sh\n# args: -s -o OUTDIR MODEL\nname=$(basename "$4" .tflite)\n'
                    'cp "$4" "$3/${name}_edgetpu.tflite"\n'
                    "echo 'Edge TPU Compiler version 16.0.384591198'\n"
                    "echo 'Number of operations that will run on Edge TPU: 0'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")


def test_edgetpu_without_a_compiled_model_has_no_device_figure(ssh_server, tiny_tflite):
    result = _check(tiny_tflite, CORAL_X86, ssh_server)
    assert not [m for m in result["measurements"] if m["method"] == "device"]
    latency = next(c for c in result["checks"] if c["name"] == "latency")
    assert latency["method"] == "estimate"
    assert "no compiled Edge TPU model" in latency["rule"] and "edgetpu_compiler" in \
        latency["rule"]


def test_edgetpu_without_the_delegate_on_the_device(ssh_server, tiny_tflite, standin_compiler):
    result = _check(tiny_tflite, CORAL_X86, ssh_server)
    assert not [m for m in result["measurements"] if m["method"] == "device"]
    latency = next(c for c in result["checks"] if c["name"] == "latency")
    assert "cannot load the Edge TPU delegate" in latency["rule"]
    assert "libedgetpu.so.1" in latency["rule"] and "libedgetpu1-std" in latency["rule"]


def test_edgetpu_figure_comes_through_the_delegate(
        ssh_server, tiny_tflite, standin_compiler, standin_delegate, tmp_path):
    libdir, record = standin_delegate
    # How a device with the library outside the loader's path is set up: a wrapper Python.
    python = tmp_path / "python-with-edgetpu"
    python.write_text(f'#!/bin/sh\nLD_LIBRARY_PATH={libdir} exec {REMOTE_PYTHON} "$@"\n')
    python.chmod(0o755)
    result = _check(tiny_tflite, CORAL_X86, ssh_server, remote_python=str(python))
    assert record.read_text().count("loaded") == 1  # the runner loaded it, once
    device = {m["quantity"]: m for m in result["measurements"] if m["method"] == "device"}
    latency = device["latency_ms"]
    assert latency["where"] == "coral-x86" and latency["used_by"] == ["latency"]
    assert "tiny_int8_edgetpu.tflite" in latency["detail"]
    assert "delegate libedgetpu.so.1 (version stand-in for tests" in latency["ran_on"]
    assert "0 of " in latency["ran_on"]  # the stand-in compiler mapped no segment
    # the host's RSS is not the TPU's memory: kept for reference, not used
    assert device["ram_bytes"]["where"].startswith("device ")
    assert "not the Edge TPU's on-chip memory" in device["ram_bytes"]["detail"]
