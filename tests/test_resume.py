"""Resumable builds: stage outputs cached under OUT/.edgeprune-cache, reused by --resume."""

import json
import os
import time

import numpy as np
import pytest
from click.testing import CliRunner
from interrupt import interrupt_in_finetune

from edgeprune.cli import main
from edgeprune.drivers import stage_cache
from edgeprune.recipe import Recipe
from edgeprune.stages import finetune, prune
from edgeprune.targets import load_target


def _args(files, out, *extra, data=None):
    return ["build", "--target", "host", "--model", str(files["model"]), "--data",
            str(data or files["data"]), "--val", str(files["val"]), "--calib",
            str(files["calib"]), "--seed", "3", "--out", str(out), *extra]


def _build(files, out, *extra, data=None):
    r = CliRunner().invoke(main, _args(files, out, *extra, data=data))
    assert r.exit_code in (0, 1), r.output + repr(r.exception)
    return json.loads((out / "host" / "report.json").read_text())


def _cached_stages(out):
    root = out / stage_cache.CACHE_DIR / "host"
    return sorted(p.name.split("-")[0] for p in root.iterdir() if not p.name.startswith("."))


@pytest.mark.slow
def test_resume_after_ctrl_c_in_finetune_matches_an_uninterrupted_build(tiny_files, tmp_path):
    # Under 40 samples there is no early-stopping split: every epoch runs, so fine-tuning
    # lasts long enough to be interrupted.
    small = tmp_path / "small.npz"
    with np.load(tiny_files["data"]) as d:
        np.savez(small, x=d["x"][:36], y=d["y"][:36])
    recipe = ("--prune", "structured", "--sparsity", "0.5", "--epochs", "150",
              "--quantize", "int8")
    out = tmp_path / "o"
    code, err, _ = interrupt_in_finetune(_args(tiny_files, out, *recipe, data=small), out)
    assert code == 130 and "--resume" in err, err
    assert not (out / "host").exists()
    assert _cached_stages(out) == ["baseline", "prune"]  # whole entries only; no fine-tune

    resumed = _build(tiny_files, out, *recipe, "--resume", data=small)
    assert resumed["reused_stages"] == ["baseline", "prune"]
    assert any("reused" in note for note in resumed["notes"])
    assert "reused the cached output of baseline, prune" in (out / "host" / "report.md").read_text()
    reference = _build(tiny_files, tmp_path / "ref", *recipe, data=small)
    assert reference["reused_stages"] == []
    assert (out / "host" / "model.tflite").read_bytes() == \
        (tmp_path / "ref" / "host" / "model.tflite").read_bytes()
    assert resumed["result"] == reference["result"]


def test_a_changed_recipe_value_invalidates_exactly_the_later_stages(tiny_files, tmp_path):
    out = tmp_path / "o"
    first = _build(tiny_files, out, "--prune", "structured", "--epochs", "1")
    assert first["reused_stages"] == []
    # --epochs is read from fine-tuning on
    rep = _build(tiny_files, out, "--prune", "structured", "--epochs", "2", "--resume")
    assert rep["reused_stages"] == ["baseline", "prune"]
    # --quantize is read by conversion only
    rep = _build(tiny_files, out, "--prune", "structured", "--epochs", "2", "--quantize",
                 "float16", "--resume")
    assert rep["reused_stages"] == ["baseline", "prune", "finetune"]
    # the reused fine-tune still reports what its training did
    assert rep["finetune"]["epochs"] == 2 and 1 <= rep["finetune"]["epochs_run"] <= 2
    assert "## Fine-tuning" in (out / "host" / "report.md").read_text()
    tflite = (out / "host" / "model.tflite").read_bytes()
    # nothing changed: every cached stage is reused, same bytes
    rep = _build(tiny_files, out, "--prune", "structured", "--epochs", "2", "--quantize",
                 "float16", "--resume")
    assert rep["reused_stages"] == ["baseline", "prune", "finetune", "convert"]
    assert (out / "host" / "model.tflite").read_bytes() == tflite
    # --sparsity is read by pruning: everything after the baseline runs again
    rep = _build(tiny_files, out, "--prune", "structured", "--sparsity", "0.25", "--epochs",
                 "2", "--quantize", "float16", "--resume")
    assert rep["reused_stages"] == ["baseline"]


