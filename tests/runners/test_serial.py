"""`--device serial:PORT`: the EPR1 line protocol, the host reader, and the device-kind rules.

There is no microcontroller here. The board is a stand-in: a pseudo-terminal (``os.openpty``)
whose master end a thread writes protocol lines to, as the firmware would over its UART; the
reader opens the slave end by name with pyserial, as it opens /dev/ttyACM0. The lines are either
written by the test (the firmware's report, line for line) or, in test_firmware_protocol_*, the
output of the generated C code compiled with the host compiler.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import threading
import time
import tty
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edgeprune.cli import main
from edgeprune.device import SerialDevice, parse_device
from edgeprune.errors import BadInputError, ToolError
from edgeprune.runners.serial_device import (
    ChecksumError,
    Report,
    SerialReader,
    crc32,
    measure_over_serial,
    open_port,
    parse_line,
)
from edgeprune.targets import load_target

MODEL = b"stand-in model bytes: the firmware reports their size and CRC-32"
M4 = load_target("cortex-m4")


def line(kind: str, **fields: object) -> bytes:
    payload = " ".join(["EPR1", kind, *(f"{k}={v}" for k, v in fields.items())]).encode()
    return payload + b" *%08X\r\n" % (zlib.crc32(payload) & 0xFFFFFFFF)


def report(cycles: list[int], n: int = 1, used: int = 18_432, model: bytes = MODEL,
           counter: str = "dwt", clock_hz: int = 64_000_000) -> list[bytes]:
    """One report as the generated main.cc sends it."""
    timed = counter != "none"
    return [
        line("run", n=n, warmup=3, runs=len(cycles), counter=counter, clock_hz=clock_hz,
             model_bytes=len(model), model_crc=f"{zlib.crc32(model):08X}"),
        *(line("invoke", i=i, cycles=c) for i, c in enumerate(cycles) if timed),
        line("arena", used=used, size=22_016),
        line("done", n=n, runs=len(cycles) if timed else 0),
    ]


BOOT = line("boot", target="cortex-m4", arena_size=22_016)


class StandInBoard:
    """A pseudo-terminal whose master end replays lines: a stand-in for a board's UART."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no CR/LF translation: a plain byte pipe, like a UART
        os.set_blocking(self.master, False)
        self.port = os.ttyname(self.slave)
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def play(self, lines: list[bytes], *, repeat: bool = False, gap: float = 0.0) -> None:
        def run() -> None:
            while not self.stop.is_set():
                for chunk in lines:
                    self._write(chunk)
                    self.stop.wait(gap)
                if not repeat:
                    return
                self.stop.wait(0.05)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def _write(self, data: bytes) -> None:
        while data and not self.stop.is_set():
            try:
                data = data[os.write(self.master, data):]
            except BlockingIOError:  # nobody reads yet: the pty's buffer is full
                self.stop.wait(0.01)

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(5)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def board():
    b = StandInBoard()
    yield b
    b.close()


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "model.tflite"
    path.write_bytes(MODEL)
    return path


@dataclass(frozen=True)
class Read:
    result: Report
    tally: Any


def read(board: StandInBoard, lines: list[bytes], timeout: float = 10.0,
         silence: float = 5.0) -> Read:
    """Open the port first (pyserial drops what arrived before), then let the board talk."""
    device = SerialDevice(board.port)
    port = open_port(device)
    reader = SerialReader(port, device, timeout=timeout, silence=silence)
    board.play(lines)
    try:
        return Read(reader.read_report(), reader.tally)
    finally:
        port.close()


# -- protocol ----------------------------------------------------------------------------------
def test_checksum_is_zlib_crc32():
    assert crc32(b"123456789") == 0xCBF43926  # the CRC-32 check value docs/devices.md gives


