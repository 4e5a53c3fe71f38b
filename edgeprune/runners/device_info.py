"""What a Linux device says it is, and whether that is the machine a target profile describes.

A device figure stands for a target only when the device is that target's kind of machine:
the same architecture (`uname -m`) and, when both sides name it, the same CPU core. Anything
else (an x86 laptop answering for a Raspberry Pi, a 32-bit OS on a 64-bit profile) is kept for
reference, never used by a check.
"""

from __future__ import annotations

import functools
import importlib.metadata
from dataclasses import dataclass
from typing import Any

from edgeprune.targets import TargetProfile

# Arm's "CPU part" numbers as /proc/cpuinfo shows them (implementer 0x41), the names Linux
# gives them in arch/arm64/include/asm/cputype.h and arch/arm/include/asm/cputype.h.
ARM_PARTS = {
    0xB76: "arm1176", 0xC07: "cortex-a7", 0xC0F: "cortex-a15", 0xD03: "cortex-a53",
    0xD04: "cortex-a35", 0xD05: "cortex-a55", 0xD07: "cortex-a57", 0xD08: "cortex-a72",
    0xD09: "cortex-a73", 0xD0A: "cortex-a75", 0xD0B: "cortex-a76", 0xD0C: "neoverse-n1",
    0xD0D: "cortex-a77", 0xD41: "cortex-a78", 0xD44: "cortex-x1", 0xD46: "cortex-a510",
    0xD47: "cortex-a710", 0xD48: "cortex-x2", 0xD4D: "cortex-a715", 0xD4E: "cortex-x3",
}  # fmt: skip
ARM_IMPLEMENTER = 0x41


@dataclass(frozen=True)
class DeviceInfo:
    """The runner's ``device`` section: machine, CPU cores and their names, board model."""

    machine: str  # uname -m
    cores: int
    cpus: tuple[str, ...] = ()  # Arm core names identified from /proc/cpuinfo, each once
    model_name: str = ""  # /proc/cpuinfo "model name" (x86) or the first unidentified part
    board: str = ""  # /proc/cpuinfo "Model" (e.g. "Raspberry Pi 4 Model B Rev 1.4")

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> DeviceInfo:
        cpus: list[str] = []
        unknown = ""
        for implementer, part in report.get("cpu_parts", []):
            name = ARM_PARTS.get(_hex(part)) if _hex(implementer) == ARM_IMPLEMENTER else None
            if name is None:
                unknown = unknown or f"implementer {implementer} part {part}"
            elif name not in cpus:
                cpus.append(name)
        return cls(machine=str(report.get("machine", "")), cores=int(report.get("cores") or 0),
                   cpus=tuple(cpus), model_name=str(report.get("model_name") or unknown),
                   board=str(report.get("board", "")))

    def describe(self) -> str:
        cpu = " + ".join(self.cpus) or self.model_name or "CPU not identified"
        board = f"{self.board}: " if self.board else ""
        return f"{board}{self.machine}, {cpu}, {self.cores} core(s)"


def _hex(text: Any) -> int | None:
    try:
        return int(str(text), 0)
    except ValueError:
        return None


def mismatch(info: DeviceInfo, target: TargetProfile) -> str:
    """Why the device is not the machine ``target`` describes; "" when it is."""
    hw = target.hardware
    wanted = hw.machine
    if not wanted:
        return (f"{target.name} names no Linux architecture ([hardware] cpu = {hw.cpu!r}); "
                "set [hardware] arch in a profile that describes the device")
    if info.machine != wanted:
        return f"the device is {info.describe()}; {target.name} describes {wanted} ({hw.cpu})"
    if hw.cpu.startswith("cortex-") and info.cpus and hw.cpu not in info.cpus:
        return (f"the device's CPU is {' + '.join(info.cpus)}; {target.name} describes "
                f"{hw.cpu}")
    return ""


@functools.cache
def this_machine(runtime: str = "ai-edge-litert") -> str:
    """``ran_on`` for figures taken here: this machine as a device would describe itself."""
    from edgeprune.runners import remote_bench

    try:
        version = importlib.metadata.version(runtime)
    except importlib.metadata.PackageNotFoundError:
        version = "not installed"
    return f"this machine: {DeviceInfo.from_report(remote_bench.device()).describe()}; " \
           f"{runtime} {version}"
