"""A microcontroller over a serial port: read the edgeprune firmware's report (protocol EPR1).

The firmware (``main.cc`` and ``edgeprune_protocol.h`` of ``deploy/mcu.py``'s bundle) repeats a
report forever, so the host needs no reset and may open the port at any time::

    EPR1 boot target=cortex-m4 arena_size=22016                 once after each reset
    EPR1 run n=1 warmup=3 runs=20 counter=dwt clock_hz=64000000 model_bytes=N model_crc=XXXXXXXX
    EPR1 invoke i=0 cycles=123456                                i = 0 … runs-1
    EPR1 arena used=18432 size=22016
    EPR1 done n=1 runs=20

each line ending in `` *XXXXXXXX``, the CRC-32 of what precedes it; ``EPR1 error msg=…`` is a
fatal firmware error. docs/devices.md has the exact grammar.

How failures are handled: lines without the ``EPR1`` tag are the board's own output, ignored
and counted; a tagged line with a wrong checksum is refused and counted (many: wrong baud
rate). Figures come only from one complete report (its ``run`` line, every ``invoke``, ``arena``
and ``done``), so a lost line, or a reset in the middle (a ``boot`` line) discards that report
and the next one is waited for; a second reset in the middle of a report is an error. Nothing
received for ``silence`` seconds, or no complete report within ``timeout``, is a ToolError.
"""

from __future__ import annotations

import logging
import re
import statistics
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import serial

from edgeprune.device import SerialDevice, parse_device, parse_measured
from edgeprune.errors import BadInputError, ToolError
from edgeprune.measurement import Measurement
from edgeprune.targets import TargetProfile

log = logging.getLogger(__name__)

TAG = b"EPR1 "
TIMEOUT_S = 120.0  # for one complete report, after joining the board half-way through one
SILENCE_S = 30.0  # a report is silent while it runs its invokes: 23 invokes of up to ~1 s
MAX_LINE = 512  # bytes without a newline: noise (e.g. a wrong baud rate), dropped
MAX_RESETS = 1  # resets in the middle of a report that are tolerated
_PAYLOAD = re.compile(r"EPR1 ([a-z_]+)((?: [A-Za-z0-9_]+=[\x21-\x29\x2b-\x7e]+)*)")
_CRC = re.compile(rb"[0-9A-F]{8}")
# Fields each kind must carry, all whole numbers (hex for model_crc) except those named.
_REQUIRED = {
    "boot": ("target",),
    "run": ("n", "warmup", "runs", "counter", "clock_hz", "model_bytes", "model_crc"),
    "invoke": ("i", "cycles"),
    "arena": ("used", "size"),
    "done": ("n", "runs"),
    "error": ("msg",),
}
_TEXT_FIELDS = {"target", "counter", "msg", "model_crc"}


class ChecksumError(ValueError):
    """A line with the protocol tag whose checksum (or form) is wrong."""


@dataclass(frozen=True)
class Message:
    kind: str
    fields: dict[str, str]

    def number(self, key: str) -> int:
        return int(self.fields[key])


def crc32(data: bytes) -> int:
    """The protocol's checksum: CRC-32 as zlib computes it (IEEE 802.3, reflected)."""
    return zlib.crc32(data) & 0xFFFFFFFF


def parse_line(raw: bytes) -> Message | None:
    """One line (without its newline): None when it is not a protocol line (no ``EPR1 `` tag);
    ChecksumError when tagged but its checksum or form is wrong."""
    line = raw.rstrip(b"\r")
    if not line.startswith(TAG):
        return None
    payload, sep, crc = line.rpartition(b" *")
    if not sep or not _CRC.fullmatch(crc) or crc32(payload) != int(crc, 16):
        raise ChecksumError("checksum")
    m = _PAYLOAD.fullmatch(payload.decode("ascii", errors="replace"))
    if not m or m.group(1) not in _REQUIRED:
        raise ChecksumError("form")
    fields = dict(pair.split("=", 1) for pair in m.group(2).split())
    if any(key not in fields for key in _REQUIRED[m.group(1)]) or not all(
            v.isdigit() for k, v in fields.items() if k not in _TEXT_FIELDS):
        raise ChecksumError("form")
    return Message(m.group(1), fields)


@dataclass(frozen=True)
class Report:
    """One complete report of the firmware: its ``run`` line, cycle counts and arena."""

    run: Message
    cycles: list[int]
    arena_used: int
    arena_size: int


@dataclass
class _Tally:
    """What the port sent, for the error messages."""

    foreign: int = 0  # lines without the protocol tag: the board's own output, or noise
    refused: int = 0  # tagged, wrong checksum or form
    valid: int = 0
    incomplete: int = 0  # reports discarded for a missing line
    resets: int = 0  # boot lines in the middle of a report

    def summary(self) -> str:
        return (f"{self.valid} valid protocol line(s), {self.refused} refused (wrong checksum), "
                f"{self.foreign} without the EPR1 tag, {self.incomplete} incomplete report(s)")


