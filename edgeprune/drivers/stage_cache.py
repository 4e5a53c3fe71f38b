"""Stage cache: each stage's output, keyed by the hash of everything it was computed from.

Layout: ``OUT/.edgeprune-cache/<target>/<stage>-<key>/`` holding ``model.keras`` (a Keras
model, saved with ``model.save``), ``model.tflite`` (bytes) and/or ``result.json`` (small
results). An entry is written into a temporary folder and renamed into place, so an entry that
exists is complete; a crash or Ctrl-C leaves only whole entries behind.

Keys chain: ``key(stage) = sha256(key(previous stage), stage, the recipe/target fields the stage
declares it reads (its ``key_parts``), edgeprune version)``; the first key hashes the input
files. Changing one input therefore invalidates exactly the stages from the first one that
reads it. Every build writes the cache; only ``--resume`` reads it. Each target's folder is
kept under ``MAX_BYTES``: after a store, the least recently used entries (a hit refreshes an
entry's time) that the running build has not used are evicted; partial folders a killed
process left behind go as soon as no process has their pid, else after ``STALE_PARTIAL_S``.
A target's cache is written only by the build holding that target's lock (``folder_lock``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from edgeprune import __version__
from edgeprune.atomic import abandoned, staged_folder
from edgeprune.training import seed_everything

log = logging.getLogger(__name__)

CACHE_DIR = ".edgeprune-cache"
MAX_BYTES = 2 * 1024**3  # per target: dozens of builds of a mobile-sized model
STALE_PARTIAL_S = 24 * 3600  # a concurrent build's partial entry is younger
T = TypeVar("T")


class Stage(Protocol):
    """A cached stage module: its name and what it reads, for its key."""

    __name__: str

    def key_parts(self, recipe: Any, target: Any) -> dict[str, Any]: ...


def chain(previous: str, stage: str, **parts: Any) -> str:
    """The key of ``stage``: a hash of the previous key, what the stage reads, our version."""
    payload = json.dumps({"previous": previous, "stage": stage, "edgeprune": __version__,
                          **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def input_key(paths: dict[str, Path | None], parts: dict[str, Any]) -> str:
    """The first key: the input files' hashes and what loading reads (``parts``)."""
    from edgeprune.manifest import sha256_path

    hashes = {name: None if path is None else sha256_path(path) for name, path in paths.items()}
    return chain("", "load", inputs=hashes, **parts)


class _NotStored(Exception):
    """A saver declined (its output cannot be cached): drop the staged entry."""


