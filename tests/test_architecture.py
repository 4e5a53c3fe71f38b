"""Layers point one way and nothing imports in a cycle: the import-linter contracts in
pyproject.toml, run on the package (lazy imports inside functions included), and shown to catch
the kinds of import they forbid."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
MAX_LINES = 500


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root, capture_output=True, text=True, env={"PYTHONPATH": str(root)}, timeout=120,
    )


def test_import_contracts_are_kept():
    run = _lint(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 kept, 0 broken" in run.stdout


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "edgeprune", tmp_path / "edgeprune",
                    ignore=shutil.ignore_patterns("__pycache__", "_bundled"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(("module", "line", "contract"), [
    # a library reaching up into a stage, lazily (the way the old upward imports were written)
    ("estimate/cpu.py", "def _late():\n    from edgeprune.stages import check  # noqa\n",
     "cli -> drivers -> stages -> libraries -> core types BROKEN"),
    # two stages importing each other
    ("stages/check.py", "from edgeprune.stages import report  # noqa\n",
     "No import cycles between sibling modules or packages, at any depth BROKEN"),
])
def test_contracts_catch_forbidden_imports(package_copy: Path, module: str, line: str,
                                           contract: str):
    if module == "stages/check.py":  # report must import check for the pair to be a cycle
        report = package_copy / "edgeprune" / "stages" / "report.py"
        report.write_text(report.read_text() + "\nfrom edgeprune.stages import check  # noqa\n")
    path = package_copy / "edgeprune" / module
    path.write_text(path.read_text() + "\n\n" + line)
    run = _lint(package_copy)
    assert run.returncode == 1, run.stdout + run.stderr
    assert contract in run.stdout


def test_no_module_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "edgeprune").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_top_level_module_has_a_layer():
    """A module left out of the layers contract would be free to import anything."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    named = {m.strip() for layer in layers for m in layer.replace("|", ":").split(":")}
    package = ROOT / "edgeprune"
    present = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    present |= {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}
    assert present - named == set(), "add these modules to a layer in pyproject.toml"
    assert named - present == set(), "these layers name no module"
