"""Anchor conversions in one background process, so they overlap the proposal scoring.

The search converts the model it just chose (seconds of mostly single-threaded converter work)
while it short-fine-tunes the next step's proposals in this process. One child process with
its own TensorFlow (``python -m edgeprune.search._convert_child``, started at the first
conversion) does them one at a time over a pipe, so the extra memory is one TensorFlow process
however many steps run. A plain child process rather than ``multiprocessing``: spawning would
re-run the caller's unguarded ``__main__``. When the child cannot be used (it failed to start,
died, or the model has no JSON config) the conversion runs in this process instead.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.targets import TargetProfile

log = logging.getLogger(__name__)


class Converter:
    """``submit(model)`` returns a future of the .tflite bytes."""

    def __init__(self, mode: str, calib: np.ndarray | None, target: TargetProfile,
                 background: bool = True) -> None:
        self.mode, self.calib, self.target = mode, calib, target
        self._background = background
        self._child: subprocess.Popen[bytes] | None = None
        self._io: ThreadPoolExecutor | None = None  # one thread that waits on the pipe
        self._closing = False

    def convert_here(self, model: Any) -> bytes:
        from edgeprune.converter import to_tflite

        return to_tflite(model, self.mode, self.calib, self.target)

    def submit(self, model: Any) -> Future[bytes]:
        if self._background and self._io is None:
            self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="anchor")
        if self._io is not None:
            try:
                job = pickle.dumps((model.to_json(), model.get_weights()))
            except Exception as exc:  # e.g. a layer without get_config
                log.info("background conversion unavailable (%s); converting here", exc)
            else:
                return self._io.submit(self._convert, job, model)
        done: Future[bytes] = Future()
        done.set_result(self.convert_here(model))
        return done

    def _convert(self, job: bytes, model: Any) -> bytes:
        try:
            child = self._start()
            _send(child, job)
            status, value = pickle.load(child.stdout)  # type: ignore[arg-type]
        except Exception as exc:  # the child died or never started
            if self._closing:
                raise
            log.info("background conversion failed (%s); converting here", exc)
            self._stop()
            self._background = False
            return self.convert_here(model)
        if status != "ok":
            log.info("background conversion failed (%s); converting here", value)
            return self.convert_here(model)  # raises the converter's ToolError here
        return value

    def _start(self) -> subprocess.Popen[bytes]:
        if self._child is None:
            root = str(Path(__file__).resolve().parents[2])
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                   "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
            self._child = subprocess.Popen(
                [sys.executable, "-m", "edgeprune.search._convert_child"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                env=env)
            _send(self._child, pickle.dumps((self.mode, self.calib, self.target)))
        return self._child

    def _stop(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            if child.stdin is not None:
                child.stdin.close()  # the child exits at end of input
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def close(self) -> None:
        """Stop the child (a conversion still running is abandoned) and the I/O thread."""
        self._closing = True
        child = self._child
        if child is not None and child.poll() is None:
            child.kill()
        if self._io is not None:
            self._io.shutdown(wait=True, cancel_futures=True)
            self._io = None
        self._stop()


def _send(child: subprocess.Popen[bytes], payload: bytes) -> None:
    stdin = child.stdin
    if stdin is None:
        raise OSError("the conversion child has no input pipe")
    stdin.write(len(payload).to_bytes(8, "little") + payload)
    stdin.flush()