@dataclass
class StageCache:
    """One target's cache folder; ``reused`` lists the stages taken from it in this build."""

    root: Path
    read: bool  # --resume
    seed: int  # the recipe's: reset before each stage computes
    trust_model: bool = False  # cached models are loaded as the input model was
    max_bytes: int = MAX_BYTES
    reused: list[str] = field(default_factory=list)
    used: set[Path] = field(default_factory=set)  # this build's entries: never evicted
    key: str = ""  # the last stage's key, which the next one chains from
    recipe: Any = None
    target: Any = None

    @classmethod
    def for_build(cls, out: Path, recipe: Any, target: Any, first_key: str, resume: bool,
                  trust_model: bool = False) -> StageCache:
        return cls(out / CACHE_DIR / target.name, resume, recipe.seed, trust_model,
                   key=first_key, recipe=recipe, target=target)

    def stage(self, stage: Stage, compute: Callable[[], T], save: Callable[[T, Path], bool],
              load: Callable[[Path], T], reusable: bool = True) -> T:
        """Run a stage module's computation through the cache: its key chains from the
        previous stage's and hashes what the stage declares it reads (``key_parts``)."""
        name = stage.__name__.rsplit(".", 1)[-1]
        self.key = chain(self.key, name, **stage.key_parts(self.recipe, self.target))
        return self.run(name, self.key, compute, save, load, reusable)

    def run(self, stage: str, key: str, compute: Callable[[], T],
            save: Callable[[T, Path], bool], load: Callable[[Path], T],
            reusable: bool = True) -> T:
        """``load`` the cached output of ``stage`` (with --resume), else ``compute`` and ``save``
        it (``save`` returns False for outputs that cannot be cached)."""
        entry = self.root / f"{stage}-{key}"
        if self.read and reusable and entry.is_dir():
            try:
                value = load(entry)
            except Exception as exc:  # a damaged entry is a miss, never a failed build
                log.warning("%s: cached output in %s unreadable (%s); recomputing", stage,
                            entry, exc)
                shutil.rmtree(entry, ignore_errors=True)
            else:
                self.reused.append(stage)
                self.used.add(entry)
                with contextlib.suppress(OSError):  # recently used: evicted last
                    os.utime(entry)
                log.info("%-9s reused from %s", stage, entry)
                return value
        fresh_state(self.seed)
        value = compute()
        self._store(entry, lambda folder: save(value, folder))
        self.used.add(entry)
        self.trim()
        return value

    def trim(self) -> None:
        """Evict least recently used entries, never this build's, until the folder fits."""
        try:  # another build may be evicting too: a trim never fails a build
            entries = self._entries()
        except OSError as exc:
            log.warning("stage cache %s not trimmed (%s)", self.root, exc)
            return
        total = sum(size for _, _, size in entries)
        for _, path, size in sorted(entries):
            if total <= self.max_bytes:
                break
            if path not in self.used:
                shutil.rmtree(path, ignore_errors=True)
                total -= size
                log.info("stage cache over %d MiB: evicted %s (least recently used)",
                         self.max_bytes // 2**20, path.name)

    def _entries(self) -> list[tuple[float, Path, int]]:
        """(last used, path, bytes) of each entry; stale partial folders are removed."""
        now, entries = time.time(), []
        for path in self.root.iterdir():
            if not path.name.startswith("."):
                entries.append((path.stat().st_mtime, path, _size(path)))
            elif ".partial-" in path.name and (abandoned(path) or
                                               now - path.stat().st_mtime > STALE_PARTIAL_S):
                shutil.rmtree(path, ignore_errors=True)
        return entries

    def load_model(self, folder: Path) -> Any:
        from edgeprune import _tf

        return _tf.keras().models.load_model(folder / "model.keras", compile=False,
                                             safe_mode=not self.trust_model)

    def load_trained(self, folder: Path) -> tuple[Any, dict[str, Any] | None]:
        # Entries written before the summary was cached hold the model alone.
        summary = load_json(folder) if (folder / "result.json").is_file() else None
        return self.load_model(folder), summary

    def load_pruned(self, folder: Path) -> Any:
        from edgeprune.stages.prune import Pruned

        return Pruned(model=self.load_model(folder), **load_json(folder))

    def _store(self, entry: Path, save: Callable[[Path], bool]) -> None:
        try:  # a concurrent build that stored the same entry first wins: the same content
            with staged_folder(entry, replace=False) as tmp:
                if not save(tmp):
                    raise _NotStored
        except _NotStored:
            pass
        except Exception as exc:  # an output we cannot store only costs a later resume
            log.warning("%s: not cached (%s: %s)", entry.name, type(exc).__name__, exc)


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


# --- savers and loaders: Keras models as .keras, .tflite as bytes, small results as JSON -----

def save_json(value: Any, folder: Path) -> bool:
    (folder / "result.json").write_text(
        json.dumps(value, indent=1, sort_keys=True, default=_plain), encoding="utf-8")
    return True


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars: json.dumps of the report takes them the same way
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def load_json(folder: Path) -> Any:
    return json.loads((folder / "result.json").read_text(encoding="utf-8"))


def save_tflite(blob: bytes, folder: Path) -> bool:
    (folder / "model.tflite").write_bytes(blob)
    return True


def load_tflite(folder: Path) -> bytes:
    return (folder / "model.tflite").read_bytes()


def save_model(model: Any, folder: Path) -> bool:
    from edgeprune.layerless import is_layerless

    if is_layerless(model):  # a wrapped SavedModel has no Keras file to cache
        return False
    model.save(folder / "model.keras")
    return True


def save_trained(trained: tuple[Any, dict[str, Any]], folder: Path) -> bool:
    """The fine-tune stage's model and summary."""
    model, summary = trained
    return save_json(summary, folder) and save_model(model, folder)


# Fields of a ``Pruned`` that are not plain data; every other field is cached as JSON. The
# model is saved as .keras; callbacks and strip are code, set only for TF-MOT-wrapped models,
# which are not cached.
PRUNED_CODE = ("model", "callbacks", "strip", "needs_training")


def save_pruned(pruned: Any, folder: Path) -> bool:
    if pruned.needs_training:  # TF-MOT-wrapped: masks, schedule and callbacks live in Python
        return False
    save_json({f.name: getattr(pruned, f.name) for f in dataclasses.fields(pruned)
               if f.name not in PRUNED_CODE}, folder)
    return save_model(pruned.model, folder)


def never(value: Any, folder: Path) -> bool:
    """For stages whose output cannot be cached (QAT: TF-MOT's wrappers)."""
    return False


def fresh_state(seed: int) -> None:
    """Reseed and reset Keras' layer-name counters before a stage computes, so its output
    depends only on its inputs — not on which earlier stages ran in this process or came from
    the cache. Auto-generated layer names (``quantize_layer_1``) end up in .tflite tensor
    names."""
    from edgeprune import _tf
    _tf.keras().backend.reset_uids()
    seed_everything(seed)
