"""`build --device` and `check --emulate` through the CLI.

The "device" is this machine, reached over a real OpenSSH server on 127.0.0.1 (tests/sshd.py);
its Python is the project's virtualenv, as a prepared Raspberry Pi would have ai-edge-litert.
"""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sshd import REMOTE_PYTHON

from edgeprune.cli import main


def test_build_reports_device_latency_and_rss(ssh_server, tiny_files, tmp_path):
    """With a profile that describes the loopback machine (an x86-64 "Pi")."""
    out = tmp_path / "o"
    r = CliRunner().invoke(main, [
        "build", "--target", str(Path(__file__).with_name("profiles") / "loopback.toml"),
        "--model", str(tiny_files["model"]),
        "--data", str(tiny_files["data"]), "--val", str(tiny_files["val"]),
        "--calib", str(tiny_files["calib"]), "--prune", "none", "--epochs", "0",
        "--out", str(out), "--device", ssh_server.uri,
        "--known-hosts", str(ssh_server.known_hosts), "--identity", str(ssh_server.identity),
        "--remote-python", REMOTE_PYTHON,
    ])
    assert r.exit_code in (0, 1), r.output
    rep = json.loads((out / "loopback" / "report.json").read_text())
    device = {m["quantity"]: m for m in rep["measurements"] if m["method"] == "device"}
    assert set(device) == {"latency_ms", "ram_bytes"}
    assert all(m["where"] == "loopback" for m in device.values())
    assert 0 < device["latency_ms"]["value"] < 1000 and device["ram_bytes"]["value"] > 1e6
    checks = {c["name"]: c for c in rep["checks"]}
    # the device figure outranks the estimate
    assert checks["latency"]["method"] == "device" and checks["ram"]["method"] == "device"
    assert checks["latency"]["value"] == device["latency_ms"]["value"]
    assert rep["device"] == ssh_server.uri


def test_unknown_host_key_is_refused_through_the_cli(ssh_server, tiny_tflite, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    r = CliRunner().invoke(main, [
        "check", str(tiny_tflite), "--target", "rpi4", "--device", ssh_server.uri,
        "--known-hosts", str(empty), "--identity", str(ssh_server.identity),
    ])
    assert r.exit_code == 2, r.output
    assert "127.0.0.1" in r.output and "known_hosts" in r.output


@pytest.mark.slow
def test_check_emulate_reports_bit_identical_outputs(tiny_tflite, tiny_files):
    r = CliRunner().invoke(main, [
        "check", str(tiny_tflite), "--target", "rpi4", "--data", str(tiny_files["val"]),
        "--emulate", "--json",
    ])
    assert r.exit_code in (0, 1), r.output
    result = json.loads(r.stdout)
    emulation = result["emulation"]
    assert emulation["outputs_compared"] >= 10
    # What is reported is what was compared. This tiny model's outputs were seen to differ by
    # one output quantization step (1/256) between aarch64 and x86 LiteRT; the bundled example
    # is bit-identical (test below).
    assert emulation["bit_identical"] is (emulation["max_abs_diff"] == 0)
    assert emulation["max_abs_diff"] <= 1 / 256 + 1e-9
    qemu = [m for m in result["measurements"] if m["method"] == "qemu"]
    assert qemu and all(m["where"] == "rpi4" for m in qemu)


@pytest.mark.slow
def test_bundled_example_is_bit_identical_under_qemu(tmp_path):
    from edgeprune.resources import example_inputs

    ex = example_inputs()
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["build", "--target", "rpi4", "--prune", "none", "--epochs", "0",
                                  "--out", str(out)])
    assert r.exit_code in (0, 1), r.output
    r = CliRunner().invoke(main, ["check", str(out / "rpi4" / "model.tflite"), "--target", "rpi4",
                                  "--data", str(ex["val"]), "--emulate", "--json"])
    assert r.exit_code in (0, 1), r.output
    result = json.loads(r.stdout)
    assert result["emulation"]["bit_identical"] is True, result["emulation"]
    assert result["emulation"]["outputs_compared"] == 24
