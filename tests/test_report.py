"""report.md / report.html rendering, and the HTML in a real headless Chromium."""

import json
import shutil
from html.parser import HTMLParser

import chromium
import pytest
from click.testing import CliRunner

from edgeprune.cli import main
from edgeprune.manifest import sha256_file


class _Resources(HTMLParser):
    """Every URL the page would load, and its tags."""

    def __init__(self):
        super().__init__()
        self.urls, self.tags = [], set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def _build(tiny_files, out, target="host"):
    args = ["build", "--target", target, "--model", str(tiny_files["model"]), "--data",
            str(tiny_files["data"]), "--val", str(tiny_files["val"]), "--calib",
            str(tiny_files["calib"]), "--out", str(out), "--quantize", "int8"]
    return CliRunner().invoke(main, args)


@pytest.fixture(scope="module")
def reports(tiny_files, tmp_path_factory):
    """A build that meets its budgets and one that cannot (a 1 ns latency budget)."""
    root = tmp_path_factory.mktemp("reports")
    ok = _build(tiny_files, root / "ok")
    assert ok.exit_code == 0, ok.output
    strict = root / "strict.toml"
    strict.write_text('inherit = "host"\nname = "host-strict"\n[budgets]\nlatency_ms = 1e-6\n')
    failing = _build(tiny_files, root / "fail", target=str(strict))
    assert failing.exit_code == 1, failing.output
    return {"ok": root / "ok" / "host", "fail": root / "fail" / "host-strict"}


def test_html_is_self_contained_with_plots(reports):
    for folder in reports.values():
        page = (folder / "report.html").read_text()
        parser = _Resources()
        parser.feed(page)
        assert "script" not in parser.tags and "link" not in parser.tags
        assert parser.urls and all(u.startswith("data:image/png;base64,") for u in parser.urls)
    fail_page = (reports["fail"] / "report.html").read_text()
    assert "FAIL — budget not met: latency" in fail_page
    assert "PASS — every budget met" in (reports["ok"] / "report.html").read_text()


def test_markdown_marks_each_check(reports):
    md = (reports["fail"] / "report.md").read_text()
    assert "| ✗ | latency |" in md and "| ✓ | flash |" in md


def test_report_command_rerenders_and_keeps_the_manifest_true(reports, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(reports["ok"], folder)
    report_json = (folder / "report.json").read_bytes()
    (folder / "report.md").write_text("stale")
    r = CliRunner().invoke(main, ["report", str(folder)])
    assert r.exit_code == 0, r.output
    assert (folder / "report.json").read_bytes() == report_json
    assert "edgeprune report — host" in (folder / "report.md").read_text()
    manifest = json.loads((folder / "manifest.json").read_text())
    for name, digest in manifest["artifacts"].items():
        assert sha256_file(folder / name) == digest


def test_report_command_rejects_a_foreign_folder(tmp_path):
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 2 and "report.json" in r.output
    (tmp_path / "report.json").write_text('{"schema": "other"}')
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 2 and "edgeprune.report/1" in r.output


@pytest.mark.skipif(chromium.CHROMIUM is None, reason="Debian's chromium: .ci/run installs it")
@pytest.mark.parametrize("which", ["ok", "fail"])
def test_renders_in_headless_chromium_without_console_errors(reports, which, tmp_path):
    pixels, console = chromium.render(reports[which] / "report.html", tmp_path)
    assert console == []
    assert pixels.shape[0] >= 2000
    # rendered content, not a blank page: plenty of non-white pixels, and the verdict colour
    assert (pixels.min(axis=2) < 200).mean() > 0.01
    assert chromium.has_colour(pixels, (26, 127, 55) if which == "ok" else (180, 35, 24))