def test_parse_line_accepts_refuses_and_ignores():
    msg = parse_line(line("invoke", i=3, cycles=1234).rstrip(b"\n"))
    assert (msg.kind, msg.number("i"), msg.number("cycles")) == ("invoke", 3, 1234)
    assert parse_line(b"[app] sensor ready") is None  # the board's own log line
    good = line("invoke", i=3, cycles=1234)
    with pytest.raises(ChecksumError):
        parse_line(good.replace(b"1234", b"1235").rstrip(b"\r\n"))  # one digit changed
    with pytest.raises(ChecksumError):
        parse_line(line("invoke", i=3).rstrip(b"\r\n"))  # checksum right, cycles missing


def test_the_example_lines_in_the_docs_pass_the_checksum():
    docs = (Path(__file__).parents[2] / "docs" / "devices.md").read_text()
    examples = re.findall(r"^    (EPR1 .*? \*[0-9A-F]{8})", docs, re.MULTILINE)
    assert [parse_line(e.encode()).kind for e in examples] == [
        "boot", "run", "invoke", "arena", "done", "error"]


# -- the reader on a stand-in board ------------------------------------------------------------
def test_good_run_gives_median_cycles_at_the_profile_clock_and_arena(board, model_file):
    cycles = [640_000, 652_800, 633_600, 700_000, 644_480]
    board.play([BOOT, *report(cycles)], repeat=True)
    ms = {m.quantity: m for m in measure_over_serial(model_file, M4, f"serial:{board.port}",
                                                     timeout=10, silence=5)}
    latency, ram = ms["latency_ms"], ms["ram_bytes"]
    assert latency.value == pytest.approx(statistics.median(cycles) / (64 * 1e3))
    assert (latency.method, latency.where, latency.unit) == ("device", "cortex-m4", "ms")
    assert "median of 5 DWT cycle counts" in latency.detail and "64 MHz" in latency.detail
    assert f"serial {board.port}@115200" in latency.detail
    assert (ram.value, ram.method, ram.unit) == (18_432, "device", "bytes")
    assert "arena_used_bytes()" in ram.detail


def test_garbage_and_a_half_report_before_are_ignored(board):
    first, second = [1000, 1100, 1200], [2000, 2100, 2200]
    noise = [b"\x00\xff\xfegarbage\r\n", b"I (123) app: hello\r\n", b"\r\n"]
    half = report(first)[2:]  # joined in the middle of report 1: its run line is missed
    r = read(board, [*half, *noise, *report(second, n=2)[:2], *noise, *report(second, n=2)[2:]])
    assert r.result.cycles == second
    assert r.tally.foreign == 4  # the blank lines are not counted


def test_a_line_with_a_wrong_checksum_is_refused_and_its_report_discarded(board):
    bad = report([1000, 1100, 1200])
    bad[2] = bad[2].replace(b"cycles=1100", b"cycles=1101")  # corrupted in transit
    r = read(board, [*bad, *report([3000, 3100, 3200], n=2)])
    assert r.result.cycles == [3000, 3100, 3200]
    assert (r.tally.refused, r.tally.incomplete) == (1, 1)


def test_all_lines_failing_the_checksum_says_wrong_baud_rate(board):
    device = SerialDevice(board.port)
    port = open_port(device)
    # Tagged lines that keep arriving (so the port is never silent), every checksum wrong.
    board.play([chunk.replace(b"EPR1 ", b"EPR1  ") for chunk in report([1000, 1100])],
               repeat=True)
    start = time.monotonic()
    with pytest.raises(ToolError, match=r"line\(s\) failed the checksum and none passed it: "
                                        r"likely a wrong baud rate \(115200\) within 1.5 s"):
        SerialReader(port, device, timeout=1.5, silence=1.0).read_report()
    assert time.monotonic() - start < 5
    port.close()


