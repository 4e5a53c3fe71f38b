"""Device URIs: where ``--device`` points.

    ssh://[user@]host[:port]   a Linux device reached over SSH (key authentication only)
    pyocd:TARGET               a Cortex-M board flashed with pyOCD (TARGET is pyOCD's target name)
    esptool:PORT               an ESP32-class board flashed with esptool over a serial port
    serial:PORT[@BAUD]         a microcontroller running the edgeprune firmware, which reports its
                               figures over this serial port (BAUD default 115200)

Every part is checked against a strict character set, so no value from a URI can carry shell
syntax into a remote or local command line (commands are built with ``shlex.join`` as well).
"""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgeprune.errors import BadInputError

if TYPE_CHECKING:  # device.py and targets.py are independent core modules
    from edgeprune.targets import TargetProfile

_USER = re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,63}")
# A DNS name or IPv4 address; IPv6 goes in brackets ([::1]).
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?")
_IPV6 = re.compile(r"\[([0-9A-Fa-f:.]{2,45})\]")
_PYOCD_TARGET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SERIAL_PORT = re.compile(r"(?:/dev/[A-Za-z0-9_./-]{1,64}|COM[0-9]{1,3})")
# The standard rates of termios and Windows' DCB: a typo like 11520 fails here, not as noise.
BAUD_RATES = (300, 600, 1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200, 230400,
              460800, 500000, 576000, 921600, 1000000, 1152000, 1500000, 2000000, 2500000,
              3000000, 3500000, 4000000)
DEFAULT_BAUD = 115200
# Hardware kinds reached over a serial port (a microcontroller) rather than over SSH.
MCU_KINDS = ("cortex-m", "ethos-u")
_EXAMPLES = (
    "ssh://pi@raspberrypi.local, ssh://root@192.168.1.20:2222, pyocd:nrf52840, "
    "esptool:/dev/ttyUSB0, serial:/dev/ttyACM0, serial:/dev/ttyACM0@115200, serial:COM3@9600"
)


@dataclass(frozen=True)
class SshDevice:
    user: str
    host: str
    port: int = 22

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"


@dataclass(frozen=True)
class ProbeDevice:
    """A microcontroller reached through a local flashing tool."""

    tool: str  # "pyocd" | "esptool"
    address: str  # pyOCD target name or serial port

    @property
    def label(self) -> str:
        return f"{self.tool}:{self.address}"


@dataclass(frozen=True)
class SerialDevice:
    """A microcontroller running the edgeprune firmware, which reports over this serial port."""

    port: str  # /dev/ttyACM0, COM3
    baud: int = DEFAULT_BAUD

    @property
    def label(self) -> str:
        return f"{self.port}@{self.baud}"


Device = SshDevice | ProbeDevice | SerialDevice


def _bad(uri: str, problem: str) -> BadInputError:
    return BadInputError(f"--device {uri!r}", problem, f"Use a URI like {_EXAMPLES}")


