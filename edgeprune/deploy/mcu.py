"""Cortex-M flashing: a TFLite-Micro application bundle, and the probe tools that flash it.

The bundle (``DIR/firmware/``) holds the C sources ``edgeprune build`` wrote (model_data.cc/.h,
op_resolver.h), a ``main.cc`` that runs the model with TFLite-Micro, and a ``CMakeLists.txt``.
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
BUNDLE = "firmware"
APP = "edgeprune_app"
ESP_APP_OFFSET = "0x10000"  # the app partition in ESP-IDF's default partition table

_ARRAY = re.compile(
    r"extern\s+(?:(?:const|alignas\s*\(\s*\d+\s*\))\s+)*(?:unsigned\s+char|uint8_t)\s+(\w+)\s*\[")
_REGISTER_INTO = re.compile(r"(\w+)\s*\(\s*(?:tflite::)?MicroMutableOpResolver\s*<\s*(\w+)\s*>\s*&")
_RETURNS = re.compile(r"(?:tflite::)?MicroMutableOpResolver\s*<\s*(\w+)\s*>\s*&?\s*(\w+)\s*\(\s*\)")

MAIN_CC = """\
// edgeprune: minimal TFLite-Micro application for {target}. Generated; edit freely.
#include <cstdint>

#include "model_data.h"
#include "op_resolver.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/schema/schema_generated.h"

#ifndef EDGEPRUNE_ARENA_BYTES
#define EDGEPRUNE_ARENA_BYTES {arena}  // {arena_source}
#endif

alignas(16) static uint8_t tensor_arena[EDGEPRUNE_ARENA_BYTES];

// Provide these in your board code to feed sensor data and use the result.
extern "C" __attribute__((weak)) void edgeprune_fill_input(TfLiteTensor* input) {{ (void)input; }}
extern "C" __attribute__((weak)) void edgeprune_use_output(const TfLiteTensor* output) {{
  (void)output;
}}

int main() {{
  const tflite::Model* model = tflite::GetModel({array});
  if (model->version() != TFLITE_SCHEMA_VERSION) return 1;
  {resolver}
  tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, sizeof(tensor_arena));
  if (interpreter.AllocateTensors() != kTfLiteOk) return 2;  // arena too small?
  for (;;) {{
    edgeprune_fill_input(interpreter.input(0));
    if (interpreter.Invoke() != kTfLiteOk) return 3;
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
    resolver = _resolver_code((artifacts / "op_resolver.h").read_text(errors="replace"),
                              artifacts / "op_resolver.h")
    arena, arena_source = _arena_bytes(artifacts, target)
    final = artifacts / BUNDLE
    with staged_folder(final) as tmp:
        for name in SOURCES:
            shutil.copyfile(artifacts / name, tmp / name)
        (tmp / "main.cc").write_text(MAIN_CC.format(
            target=target.name, arena=arena, arena_source=arena_source, array=array.group(1),
            resolver=resolver))
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
                                         "CMakeLists.txt)", *commands], bundle=bundle)
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
