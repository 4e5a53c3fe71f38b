"""On-device runs against a real OpenSSH server on 127.0.0.1.

The "device" is this machine: tests/sshd.py starts Debian's sshd on a free loopback port with a
fresh host key and key-only login; the device's Python is the project's venv Python (it has
ai_edge_litert and numpy, as a prepared Raspberry Pi would).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sshd import REMOTE_PYTHON, keygen, known_hosts_line

from edgeprune.device import ProbeDevice, SshDevice, parse_device, parse_ssh
from edgeprune.errors import BadInputError, ToolError
from edgeprune.runners import host
from edgeprune.runners.ssh import SshSession, measure_on_device, run_on_device
from edgeprune.targets import load_target


def _measure(server, tflite, **kw):
    """measure_on_device on the loopback server; keywords override its URI, keys, Python."""
    kw.setdefault("remote_python", REMOTE_PYTHON)
    uri = kw.pop("uri") if "uri" in kw else server.uri
    known_hosts = kw.pop("known_hosts") if "known_hosts" in kw else server.known_hosts
    identity = kw.pop("identity") if "identity" in kw else server.identity
    return measure_on_device(tflite, load_target("rpi4"), uri, known_hosts, identity, 1,
                             np.zeros((8, 8, 1), np.float32), **kw)


def test_measure_on_device_returns_device_latency_and_rss(ssh_server, rpi4_tflite):
    start = time.monotonic()
    ms = _measure(ssh_server, rpi4_tflite)
    elapsed = time.monotonic() - start
    latency, ram = ms
    assert (latency.quantity, latency.method, latency.where, latency.unit) == \
        ("latency_ms", "device", "rpi4", "ms")
    assert 0 < latency.value < 50
    assert "p50 of 50 invokes of small_rpi4_int8.tflite after 10 warm-up" in latency.detail
    assert "x86_64" in latency.ran_on and "ai_edge_litert" in latency.ran_on
    assert (ram.quantity, ram.method, ram.unit) == ("ram_bytes", "device", "bytes")
    assert 10e6 < ram.value < 2e9  # a Python + numpy + LiteRT process
    assert "ru_maxrss" in ram.detail
    assert elapsed < 30


def test_outputs_on_device_are_bit_identical_to_host(ssh_server, rpi4_tflite, samples):
    run = run_on_device(rpi4_tflite, ssh_server.uri, ssh_server.known_hosts, ssh_server.identity,
                        1, samples[0], samples, remote_python=REMOTE_PYTHON, runs=2, warmup=1)
    expected = host.predict(rpi4_tflite, samples, raw=True)
    assert run.outputs.dtype == expected.dtype
    assert run.outputs.tobytes() == expected.tobytes()


def test_remote_temp_folder_is_private_and_removed(ssh_server):
    with SshSession(parse_ssh(ssh_server.uri), ssh_server.known_hosts,
                    ssh_server.identity) as s:
        folder = s.make_temp_dir(REMOTE_PYTHON)
        assert oct(Path(folder).stat().st_mode & 0o777) == "0o700"
        s.remove_temp_dir(folder)
        assert not Path(folder).exists()
        s.remove_temp_dir("/etc")  # never removes what it did not make
        assert Path("/etc").is_dir()


def test_unknown_host_key_is_refused_with_fingerprint(ssh_server, rpi4_tflite, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(BadInputError) as err:
        _measure(ssh_server, rpi4_tflite, known_hosts=empty)
    msg = str(err.value)
    fingerprint = _fingerprint(ssh_server.host_key)
    assert fingerprint in msg and "ssh-keyscan -p" in msg and "not in" in msg
    assert err.value.exit_code == 2


def test_changed_host_key_is_refused(ssh_server, rpi4_tflite, tmp_path):
    other = keygen(tmp_path / "other_host_key")
    stale = tmp_path / "known_hosts"
    stale.write_text(known_hosts_line(ssh_server.host, ssh_server.port, other))
    with pytest.raises(BadInputError) as err:
        _measure(ssh_server, rpi4_tflite, known_hosts=stale)
    msg = str(err.value)
    assert "CHANGED" in msg and "ssh-keygen -R" in msg
    assert _fingerprint(ssh_server.host_key) in msg and _fingerprint(other) in msg


def test_wrong_client_key_is_refused(ssh_server, rpi4_tflite, tmp_path):
    with pytest.raises(BadInputError, match="key authentication failed"):
        _measure(ssh_server, rpi4_tflite, identity=keygen(tmp_path / "stranger"))


def test_refused_port_fails_fast_naming_host_and_port(rpi4_tflite, tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ToolError) as err:
        _measure(None, rpi4_tflite, uri=f"ssh://root@127.0.0.1:{port}",
                 known_hosts=tmp_path / "kh", identity=None, connect_timeout=2)
    assert time.monotonic() - start < 2
    assert err.value.exit_code == 3
    assert f"127.0.0.1 port {port}" in str(err.value)


def test_silent_host_times_out_within_the_timeout(rpi4_tflite, tmp_path):
    """A host that accepts TCP but never speaks SSH (like a hung device)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    held = []
    threading.Thread(target=lambda: held.append(listener.accept()), daemon=True).start()
    start = time.monotonic()
    try:
        with pytest.raises(ToolError) as err:
            _measure(None, rpi4_tflite, uri=f"ssh://root@127.0.0.1:{port}",
                     known_hosts=tmp_path / "kh", identity=None, connect_timeout=1.0)
    finally:
        listener.close()
        for conn, _ in held:
            conn.close()
    assert time.monotonic() - start < 5
    assert err.value.exit_code == 3 and f"127.0.0.1 port {port}" in str(err.value)
    assert "timeout 1 s" in str(err.value)


