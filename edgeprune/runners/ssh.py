"""A real device over SSH: upload the model and a runner script, measure, clean up.

Security choices, because a device URI and a known_hosts file are all that stand between the
user and a spoofed device:

- Host keys are checked strictly against a known_hosts file (default ``~/.ssh/known_hosts``);
  an unknown or changed key is refused (never added automatically), and the error shows the
  offered fingerprint and how to verify and add it.
- Only key authentication (an identity file or the SSH agent); no passwords.
- Every remote command line is ``shlex.join`` of an argv list; no user-supplied value is
  concatenated into a shell line.
- Work happens in a private folder made on the device by ``tempfile.mkdtemp`` (mode 700) and
  removed afterwards, whatever happened.
"""

from __future__ import annotations

import json
import logging
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import paramiko

from edgeprune.device import SshDevice, parse_ssh
from edgeprune.errors import BadInputError, ToolError
from edgeprune.measurement import Measurement
from edgeprune.runners import host
from edgeprune.runners.device_info import DeviceInfo
from edgeprune.targets import TargetProfile

log = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name("remote_bench.py")
EXIT_MISSING = 3  # remote_bench.py's exit status for a missing module
EXIT_NO_DELEGATE = 4  # … and for a --delegate library that cannot be loaded
_TMP_PREFIX = "edgeprune-"


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    status: int
    stdout: str
    stderr: str


class ConnectionLost(ToolError):
    """The connection to the device died; ``started`` is False when the command never ran."""

    def __init__(self, what: str, problem: str, fix: str, *, started: bool) -> None:
        super().__init__(what, problem, fix)
        self.started = started


class DelegateMissing(ToolError):
    """The device cannot load the delegate library (e.g. no libedgetpu.so.1 installed)."""


class _UnknownHostKey(paramiko.SSHException):
    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(hostname)
        self.hostname = hostname
        self.key = key


class _RejectWithFingerprint(paramiko.RejectPolicy):
    """RejectPolicy that keeps the offered key, so the error can show its fingerprint."""

    def missing_host_key(self, client: Any, hostname: str, key: paramiko.PKey) -> None:
        raise _UnknownHostKey(hostname, key)


def default_known_hosts() -> Path:
    return Path.home() / ".ssh" / "known_hosts"


def _keyscan_hint(device: SshDevice, known_hosts: Path) -> str:
    return shlex.join(["ssh-keyscan", "-p", str(device.port), device.host]) + " >> " + shlex.quote(
        str(known_hosts)
    )


def _known_host_name(device: SshDevice) -> str:
    return device.host if device.port == 22 else f"[{device.host}]:{device.port}"