def test_keys_chain_and_name_what_each_stage_reads():
    host = load_target("host")
    recipe, other = Recipe(prune="structured", epochs=2), Recipe(prune="structured", epochs=3)
    assert prune.key_parts(recipe, host) == prune.key_parts(other, host)
    assert finetune.key_parts(recipe, host) != finetune.key_parts(other, host)
    # TF-MOT's schedule spans the epochs: magnitude pruning reads them
    assert "epochs" in prune.key_parts(Recipe(prune="magnitude"), host)["recipe"]
    a = stage_cache.chain("k0", "prune", recipe={"sparsity": 0.5})
    assert a == stage_cache.chain("k0", "prune", recipe={"sparsity": 0.5})
    assert a != stage_cache.chain("k1", "prune", recipe={"sparsity": 0.5})  # chained
    assert a != stage_cache.chain("k0", "prune", recipe={"sparsity": 0.6})


def test_cache_is_written_always_but_read_only_with_resume(tmp_path, monkeypatch):
    monkeypatch.setattr(stage_cache, "fresh_state", lambda seed: None)  # no TensorFlow here
    calls = []

    def compute():
        calls.append(1)
        return {"n": len(calls)}

    def run(resume):
        cache = stage_cache.StageCache(tmp_path / stage_cache.CACHE_DIR / "host", resume, seed=0)
        value = cache.run("baseline", "k", compute, stage_cache.save_json, stage_cache.load_json)
        return value, cache.reused

    assert run(False) == ({"n": 1}, [])
    assert run(False) == ({"n": 2}, [])  # written, not read
    assert run(True) == ({"n": 1}, ["baseline"])  # the first entry stays; it is complete
    entry = tmp_path / stage_cache.CACHE_DIR / "host" / "baseline-k"
    (entry / "result.json").write_text("{broken")
    assert run(True) == ({"n": 3}, [])  # a damaged entry is recomputed, not fatal
    assert run(True) == ({"n": 3}, ["baseline"])  # … and replaced
    assert not [p for p in entry.parent.iterdir() if ".partial-" in p.name]


def test_the_cache_evicts_least_recently_used_entries_but_never_the_builds_own(tmp_path,
                                                                              monkeypatch):
    monkeypatch.setattr(stage_cache, "fresh_state", lambda seed: None)
    root = tmp_path / stage_cache.CACHE_DIR / "host"

    def store(cache, stage, key, size):
        return cache.run(stage, key, lambda: "x" * size, stage_cache.save_json,
                         stage_cache.load_json)

    old = stage_cache.StageCache(root, read=False, seed=0)
    for age, key in ((300, "a"), (200, "b"), (100, "c")):
        store(old, "prune", key, 1000)
        os.utime(root / f"prune-{key}", (time.time() - age,) * 2)
    # A partial folder of a killed process, and one of a build running now.
    stale, fresh = root / ".prune-z.partial-1", root / ".prune-y.partial-2"
    stale.mkdir()
    fresh.mkdir()
    os.utime(stale, (time.time() - stage_cache.STALE_PARTIAL_S - 60,) * 2)

    build = stage_cache.StageCache(root, read=True, seed=0, max_bytes=2500)
    assert store(build, "prune", "a", 0) == "x" * 1000  # a hit: "a" is now the most recent
    store(build, "finetune", "d", 1000)  # 4,008 bytes: "b" then "c" go; "a" is this build's
    assert sorted(p.name for p in root.iterdir()) == [
        ".prune-y.partial-2", "finetune-d", "prune-a"]
    store(build, "convert", "e", 1000)  # over the limit, but every entry is this build's
    assert {"finetune-d", "prune-a", "convert-e"} <= {p.name for p in root.iterdir()}

