"""Cortex-M flashing: a TFLite-Micro application bundle, and the probe tools that flash it.

The bundle (``DIR/firmware/``) holds the C sources ``edgeprune build`` wrote (model_data.cc/.h,
op_resolver.h), a ``main.cc`` that runs the model with TFLite-Micro and reports its cycle counts
and arena over the serial port (``edgeprune_protocol.h``; read by ``runners/serial_device.py``),
and a ``CMakeLists.txt``.
Building it needs the board's SDK and TFLite-Micro, which only the user has; once
``firmware/build/edgeprune_app.(hex|elf|bin)`` exists, ``--device pyocd:TARGET`` or
``esptool:PORT`` flashes it with that tool. Nothing is written outside ``DIR/firmware``, and the
folder is replaced atomically (built beside it, then renamed).
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from edgeprune.atomic import staged_folder
from edgeprune.deploy.result import FlashResult
from edgeprune.device import ProbeDevice
from edgeprune.errors import BadInputError, ToolError
from edgeprune.targets import TargetProfile

log = logging.getLogger(__name__)

SOURCES = ("model_data.cc", "model_data.h", "op_resolver.h")
PROTOCOL_HEADER = "edgeprune_protocol.h"
BUNDLE = "firmware"
APP = "edgeprune_app"
ESP_APP_OFFSET = "0x10000"  # the app partition in ESP-IDF's default partition table

# What may not appear in a protocol value (nor, as '%', in the printf format it is written into).
_PROTOCOL_VALUE = re.compile(r"[^A-Za-z0-9_.+-]")
_ARRAY = re.compile(
    r"extern\s+(?:(?:const|alignas\s*\(\s*\d+\s*\))\s+)*(?:unsigned\s+char|uint8_t)\s+(\w+)\s*\[")
_LENGTH = re.compile(r"extern\s+const\s+(?:unsigned\s+int|unsigned|uint32_t|size_t)\s+(\w+)\s*;")
_REGISTER_INTO = re.compile(r"(\w+)\s*\(\s*(?:tflite::)?MicroMutableOpResolver\s*<\s*(\w+)\s*>\s*&")
_RETURNS = re.compile(r"(?:tflite::)?MicroMutableOpResolver\s*<\s*(\w+)\s*>\s*&?\s*(\w+)\s*\(\s*\)")

PROTOCOL_H = """\
// edgeprune: the serial report protocol (docs/devices.md, "Measuring a microcontroller over a
// serial port"). Generated. Plain C99 (also valid C++), so a host compiler can test it too.
#ifndef EDGEPRUNE_PROTOCOL_H_
#define EDGEPRUNE_PROTOCOL_H_

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define EPR_TAG "EPR1"  // protocol version 1
#define EPR_LINE_MAX 192

