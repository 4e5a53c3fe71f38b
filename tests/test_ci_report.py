"""CI output: --all-targets (and edgeprune.toml), the summary table, and --junit validated
against the Jenkins JUnit schema (tests/data/junit.xsd) with a real schema validator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema

from edgeprune.drivers import ci_report
from edgeprune.drivers.ci_report import TargetRun
from edgeprune.errors import BadInputError
from edgeprune.targets import shipped_names

SCHEMA = xmlschema.XMLSchema(Path(__file__).parent / "data" / "junit.xsd")


def _check(name: str, passed: bool | None, value: float | None = 1.0) -> dict:
    return {"name": name, "budget": 2.0, "value": value, "unit": "ms", "passed": passed,
            "method": None if passed is None else "estimate", "rule": f"{name} rule."}


def _runs() -> list[TargetRun]:
    ok = [_check("latency", True), _check("flash", True)]
    bad = [_check("latency", None, None), _check("flash", False, 9.0)]
    return [
        TargetRun("rpi4", 0, {"checks": ok}, Path("build/rpi4"), checks=ok, seconds=1.5),
        TargetRun("cortex-m4", 1, {"checks": bad}, Path("build/cortex-m4"), checks=bad),
        TargetRun("coral-usb", 2, error="--quantize none: the Edge TPU needs int8. Use int8"),
    ]


# --- the project file ----------------------------------------------------------------------


def test_without_project_file_every_shipped_target(tmp_path):
    assert ci_report.ci_targets(tmp_path) == shipped_names()
    (tmp_path / "edgeprune.toml").write_text("[ci]\n")
    assert ci_report.ci_targets(tmp_path) == shipped_names()


def test_project_file_lists_targets_names_and_relative_paths(tmp_path):
    (tmp_path / "mine.toml").write_text('inherit = "rpi4"\n[budgets]\nflash_kb = 1\n')
    (tmp_path / "edgeprune.toml").write_text('[ci]\ntargets = ["rpi4", "cortex-m4", "mine.toml"]\n')
    assert ci_report.ci_targets(tmp_path) == ["rpi4", "cortex-m4", str(tmp_path / "mine.toml")]


@pytest.mark.parametrize(("text", "needle"), [
    ('[ci]\ntargets = "rpi4"\n', "not a non-empty list"),
    ("[ci]\ntargets = []\n", "not a non-empty list"),
    ('[ci]\ntargets = ["rpi4", 3]\n', "not a non-empty list"),
    ('[ci]\ntargets = ["rpi4", "rpi4"]\n', "'rpi4' twice"),
    ('[ci]\ntargets = ["rpi9"]\n', "'rpi9': unknown target"),
    ('[ci]\ntargets = ["nope.toml"]\n', "'nope.toml': no such target file"),
    ('[ci]\ntarget = ["rpi4"]\n', "unknown key 'target'"),
    ('ci = 1\n', "[ci] must be a table"),
    ('[ci\n', "TOML syntax error"),
])
def test_project_file_errors_name_file_and_value(tmp_path, text, needle):
    (tmp_path / "edgeprune.toml").write_text(text)
    with pytest.raises(BadInputError) as info:
        ci_report.ci_targets(tmp_path)
    assert needle in str(info.value)
    assert "edgeprune.toml" in str(info.value)


def test_all_targets_and_target_exclude_each_other(tmp_path):
    for given, flag, needle in (((), False, "--target: is missing"),
                                (("rpi4",), True, "cannot be combined")):
        with pytest.raises(BadInputError, match=needle):
            ci_report.target_specs(given, flag, tmp_path)
    with pytest.raises(BadInputError, match="unknown target"):  # before anything is built
        ci_report.target_specs(("rpi4", "rpi9"), False, tmp_path)


def test_cli_usage_errors_exit_2_without_tensorflow(tmp_path):
    (tmp_path / "edgeprune.toml").write_text('[ci]\ntargets = ["rpi9"]\n')
    for args in (["--all-targets"], ["--all-targets", "-t", "rpi4"], []):
        proc = subprocess.run([sys.executable, "-m", "edgeprune", "build", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ")
    assert not (tmp_path / "build").exists()


# --- summary table and JUnit ---------------------------------------------------------------


def test_summary_table_has_a_row_per_target_and_the_worst_code():
    lines = ci_report.summary_table(_runs()).splitlines()
    assert lines[1].split()[:3] == ["rpi4", "PASS", "0"]
    assert "✓ latency 1 ms / 2 ms" in lines[1]
    assert lines[2].split()[:3] == ["cortex-m4", "FAIL", "1"]
    assert "? latency — / 2 ms" in lines[2] and "✗ flash 9 ms / 2 ms" in lines[2]
    assert lines[3].split()[:3] == ["coral-usb", "ERROR", "2"]
    assert lines[-1] == "worst exit code: 2"


def test_junit_validates_and_has_a_case_per_target_and_check(tmp_path):
    path = ci_report.write_junit(tmp_path / "reports" / "junit.xml", _runs())
    SCHEMA.validate(str(path))  # raises on any schema violation
    root = ET.parse(path).getroot()
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    assert set(cases) == {("rpi4", "latency"), ("rpi4", "flash"), ("cortex-m4", "latency"),
                          ("cortex-m4", "flash"), ("coral-usb", "build")}
    assert list(cases["rpi4", "flash"]) == cases["rpi4", "flash"].findall("system-out")
    assert cases["cortex-m4", "latency"].find("skipped").get("message") == "latency rule."
    assert "budget not met" in cases["cortex-m4", "flash"].find("failure").get("message")
    assert cases["coral-usb", "build"].find("error") is not None
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert suites["cortex-m4"].get("failures") == "1" and suites["cortex-m4"].get("skipped") == "1"
    props = {p.get("name"): p.get("value") for p in suites["cortex-m4"].iter("property")}
    assert props["flash.method"] == "estimate" and props["flash.value"] == "9.0"
    assert props["flash.budget"] == "2.0" and props["latency.value"] == ""
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("5", "1", "1")


def test_schema_rejects_what_ci_tools_reject(tmp_path):
    """The validator is real: a testcase without a name, or properties inside a case, fail."""
    bad = tmp_path / "bad.xml"
    for case in ('<testcase classname="x"/>',
                 '<testcase name="x"><properties/></testcase>'):
        bad.write_text(f'<testsuites><testsuite name="s" tests="1">{case}</testsuite>'
                       "</testsuites>")
        assert not SCHEMA.is_valid(str(bad))


# --- the real thing: every shipped target on the bundled example ----------------------------


@pytest.mark.slow
def test_all_targets_on_the_bundled_example(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "edgeprune", "-q", "build", "--all-targets", "--epochs", "0",
         "--prune", "none", "--out", "out", "--junit", "junit.xml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=1800,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("target "))
    end = next(i for i, line in enumerate(lines) if line.startswith("worst exit code"))
    table = lines[start:end + 1]
    rows = {line.split()[0]: line for line in table[1:-1]}
    assert set(rows) == set(shipped_names())
    worst = 0
    for name, row in rows.items():
        rep = json.loads((tmp_path / "out" / name / "report.json").read_text())
        code = 1 if any(c["passed"] is False for c in rep["checks"]) else 0
        worst = max(worst, code)
        verdict = "FAIL" if code else ("PASS" if rep["passed"] else "UNCHECKED")
        assert row.split()[1:3] == [verdict, str(code)], row
        for c in rep["checks"]:
            mark = {True: "✓", False: "✗", None: "?"}[c["passed"]]
            assert f"{mark} {c['name']} " in row
    assert table[-1] == f"worst exit code: {worst}"
    assert proc.returncode == worst
    SCHEMA.validate(str(tmp_path / "junit.xml"))
    root = ET.parse(tmp_path / "junit.xml").getroot()
    for name in rows:
        rep = json.loads((tmp_path / "out" / name / "report.json").read_text())
        names = [c.get("name") for c in root.iter("testcase") if c.get("classname") == name]
        assert names == [c["name"] for c in rep["checks"]]
