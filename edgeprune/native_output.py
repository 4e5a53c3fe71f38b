"""Keep native libraries' own log lines off the terminal unless ``-v`` asks for them.

TensorFlow 2.21 writes its start-up lines (oneDNN, CUDA drivers, CPU features) before absl
logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` does not silence them
(tensorflow/tensorflow#100442); the TFLite converter and LiteRT print from C++ as well. Around
such calls, file descriptors 1 and 2 point at a temporary file: what was written is logged at
debug level, or written to stderr when the call failed, so a tool's own error is never lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

# "show": let native output through (``-v``); inherited by the processes edgeprune starts.
ENV = "EDGEPRUNE_NATIVE_LOGS"
_LOCK = threading.Lock()


def show(enabled: bool) -> None:
    """Called once by the CLI: ``-v`` shows native output, otherwise it is captured."""
    if enabled:
        os.environ[ENV] = "show"
    else:
        os.environ.pop(ENV, None)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # what TensorFlow does honour


@contextlib.contextmanager
def captured(what: str) -> Iterator[None]:
    """Capture fd 1 and 2 during the block (main thread only: other threads keep writing)."""
    if os.environ.get(ENV) == "show" or threading.current_thread() is not threading.main_thread():
        yield
        return
    with _LOCK, tempfile.TemporaryFile() as sink:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        saved = os.dup(1), os.dup(2)
        failed = True
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
            failed = False
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            text = sink.read().decode(errors="replace").rstrip()
            if text and failed:
                sys.stderr.write(text + "\n")
            elif text:
                log.debug("%s wrote:\n%s", what, text)
