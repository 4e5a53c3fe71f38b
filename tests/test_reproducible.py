"""Reproducible builds: same inputs, recipe and seed → byte-identical artifacts; and
`edgeprune verify`, which re-hashes a build folder against its manifest.json."""

import json
import shutil

from click.testing import CliRunner

from edgeprune.cli import main
from edgeprune.manifest import sha256_file
from edgeprune.stages.report import rerender

# Files that legitimately differ between two identical builds, and why: report.json holds the
# stage timings and the host latency measurement (wall-clock), report.md/html render them, and
# manifest.json holds the hashes of those three.
VOLATILE = {"report.json", "report.md", "report.html", "manifest.json"}


def _build(files, out, *extra, target="cortex-m4"):
    args = ["build", "--target", target, "--model", str(files["model"]), "--data",
            str(files["data"]), "--val", str(files["val"]), "--calib", str(files["calib"]),
            "--seed", "7", "--out", str(out), *extra]
    r = CliRunner().invoke(main, args)
    assert r.exit_code in (0, 1), r.output + repr(r.exception)
    return out / target


def _hashes(folder):
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


def _stable_report(folder):
    """report.json without its volatile keys: stage timings, host latency (wall-clock)."""
    rep = json.loads((folder / "report.json").read_text())
    rep["timings_s"] = {}
    for m in rep["measurements"]:
        if m["quantity"] == "latency_ms" and m["method"] == "host":
            m["value"], m["detail"] = 0.0, ""
    return rep


def _normalise(folder):
    """Rewrite report.json with volatile keys blanked, then re-render report.md/html from it."""
    (folder / "report.json").write_text(json.dumps(_stable_report(folder), indent=2))
    rerender(folder)


def test_two_builds_are_byte_identical(tiny_files, tmp_path):
    """Structured pruning, fine-tuning and int8 for a Cortex-M target: the .tflite and the C
    sources match byte for byte; the reports match once timings are taken out."""
    recipe = ("--prune", "structured", "--sparsity", "0.5", "--epochs", "1", "--quantize", "int8")
    a = _build(tiny_files, tmp_path / "a", *recipe)
    b = _build(tiny_files, tmp_path / "b", *recipe)
    ha, hb = _hashes(a), _hashes(b)
    assert set(ha) == set(hb)
    assert {"model.tflite", "model_data.cc", "model_data.h", "op_resolver.h"} <= set(ha)
    differing = {name for name in ha if ha[name] != hb[name]}
    assert differing <= VOLATILE, differing
    assert _stable_report(a) == _stable_report(b)
    ma, mb = (json.loads((f / "manifest.json").read_text()) for f in (a, b))
    for m in (ma, mb):
        for name in VOLATILE - {"manifest.json"}:
            m["artifacts"].pop(name)
    assert ma == mb
    # report.md/html differ only through report.json's volatile keys
    for folder in (a, b):
        _normalise(folder)
    assert (a / "report.md").read_bytes() == (b / "report.md").read_bytes()
    assert (a / "report.html").read_bytes() == (b / "report.html").read_bytes()


def test_qat_twice_in_one_process_is_identical(tiny_files, tmp_path):
    """Keras numbers auto-named layers per process (quantize_layer, quantize_layer_1, …) and
    the names reach the .tflite: each stage resets the counters, so a second build in the same
    process (--all-targets, --sweep, tests) emits the same bytes."""
    recipe = ("--prune", "none", "--epochs", "1", "--quantize", "qat")
    a = _build(tiny_files, tmp_path / "a", *recipe, target="host")
    b = _build(tiny_files, tmp_path / "b", *recipe, target="host")
    assert (a / "model.tflite").read_bytes() == (b / "model.tflite").read_bytes()


def test_manifest_records_inputs_recipe_and_versions(tiny_files, tmp_path):
    folder = _build(tiny_files, tmp_path / "o", "--prune", "none", "--epochs", "0",
                    target="host")
    m = json.loads((folder / "manifest.json").read_text())
    assert set(m["inputs"]) == {"model", "data", "val", "calib", "target"}
    assert m["inputs"]["model"]["sha256"] == sha256_file(tiny_files["model"])
    assert len(m["recipe_sha256"]) == len(m["target_sha256"]) == 64
    assert {"edgeprune", "tensorflow", "tf_keras", "python"} <= set(m["versions"])


def _verify(path, *extra):
    return CliRunner().invoke(main, ["verify", str(path), *extra])


def test_verify_clean_changed_and_not_a_build_folder(tiny_files, tmp_path):
    out = tmp_path / "o"
    folder = _build(tiny_files, out, "--prune", "none", "--epochs", "0", target="host")
    for path in (folder, out):  # OUT/<target> or OUT holding target folders
        r = _verify(path)
        assert r.exit_code == 0, r.output
        assert "ok" in r.output
    r = _verify(out, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["drifted"] is False

    blob = bytearray((folder / "model.tflite").read_bytes())
    blob[-1] ^= 0xFF
    (folder / "model.tflite").write_bytes(bytes(blob))
    (folder / "notes.txt").write_text("added by hand")
    r = _verify(folder)
    assert r.exit_code == 1
    assert "changed artifact: model.tflite" in r.output and "extra file: notes.txt" in r.output
    (folder / "report.md").unlink()
    r = _verify(out, "--json")
    assert r.exit_code == 1
    build = json.loads(r.stdout)["builds"][0]
    assert build["changed"] == ["model.tflite"] and build["missing"] == ["report.md"]

    not_build = tmp_path / "empty"
    not_build.mkdir()
    r = _verify(not_build)
    assert r.exit_code == 2 and "empty" in r.output and "--out" in r.output
    r = _verify(tmp_path / "nowhere")
    assert r.exit_code == 2 and "nowhere" in r.output


def test_verify_reports_changed_inputs(tiny_files, tmp_path):
    files = dict(tiny_files, val=tmp_path / "val.npz")
    shutil.copy(tiny_files["val"], files["val"])
    folder = _build(files, tmp_path / "o", "--prune", "none", "--epochs", "0", target="host")
    files["val"].write_bytes(files["val"].read_bytes() + b"\0")
    r = _verify(folder, "--json")
    assert r.exit_code == 1
    assert json.loads(r.stdout)["builds"][0]["inputs_changed"] == ["val"]
    files["val"].unlink()  # gone: listed as not checked, not as drift
    r = _verify(folder, "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout)["builds"][0]["inputs_not_checked"] == ["val"]