@dataclass
class _Partial:
    run: Message
    cycles: dict[int, int] = field(default_factory=dict)
    arena: Message | None = None

    def finish(self, done: Message) -> Report | None:
        # Without a counter (counter=none) the firmware sends no invoke lines and done runs=0.
        runs = self.run.number("runs") if self.run.fields["counter"] != "none" else 0
        if (done.number("n") != self.run.number("n") or done.number("runs") != runs
                or self.arena is None or sorted(self.cycles) != list(range(runs))):
            return None
        return Report(self.run, [self.cycles[i] for i in range(runs)],
                      self.arena.number("used"), self.arena.number("size"))


class SerialReader:
    """Reads one complete report from an open port (anything with pyserial's ``read`` and
    ``in_waiting``); ``label`` names the device in errors."""

    def __init__(self, port: serial.Serial, device: SerialDevice, *,
                 timeout: float = TIMEOUT_S, silence: float = SILENCE_S) -> None:
        self.port, self.device = port, device
        self.timeout, self.silence = timeout, silence
        self.tally = _Tally()
        self.boot: Message | None = None

    @property
    def what(self) -> str:
        return f"--device serial:{self.device.label}"

    def _lines(self) -> Iterator[bytes]:
        start = last = time.monotonic()
        buffer, received = b"", False
        while True:
            now = time.monotonic()
            if now - last >= self.silence:
                raise self._silent(now - start, received)
            if now - start >= self.timeout:
                raise self._no_report()
            chunk = self.port.read(max(1, self.port.in_waiting))
            if not chunk:
                continue
            last, received = time.monotonic(), True
            *lines, buffer = (buffer + chunk).split(b"\n")
            yield from lines
            if len(buffer) > MAX_LINE:
                yield buffer
                buffer = b""

    def read_report(self) -> Report:
        current: _Partial | None = None
        for raw in self._lines():
            try:
                msg = parse_line(raw)
            except ChecksumError:
                self.tally.refused += 1
                continue
            if msg is None:
                self.tally.foreign += raw.strip() != b""
                continue
            self.tally.valid += 1
            if msg.kind == "error":
                raise ToolError(self.what, f"the firmware reports: {msg.fields['msg']}",
                                "Fix the firmware (e.g. a larger EDGEPRUNE_ARENA_BYTES for an "
                                "arena too small), rebuild and flash it")
            if msg.kind == "boot":
                self.boot = msg
                if current is not None:  # a reset mid-report: never mix its lines with others
                    current = None
                    self.tally.resets += 1
                    log.warning("%s: the board reset in the middle of a report; waiting for "
                                "the next one", self.what)
                    if self.tally.resets > MAX_RESETS:
                        raise ToolError(
                            self.what, f"the board reset {self.tally.resets} times in the "
                            "middle of a report", "Check its power supply (USB current), a "
                            "watchdog, and a hard fault (stack or arena overflow)")
            elif msg.kind == "run":
                self.tally.incomplete += current is not None
                current = _Partial(msg)
            elif current is None:
                continue  # joined half-way through a report: wait for the next `run`
            elif msg.kind == "invoke":
                current.cycles[msg.number("i")] = msg.number("cycles")
            elif msg.kind == "arena":
                current.arena = msg
            elif msg.kind == "done":
                report = current.finish(msg)
                if report is not None:
                    return report
                self.tally.incomplete += 1
                current = None
        raise AssertionError("unreachable: _lines ends only by raising")

    def _diagnosis(self) -> str:
        t, baud = self.tally, self.device.baud
        if not t.valid and t.refused:
            return (f"{t.refused} line(s) failed the checksum and none passed it: likely a wrong "
                    f"baud rate ({baud})")
        if not t.valid:
            return (f"{t.foreign} line(s) received, none from the edgeprune firmware: a wrong "
                    f"baud rate ({baud}), or another firmware")
        return f"no complete report ({t.summary()})"

    def _silent(self, waited: float, received: bool) -> ToolError:
        d = self.device
        if received:
            return ToolError(self.what, f"{self._diagnosis()}, then nothing for "
                             f"{self.silence:g} s", "Check that the board did not hang or reset "
                             "into another firmware; a model slower than ~1 s per invoke needs a "
                             "smaller EDGEPRUNE_RUNS")
        return ToolError(
            self.what, f"nothing received on {d.port} at {d.baud} baud for {self.silence:g} s",
            f"Check that the board is powered and flashed with the edgeprune firmware (edgeprune "
            f"flash), that {d.port} is its serial port, and that its UART runs at {d.baud} baud "
            f"(serial:{d.port}@BAUD)")

    def _no_report(self) -> ToolError:
        return ToolError(self.what, f"{self._diagnosis()} within {self.timeout:g} s",
                         "Give the baud rate the firmware's UART uses (serial:PORT@BAUD) and "
                         "flash the edgeprune firmware (edgeprune flash --target T ...)")