def test_a_silent_port_is_a_tool_error_naming_port_and_baud(board):
    start = time.monotonic()
    with pytest.raises(ToolError) as err:
        read(board, [], timeout=10, silence=0.5)
    assert time.monotonic() - start < 5
    assert err.value.exit_code == 3
    assert f"nothing received on {board.port} at 115200 baud for 0.5 s" in str(err.value)
    assert "flashed with the edgeprune firmware" in str(err.value)


def test_silence_after_some_output_says_what_arrived(board):
    with pytest.raises(ToolError, match=r"1 valid protocol line.*then nothing for 0.5 s"):
        read(board, [BOOT, b"booting...\r\n"], timeout=10, silence=0.5)


def test_a_reset_mid_report_starts_over_once(board):
    cut = report([1000, 1100, 1200])[:3]  # run, invoke 0, invoke 1, then the board resets
    r = read(board, [BOOT, *cut, BOOT, *report([5000, 5100, 5200])])
    assert r.result.cycles == [5000, 5100, 5200]  # nothing of the cut report mixed in
    assert r.tally.resets == 1


def test_a_second_reset_mid_report_is_an_error(board):
    cut = report([1000, 1100, 1200])[:3]
    with pytest.raises(ToolError, match="reset 2 times in the middle of a report"):
        read(board, [BOOT, *cut, BOOT, *cut, BOOT, *report([5000, 5100, 5200])])


def test_a_firmware_error_line_is_reported(board):
    with pytest.raises(ToolError, match=r"the firmware reports: AllocateTensors-failed"):
        read(board, [BOOT, line("error", msg="AllocateTensors-failed(arena-too-small?)")])


def test_no_cycle_counter_gives_the_arena_only(board, model_file):
    board.play(report([0] * 5, counter="none"), repeat=True)
    ms = measure_over_serial(model_file, M4, f"serial:{board.port}", timeout=10, silence=5)
    assert [m.quantity for m in ms] == ["ram_bytes"]


def test_another_model_on_the_board_is_refused(board, model_file):
    board.play(report([1000, 1100], model=MODEL + b"!"), repeat=True)
    with pytest.raises(ToolError, match="the board runs another model"):
        measure_over_serial(model_file, M4, f"serial:{board.port}", timeout=10, silence=5)


def test_a_port_that_does_not_exist_is_bad_input(model_file):
    with pytest.raises(BadInputError) as err:
        measure_over_serial(model_file, M4, "serial:/dev/ttyEDGEPRUNE9@9600")
    assert err.value.exit_code == 2
    assert "--device serial:/dev/ttyEDGEPRUNE9@9600" in str(err.value)
    assert "cannot open /dev/ttyEDGEPRUNE9" in str(err.value) and "No such file" in str(err.value)


# -- URIs and the device-kind rules ------------------------------------------------------------
@pytest.mark.parametrize(("uri", "port", "baud"), [
    ("serial:/dev/ttyACM0", "/dev/ttyACM0", 115200),
    ("serial:/dev/ttyACM0@115200", "/dev/ttyACM0", 115200),
    ("serial:/dev/serial/by-id/usb-STM_Link_0671-if02@921600",
     "/dev/serial/by-id/usb-STM_Link_0671-if02", 921600),
    ("serial:COM3@9600", "COM3", 9600),
])
def test_serial_uris_parse(uri, port, baud):
    device = parse_device(uri)
    assert device == SerialDevice(port, baud) and device.label == f"{port}@{baud}"


@pytest.mark.parametrize(("uri", "problem"), [
    ("serial:/dev/../etc/passwd", "is not a serial port"),
    ("serial:ttyACM0", "is not a serial port"),
    ("serial:/dev/ttyACM0;reboot", "is not a serial port"),
    ("serial:/dev/ttyACM0@11520", "baud rate '11520' is not a standard rate"),
    ("serial:/dev/ttyACM0@fast", "baud rate 'fast' is not a standard rate"),
    ("serial:/dev/ttyACM0@", "baud rate '' is not a standard rate"),
    ("serial:", "is not a serial port"),
    ("uart:/dev/ttyACM0", "expected ssh://, pyocd:, esptool: or serial:"),
])
def test_bad_serial_uris_are_refused_with_examples(uri, problem):
    with pytest.raises(BadInputError, match="serial:/dev/ttyACM0@115200") as err:
        parse_device(uri)
    assert problem in str(err.value) and repr(uri) in str(err.value)


