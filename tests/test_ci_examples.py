"""The CI workflows users copy (examples/ci/) parse and do what the README says."""

from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")  # PyYAML: installed with tflite-micro

CI = Path(__file__).resolve().parents[1] / "examples" / "ci"


def test_github_actions_matrix_runs_the_image_and_uploads_build():
    flow = yaml.safe_load((CI / "github-actions.yml").read_text())
    job = flow["jobs"]["fits"]
    assert job["strategy"]["matrix"]["target"] and job["strategy"]["fail-fast"] is False
    run = next(s for s in job["steps"] if "run" in s)["run"]
    assert "docker run" in run and "--target \"${{ matrix.target }}\"" in run
    assert "--junit" in run
    upload = next(s for s in job["steps"] if "upload-artifact" in s.get("uses", ""))
    assert upload["if"] == "always()" and upload["with"]["path"] == "build/"


def test_gitlab_ci_matrix_keeps_build_and_junit_report():
    job = yaml.safe_load((CI / "gitlab-ci.yml").read_text())["edgeprune"]
    assert job["parallel"]["matrix"][0]["TARGET"]
    assert job["image"]["entrypoint"] == [""]
    assert "edgeprune build --target \"$TARGET\"" in " ".join(job["script"])
    assert job["artifacts"]["when"] == "always" and job["artifacts"]["paths"] == ["build/"]
    assert job["artifacts"]["reports"]["junit"] == "build/junit-$TARGET.xml"
