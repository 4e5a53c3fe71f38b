"""Keras 3 models in: load with Keras 3, rebuild in tf_keras, prove the two agree.

The file is loaded by Keras 3 itself (``keras.saving.load_model``, safe mode unless trusted), its
``get_config()`` is translated (``translate.py``), tf_keras builds the translated config and every
layer's weights are copied by name. ``verify`` runs both models on real samples; a difference
above ``MAX_DIFF`` is refused, since everything after would describe another model.
"""

from __future__ import annotations

import json
import logging
import math
import weakref
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import _tf
from edgeprune.errors import ModelLoadError
from edgeprune.keras3 import float64
from edgeprune.keras3.translate import APP_TWINS, MODEL_CLASSES, Untranslatable, tf_class, translate

log = logging.getLogger(__name__)
MAX_DIFF = 1e-4  # largest tolerated output difference, Keras 3 model vs its tf_keras twin
VERIFY_SAMPLES = 64  # enough to exercise every path; both models run them in batches
_ORIGINS: weakref.WeakKeyDictionary[Any, Origin] = weakref.WeakKeyDictionary()


@dataclass
class Origin:
    """Where a tf_keras model came from when the user gave a Keras 3 file."""

    path: Path
    keras_version: str
    source: Any  # the Keras 3 model as loaded
    layer_configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # tf_keras twin's
    check: dict[str, Any] | None = None  # the verification's figures, once run


def origin(model: Any) -> Origin | None:
    """The Keras 3 origin of a model ``load`` returned (None for tf_keras input)."""
    try:
        return _ORIGINS.get(model)
    except TypeError:  # unhashable or not weak-referenceable
        return None


def saved_keras_version(path: Path, fmt: str) -> str | None:
    """The Keras version that wrote a .keras or .h5 file (from its metadata), if recorded."""
    try:
        if fmt == "keras":
            with zipfile.ZipFile(path) as zf:
                if "metadata.json" in zf.namelist():
                    return str(json.loads(zf.read("metadata.json")).get("keras_version"))
        elif fmt == "h5":
            import h5py

            with h5py.File(path, "r") as f:
                raw = f.attrs.get("keras_version")
            return raw.decode() if isinstance(raw, bytes) else (None if raw is None else str(raw))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    return None


def is_keras3_file(path: Path, fmt: str, config: Any) -> bool:
    """True when a .keras/.h5 file was written by Keras 3 (by its metadata, else by the config's
    Keras-3-only spellings)."""
    if fmt == "savedmodel":
        return False
    version = saved_keras_version(path, fmt)
    if version and version[0].isdigit():
        return int(version.split(".")[0]) >= 3
    text = json.dumps(config)
    return '"batch_shape"' in text or '"__keras_tensor__"' in text


def load(path: Path, trust_model: bool, config: Any) -> Any:
    """The tf_keras twin of the Keras 3 model in ``path`` (whose model config, as read by
    model_io, is ``config``); its ``origin`` holds the original."""
    keras = _tf.keras3()
    what = f"--model {path}"
    try:
        source = keras.saving.load_model(path, compile=False, safe_mode=not trust_model)
    except Exception as exc:  # Keras raises many types for files it cannot read
        raise _load_error(path, config, exc) from exc
    cls = type(source).__name__
    if cls not in MODEL_CLASSES:
        from edgeprune.pruning.ir import SUBCLASSED_FIX

        raise ModelLoadError(what, f"is a subclassed Keras 3 model ({cls}), so its layer graph "
                             "cannot be read", SUBCLASSED_FIX[0].upper() + SUBCLASSED_FIX[1:])
    config = {"class_name": cls, "config": source.get_config()}
    try:
        entry = translate(config, trusted=trust_model)
    except Untranslatable as exc:
        raise ModelLoadError(f"{what}, layer {exc.layer!r} ({exc.cls})",
                             f"cannot be rebuilt in tf_keras: {exc.problem}", exc.fix) from exc
    tfk = _tf.keras()
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    twins = {name: tf_class(name) for name in APP_TWINS}
    if trust_model:
        from edgeprune.keras3.wrapped import keras3_layer_class

        twins["Keras3Layer"] = keras3_layer_class()
    try:
        with SafeModeScope(True):  # the translated config is ours: no code in it
            model = tfk.layers.deserialize(entry, custom_objects=twins)
    except Exception as exc:
        raise ModelLoadError(what, f"its tf_keras translation does not build ({_line(exc)})",
                             "Report this with the model's config.json; meanwhile save the "
                             "model with tf_keras (TF_USE_LEGACY_KERAS=1)") from exc
    copy_weights(source, model, what)
    _ORIGINS[model] = Origin(path=path, keras_version=keras.__version__, source=source,
                             layer_configs=_configs(model))
    log.info("%s: Keras %s model, rebuilt in tf_keras for pruning", path.name, keras.__version__)
    return model


def _configs(model: Any) -> dict[str, dict[str, Any]]:
    """Every layer's config by name, nested models' layers included."""
    found: dict[str, dict[str, Any]] = {}
    for layer in model.layers:
        if hasattr(layer, "layers"):
            found.update(_configs(layer))
        found[layer.name] = layer.get_config()
    return found