def test_command_timeout(ssh_server):
    with SshSession(parse_ssh(ssh_server.uri), ssh_server.known_hosts,
                    ssh_server.identity) as s:
        start = time.monotonic()
        with pytest.raises(ToolError, match="did not finish within 0.5 s"):
            s.run(["sleep", "5"], timeout=0.5)
        assert time.monotonic() - start < 3


def test_device_without_litert_says_what_to_install(ssh_server, rpi4_tflite, tmp_path):
    """A device Python that has numpy but no ai_edge_litert (nor tflite_runtime)."""
    fake = tmp_path / "python3-no-litert"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-c" ]; then exec ' + REMOTE_PYTHON + ' "$@"; fi\n'
        "exec " + REMOTE_PYTHON + " -c 'import runpy, sys; "
        'sys.modules["ai_edge_litert"] = None; sys.modules["tflite_runtime"] = None; '
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name=\"__main__\")' \"$@\"\n"
    )
    fake.chmod(0o755)
    with pytest.raises(ToolError) as err:
        _measure(ssh_server, rpi4_tflite, remote_python=str(fake))
    assert "pip install ai-edge-litert" in str(err.value)
    assert "cannot import ai_edge_litert" in str(err.value)


def test_device_without_python(ssh_server, rpi4_tflite):
    with pytest.raises(ToolError, match="Install Python 3 on the device"):
        _measure(ssh_server, rpi4_tflite, remote_python="/nonexistent/python3")


@pytest.mark.parametrize("uri", [
    "ssh://root@127.0.0.1;touch {marker}",
    "ssh://root;touch${{IFS}}{marker}@127.0.0.1",
    "ssh://$(touch {marker})@127.0.0.1",
    "ssh://root@127.0.0.1:22`touch {marker}`",
    "ssh://root@127.0.0.1/;touch {marker}",
    "ssh://-oProxyCommand=touch {marker}@127.0.0.1",
])
def test_uri_with_shell_metacharacters_is_rejected(uri, rpi4_tflite, tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(BadInputError):
        _measure(None, rpi4_tflite, uri=uri.format(marker=marker), known_hosts=tmp_path / "kh",
                 identity=None)
    assert not marker.exists()


def test_remote_values_are_quoted_not_executed(ssh_server, rpi4_tflite, tmp_path):
    """A hostile --remote-python reaches the device's shell as one quoted word."""
    marker = tmp_path / "pwned"
    with pytest.raises(ToolError):
        _measure(ssh_server, rpi4_tflite, remote_python=f"python3; touch {marker}")
    assert not marker.exists()


@pytest.mark.parametrize(("uri", "expected"), [
    ("ssh://pi@raspberrypi.local", SshDevice("pi", "raspberrypi.local", 22)),
    ("ssh://root@192.168.1.20:2222", SshDevice("root", "192.168.1.20", 2222)),
    ("ssh://u@[::1]:2200", SshDevice("u", "::1", 2200)),
    ("ssh://deploy_bot@my-pi/", SshDevice("deploy_bot", "my-pi", 22)),
])
def test_parse_ssh(uri, expected):
    assert parse_ssh(uri) == expected


@pytest.mark.parametrize("uri", ["ssh://u@host:0", "ssh://u@host:70000", "ssh://u@host:",
                                 "ssh://u@", "ssh://u@host?x=1", "ssh://u@ho st", "http://h",
                                 "ssh://u@[zz]:1", "pyocd:", "esptool:/etc/../dev/tty",
                                 "esptool:/dev/tty;reboot", "pyocd:nrf52;x"])
def test_parse_device_rejects(uri):
    with pytest.raises(BadInputError):
        parse_device(uri)


def test_parse_probe_devices():
    assert parse_device("pyocd:nrf52840") == ProbeDevice("pyocd", "nrf52840")
    assert parse_device("esptool:/dev/ttyUSB0") == ProbeDevice("esptool", "/dev/ttyUSB0")


def _fingerprint(private_key: Path) -> str:
    import paramiko

    return paramiko.Ed25519Key.from_private_key_file(str(private_key)).fingerprint