#ifdef __cplusplus
extern "C" {
#endif

// Sends one complete line; main.cc gives a weak default (stdout), boards may override it.
void edgeprune_write(const char* line, size_t len);

// CRC-32 as zlib's crc32(crc, data, n): reflected polynomial 0xEDB88320, initial value and final
// XOR 0xFFFFFFFF, chainable from crc = 0. Bitwise rather than table-driven: 1 KB of flash saved.
static inline uint32_t epr_crc32(uint32_t crc, const void* data, size_t n) {
  const uint8_t* p = (const uint8_t*)data;
  crc = ~crc;
  while (n--) {
    crc ^= *p++;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

// Formats "EPR1 <kind> <fields> *XXXXXXXX\\r\\n" into buf; XXXXXXXX is the CRC-32 of everything
// before " *". `fields` is a printf format of space-separated key=value pairs ("" for none);
// values carry no space and no '*'. Returns the length, or 0 if the line does not fit (then
// nothing is sent rather than a cut line).
static inline size_t epr_vformat(char* buf, size_t cap, const char* kind, const char* fields,
                                 va_list args) {
  int n = snprintf(buf, cap, EPR_TAG " %s%s", kind, fields[0] ? " " : "");
  if (n < 0 || (size_t)n >= cap) return 0;
  int m = vsnprintf(buf + n, cap - (size_t)n, fields, args);
  if (m < 0 || (size_t)(n + m) >= cap) return 0;
  n += m;
  m = snprintf(buf + n, cap - (size_t)n, " *%08lX\\r\\n",
               (unsigned long)epr_crc32(0, buf, (size_t)n));
  if (m < 0 || (size_t)(n + m) >= cap) return 0;
  return (size_t)(n + m);
}

static inline size_t epr_format(char* buf, size_t cap, const char* kind, const char* fields,
                                ...) {
  va_list args;
  va_start(args, fields);
  size_t n = epr_vformat(buf, cap, kind, fields, args);
  va_end(args);
  return n;
}

static inline void epr_send(const char* kind, const char* fields, ...) {
  static char line[EPR_LINE_MAX];
  va_list args;
  va_start(args, fields);
  size_t n = epr_vformat(line, sizeof(line), kind, fields, args);
  va_end(args);
  if (n) edgeprune_write(line, n);
}

#ifdef __cplusplus
}
#endif
#endif  // EDGEPRUNE_PROTOCOL_H_
"""

MAIN_CC = """\
// edgeprune: minimal TFLite-Micro application for {target}. Generated; edit freely.
// It measures the model and reports over the board's serial port in the line protocol of
// edgeprune_protocol.h (read by `edgeprune check/build --device serial:PORT`); with
// EDGEPRUNE_REPORTS > 0 it then goes on to the plain inference loop.
#include <cstddef>
#include <cstdint>
#include <cstdio>

#include "edgeprune_protocol.h"
#include "model_data.h"
#include "op_resolver.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/schema/schema_generated.h"

#ifndef EDGEPRUNE_ARENA_BYTES
#define EDGEPRUNE_ARENA_BYTES {arena}  // {arena_source}
#endif
#ifndef EDGEPRUNE_WARMUP
#define EDGEPRUNE_WARMUP 3  // untimed invokes first: caches, lazily prepared kernels
#endif
#ifndef EDGEPRUNE_RUNS
#define EDGEPRUNE_RUNS 20  // timed invokes per report
#endif
#ifndef EDGEPRUNE_REPORTS
// Reports before the plain inference loop; 0: report forever. Repeating means the host needs
// no reset and can open the port at any time: it waits for the next report's `run` line.
#define EDGEPRUNE_REPORTS 0
#endif

// Cycle counter: the DWT's CYCCNT on Armv7-M and Armv8-M Mainline (Cortex-M3/M4/M7/M33/M55/M85),
// at its architectural addresses so no vendor device header is needed (in CMSIS terms:
// CoreDebug->DEMCR |= TRCENA; DWT->CTRL |= CYCCNTENA). Armv6-M and Armv8-M Baseline
// (M0/M0+/M23) have no DWT cycle counter: define EDGEPRUNE_READ_CYCLES() to read an
// up-counting 32-bit core-clock counter of your own, else the reports say counter=none and
// carry no cycle counts.
#if defined(EDGEPRUNE_READ_CYCLES)
#define EDGEPRUNE_COUNTER "user"
static bool cycles_start() {{ return true; }}
#elif defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_8M_MAIN__) || \\
    defined(__ARM_ARCH_8_1M_MAIN__)
#define EDGEPRUNE_COUNTER "dwt"
#define EDGEPRUNE_READ_CYCLES() (*(volatile uint32_t*)0xE0001004u)  // DWT->CYCCNT
static bool cycles_start() {{
  volatile uint32_t* demcr = (volatile uint32_t*)0xE000EDFCu;     // CoreDebug->DEMCR
  volatile uint32_t* dwt_ctrl = (volatile uint32_t*)0xE0001000u;  // DWT->CTRL
  *demcr |= 1u << 24;                              // TRCENA: enable the DWT
  *(volatile uint32_t*)0xE0001FB0u = 0xC5ACCE55u;  // DWT->LAR: unlock (M7); ignored elsewhere
  if (*dwt_ctrl & (1u << 25)) return false;        // NOCYCCNT: this DWT has no cycle counter
  *dwt_ctrl |= 1u;                                 // CYCCNTENA
  return true;
}}
#else
#define EDGEPRUNE_COUNTER "none"
#define EDGEPRUNE_READ_CYCLES() 0u
static bool cycles_start() {{ return false; }}
#endif

alignas(16) static uint8_t tensor_arena[EDGEPRUNE_ARENA_BYTES];

// CMSIS's core clock, when the board's system code defines it (weak: address 0 otherwise).
extern "C" __attribute__((weak)) uint32_t SystemCoreClock;

// Provide these in your board code to feed sensor data and use the result.
extern "C" __attribute__((weak)) void edgeprune_fill_input(TfLiteTensor* input) {{ (void)input; }}
extern "C" __attribute__((weak)) void edgeprune_use_output(const TfLiteTensor* output) {{
  (void)output;
}}

// Report lines go to the C library's stdout, which board SDKs retarget to the debug UART
// (newlib's _write, STM32Cube's __io_putchar, Zephyr, Mbed, the Pico SDK): the most portable
// choice. Not MicroPrintf: its cortex_m_generic port prints nothing until a callback is
// registered, and it adds a newline of its own. Override this to write to a UART directly.
extern "C" __attribute__((weak)) void edgeprune_write(const char* line, size_t len) {{
  fwrite(line, 1, len, stdout);
  fflush(stdout);
}}

// A fatal error, repeated until someone reads it: the host may open the port at any time.
[[noreturn]] static void fail(const char* what) {{
  for (;;) {{
    epr_send("error", "msg=%s", what);
    for (volatile uint32_t i = 0; i < 20000000u; ++i) {{
    }}
  }}
}}

int main() {{
  epr_send("boot", "target={target} arena_size=%lu", (unsigned long)sizeof(tensor_arena));
  const tflite::Model* model = tflite::GetModel({array});
  if (model->version() != TFLITE_SCHEMA_VERSION) fail("model-schema-version-mismatch");
  {resolver}
  tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, sizeof(tensor_arena));
  if (interpreter.AllocateTensors() != kTfLiteOk) fail("AllocateTensors-failed(arena-too-small?)");
  // Identifies the model in flash, so the host never reports another model's figures.
  const uint32_t model_crc = epr_crc32(0, {array}, {array_len});
  const bool timed = cycles_start();
  const unsigned long clock_hz = &SystemCoreClock ? (unsigned long)SystemCoreClock : 0ul;
  static uint32_t cycles[EDGEPRUNE_RUNS];
  for (unsigned long report = 1; EDGEPRUNE_REPORTS == 0 || report <= EDGEPRUNE_REPORTS;
       ++report) {{
    epr_send("run", "n=%lu warmup=%d runs=%d counter=%s clock_hz=%lu model_bytes=%lu "
             "model_crc=%08lX", report, EDGEPRUNE_WARMUP, EDGEPRUNE_RUNS,
             timed ? EDGEPRUNE_COUNTER : "none", clock_hz, (unsigned long){array_len},
             (unsigned long)model_crc);
    edgeprune_fill_input(interpreter.input(0));
    for (int i = 0; i < EDGEPRUNE_WARMUP; ++i) {{
      if (interpreter.Invoke() != kTfLiteOk) fail("Invoke-failed");
    }}
    for (int i = 0; i < EDGEPRUNE_RUNS; ++i) {{
      const uint32_t start = EDGEPRUNE_READ_CYCLES();
      const TfLiteStatus status = interpreter.Invoke();
      cycles[i] = EDGEPRUNE_READ_CYCLES() - start;  // unsigned: right across one wrap-around
      if (status != kTfLiteOk) fail("Invoke-failed");
    }}
    // Sent after the timed invokes, so the UART's interrupts never fall inside one.
    for (int i = 0; timed && i < EDGEPRUNE_RUNS; ++i) {{
      epr_send("invoke", "i=%d cycles=%lu", i, (unsigned long)cycles[i]);
    }}
    epr_send("arena", "used=%lu size=%lu", (unsigned long)interpreter.arena_used_bytes(),
             (unsigned long)sizeof(tensor_arena));
    epr_send("done", "n=%lu runs=%d", report, timed ? EDGEPRUNE_RUNS : 0);
  }}
  for (;;) {{
    edgeprune_fill_input(interpreter.input(0));
    if (interpreter.Invoke() != kTfLiteOk) fail("Invoke-failed");
    edgeprune_use_output(interpreter.output(0));
  }}
}}
"""

CMAKE = """\
# edgeprune: TFLite-Micro application for {target} ({cpu}). Generated.
# Standalone:  cmake -S . -B build -DTFLM_DIR=/path/to/tflite-micro -DTFLM_LIB=/path/to/libtflm.a
#              (with your toolchain file: -DCMAKE_TOOLCHAIN_FILE=arm-none-eabi.cmake)
# In a board project that already defines a `tflitemicro` target: add_subdirectory(firmware).
cmake_minimum_required(VERSION 3.16)
project({app} C CXX)
set(CMAKE_CXX_STANDARD 17)
set(EDGEPRUNE_ARENA_BYTES {arena} CACHE STRING "TFLite-Micro tensor arena in bytes")

add_library(edgeprune_model STATIC model_data.cc)
target_include_directories(edgeprune_model PUBLIC ${{CMAKE_CURRENT_SOURCE_DIR}})

add_executable({app} main.cc)
target_compile_definitions({app} PRIVATE EDGEPRUNE_ARENA_BYTES=${{EDGEPRUNE_ARENA_BYTES}})
if(TARGET tflitemicro)
  target_link_libraries({app} PRIVATE edgeprune_model tflitemicro)
  target_link_libraries(edgeprune_model PUBLIC tflitemicro)
elseif(DEFINED TFLM_DIR AND DEFINED TFLM_LIB)
  set(TFLM_INCLUDES ${{TFLM_DIR}} ${{TFLM_DIR}}/third_party/flatbuffers/include
      ${{TFLM_DIR}}/third_party/gemmlowp ${{TFLM_DIR}}/third_party/ruy)
  target_include_directories(edgeprune_model PUBLIC ${{TFLM_INCLUDES}})
  target_link_libraries({app} PRIVATE edgeprune_model ${{TFLM_LIB}})
else()
  message(FATAL_ERROR "Set TFLM_DIR (tflite-micro source tree) and TFLM_LIB (its static "
                      "library built for {cpu}), or provide a `tflitemicro` target")
endif()
"""


def _resolver_code(op_resolver: str, path: Path) -> str:
    m = _REGISTER_INTO.search(op_resolver)
    if m:
        return f"tflite::MicroMutableOpResolver<{m.group(2)}> resolver;\n  {m.group(1)}(resolver);"
    m = _RETURNS.search(op_resolver)
    if m:
        return f"auto&& resolver = {m.group(2)}();"
    raise BadInputError(
        str(path), "declares no op-resolver function edgeprune can call",
        "Expected `void F(tflite::MicroMutableOpResolver<N>& r)` or "
        "`tflite::MicroMutableOpResolver<N> F()`; rebuild with edgeprune build",
    )


def _arena_bytes(artifacts: Path, target: TargetProfile) -> tuple[int, str]:
    """The measured arena (report.json, TFLM), else the target's RAM budget."""
    try:
        report = json.loads((artifacts / "report.json").read_text())
        for m in report.get("measurements", []):
            if m.get("quantity") == "ram_bytes" and m.get("method") == "tflm":
                # Some slack: TFLM's arena need varies a little between builds and kernels.
                return int(m["value"] * 1.1) // 16 * 16 + 16, "measured by TFLM, +10 %"
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass
    if target.budgets.ram_kb:
        return int(target.budgets.ram_kb * 1024), f"{target.name}'s RAM budget (not measured)"
    return 64 * 1024, "default (no measurement, no RAM budget)"


def write_bundle(target: TargetProfile, artifacts: Path) -> Path:
    """Write ``artifacts/firmware/`` (replacing an older one atomically); return its path."""
    missing = [n for n in SOURCES if not (artifacts / n).is_file()]
    if missing:
        raise BadInputError(f"--artifacts {artifacts}", f"has no {', '.join(missing)}",
                            f"Build for the Cortex-M target first: edgeprune build --target "
                            f"{target.name}")
    header = (artifacts / "model_data.h").read_text(errors="replace")
    array = _ARRAY.search(header)
    if not array:
        raise BadInputError(str(artifacts / "model_data.h"), "declares no model byte array",
                            "Expected `extern const unsigned char NAME[]`; rebuild")
    lengths = _LENGTH.findall(header)
    if not lengths:
        raise BadInputError(str(artifacts / "model_data.h"), "declares no model length",
                            "Expected `extern const unsigned int NAME_len;`; rebuild")
    length = f"{array.group(1)}_len" if f"{array.group(1)}_len" in lengths else lengths[0]
    resolver = _resolver_code((artifacts / "op_resolver.h").read_text(errors="replace"),
                              artifacts / "op_resolver.h")
    arena, arena_source = _arena_bytes(artifacts, target)
    final = artifacts / BUNDLE
    with staged_folder(final) as tmp:
        for name in SOURCES:
            shutil.copyfile(artifacts / name, tmp / name)
        (tmp / "main.cc").write_text(MAIN_CC.format(
            target=_PROTOCOL_VALUE.sub("_", target.name), arena=arena, arena_source=arena_source,
            array=array.group(1), array_len=length, resolver=resolver))
        (tmp / PROTOCOL_HEADER).write_text(PROTOCOL_H)
        (tmp / "CMakeLists.txt").write_text(CMAKE.format(
            target=target.name, cpu=target.hardware.cpu, app=APP, arena=arena))
    return final


def build_commands(bundle: Path) -> list[list[str]]:
    return [["cmake", "-S", str(bundle), "-B", str(bundle / "build")],
            ["cmake", "--build", str(bundle / "build")]]


def _image(bundle: Path, suffixes: tuple[str, ...]) -> Path | None:
    return next((p for s in suffixes if (p := bundle / "build" / f"{APP}{s}").is_file()), None)


def probe_command(device: ProbeDevice, bundle: Path) -> list[str]:
    if device.tool == "pyocd":
        image = _image(bundle, (".hex", ".elf")) or bundle / "build" / f"{APP}.hex"
        return ["pyocd", "flash", "--target", device.address, str(image)]
    image = _image(bundle, (".bin",)) or bundle / "build" / f"{APP}.bin"
    tool = "esptool" if shutil.which("esptool") or not shutil.which("esptool.py") else "esptool.py"
    return [tool, "--port", device.address, "write_flash", ESP_APP_OFFSET, str(image)]


def flash_mcu(
    target: TargetProfile, artifacts: Path, device: ProbeDevice | None, *, dry_run: bool = False
) -> FlashResult:
    """Write the bundle; with a probe device, flash the built image with pyOCD or esptool."""
    bundle = artifacts / BUNDLE
    commands = [shlex.join(c) for c in build_commands(bundle)]
    flash_cmd = probe_command(device, bundle) if device else None
    if flash_cmd:
        commands.append(shlex.join(flash_cmd))
    label = device.label if device else "(bundle only)"
    if dry_run:
        return FlashResult(label, True, [f"write {bundle}/ ({', '.join(SOURCES)}, main.cc, "
                                         f"{PROTOCOL_HEADER}, CMakeLists.txt)", *commands],
                           bundle=bundle)
    bundle = write_bundle(target, artifacts)
    notes = [f"bundle written to {bundle}; build it with: " + " && ".join(commands[:2])]
    if flash_cmd is None:
        return FlashResult(label, False, [], bundle=bundle, notes=notes)
    image = Path(flash_cmd[-1])
    if not image.is_file():
        raise ToolError(f"flash {label}", f"no firmware image {image}",
                        "Build the bundle first: " + " && ".join(commands[:2]))
    if shutil.which(flash_cmd[0]) is None:
        raise ToolError(f"flash {label}", f"{flash_cmd[0]} is not installed",
                        f"pip install {device.tool}, then rerun")
    res = subprocess.run(flash_cmd, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
        raise ToolError(f"flash {label}", f"{flash_cmd[0]} exited with {res.returncode}: {tail}",
                        "Reproduce with: " + shlex.join(flash_cmd))
    return FlashResult(label, False, [shlex.join(flash_cmd)], bundle=bundle, notes=notes)