@pytest.mark.parametrize(("target", "device", "message"), [
    ("rpi4", "serial:/dev/ttyACM0", "a serial port reaches a microcontroller; rpi4 is a "
                                    "cortex-a target measured over ssh://"),
    ("cortex-m4", "ssh://root@127.0.0.1:2222", "an MCU is not reached over SSH"),
    ("ethos-u55", "ssh://root@127.0.0.1:2222", "Use serial:PORT after flashing"),
    ("cortex-m4", "pyocd:nrf52840", "pyocd flashes a board, it takes no measurements"),
])
def test_check_refuses_a_device_that_cannot_reach_the_target(tiny_tflite, target, device,
                                                             message):
    r = CliRunner().invoke(main, ["check", str(tiny_tflite), "--target", target,
                                  "--device", device])
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split())


def test_check_refuses_a_serial_port_that_does_not_exist_before_measuring(tiny_tflite):
    r = CliRunner().invoke(main, ["check", str(tiny_tflite), "--target", "cortex-m4",
                                  "--device", "serial:/dev/ttyEDGEPRUNE9"])
    assert r.exit_code == 2, r.output
    assert "/dev/ttyEDGEPRUNE9 does not exist" in r.output


def test_build_refuses_a_device_that_reaches_none_of_the_targets(tiny_files, tmp_path):
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["build", "--target", "rpi4", "--target", "coral-usb",
                                  "--model", str(tiny_files["model"]), "--out", str(out),
                                  "--device", "serial:/dev/ttyACM0"])
    assert r.exit_code == 2, r.output
    assert "reaches none of the targets (rpi4, coral-usb)" in " ".join(r.output.split())
    assert not out.exists()


# -- end to end --------------------------------------------------------------------------------
def test_check_uses_the_device_latency_from_the_serial_port(board, int8_io_tflite):
    blob = int8_io_tflite.read_bytes()
    cycles = [96_000, 97_280, 95_360, 99_840, 96_640, 96_000, 98_560]
    board.play([BOOT, *report(cycles, model=blob)], repeat=True)
    r = CliRunner().invoke(main, ["check", str(int8_io_tflite), "--target", "cortex-m4",
                                  "--device", f"serial:{board.port}", "--json"])
    assert r.exit_code in (0, 1), r.output
    result = json.loads(r.stdout)
    device = {m["quantity"]: m for m in result["measurements"] if m["method"] == "device"}
    assert device["latency_ms"]["value"] == pytest.approx(statistics.median(cycles) / 64e3)
    assert device["ram_bytes"]["value"] == 18_432
    checks = {c["name"]: c for c in result["checks"]}
    assert checks["latency"]["method"] == "device"
    assert checks["latency"]["value"] == device["latency_ms"]["value"]
    assert result["device"] == f"serial:{board.port}"


