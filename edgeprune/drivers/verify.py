"""``edgeprune verify``: has a build folder drifted from its manifest.json?

Re-hashes every artifact (changed, missing, and extra files), every recorded input that still
exists (a moved or deleted input is listed as not checked, not as drift) and compares the tool
versions with the running ones. TensorFlow is not imported: versions come from package metadata.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.errors import BadInputError
from edgeprune.manifest import MANIFEST_SCHEMA, sha256_file, sha256_path, tool_versions

MANIFEST = "manifest.json"


@dataclass
class Drift:
    """What differs between one build folder and its manifest."""

    folder: str
    changed: list[str] = field(default_factory=list)  # artifacts whose hash differs
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # files the manifest does not list
    inputs_changed: list[str] = field(default_factory=list)
    inputs_not_checked: list[str] = field(default_factory=list)  # no longer at their path
    versions: dict[str, dict[str, str | None]] = field(default_factory=dict)  # recorded/running

    @property
    def drifted(self) -> bool:
        return bool(self.changed or self.missing or self.extra or self.inputs_changed
                     or self.versions)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drifted": self.drifted}


def build_folders(folder: Path) -> list[Path]:
    """``folder`` itself when it holds manifest.json, else its target sub-folders that do."""
    if (folder / MANIFEST).is_file():
        return [folder]
    found = []
    if folder.is_dir():
        found = sorted(p for p in folder.iterdir()
                       if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file())
    if not found:
        raise BadInputError(
            str(folder),
            "is not an edgeprune build folder (no manifest.json in it or in its sub-folders)"
            if folder.is_dir() else "no such folder",
            "Give OUT/<target> or the --out folder of `edgeprune build`",
        )
    return found


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(str(path), f"cannot be read as JSON ({exc})",
                            "Rebuild the folder with `edgeprune build`") from exc
    if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA or \
            not isinstance(manifest.get("artifacts"), dict):
        raise BadInputError(str(path), f"is not an {MANIFEST_SCHEMA} manifest",
                            "Rebuild the folder with `edgeprune build`")
    return manifest


def check_folder(folder: Path) -> Drift:
    manifest = _read_manifest(folder)
    drift = Drift(str(folder))
    recorded: dict[str, str] = manifest["artifacts"]
    for name, digest in sorted(recorded.items()):
        path = folder / name
        if not path.is_file():
            drift.missing.append(name)
        elif sha256_file(path) != digest:
            drift.changed.append(name)
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    drift.extra = sorted(present - set(recorded) - {MANIFEST})
    for name, entry in sorted(manifest.get("inputs", {}).items()):
        path = Path(entry.get("path", ""))
        if not entry.get("path") or not path.exists():
            drift.inputs_not_checked.append(name)
        elif sha256_path(path) != entry.get("sha256"):
            drift.inputs_changed.append(name)
    running = tool_versions()
    for name, version in sorted(manifest.get("versions", {}).items()):
        if running.get(name) != version:
            drift.versions[name] = {"recorded": version, "running": running.get(name)}
    return drift


def verify_folder(folder: Path) -> list[Drift]:
    """One ``Drift`` per build folder in ``folder`` (exit-2 ``BadInputError`` if there is none)."""
    return [check_folder(f) for f in build_folders(folder)]


def render(results: list[Drift]) -> str:
    lines = []
    for d in results:
        lines.append(f"{d.folder}: {'DRIFTED' if d.drifted else 'ok, matches manifest.json'}")
        for label, names in (("changed artifact", d.changed), ("missing artifact", d.missing),
                             ("extra file", d.extra), ("changed input", d.inputs_changed),
                             ("input not found, not checked", d.inputs_not_checked)):
            lines.extend(f"  {label}: {name}" for name in names)
        lines.extend(f"  tool version: {name} {v['recorded']} recorded, {v['running']} running"
                     for name, v in d.versions.items())
    return "\n".join(lines)
