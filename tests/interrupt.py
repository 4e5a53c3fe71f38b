"""Start ``edgeprune build`` in a subprocess and Ctrl-C it while it fine-tunes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def interrupt_in_finetune(args: list[str], out: Path, delay: float = 2.0,
                          timeout: float = 300) -> tuple[int, str, bool]:
    """(exit code, stderr, whether OUT/<target> existed while fine-tuning ran)."""
    proc = subprocess.Popen([sys.executable, "-m", "edgeprune", *args], stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("finetune") and "…" in line:
            break
    time.sleep(delay)  # inside model.fit
    visible = any(p.is_dir() and not p.name.startswith(".") for p in out.glob("*"))
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=timeout)[1]
    return proc.returncode, "".join(seen) + rest, visible
