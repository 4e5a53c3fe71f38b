"""``edgeprune flash``: choose how to put a build's artifacts on a device.

Linux devices (``ssh://``) get a verified, atomically switched release (``linux.py``);
Cortex-M targets get a flashable TFLite-Micro bundle, handed to pyOCD or esptool for
``pyocd:`` / ``esptool:`` devices (``mcu.py``). ``dry_run`` returns the exact commands.
"""

from __future__ import annotations

from pathlib import Path

from edgeprune.deploy.linux import flash_linux
from edgeprune.deploy.mcu import flash_mcu
from edgeprune.deploy.result import FlashResult
from edgeprune.device import SerialDevice, SshDevice, parse_device
from edgeprune.errors import BadInputError
from edgeprune.targets import TargetProfile


def flash(
    target: TargetProfile, artifacts: Path, device_uri: str | None, *, dry_run: bool = False,
    rollback: bool = False, remote_dir: str | None = None, known_hosts: Path | None = None,
    identity: Path | None = None, connect_timeout: float = 10.0,
) -> FlashResult:
    """``edgeprune flash``: dispatch on the target's kind and the device URI."""
    artifacts = Path(artifacts)
    if not artifacts.is_dir():
        raise BadInputError(f"--artifacts {artifacts}", "is not a folder",
                            "Give the folder edgeprune build wrote for this target")
    device = parse_device(device_uri) if device_uri else None
    if target.hardware.kind == "cortex-m":
        if isinstance(device, SshDevice):
            raise BadInputError(f"--device {device_uri}", f"{target.name} is a microcontroller",
                                "Use --device pyocd:TARGET or esptool:PORT, or none")
        if isinstance(device, SerialDevice):
            raise BadInputError(f"--device {device_uri}", "a serial: device is read for "
                                "measurements (edgeprune check --device), it is not flashed",
                                "Flash with --device pyocd:TARGET or esptool:PORT, or none")
        if rollback:
            raise BadInputError("--rollback", "microcontrollers keep no previous release",
                                "Flash the older artifacts folder instead")
        return flash_mcu(target, artifacts, device, dry_run=dry_run)
    if not isinstance(device, SshDevice):
        raise BadInputError(
            f"--device {device_uri or '(none)'}",
            f"{target.name} is a Linux device, flashed over SSH",
            "Pass --device ssh://user@host[:port]",
        )
    return flash_linux(artifacts, device, remote_dir=remote_dir, dry_run=dry_run,
                       rollback=rollback, known_hosts=known_hosts, identity=identity,
                       connect_timeout=connect_timeout)
