"""The stage cache cannot drift from the stages: every recipe field a cached stage reads while
it computes is one that stage (or one before it) declares in ``key_parts``, so a changed value
always changes the key. Real builds of the tiny model, with every Recipe attribute read
recorded against the stage running at the time."""

from __future__ import annotations

import contextlib
import dataclasses
import sys

import pytest

from edgeprune.drivers import pipeline
from edgeprune.recipe import Recipe
from edgeprune.stages import baseline, convert, finetune, gradual, load, prune, qat
from edgeprune.targets import load_target


def _copying_or_validating() -> bool:
    """Inside ``dataclasses.replace`` or ``Recipe.__post_init__``, which touch every field: a
    stage's copy of its recipe (the gradual schedule's per-step fine-tunes) is not a use of
    every field; what the stage then reads from the copy is recorded when it reads it."""
    frame = sys._getframe(2)
    while frame is not None:
        code = frame.f_code
        if code is Recipe.__post_init__.__code__ or (
                code.co_name == "replace" and code.co_filename == dataclasses.__file__):
            return True
        frame = frame.f_back
    return False


CACHED = {"baseline": baseline, "prune": prune, "gradual": gradual, "finetune": finetune,
          "qat": qat, "convert": convert}
FIELDS = {f.name for f in dataclasses.fields(Recipe)}


@pytest.mark.slow
@pytest.mark.parametrize("options", [
    {"prune": "structured", "epochs": 1},
    {"prune": "structured", "epochs": 1, "after_prune": "retrain", "allocation": "global"},
    {"prune": "structured", "epochs": 1, "l1": 1e-4, "criterion": "bn"},
    {"prune": "magnitude", "epochs": 2},
    {"prune": "hybrid", "epochs": 2, "quantize": "qat"},
    {"prune": "structured", "epochs": 2, "quantize": "qat", "distill": True,
     "lr_schedule": "cosine", "optimizer": "sgd"},
    {"prune": "auto", "epochs": 1, "search_minutes": 0.2},
    {"prune": "structured", "epochs": 3, "schedule": "gradual", "distill": True},
    {"prune": "auto", "epochs": 2, "search_minutes": 0.2, "schedule": "gradual", "steps": 2},
], ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_cached_stages_read_only_what_they_declare(options, tiny_files, tmp_path, monkeypatch):
    reads: dict[str, set[str]] = {}
    running: list[str] = []
    real_getattribute = Recipe.__getattribute__

    def recording(self: Recipe, name: str):
        if name in FIELDS and running and not _copying_or_validating():
            reads.setdefault(running[-1], set()).add(name)
        return real_getattribute(self, name)

    real_stage = pipeline.StageTimer.stage

    @contextlib.contextmanager
    def tracked(self, name):
        running.append(name)
        try:
            with real_stage(self, name):
                yield
        finally:
            running.pop()

    monkeypatch.setattr(Recipe, "__getattribute__", recording)
    monkeypatch.setattr(pipeline.StageTimer, "stage", tracked)
    # cortex-m7 rounds to 4 channels: the tiny model's 8 are cut (host's multiple, 8, would not)
    target = ("cortex-m7" if options["prune"] == "auto" or "schedule" in options else "host")
    request = pipeline.BuildRequest(
        model=tiny_files["model"], data=tiny_files["data"], val=tiny_files["val"],
        out=tmp_path / "out", overrides=options)
    pipeline.build(request, target)

    recipe = Recipe(**options)
    profile = load_target(target)
    declared = set(load.key_parts(recipe, profile)["recipe"])
    for name, stage in CACHED.items():  # in pipeline order: a stage may read what came before
        declared |= set(stage.key_parts(recipe, profile)["recipe"])
        undeclared = reads.get(name, set()) - declared
        assert not undeclared, f"the {name} stage reads {undeclared} but its key does not"
    assert reads.get("prune"), "nothing was recorded: the recording is broken"
