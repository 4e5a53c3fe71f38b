"""The CI workflows users copy (examples/ci/) parse and do what the README says: the matrix of
shards from `edgeprune targets --matrix`, one `build --all-targets --shard` per job, and a job
that merges the shards into one summary and JUnit report."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeprune.cli import main

yaml = pytest.importorskip("yaml")  # PyYAML: installed with tflite-micro

CI = Path(__file__).resolve().parents[1] / "examples" / "ci"


def test_github_actions_plans_shards_builds_each_and_merges():
    flow = yaml.safe_load((CI / "github-actions.yml").read_text())
    plan, fits, report = (flow["jobs"][name] for name in ("plan", "fits", "report"))
    assert "targets --matrix github" in plan["steps"][-1]["run"]
    assert fits["needs"] == "plan" and fits["strategy"]["fail-fast"] is False
    assert fits["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    run = next(s for s in fits["steps"] if "run" in s)["run"]
    assert "docker run" in run and "--all-targets --shard \"${{ matrix.shard }}\"" in run
    upload = next(s for s in fits["steps"] if "upload-artifact" in s.get("uses", ""))
    assert upload["if"] == "always()" and upload["with"]["path"] == "build/"
    assert report["needs"] == "fits" and report["if"] == "always()"
    merge = next(s for s in report["steps"] if "merge" in s.get("run", ""))["run"]
    assert "merge shards/edgeprune-shard-* --junit junit.xml" in merge


def test_gitlab_ci_shards_keep_build_and_merge_into_one_junit_report(tmp_path, monkeypatch):
    flow = yaml.safe_load((CI / "gitlab-ci.yml").read_text())
    job, report = flow["edgeprune"], flow["edgeprune-report"]
    assert flow[".edgeprune-image"]["image"]["entrypoint"] == [""]
    assert "edgeprune build --all-targets --shard \"$SHARD\"" in " ".join(job["script"])
    assert job["artifacts"]["when"] == "always" and job["artifacts"]["paths"] == ["build/"]
    assert report["when"] == "always" and report["stage"] == "report"
    assert "edgeprune merge build/shard-* --junit build/junit.xml" in report["script"]
    assert report["artifacts"]["reports"]["junit"] == "build/junit.xml"
    # the matrix is what `edgeprune targets --matrix gitlab` prints for two targets
    monkeypatch.chdir(tmp_path)
    (tmp_path / "edgeprune.toml").write_text('[ci]\ntargets = ["rpi4", "cortex-m4"]\n')
    printed = yaml.safe_load(CliRunner().invoke(main, ["targets", "--matrix", "gitlab"]).output)
    assert printed["parallel"] == job["parallel"]
    github = json.loads(CliRunner().invoke(main, ["targets", "--matrix", "github"]).output)
    assert [row["shard"] for row in github["include"]] == ["1/2", "2/2"]
