"""manifest.json: what was built from what, with which tools.

Hashes of every artifact in the output folder and of every input, the resolved target and
recipe, and tool versions (read from package metadata, so TensorFlow is not imported here).
"""

from __future__ import annotations

import glob
import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeprune import __version__

MANIFEST_SCHEMA = "edgeprune.manifest/1"
_PACKAGES = {
    "tensorflow": "tensorflow",
    "tf_keras": "tf-keras",
    "tfmot": "tensorflow-model-optimization",
    "litert": "ai-edge-litert",
    "tflite_micro": "tflite-micro",
    "numpy": "numpy",
    "vela": "ethos-u-vela",
}


def tool_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"edgeprune": __version__}
    for key, dist in _PACKAGES.items():
        try:
            versions[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[key] = None
    versions["python"] = platform.python_version()
    return versions


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_path(path: Path) -> str:
    """A file's sha256, or for a folder (SavedModel, image folder) or a glob of files (TFRecord
    shards) the hash of its sorted file names and hashes."""
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        root, files = path, (p for p in path.rglob("*") if p.is_file())
    else:
        root, files = path.parent, (Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
    h = hashlib.sha256()
    for file in sorted(files):
        h.update(f"{file.relative_to(root).as_posix()}\0{sha256_file(file)}\n".encode())
    return h.hexdigest()


def sha256_json(value: Any) -> str:
    """The hash of a value's canonical JSON (sorted keys): same settings, same hash."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def write_manifest(folder: Path, target: Any, recipe: Any, request: Any) -> Path:
    artifacts = {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    inputs = {}
    for name in ("model", "data", "val", "calib", "recipe_file"):
        path = getattr(request, name)
        if path is not None:  # absolute, so `edgeprune verify` finds it from any folder
            inputs[name] = {"path": str(Path(path).resolve()), "sha256": sha256_path(Path(path))}
    if target.source:
        inputs["target"] = {"path": target.source, "sha256": sha256_file(Path(target.source))}
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "artifacts": artifacts,
        "inputs": inputs,
        "versions": tool_versions(),
        "target": target.to_dict(),
        "recipe": recipe.to_dict(),
        # What was built, independent of which files it came from (CLI options included).
        "target_sha256": sha256_json(target.to_dict()),
        "recipe_sha256": sha256_json(recipe.to_dict()),
    }
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def refresh_hashes(folder: Path, files: list[Path]) -> None:
    """Update the artifact hashes of re-rendered files in an existing manifest.json."""
    path = folder / "manifest.json"
    if not path.is_file():
        return
    manifest = json.loads(path.read_text(encoding="utf-8"))
    for file in files:
        manifest["artifacts"][file.relative_to(folder).as_posix()] = sha256_file(file)
    partial = path.with_name(f".{path.name}.partial")  # renamed: never half-written
    partial.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
