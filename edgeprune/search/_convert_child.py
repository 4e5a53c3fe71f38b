"""The background conversion process (see ``background.py``); run as ``python -m``.

Reads length-prefixed pickles on stdin: first ``(mode, calib, target)``, then one
``(model JSON, weights)`` per conversion; answers each with a pickled ``("ok", tflite bytes)``
or ``("error", message)`` on the original stdout. Anything else that writes to stdout (the
converter prints) goes to stderr instead, so the answers stay parseable. Exits at end of input.
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any, BinaryIO


def _read(stream: BinaryIO) -> Any:
    head = stream.read(8)
    if len(head) < 8:
        return None
    n = int.from_bytes(head, "little")
    return pickle.loads(stream.read(n))  # our own parent's pickles, over a private pipe


def main() -> int:
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints must not corrupt the answers
    requests = sys.stdin.buffer
    settings = _read(requests)
    if settings is None:
        return 0
    mode, calib, target = settings
    from edgeprune import _tf
    from edgeprune.converter import to_tflite

    keras = _tf.keras()
    while (job := _read(requests)) is not None:
        config, weights = job
        try:
            model = keras.models.model_from_json(config)
            model.set_weights(weights)
            answer = ("ok", to_tflite(model, mode, calib, target))
        except Exception as exc:  # reported to the parent, which converts in-process
            answer = ("error", f"{type(exc).__name__}: {exc}")
        pickle.dump(answer, answers)
        answers.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
