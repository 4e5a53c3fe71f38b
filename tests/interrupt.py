"""Start ``edgeprune build`` in a subprocess and interrupt it (Ctrl-C or SIGKILL) at a line it
logs: a stage boundary (``convert   …``) or an epoch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def start(args: list[str]) -> subprocess.Popen:
    """``edgeprune -v ARGS`` with its log on a pipe (-v logs every stage and epoch)."""
    return subprocess.Popen([sys.executable, "-m", "edgeprune", "-v", *args],
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_for(proc: subprocess.Popen, needle: str) -> list[str]:
    """The log lines up to the first containing ``needle``; fails if the process ends first.
    The signal then goes out at that point, not after a fixed delay (on a fast machine a short
    stage finished before a delay ran out)."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if needle in line:
            return seen
    proc.wait()
    raise AssertionError(f"the build never logged {needle!r}:\n" + "".join(seen))


def interrupt_in_finetune(args: list[str], out: Path, timeout: float = 300
                          ) -> tuple[int, str, bool]:
    """(exit code, stderr, whether OUT/<target> existed while fine-tuning ran)."""
    proc = start(args)
    seen = wait_for(proc, "fine-tuning epoch 1/")
    visible = any(p.is_dir() and not p.name.startswith(".") for p in out.glob("*"))
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=timeout)[1]
    return proc.returncode, "".join(seen) + rest, visible
