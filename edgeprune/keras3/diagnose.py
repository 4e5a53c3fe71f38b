"""Which layer of a Keras 3 file Keras 3 cannot read, and why (for load errors).

Keras reports a failed load without the layer's name ("Unrecognized keyword arguments passed to
Conv2D: {'foo': 1}"); here each built-in layer entry of the config is deserialized on its own,
in safe mode, until one fails. Entries naming non-Keras modules are skipped: they were refused
earlier unless trusted, and are never imported here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from edgeprune import _tf


def _layers(config: Any) -> Iterator[dict[str, Any]]:
    """Layer entries of a serialized functional/Sequential model, nested models' included."""
    inner = config.get("config") if isinstance(config, dict) else None
    for entry in (inner or {}).get("layers", []) if isinstance(inner, dict) else []:
        if isinstance(entry, dict):
            if entry.get("class_name") in ("Functional", "Sequential"):
                yield from _layers(entry)
            else:
                yield entry


def first_bad_layer(config: Any) -> tuple[str, str, str] | None:
    """(layer name, class, Keras' complaint) of the first layer Keras 3 cannot build, in the
    model ``config`` read from the file."""
    keras = _tf.keras3()

    for entry in _layers(config):
        module = str(entry.get("module") or "")
        if module != "keras" and not module.startswith("keras."):
            continue
        bare = {k: v for k, v in entry.items() if k not in ("inbound_nodes", "build_config")}
        try:
            with keras.saving.custom_object_scope({}):
                keras.saving.deserialize_keras_object(bare, safe_mode=True)
        except Exception as exc:  # any failure names this layer
            # Keras nests the cause: "... Exception encountered: Unrecognized keyword ..."
            cause = str(exc).rsplit("Exception encountered:", 1)[-1].strip().splitlines()
            name = (entry.get("config") or {}).get("name", entry.get("name", "?"))
            return str(name), str(entry.get("class_name")), (cause[0] if cause else
                                                             type(exc).__name__)[:300]
    return None