# -- the firmware side, compiled with the host compiler ---------------------------------------
# Stand-ins for the TFLite-Micro declarations main.cc uses (the real ones need the TFLM tree and
# an Arm toolchain, which are not here). Each Invoke advances a fake cycle counter by
# 1000 + 7 * (call % 5), starting near 2^32 so the counts cross a wrap-around.
STANDIN_TFLM = {
    "tensorflow/lite/micro/micro_interpreter.h": """\
#pragma once
#include <cstddef>
#include <cstdint>
typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
struct TfLiteTensor { int unused; };
namespace tflite {
extern uint32_t standin_cycles;
struct Model { uint32_t version() const { return 3; } };
inline const Model* GetModel(const void*) { static Model m; return &m; }
template <unsigned N> struct MicroMutableOpResolver {
  TfLiteStatus AddConv2D() { return kTfLiteOk; }
};
class MicroInterpreter {
 public:
  template <class R> MicroInterpreter(const Model*, R&, uint8_t*, size_t) {}
  TfLiteStatus AllocateTensors() { return kTfLiteOk; }
  TfLiteStatus Invoke() { standin_cycles += 1000u + 7u * (calls_++ % 5u); return kTfLiteOk; }
  TfLiteTensor* input(size_t) { return &tensor_; }
  TfLiteTensor* output(size_t) { return &tensor_; }
  size_t arena_used_bytes() const { return 12345; }
 private:
  unsigned calls_ = 0;
  TfLiteTensor tensor_{};
};
}  // namespace tflite
""",
    "tensorflow/lite/micro/micro_mutable_op_resolver.h":
        '#pragma once\n#include "tensorflow/lite/micro/micro_interpreter.h"\n',
    "tensorflow/lite/schema/schema_generated.h": "#pragma once\n#define TFLITE_SCHEMA_VERSION 3\n",
}
HARNESS_CC = """\
#include <cstdint>
#include <cstdlib>
#include "tensorflow/lite/micro/micro_interpreter.h"
uint32_t tflite::standin_cycles = 0xFFFFF000u;
extern "C" {
uint32_t SystemCoreClock = 80000000u;  // as CMSIS system code defines it
}
// After EDGEPRUNE_REPORTS reports main.cc enters the plain inference loop: end there.
extern "C" void edgeprune_use_output(const TfLiteTensor*) { std::exit(0); }
"""


def _firmware(tmp_path: Path, *defines: str) -> bytes:
    """Write the bundle for MODEL, build its main.cc against the stand-ins, run it: its stdout."""
    from edgeprune.deploy.mcu import write_bundle

    art = tmp_path / "art"
    art.mkdir(exist_ok=True)
    (art / "model_data.h").write_text("#pragma once\nextern const unsigned char g_model[];\n"
                                      "extern const unsigned int g_model_len;\n")
    (art / "model_data.cc").write_text(
        '#include "model_data.h"\nalignas(16) const unsigned char g_model[] = {'
        + ", ".join(map(str, MODEL)) + f"}};\nconst unsigned int g_model_len = {len(MODEL)};\n")
    (art / "op_resolver.h").write_text(
        '#pragma once\n#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\n'
        "inline TfLiteStatus RegisterOps(tflite::MicroMutableOpResolver<1>& r) {\n"
        "  return r.AddConv2D();\n}\n")
    bundle = write_bundle(M4, art)
    stubs = tmp_path / "standin"
    for name, text in {**STANDIN_TFLM, "harness.cc": HARNESS_CC}.items():
        (stubs / name).parent.mkdir(parents=True, exist_ok=True)
        (stubs / name).write_text(text)
    app = tmp_path / "app"
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Wformat=2", "-Werror",
                    "-DEDGEPRUNE_REPORTS=2", *defines, f"-I{stubs}", f"-I{bundle}",
                    str(bundle / "main.cc"), str(bundle / "model_data.cc"),
                    str(stubs / "harness.cc"), "-o", str(app)], check=True)
    return subprocess.run([str(app)], capture_output=True, check=True, timeout=30).stdout


