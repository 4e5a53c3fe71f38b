"""Device URIs: where ``--device`` points.

    ssh://[user@]host[:port]   a Linux device reached over SSH (key authentication only)
    pyocd:TARGET               a Cortex-M board flashed with pyOCD (TARGET is pyOCD's target name)
    esptool:PORT               an ESP32-class board flashed with esptool over a serial port

Every part is checked against a strict character set, so no value from a URI can carry shell
syntax into a remote or local command line (commands are built with ``shlex.join`` as well).
"""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass

from edgeprune.errors import BadInputError

_USER = re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,63}")
# A DNS name or IPv4 address; IPv6 goes in brackets ([::1]).
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?")
_IPV6 = re.compile(r"\[([0-9A-Fa-f:.]{2,45})\]")
_PYOCD_TARGET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SERIAL_PORT = re.compile(r"(?:/dev/[A-Za-z0-9_./-]{1,64}|COM[0-9]{1,3})")
_EXAMPLES = (
    "ssh://pi@raspberrypi.local, ssh://root@192.168.1.20:2222, pyocd:nrf52840, "
    "esptool:/dev/ttyUSB0"
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


Device = SshDevice | ProbeDevice


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
    raise _bad(uri, "unknown device scheme (expected ssh://, pyocd: or esptool:)")


def parse_ssh(uri: str) -> SshDevice:
    device = parse_device(uri)
    if not isinstance(device, SshDevice):
        raise _bad(uri, "this command needs an ssh:// device")
    return device
