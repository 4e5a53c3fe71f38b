"""The pruned model out, as ``model.keras`` in the input's own Keras flavour.

tf_keras input: the tf_keras model is saved as it is. Keras 3 input: the user's own Keras 3
config is rebuilt with the values pruning changed (``filters``, ``units`` …, found by comparing
each layer's tf_keras config before and after), so every layer keeps its Keras 3 class, name and
activation; the weights are then copied by layer name. The file is written byte-reproducibly
(fixed zip timestamps, no save date), since builds are compared byte for byte.
"""

from __future__ import annotations

import copy
import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.errors import ToolError
from edgeprune.keras3 import bridge
from edgeprune.keras3.translate import MODEL_CLASSES, RENAMES

_BACK = {(cls, new): old for (cls, old), new in RENAMES.items()}
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def save_like_input(model: Any, loaded: Any, path: Path,
                    samples: np.ndarray | None = None) -> dict[str, Any]:
    """Write ``model`` (tf_keras, TF-MOT wrappers stripped) to ``path`` in the flavour of the
    user's model ``loaded`` (as ``model_io.load_model`` returned it); returns what to report."""
    from edgeprune.layerless import is_layerless

    info: dict[str, Any] = {"file": path.name, "params": int(model.count_params())}
    if is_layerless(model):  # nothing was pruned; the user's SavedModel is the float model
        return {**info, "file": None, "flavour": "none",
                "why": "the input is a SavedModel without Keras layers, converted as it is"}
    org = bridge.origin(loaded)
    if org is None:
        _save_reproducibly(model, path)
        return {**info, "flavour": "tf_keras"}
    twin = to_keras3(model, org)
    if int(twin.count_params()) != info["params"]:
        raise ToolError("model.keras", f"the Keras 3 model has {twin.count_params():,} "
                        f"parameters, the pruned model {info['params']:,}",
                        "Report this with the build's report.json")
    info.update(flavour="keras3", keras_version=org.keras_version)
    if samples is not None:
        found = bridge.agreement(model, twin, np.asarray(samples[:16], np.float32))
        info.update(found)
        if not bridge.agrees(found):
            raise ToolError("model.keras", f"the Keras 3 model differs from the pruned model by "
                            f"up to {found['max_abs_diff']:.3g}{bridge.in_float64(found)} "
                            f"(tolerance {bridge.MAX_DIFF:g})",
                            "Report this with the build's report.json")
    _save_reproducibly(twin, path)
    return info


def to_keras3(model: Any, org: bridge.Origin) -> Any:
    """The Keras 3 twin of a pruned tf_keras model translated from ``org``."""
    after = bridge._configs(model)
    config = copy.deepcopy(org.source.get_config())
    _update(config, org.layer_configs, after)
    rebuilt = type(org.source).from_config(config)
    _copy_back(model, rebuilt)
    return rebuilt


def _update(config: dict[str, Any], before: dict[str, dict[str, Any]],
            after: dict[str, dict[str, Any]]) -> None:
    """Apply what pruning changed to a Keras 3 model config, in place."""
    for entry in config.get("layers", []):
        entry.pop("build_config", None)  # the pre-pruning shapes
        cls, cfg = entry.get("class_name"), entry.get("config") or {}
        if cls in MODEL_CLASSES:
            _update(cfg, before, after)
            continue
        name = cfg.get("name")
        old, new = before.get(name), after.get(name)
        if old is None or new is None:
            continue  # spelled by other layers in tf_keras (an activation chain): no settings
        for key, value in new.items():
            if key != "name" and old.get(key) != value:
                cfg[_BACK.get((cls, key), key)] = value


def _copy_back(source: Any, target: Any) -> None:
    """Weights of each Keras 3 ``target`` layer from the tf_keras layer of the same name."""
    for layer in target.layers:
        twin = source.get_layer(layer.name)
        if hasattr(layer, "layers"):
            _copy_back(twin, layer)
        elif layer.weights:
            layer.set_weights(twin.get_weights())


def _save_reproducibly(model: Any, path: Path) -> None:
    """``model.save`` to a .keras zip, then rewritten without timestamps or save date."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "model.keras"
        model.save(raw)
        with zipfile.ZipFile(raw) as src:
            members = [(info, src.read(info.filename)) for info in src.infolist()]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        for info, data in members:
            if info.filename == "metadata.json":
                meta = json.loads(data)
                meta.pop("date_saved", None)
                data = json.dumps(meta, sort_keys=True).encode()
            fixed = zipfile.ZipInfo(info.filename, date_time=_FIXED_TIME)
            fixed.compress_type = info.compress_type
            fixed.external_attr = 0o644 << 16
            out.writestr(fixed, data)
    path.write_bytes(buffer.getvalue())
