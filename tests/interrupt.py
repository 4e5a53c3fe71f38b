"""Start ``edgeprune build`` in a subprocess and Ctrl-C it while it fine-tunes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def interrupt_in_finetune(args: list[str], out: Path, timeout: float = 300
                          ) -> tuple[int, str, bool]:
    """(exit code, stderr, whether OUT/<target> existed while fine-tuning ran).

    The signal goes out as soon as the first epoch ends (``-v`` logs every epoch), not after a
    fixed delay: on a fast machine a short fine-tune finished before a delay ran out.
    """
    proc = subprocess.Popen([sys.executable, "-m", "edgeprune", "-v", *args],
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "fine-tuning epoch 1/" in line:
            break
    else:
        proc.wait()
        raise AssertionError("the build never reached fine-tuning:\n" + "".join(seen))
    visible = any(p.is_dir() and not p.name.startswith(".") for p in out.glob("*"))
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=timeout)[1]
    return proc.returncode, "".join(seen) + rest, visible