def copy_weights(source: Any, target: Any, what: str) -> None:
    """Each ``source`` layer's weights into the ``target`` layer of the same name (nested
    models matched by name as well); the shapes must agree one by one."""
    for layer in source.layers:
        try:
            twin = target.get_layer(layer.name)
        except ValueError as exc:
            raise ModelLoadError(what, f"layer {layer.name!r} has no counterpart after "
                                 "translation", "Report this with the model's config") from exc
        if hasattr(layer, "layers"):
            copy_weights(layer, twin, what)
            continue
        weights = layer.get_weights()
        if not weights:
            continue
        shapes = [w.shape for w in weights]
        theirs = [tuple(w.shape) for w in twin.get_weights()]
        if shapes != theirs:
            raise ModelLoadError(f"{what}, layer {layer.name!r} ({type(layer).__name__})",
                                 f"has weights of shapes {shapes}, its translation {theirs}",
                                 "Report this with the model's config")
        twin.set_weights(weights)


def verify(model: Any, samples: np.ndarray, source_name: str) -> dict[str, Any] | None:
    """Largest output difference between the user's Keras 3 model and the tf_keras model the
    pipeline works on, over real samples; None for tf_keras input. Above ``MAX_DIFF``: refused."""
    org = origin(model)
    if org is None:
        return None
    x = np.asarray(samples[:VERIFY_SAMPLES], dtype=np.float32)
    found = agreement(org.source, model, x)
    diff = found["max_abs_diff"]
    org.check = {"flavour": "keras3", "keras_version": org.keras_version, **found,
                 "samples": len(x), "samples_from": source_name}
    if not agrees(found):
        raise ModelLoadError(
            f"--model {org.path}",
            f"its tf_keras translation differs from the Keras 3 model by up to {diff:.3g} on "
            f"{len(x)} samples of {source_name}{in_float64(found)} (tolerance {MAX_DIFF:g})",
            "Report this with the model's config.json; meanwhile save the model with tf_keras "
            "(TF_USE_LEGACY_KERAS=1)")
    log.info("Keras 3 → tf_keras: outputs agree to %.2g on %d samples%s", diff, len(x),
             in_float64(found))
    return org.check


def agreement(a: Any, b: Any, x: np.ndarray) -> dict[str, float]:
    """``max_abs_diff`` of two models in float32 and, where that exceeds ``MAX_DIFF``, also
    ``max_abs_diff_float64`` of both rebuilt in float64 (keras3/float64.py says why)."""
    found = {"max_abs_diff": max_diff(a, b, x)}
    if math.isfinite(found["max_abs_diff"]) and found["max_abs_diff"] > MAX_DIFF:
        try:
            found["max_abs_diff_float64"] = max_diff(
                float64.rebuild(a), float64.rebuild(b), np.asarray(x, np.float64))
        except Exception as exc:  # a layer that fixes its dtype: the float32 figure stands
            log.info("no float64 rebuild (%s: %s)", type(exc).__name__, exc)
    return found


def agrees(found: dict[str, float]) -> bool:
    """Within ``MAX_DIFF`` in float32, or in float64 where float32 rounding was amplified."""
    return math.isfinite(found["max_abs_diff"]) and min(found.values()) <= MAX_DIFF


def in_float64(found: dict[str, float]) -> str:
    d64 = found.get("max_abs_diff_float64")
    return "" if d64 is None else f" ({d64:.3g} computed in float64)"


def max_diff(a: Any, b: Any, x: np.ndarray, batch: int = 16) -> float:
    """Largest absolute output difference of two models (any Keras) in inference mode."""
    worst = 0.0
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        ya = np.asarray(a(chunk, training=False), dtype=np.float64)
        yb = np.asarray(b(chunk, training=False), dtype=np.float64)
        worst = max(worst, float(np.max(np.abs(ya - yb))) if ya.size else 0.0)
    return worst


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _load_error(path: Path, config: Any, exc: Exception) -> ModelLoadError:
    """Name the layer and argument Keras 3 could not read, and the Keras that wrote the file."""
    keras = _tf.keras3()

    from edgeprune.keras3.diagnose import first_bad_layer

    what = f"--model {path}"
    saved = saved_keras_version(path, "keras" if path.suffix == ".keras" else "h5")
    bad = first_bad_layer(config)
    newer = saved is not None and _version(saved) > _version(keras.__version__)
    by = f" (saved by Keras {saved}, this is Keras {keras.__version__})" if newer else ""
    if bad is not None:
        layer, cls, problem = bad
        return ModelLoadError(
            f"{what}, layer {layer!r} ({cls})", f"Keras cannot read its config{by}: {problem}",
            f"Save the model with Keras {keras.__version__} (pip install keras=="
            f"{keras.__version__}) or without that argument" if newer else
            "Rebuild the layer with arguments this Keras knows and save the model again")
    return ModelLoadError(what, f"cannot be loaded by Keras 3{by} ({_line(exc)})",
                          f"Save the model with Keras {keras.__version__}" if newer else
                          "Check that the file was saved by Keras (Keras 3 or tf_keras)")


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)