class SshSession:
    """One authenticated connection to a device; use as a context manager."""

    def __init__(
        self,
        device: SshDevice,
        known_hosts: Path | None = None,
        identity: Path | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self.device = device
        self.known_hosts = Path(known_hosts) if known_hosts else default_known_hosts()
        self.identity = Path(identity) if identity else None
        self.connect_timeout = connect_timeout
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # -- connection ---------------------------------------------------------------------------
    def __enter__(self) -> SshSession:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        d = self.device
        if self.identity is not None and not self.identity.is_file():
            raise BadInputError(
                f"--identity {self.identity}", "no such file", "Give the private key file"
            )
        client = paramiko.SSHClient()
        # Load (never save) the user's known hosts; the system file is not consulted.
        if self.known_hosts.is_file():
            try:
                client.get_host_keys().load(str(self.known_hosts))
            except (OSError, paramiko.SSHException) as exc:
                raise BadInputError(
                    f"--known-hosts {self.known_hosts}", f"cannot be read ({exc})",
                    "Fix or replace the file",
                ) from exc
        client.set_missing_host_key_policy(_RejectWithFingerprint())
        t = self.connect_timeout
        start = time.monotonic()
        try:
            client.connect(
                d.host, port=d.port, username=d.user,
                key_filename=str(self.identity) if self.identity else None,
                allow_agent=True, look_for_keys=self.identity is None,
                timeout=t, banner_timeout=t, auth_timeout=t, channel_timeout=t,
            )
        except _UnknownHostKey as exc:
            client.close()
            raise BadInputError(
                f"host key of {d.label}",
                f"{_known_host_name(d)} is not in {self.known_hosts}; the device offers "
                f"{exc.key.get_name()} {exc.key.fingerprint}, which was refused",
                "Check that fingerprint on the device (ssh-keygen -lf "
                "/etc/ssh/ssh_host_ed25519_key.pub), then add the key: "
                f"{_keyscan_hint(d, self.known_hosts)} (or pass --known-hosts FILE)",
            ) from None
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise BadInputError(
                f"host key of {d.label}",
                f"the host key CHANGED: the device offers {exc.key.get_name()} "
                f"{exc.key.fingerprint}, {self.known_hosts} expects {exc.expected_key.get_name()} "
                f"{exc.expected_key.fingerprint}; someone may be impersonating the device",
                "Refused. If the device was reinstalled, verify the new fingerprint on it, then "
                + shlex.join(["ssh-keygen", "-R", _known_host_name(d), "-f", str(self.known_hosts)])
                + f" and {_keyscan_hint(d, self.known_hosts)}",
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise BadInputError(
                f"ssh login {d.label}", f"key authentication failed ({exc})",
                "Pass --identity KEYFILE or load the key into ssh-agent, and add its public key "
                "to the device's ~/.ssh/authorized_keys",
            ) from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            client.close()
            waited = time.monotonic() - start
            raise ToolError(
                f"ssh {d.host} port {d.port}",
                f"cannot reach the device after {waited:.1f} s (timeout {t:g} s): "
                f"{type(exc).__name__}: {exc}",
                "Check the device is on, the address and port are right and sshd runs there; "
                "reproduce with " + shlex.join(["ssh", "-p", str(d.port), f"{d.user}@{d.host}",
                                               "true"]),
            ) from None
        log.debug("connected to %s in %.3f s", d.label, time.monotonic() - start)
        self._client = client

    def close(self) -> None:
        """Never raises: closing a connection that died (e.g. mid-upload) must not replace
        the error that says so (seen: a bare EOFError from SFTPClient.close)."""
        for conn in (self._sftp, self._client):
            if conn is not None:
                try:
                    conn.close()
                except (OSError, EOFError, paramiko.SSHException) as exc:
                    log.debug("closing %s: %s: %s", self.device.label, type(exc).__name__, exc)
        self._sftp = self._client = None

    def _lost(self, doing: str, *, started: bool,
              exc: BaseException | None = None) -> ConnectionLost | None:
        """A ConnectionLost error if the transport is dead, else None (another failure)."""
        transport = self._client.get_transport() if self._client else None
        if transport is not None and isinstance(exc, EOFError | ConnectionError):
            # The channel saw the end first; paramiko's transport thread notices a moment later.
            deadline = time.monotonic() + 2.0
            while transport.is_active() and time.monotonic() < deadline:
                time.sleep(0.05)
        if transport is not None and transport.is_active():
            return None
        d = self.device
        return ConnectionLost(
            f"ssh {d.label}", f"the connection to the device was lost {doing}",
            "Check that the device is on and reachable (reproduce with "
            f"{shlex.join(['ssh', '-p', str(d.port), f'{d.user}@{d.host}', 'true'])}), then retry",
            started=started,
        )

    @property
    def client(self) -> paramiko.SSHClient:
        if self._client is None:
            raise ToolError(f"ssh {self.device.label}", "not connected", "Connect first")
        return self._client

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
            self._sftp.get_channel().settimeout(self.connect_timeout * 6)
        return self._sftp

    # -- commands -----------------------------------------------------------------------------
    def run(self, argv: list[str], timeout: float = 60.0, check: bool = True) -> CommandResult:
        """Run ``argv`` on the device (quoted with shlex.join); ToolError after ``timeout``."""
        line = shlex.join(argv)
        label = self.device.label
        try:
            chan = self.client.get_transport().open_session(timeout=self.connect_timeout)
            chan.exec_command(line)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._lost(f"before {_short(line)!r} could start", started=False,
                             exc=exc) or ToolError(
                f"ssh {label}", f"cannot start {line!r} ({exc})", "Check the connection and retry"
            ) from None
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            while True:
                while chan.recv_ready():
                    out += chan.recv(1 << 16)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                # Done at exit status *and* EOF: sshd may send the status before the output.
                if chan.exit_status_ready() and (chan.eof_received or chan.closed) \
                        and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if time.monotonic() > deadline:
                    raise ToolError(
                        f"ssh {label}", f"{line!r} did not finish within {timeout:g} s",
                        f"Reproduce with: ssh -p {self.device.port} "
                        f"{self.device.user}@{self.device.host} {shlex.quote(line)}",
                    )
                chan.status_event.wait(0.02)
            status = chan.recv_exit_status()
        finally:
            chan.close()
        if status == -1:  # closed without an exit status: maybe the connection died
            lost = self._lost(f"while running {_short(line)!r}", started=True)
            if lost:
                raise lost
        result = CommandResult(tuple(argv), status, out.decode(errors="replace"),
                               err.decode(errors="replace"))
        log.debug("%s: %s → %d", label, line, status)
        if check and status != 0:
            raise ToolError(
                f"ssh {label}", f"{line!r} exited with {status}: {_tail(result.stderr)}",
                f"Reproduce with: ssh -p {self.device.port} {self.device.user}@{self.device.host}"
                f" {shlex.quote(line)}",
            )
        return result

    def put(self, local: Path, remote: str) -> None:
        try:
            self.sftp.put(str(local), remote)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._lost(f"while uploading {local.name}", started=True, exc=exc) or ToolError(
                f"upload to {self.device.label}:{remote}", f"failed ({exc})",
                "Check free space and permissions on the device, then retry") from None

    def get(self, remote: str, local: Path) -> None:
        try:
            self.sftp.get(remote, str(local))
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._lost(f"while downloading {remote}", started=True, exc=exc) or ToolError(
                f"download from {self.device.label}:{remote}", f"failed ({exc})",
                "Check the connection and retry") from None

    def make_temp_dir(self, python: str) -> str:
        """A private (mode 700) folder on the device, made by the device's Python."""
        code = f"import tempfile; print(tempfile.mkdtemp(prefix={_TMP_PREFIX!r}))"
        res = self.run([python, "-c", code], timeout=30, check=False)
        if res.status != 0:
            missing = res.status == 127 or "not found" in res.stderr
            raise ToolError(
                f"{python} on {self.device.label}",
                "not found" if missing else f"failed ({_tail(res.stderr)})",
                "Install Python 3 on the device (e.g. sudo apt install python3 python3-pip), "
                "then pip install ai-edge-litert numpy; or pass --remote-python PATH",
            )
        path = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
        if not _is_our_temp_dir(path):
            raise ToolError(f"{python} on {self.device.label}",
                            f"mkdtemp returned an unexpected path {path!r}", "Check the device")
        return path

    def remove_temp_dir(self, path: str) -> None:
        if not _is_our_temp_dir(path):  # never rm -rf anything we did not make
            return
        try:
            self.run(["rm", "-rf", "--", path], timeout=30, check=False)
        except ToolError as exc:
            log.warning("could not remove %s on %s: %s", path, self.device.label, exc)


def _is_our_temp_dir(path: str) -> bool:
    p = PurePosixPath(path)
    return p.is_absolute() and p.name.startswith(_TMP_PREFIX) and ".." not in p.parts \
        and "\n" not in path and len(p.parts) >= 3


def _short(line: str, width: int = 60) -> str:
    return line if len(line) <= width else line[:width - 3] + "..."


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-lines:]) or "no output"


