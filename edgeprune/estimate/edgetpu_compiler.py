"""The real ``edgetpu_compiler``, when it is on PATH, and a parser for its log.

``edgetpu_compiler -s -o OUTDIR model.tflite`` writes ``OUTDIR/model_edgetpu.tflite`` and
``OUTDIR/model_edgetpu.log`` and, with ``-s``, prints a summary: header lines (version,
on-chip/off-chip parameter memory, subgraph and op counts) and the table
``Operator  Count  Status``. ``parse_compiler_log`` reads either text into the same
``CompatReport`` the analyser produces (without per-op indices: the log groups ops by status).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path

from edgeprune.errors import ToolError
from edgeprune.estimate.edgetpu_compat import MAPPED, CompatReport, analyse
from edgeprune.tflite.graph import parse_tflite

log = logging.getLogger(__name__)

COMPILER = "edgetpu_compiler"
_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_SIZE = r"([\d.]+)\s*(B|KiB|MiB|GiB)"
_ROW = re.compile(r"^([A-Z][A-Z0-9_]*(?::\S+)?)\s+(\d+)\s+(\S.*?)\s*$")


def _size(text: str, label: str) -> int | None:
    m = re.search(re.escape(label) + r":\s*" + _SIZE, text)
    return round(float(m.group(1)) * _UNITS[m.group(2)]) if m else None


def _int(text: str, label: str) -> int | None:
    m = re.search(re.escape(label) + r":\s*(\d+)", text)
    return int(m.group(1)) if m else None


def parse_compiler_log(text: str) -> CompatReport:
    """Parse the compiler's stdout (``-s``) or its ``*_edgetpu.log`` into a CompatReport."""
    version = re.search(r"Edge TPU Compiler version\s+(\S+)", text)
    model = re.search(r"^Input(?: model)?:\s*(.+?)\s*$", text, re.M)
    rows, in_table = [], False
    for line in text.splitlines():
        if re.match(r"^\s*Operator\s+Count\s+Status\s*$", line):
            in_table = True
            continue
        m = _ROW.match(line.strip()) if in_table else None
        if m:
            rows.append({"operator": m.group(1), "count": int(m.group(2)),
                         "status": m.group(3)})
    mapped_rows = sum(r["count"] for r in rows if r["status"] == MAPPED)
    on_tpu = _int(text, "Number of operations that will run on Edge TPU")
    on_cpu = _int(text, "Number of operations that will run on CPU")
    on_chip = _size(text, "On-chip memory used for caching model parameters") or 0
    remaining = _size(text, "On-chip memory remaining for caching model parameters") or 0
    return CompatReport(
        source=f"{COMPILER} {version.group(1)}" if version else COMPILER,
        model=model.group(1) if model else "",
        rows=rows,
        ops_on_edgetpu=on_tpu if on_tpu is not None else mapped_rows,
        ops_on_cpu=on_cpu if on_cpu is not None else sum(r["count"] for r in rows) - mapped_rows,
        edgetpu_subgraphs=_int(text, "Number of Edge TPU subgraphs") or (1 if mapped_rows else 0),
        on_chip_param_bytes=on_chip,
        off_chip_param_bytes=_size(text, "Off-chip memory used for streaming uncached model "
                                   "parameters") or 0,
        param_cache_bytes=on_chip + remaining,
    )


def run_compiler(tflite: Path, outdir: Path, timeout_s: float = 600) -> CompatReport:
    """Compile with the real compiler; keeps ``OUTDIR/<stem>_edgetpu.tflite``."""
    exe = shutil.which(COMPILER)
    if exe is None:
        raise ToolError(COMPILER, "is not on PATH", "Install it from Coral's apt repository")
    cmd = [exe, "-s", "-o", str(outdir), str(tflite)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(COMPILER, f"did not finish ({exc})", f"Reproduce with: {' '.join(cmd)}"
                        ) from exc
    if proc.returncode != 0:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
        raise ToolError(COMPILER, f"failed with exit code {proc.returncode} ({tail})",
                        f"Reproduce with: {' '.join(cmd)}")
    log_file = outdir / f"{tflite.stem}_edgetpu.log"
    text = proc.stdout
    if "Operator" not in text and log_file.is_file():
        text += "\n" + log_file.read_text(errors="replace")
    return parse_compiler_log(text)


def edgetpu_artifacts(tflite_path: Path, outdir: Path, cache_bytes: int) -> CompatReport:
    """``edgetpu_compat.json`` in ``outdir`` (+ ``model_edgetpu.tflite`` with the compiler).

    The real compiler's log is used when it is on PATH; otherwise the analyser's rules."""
    if shutil.which(COMPILER):
        report = run_compiler(tflite_path, outdir)
    else:
        blob = tflite_path.read_bytes()
        report = analyse(parse_tflite(blob, name=tflite_path.name), blob, cache_bytes)
        report.notes.append(f"{COMPILER} is not on PATH: statuses come from the published "
                            "model requirements, not from the compiler")
    report.write_compat_json(outdir / "edgetpu_compat.json")
    return report