def _parse_ssh(uri: str) -> SshDevice:
    rest = uri[len("ssh://"):]
    if rest.endswith("/"):
        rest = rest[:-1]
    if "/" in rest or "?" in rest or "#" in rest:
        raise _bad(uri, "an ssh URI has no path, query or fragment")
    user, at, hostport = rest.rpartition("@")
    if not at:
        user = getpass.getuser()
    if not _USER.fullmatch(user):
        raise _bad(uri, f"user {user!r} is not a valid user name (letters, digits, . _ -)")
    port_text = ""
    v6 = re.match(r"\[[^\]]*\]", hostport)
    if v6:
        host_part, after = v6.group(0), hostport[v6.end():]
        m = _IPV6.fullmatch(host_part)
        if not m:
            raise _bad(uri, f"{host_part!r} is not an IPv6 address")
        host = m.group(1)
        if after:
            if not after.startswith(":"):
                raise _bad(uri, f"unexpected {after!r} after the host")
            port_text = after[1:]
    else:
        host, colon, port_text = hostport.partition(":")
        if colon and not port_text:
            raise _bad(uri, "the port after ':' is empty")
        if not _HOSTNAME.fullmatch(host) or ".." in host:
            raise _bad(uri, f"host {host!r} is not a host name or IP address")
    port = 22
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise _bad(uri, f"port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    return SshDevice(user=user, host=host, port=port)


def parse_device(uri: str) -> Device:
    """Parse ``--device``; raises BadInputError (exit 2) naming the problem."""
    if uri.startswith("ssh://"):
        return _parse_ssh(uri)
    scheme, colon, address = uri.partition(":")
    if colon and scheme == "pyocd":
        if not _PYOCD_TARGET.fullmatch(address):
            raise _bad(uri, f"{address!r} is not a pyOCD target name (e.g. nrf52840, stm32h743zi)")
        return ProbeDevice("pyocd", address)
    if colon and scheme == "esptool":
        if not _SERIAL_PORT.fullmatch(address) or ".." in address:
            raise _bad(uri, f"{address!r} is not a serial port (e.g. /dev/ttyUSB0, COM3)")
        return ProbeDevice("esptool", address)
    if colon and scheme == "serial":
        return _parse_serial(uri, address)
    raise _bad(uri, "unknown device scheme (expected ssh://, pyocd:, esptool: or serial:)")


def _parse_serial(uri: str, address: str) -> SerialDevice:
    port, at, baud_text = address.partition("@")
    if not _SERIAL_PORT.fullmatch(port) or ".." in port:
        raise _bad(uri, f"{port!r} is not a serial port (e.g. /dev/ttyACM0, /dev/ttyUSB0, COM3)")
    if not at:
        return SerialDevice(port)
    if not baud_text.isdigit() or int(baud_text) not in BAUD_RATES:
        raise _bad(uri, f"baud rate {baud_text!r} is not a standard rate "
                        f"({', '.join(map(str, BAUD_RATES))})")
    return SerialDevice(port, int(baud_text))


def parse_ssh(uri: str) -> SshDevice:
    device = parse_device(uri)
    if not isinstance(device, SshDevice):
        raise _bad(uri, "this command needs an ssh:// device")
    return device


def parse_measured(uri: str) -> SshDevice | SerialDevice:
    """``--device`` of ``build``/``check``: a device edgeprune can take figures from."""
    device = parse_device(uri)
    if isinstance(device, ProbeDevice):
        raise BadInputError(
            f"--device {uri!r}", f"{device.tool} flashes a board, it takes no measurements",
            "Flash with `edgeprune flash --device " + uri + "`, then measure over the board's "
            "serial port: --device serial:/dev/ttyACM0 (see docs/devices.md)")
    return device


def reaches(device: SshDevice | SerialDevice, target: TargetProfile) -> bool:
    """A serial port reaches a microcontroller; SSH reaches everything else."""
    return isinstance(device, SerialDevice) == (target.hardware.kind in MCU_KINDS)


def check_device_for_target(uri: str, target: TargetProfile) -> None:
    """Refuse (exit 2) a ``--device`` whose scheme cannot reach ``target``'s kind of hardware."""
    device = parse_measured(uri)
    if reaches(device, target):
        return
    if isinstance(device, SerialDevice):
        raise BadInputError(
            f"--device {uri}", f"a serial port reaches a microcontroller; {target.name} is a "
            f"{target.hardware.kind} target measured over ssh://",
            "Use --device ssh://user@host[:port], or a cortex-m/ethos-u target")
    raise BadInputError(
        f"--device {uri}", f"an MCU is not reached over SSH: {target.name} is a "
        f"{target.hardware.kind} target",
        "Use serial:PORT after flashing (edgeprune flash, then --device serial:/dev/ttyACM0)")


def check_device_for_targets(uri: str | None, targets: list[TargetProfile]) -> None:
    """Several targets and one device: measure those it reaches (the others build without it);
    refuse only a device that reaches none of them."""
    if uri is None or not targets:
        return
    device = parse_measured(uri)
    if len(targets) == 1:
        check_device_for_target(uri, targets[0])
    elif not any(reaches(device, t) for t in targets):
        names = ", ".join(t.name for t in targets)
        raise BadInputError(
            f"--device {uri}", f"reaches none of the targets ({names}): a serial port reaches "
            "a cortex-m/ethos-u target, ssh:// any other", "Give targets the device can measure")