@dataclass(frozen=True)
class DeviceRun:
    stats: dict[str, Any]  # remote_bench.py's JSON report
    outputs: np.ndarray | None  # raw output tensors for the samples, when asked for


def run_on_device(
    tflite: Path,
    uri: str,
    known_hosts: Path | None,
    identity: Path | None,
    threads: int,
    sample: np.ndarray,
    samples: np.ndarray | None = None,
    *,
    warmup: int = 10,
    runs: int = 50,
    remote_python: str = "python3",
    connect_timeout: float = 10.0,
    command_timeout: float = 300.0,
    delegate: str | None = None,
) -> DeviceRun:
    """Run the model on the device: timed invokes on ``sample``, outputs for ``samples``;
    with ``delegate``, through that delegate library (DelegateMissing if it cannot be loaded).

    Inputs are float; they are quantized here exactly as ``host.predict`` does, so the raw
    outputs can be compared bit for bit with ``host.predict(..., raw=True)``.
    """
    device = parse_ssh(uri)
    tflite = Path(tflite)
    if not tflite.is_file():
        raise BadInputError(str(tflite), "no such model file", "Give a .tflite path")
    with tempfile.TemporaryDirectory(prefix="edgeprune-ssh-") as tmp:
        local = Path(tmp)
        np.save(local / "sample.npy", host.quantize_input(tflite, np.asarray(sample)[None])[0])
        if samples is not None:
            np.save(local / "samples.npy", host.quantize_input(tflite, np.asarray(samples)))
        with SshSession(device, known_hosts, identity, connect_timeout) as s:
            remote = s.make_temp_dir(remote_python)
            try:
                rmodel, rrunner = f"{remote}/model.tflite", f"{remote}/remote_bench.py"
                s.put(tflite, rmodel)
                s.put(RUNNER, rrunner)
                s.put(local / "sample.npy", f"{remote}/sample.npy")
                argv = [remote_python, rrunner, rmodel, "--threads", str(threads),
                        "--warmup", str(warmup), "--runs", str(runs),
                        "--input", f"{remote}/sample.npy",
                        *(["--delegate", delegate] if delegate else [])]
                stats = _runner_report(s, argv, command_timeout, remote_python)
                outputs = None
                if samples is not None:
                    s.put(local / "samples.npy", f"{remote}/samples.npy")
                    argv = [remote_python, rrunner, rmodel, "--threads", str(threads),
                            "--warmup", "0", "--runs", "0", "--input", f"{remote}/samples.npy",
                            "--outputs", f"{remote}/outputs.npy"]
                    _runner_report(s, argv, command_timeout, remote_python)
                    s.get(f"{remote}/outputs.npy", local / "outputs.npy")
                    outputs = np.load(local / "outputs.npy", allow_pickle=False)  # device data
            finally:
                s.remove_temp_dir(remote)
    return DeviceRun(stats, outputs)


