"""Load and save Keras models safely.

A model file can run code when it is loaded: a ``Lambda`` layer stores Python bytecode. Before
handing a file to Keras, its config is read as plain JSON and a ``Lambda`` layer is refused
unless the user passes ``--trust-model``. The format is detected from the bytes, not the suffix.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Any

from edgeprune import _tf
from edgeprune.errors import ModelLoadError

log = logging.getLogger(__name__)

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
CODE_LAYERS = ("Lambda", "TFOpLambda__unsafe")  # classes whose config carries executable code
_FORMATS = "a .keras file, an .h5 file or a SavedModel folder"


def detect_format(path: Path) -> str:
    """'keras' | 'h5' | 'savedmodel', from content; raises ModelLoadError otherwise."""
    what = f"--model {path}"
    if not path.exists():
        raise ModelLoadError(what, "no such file or folder", f"Give the path to {_FORMATS}")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "savedmodel"
        raise ModelLoadError(what, "is a folder without saved_model.pb", f"Give {_FORMATS}")
    with path.open("rb") as f:
        head = f.read(8)
    if head.startswith(ZIP_MAGIC):
        return "keras"
    if head == HDF5_MAGIC:
        return "h5"
    raise ModelLoadError(
        what, "is not a Keras model (neither a .keras zip nor HDF5)", f"Give {_FORMATS}"
    )


def read_config(path: Path, fmt: str) -> dict[str, Any] | None:
    """The model's architecture config as JSON, read without Keras (None for SavedModel)."""
    what = f"--model {path}"
    try:
        if fmt == "keras":
            with zipfile.ZipFile(path) as zf:
                return json.loads(zf.read("config.json"))
        if fmt == "h5":
            import h5py

            with h5py.File(path, "r") as f:
                raw = f.attrs.get("model_config")
            if raw is None:
                raise ModelLoadError(
                    what,
                    "is an HDF5 file without a model config (weights only?)",
                    "Save the whole model with model.save('model.h5') or use .keras",
                )
            return json.loads(raw if isinstance(raw, str) else raw.decode("utf-8"))
    except ModelLoadError:
        raise
    except Exception as exc:  # zipfile/h5py/json raise many types on corrupt files
        raise ModelLoadError(what, f"is corrupt or truncated ({exc})", "Re-save the model") from exc
    return None


def find_classes(config: Any, names: tuple[str, ...]) -> list[str]:
    """Names of layers (at any nesting depth) whose class_name is in ``names``."""
    found: list[str] = []
    if isinstance(config, dict):
        if config.get("class_name") in names:
            inner = config.get("config", {})
            found.append(inner.get("name", "?") if isinstance(inner, dict) else "?")
        for value in config.values():
            found.extend(find_classes(value, names))
    elif isinstance(config, list):
        for value in config:
            found.extend(find_classes(value, names))
    return found


def load_model(path: Path, trust_model: bool = False) -> Any:
    """A tf_keras model, loaded without compiling; refuses code-carrying layers by default."""
    what = f"--model {path}"
    fmt = detect_format(path)
    config = read_config(path, fmt)
    if config is not None and not trust_model:
        risky = find_classes(config, CODE_LAYERS)
        if risky:
            raise ModelLoadError(
                what,
                f"contains Lambda layer(s) {', '.join(risky)}; loading them runs Python code "
                "stored in the file",
                "Replace the Lambda with a built-in layer, or pass --trust-model if you trust "
                "this file",
            )
    keras = _tf.keras()
    try:
        if fmt == "keras":
            model = keras.models.load_model(path, compile=False, safe_mode=not trust_model)
        else:
            model = keras.models.load_model(str(path), compile=False)
    except Exception as exc:
        raise ModelLoadError(
            what, f"cannot be loaded by Keras ({_first_line(exc)})", _fix(exc)
        ) from exc
    if not isinstance(model, keras.Model):
        raise ModelLoadError(
            what,
            f"loaded as {type(model).__name__}, not a Keras model (a SavedModel without "
            "Keras metadata?)",
            "Export it from Keras with model.save('model.keras')",
        )
    from edgeprune.pruning.ir import SUBCLASSED_FIX, is_graph_model

    if not is_graph_model(model):  # a subclassed model: no inputs, no layer graph to prune
        raise ModelLoadError(
            what,
            f"is a subclassed model ({type(model).__name__}), so its layer graph cannot be read",
            SUBCLASSED_FIX[0].upper() + SUBCLASSED_FIX[1:] + ", then save it as .keras",
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelLoadError(
            what,
            f"has {len(model.inputs)} inputs and {len(model.outputs)} outputs",
            "edgeprune builds single-input, single-output models; split the model",
        )
    return model


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _fix(exc: Exception) -> str:
    text = str(exc)
    if "Unknown layer" in text or "custom" in text.lower() or "Could not locate" in text:
        return (
            "The model uses a custom class; re-save it with built-in layers only "
            "(edgeprune never imports classes named in a file)"
        )
    return "Check that the file was saved by Keras (tf.keras/tf_keras or Keras 3)"


def save_model(model: Any, path: Path) -> Path:
    model.save(path)
    return path


def num_classes(model: Any) -> int:
    return int(model.output_shape[-1])
