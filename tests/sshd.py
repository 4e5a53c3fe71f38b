"""A real OpenSSH server on 127.0.0.1 that plays the part of a device in tests.

The "device" is this machine: Debian's ``/usr/sbin/sshd`` started on a free loopback port with
a freshly generated host key, key-only authentication and its own config, PID file and
authorized_keys, so nothing of the machine's own SSH setup is used or changed. The device's
Python is the project's virtualenv Python (``REMOTE_PYTHON``, passed as ``remote_python`` /
``--remote-python``): it has numpy and ai_edge_litert, as a prepared Raspberry Pi would. (PATH
cannot be set for the session reliably: the login shell's rc files rewrite it.)
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")
REMOTE_PYTHON = str(Path(sys.executable).parent / "python3")


@dataclass(frozen=True)
class SshServer:
    host: str
    port: int
    user: str
    known_hosts: Path  # holds this server's host key
    identity: Path  # a client key the server accepts
    host_key: Path  # the server's private host key (to make a "changed key" scenario)
    workdir: Path

    @property
    def uri(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeprune-test", "-f", str(path)],
        check=True, stdin=subprocess.DEVNULL,
    )
    return path


def known_hosts_line(host: str, port: int, host_key: Path) -> str:
    kind, b64 = Path(f"{host_key}.pub").read_text().split()[:2]
    return f"[{host}]:{port} {kind} {b64}\n"


def _wait_for_banner(
    port: int, proc: subprocess.Popen, log: Path, timeout: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}: {log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
            s.settimeout(0.5)
            if s.recv(64).startswith(b"SSH-"):
                return
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not answer on 127.0.0.1:{port} within {timeout} s")


@contextlib.contextmanager
def running_sshd(workdir: Path) -> Iterator[SshServer]:
    """Start sshd on 127.0.0.1:<free port>; stop it (by its own PID) on exit."""
    if not SSHD.exists():
        pytest.fail("Debian's openssh-server is not installed (see .ci/system-packages.sh)")
    if os.geteuid() != 0:
        pytest.skip("the loopback sshd device needs root (as in CI)")
    workdir.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    host_key = keygen(workdir / "host_ed25519")
    identity = keygen(workdir / "client_ed25519")
    (workdir / "authorized_keys").write_text(Path(f"{identity}.pub").read_text())
    port = _free_port()
    config = workdir / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {host_key}\n"
        f"PidFile {workdir / 'sshd.pid'}\nAuthorizedKeysFile {workdir / 'authorized_keys'}\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPrintMotd no\n"
        "Subsystem sftp internal-sftp\nLogLevel VERBOSE\n"
    )
    log_path = workdir / "sshd.log"
    log = log_path.open("w")
    # -D: stay in the foreground (we own the process), -e: log to stderr (the log file).
    proc = subprocess.Popen(
        [str(SSHD), "-D", "-e", "-f", str(config)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_banner(port, proc, log_path)
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text(known_hosts_line("127.0.0.1", port, host_key))
        yield SshServer("127.0.0.1", port, getpass.getuser(), known_hosts, identity, host_key,
                        workdir)
    finally:
        stop(proc)
        log.close()


def stop(proc: subprocess.Popen) -> None:
    """Terminate an sshd (or any server process), killing it if it lingers."""
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