def _runner_report(s: SshSession, argv: list[str], timeout: float, python: str) -> dict[str, Any]:
    res = s.run(argv, timeout=timeout, check=False)
    report = parse_report(res.stdout)
    if res.status == EXIT_MISSING and report.get("missing"):
        raise ToolError(
            f"{python} on {s.device.label}",
            f"cannot import {report['missing']} (Python {report.get('version', '?')})",
            f"Install it on the device: {report['install']} (e.g. {python} -m pip install "
            f"{report.get('package', report['missing'])}), or pass --remote-python PATH to a "
            "Python that has it",
        )
    if res.status == EXIT_NO_DELEGATE and report.get("delegate_missing"):
        raise DelegateMissing(
            f"{report['delegate_missing']} on {s.device.label}",
            f"cannot be loaded by {python} ({report.get('error') or 'no detail'})",
            "Install the Edge TPU runtime on the device (Coral's libedgetpu1-std package), "
            "then retry",
        )
    if res.status != 0 or not report.get("ok"):
        raise ToolError(
            f"LiteRT on {s.device.label}",
            f"the runner exited with {res.status}: {report.get('error') or _tail(res.stderr)}",
            "Reproduce on the device with: " + shlex.join(argv),
        )
    return report


def parse_report(stdout: str) -> dict[str, Any]:
    """The runner's JSON report: the last stdout line that parses as a JSON object."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def probe_device(
    uri: str, known_hosts: Path | None, identity: Path | None, *,
    remote_python: str = "python3", connect_timeout: float = 10.0,
) -> DeviceInfo:
    """What the device is (machine, CPU, cores), asked before anything is built on it."""
    with SshSession(parse_ssh(uri), known_hosts, identity, connect_timeout) as s:
        remote = s.make_temp_dir(remote_python)
        try:
            s.put(RUNNER, f"{remote}/remote_bench.py")
            report = _runner_report(s, [remote_python, f"{remote}/remote_bench.py", "--probe"],
                                    60.0, remote_python)
        finally:
            s.remove_temp_dir(remote)
    return DeviceInfo.from_report(report["device"])


def measure_on_device(
    tflite: Path,
    target: TargetProfile,
    uri: str,
    known_hosts: Path | None,
    identity: Path | None,
    threads: int,
    sample: np.ndarray,
    *,
    remote_python: str = "python3",
    connect_timeout: float = 10.0,
    command_timeout: float = 300.0,
    delegate: str | None = None,
) -> list[Measurement]:
    """Latency (p50, warm-up excluded) and peak RSS of LiteRT running the model on the device,
    for ``target`` (the caller relabels them when the device is not that target's machine)."""
    run = run_on_device(
        tflite, uri, known_hosts, identity, threads, sample,
        remote_python=remote_python, connect_timeout=connect_timeout,
        command_timeout=command_timeout, delegate=delegate,
    )
    st = run.stats
    info = DeviceInfo.from_report(st.get("device") or {"machine": st.get("machine")})
    ran_on = f"{parse_ssh(uri).label}: {info.describe()}; {st.get('runtime')}, Python " \
             f"{st.get('python')}"
    dlg = st.get("delegate")
    if dlg:
        ran_on += (f"; delegate {dlg['library']} (version {dlg.get('version') or 'unknown'}), "
                   f"{dlg['tpu_segments']} of {dlg['ops']} ops are Edge TPU segments")
    return [
        Measurement(
            "latency_ms", float(st["p50_ms"]), "ms", "device", target.name,
            f"p50 of {st['runs']} invokes of {tflite.name} after {st['warmup']} warm-up "
            f"invokes, {st['threads']} thread(s), measured with time.perf_counter on the device; "
            f"p90 {st['p90_ms']:.4f} ms, mean {st['mean_ms']:.4f} ms", ran_on,
        ),
        Measurement(
            "ram_bytes", float(st["peak_rss_bytes"]), "bytes", "device", target.name,
            "peak RSS (getrusage ru_maxrss) of the runner process on the device: Python + "
            f"numpy + LiteRT + the model after {st['warmup'] + st['runs']} invokes; "
            f"{st['rss_before_load_bytes']} bytes before the model was loaded", ran_on,
        ),
    ]