def check_measured_device(uri: str) -> None:
    """Before any slow work: ``--device`` of build/check is ssh:// or serial:, and a serial
    /dev port exists (BadInputError, exit 2)."""
    device = parse_measured(uri)
    if isinstance(device, SerialDevice) and device.port.startswith("/dev/") and not Path(
            device.port).exists():
        raise BadInputError(f"--device serial:{device.label}", f"{device.port} does not exist",
                            _PORT_FIX)


_PORT_FIX = ("Plug the board in and give its port (ls /dev/ttyACM* /dev/ttyUSB*; on Windows the "
             "COM port in Device Manager); on Linux, join the dialout group to open it")


def open_port(device: SerialDevice) -> serial.Serial:
    """The port opened at the device's baud rate; BadInputError (exit 2) naming the OS error."""
    try:
        # A short read timeout: the reader checks its own deadlines between reads.
        return serial.Serial(device.port, device.baud, timeout=0.1)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise BadInputError(f"--device serial:{device.label}",
                            f"cannot open {device.port} ({exc})", _PORT_FIX) from exc


def measure_over_serial(tflite: Path, target: TargetProfile, uri: str, *,
                        timeout: float = TIMEOUT_S, silence: float = SILENCE_S
                        ) -> list[Measurement]:
    """Latency (median cycles at the profile's clock) and arena bytes of ``tflite`` running on
    the board at ``uri`` (``serial:PORT[@BAUD]``), both method ``device``."""
    device = parse_device(uri)
    if not isinstance(device, SerialDevice):
        raise BadInputError(f"--device {uri}", "is not a serial: device", "Use serial:PORT")
    port = open_port(device)
    try:
        reader = SerialReader(port, device, timeout=timeout, silence=silence)
        report = reader.read_report()
    finally:
        port.close()
    _check_model(report.run, tflite.read_bytes(), tflite, reader.what)
    return figures(report, target, device)


def _check_model(run: Message, blob: bytes, path: Path, what: str) -> None:
    board = (run.number("model_bytes"), int(run.fields["model_crc"], 16))
    if board != (len(blob), crc32(blob)):
        raise ToolError(
            what, f"the board runs another model ({board[0]:,} bytes, CRC-32 {board[1]:08X}) "
                  f"than {path} ({len(blob):,} bytes, CRC-32 {crc32(blob):08X})",
            f"Flash the firmware built from {path} (edgeprune flash), then measure it with "
            f"`edgeprune check {path} --device serial:...`")


def figures(report: Report, target: TargetProfile, device: SerialDevice) -> list[Measurement]:
    """The report as ``device`` measurements for ``target``; no latency without a counter."""
    run, n = report.run, len(report.cycles)
    where = f"over serial {device.label}"
    ran_on = f"the board on serial {device.label}: edgeprune's TFLite-Micro firmware"
    ms = []
    if not n:
        log.warning("serial:%s: the board has no cycle counter (counter=none, e.g. Cortex-M0/M0+):"
                    " no device latency; define EDGEPRUNE_READ_CYCLES() in main.cc for one",
                    device.label)
    else:
        board_hz = run.number("clock_hz")
        clock_mhz, clock_from = target.hardware.clock_mhz, "the profile's [hardware] clock_mhz"
        if not clock_mhz:
            if not board_hz:
                raise BadInputError(f"target {target.name}", "gives no [hardware] clock_mhz and "
                                    "the board reports no clock (SystemCoreClock)",
                                    "Set clock_mhz in the target profile")
            clock_mhz, clock_from = board_hz / 1e6, "the board's SystemCoreClock"
        elif board_hz and abs(board_hz / 1e6 - clock_mhz) > 0.01 * clock_mhz:
            clock_from += f"; the board reports {board_hz / 1e6:g} MHz"
        median = statistics.median(report.cycles)
        counter = "DWT" if run.fields["counter"] == "dwt" else "EDGEPRUNE_READ_CYCLES()"
        ms.append(Measurement(
            "latency_ms", median / (clock_mhz * 1e3), "ms", "device", target.name,
            f"median of {n} {counter} cycle counts ({median:,.0f} cycles; min "
            f"{min(report.cycles):,}, max {max(report.cycles):,}) at {clock_mhz:g} MHz "
            f"({clock_from}), after {run.number('warmup')} warm-up invokes; {where}", ran_on))
    ms.append(Measurement(
        "ram_bytes", report.arena_used, "bytes", "device", target.name,
        f"TFLite-Micro arena_used_bytes() after AllocateTensors and the invokes, of a "
        f"{report.arena_size:,} B arena; the app's stack and statics not included; {where}",
        ran_on))
    return ms
