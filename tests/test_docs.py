"""The documentation stays true to the repository: the CLI reference is current, relative links
resolve, README.md stays a short guide, and nothing cites files that are not in the repository."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 200
# A Markdown link or image target: [text](target) / ![alt](target), up to a space or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# The design notes that were never part of the repository; spelt in two parts so this file
# does not match itself.
OUTSIDE_FILE = re.compile(r"\b" + "DES" + r"IGN\b")
SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "__pycache__", ".pytest_cache",
             ".ruff_cache", ".mypy_cache", ".hypothesis"}


def _generator():
    spec = importlib.util.spec_from_file_location("gen_cli_reference",
                                                  ROOT / "docs" / "gen_cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _docs() -> list[Path]:
    return [ROOT / "README.md", ROOT / "bench" / "RESULTS.md",
            *sorted((ROOT / "docs").glob("*.md"))]


def _repository_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files; every file outside .git and caches
    when git is not available."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True,
        ).stdout
        return [ROOT / name for name in out.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        return [p for p in ROOT.rglob("*")
                if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(ROOT).parts)]


def test_cli_reference_is_current():
    gen = _generator()
    committed = gen.OUT.read_text(encoding="utf-8") if gen.OUT.is_file() else ""
    assert gen.render() == committed, (
        "docs/cli.md differs from the commands' --help: run `make docs` "
        "(or `.venv/bin/python docs/gen_cli_reference.py`) and commit docs/cli.md"
    )


def test_cli_reference_covers_every_command():
    from edgeprune.cli import main

    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for name in main.commands:
        assert f"## edgeprune {name}\n" in text, f"docs/cli.md has no section for {name}"


def test_relative_links_resolve():
    broken = []
    for doc in _docs():
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL (https:, mailto:) or an anchor in the same file
            path = target.split("#", 1)[0]
            if not (doc.parent / path).exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, "relative links to files that do not exist:\n" + "\n".join(broken)


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): it is the user guide; put "
        "method details in docs/ and evidence in bench/ (indexed by bench/RESULTS.md)"
    )


def test_no_reference_to_files_outside_the_repository():
    hits = []
    for path in _repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # binary (models, .npz) or unreadable: cannot cite anything
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE_FILE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, ("cite the public source itself, not design notes that are not in the "
                      "repository:\n" + "\n".join(hits))