def test_firmware_protocol_compiled_on_the_host_is_read_back(board, model_file, tmp_path):
    out = _firmware(tmp_path, "-DEDGEPRUNE_READ_CYCLES()=tflite::standin_cycles")
    lines = out.splitlines(keepends=True)
    assert all(raw.endswith(b"\r\n") for raw in lines)
    kinds = [parse_line(raw.rstrip(b"\n")).kind for raw in lines]  # every checksum right
    assert kinds == ["boot", *(["run", *["invoke"] * 20, "arena", "done"] * 2)]
    board.play(lines, repeat=True)
    ms = {m.quantity: m for m in measure_over_serial(model_file, M4, f"serial:{board.port}",
                                                     timeout=10, silence=5)}
    # report 1 times invokes 3..22: each of 1000 + 7 * (0..4) four times, so the median is 1014
    assert ms["latency_ms"].value == pytest.approx(1014 / 64e3)
    assert "EDGEPRUNE_READ_CYCLES()" in ms["latency_ms"].detail
    assert "the board reports 80 MHz" in ms["latency_ms"].detail  # SystemCoreClock, read back
    assert ms["ram_bytes"].value == 12345


def test_firmware_without_a_cycle_counter_says_so(tmp_path):
    # On this x86 host no __ARM_ARCH_7*M__ macro is defined: the M0/M0+ case.
    lines = [parse_line(raw) for raw in _firmware(tmp_path).splitlines()]
    assert {m.fields["counter"] for m in lines if m.kind == "run"} == {"none"}
    assert "invoke" not in {m.kind for m in lines}
    assert {m.fields["runs"] for m in lines if m.kind == "done"} == {"0"}


def test_protocol_header_is_c99_and_never_sends_a_cut_line(tmp_path):
    from edgeprune.deploy.mcu import PROTOCOL_H

    (tmp_path / "edgeprune_protocol.h").write_text(PROTOCOL_H)
    (tmp_path / "t.c").write_text("""\
#include <stdio.h>
#include "edgeprune_protocol.h"
void edgeprune_write(const char* line, size_t len) { fwrite(line, 1, len, stdout); }
int main(void) {
  char small[24];
  if (epr_format(small, sizeof(small), "invoke", "i=%d cycles=%lu", 1, 123456ul) != 0) return 1;
  epr_send("invoke", "i=%d cycles=%lu", 7, 4294967295ul);
  epr_send("done", "");
  return 0;
}
""")
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror",
                    f"-I{tmp_path}", str(tmp_path / "t.c"), "-o", str(tmp_path / "t")],
                   check=True)
    out = subprocess.run([str(tmp_path / "t")], capture_output=True, check=True).stdout
    assert out.splitlines(keepends=True) == [line("invoke", i=7, cycles=4294967295),
                                             line("done")]


def test_build_of_two_targets_measures_only_the_one_the_device_reaches(board, tiny_files,
                                                                       tmp_path):
    args = ["build", "--model", str(tiny_files["model"]), "--data", str(tiny_files["data"]),
            "--val", str(tiny_files["val"]), "--calib", str(tiny_files["calib"]),
            "--prune", "none", "--epochs", "0"]
    first = CliRunner().invoke(main, [*args, "--target", "cortex-m4", "--out",
                                      str(tmp_path / "a")])
    assert first.exit_code in (0, 1), first.output
    # The board runs the firmware of that build; the same inputs rebuild the same model.
    blob = (tmp_path / "a" / "cortex-m4" / "model.tflite").read_bytes()
    board.play([BOOT, *report([128_000, 130_560, 126_720], model=blob)], repeat=True)
    out = tmp_path / "b"
    r = CliRunner().invoke(main, [*args, "--target", "rpi4", "--target", "cortex-m4",
                                  "--out", str(out), "--device", f"serial:{board.port}"])
    assert r.exit_code in (0, 1), r.output
    m4 = json.loads((out / "cortex-m4" / "report.json").read_text())
    device = {m["quantity"]: m["value"] for m in m4["measurements"] if m["method"] == "device"}
    assert device == {"latency_ms": pytest.approx(128_000 / 64e3), "ram_bytes": 18_432}
    rpi4 = json.loads((out / "rpi4" / "report.json").read_text())
    assert not [m for m in rpi4["measurements"] if m["method"] == "device"]
    assert any(f"--device serial:{board.port} not used" in n for n in rpi4["notes"])
