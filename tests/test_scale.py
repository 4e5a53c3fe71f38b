"""Beyond one machine: --strategy (tf.distribute), --executor ray, --shard and merge.

The end-to-end tests run the real engines on 127.0.0.1 only: two MultiWorkerMirroredStrategy
worker processes, a Ray head started here (2 CPUs) and stopped afterwards, and CI shards
merged; each is compared with the sequential, single-process build of the same inputs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeprune import distribute
from edgeprune.cli import main
from edgeprune.drivers import executor, shards
from edgeprune.errors import BadInputError

REPO = Path(__file__).resolve().parents[1]
PYTHON_BIN = Path(sys.executable).parent
TARGETS = ["host", "cortex-m4"]
SLIM = ["--prune", "structured", "--epochs", "1"]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def _inputs(files: dict[str, Path]) -> list[str]:
    return [f"--{k}={files[k]}" for k in ("model", "data", "val", "calib")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _edgeprune(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeprune", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900, env=_env(**env))


# --- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize(("config", "key"), [
    (None, "TF_CONFIG"),
    ("{not json", "is not JSON"),
    ('{"task": {"type": "worker", "index": 0}}', "key 'cluster'"),
    ('{"cluster": {"worker": ["h:1"], "ps": ["h:2"]}, "task": {}}', "key 'cluster.ps'"),
    ('{"cluster": {"worker": ["nohost"]}, "task": {"type": "worker", "index": 0}}',
     "key 'cluster.worker'"),
    ('{"cluster": {"worker": ["h:1"]}}', "key 'task'"),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "chief", "index": 0}}',
     "key 'task.type'"),
    ('{"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 2}}',
     "key 'task.index'"),
])
def test_tf_config_names_the_wrong_key(config, key):
    env = {} if config is None else {"TF_CONFIG": config}
    with pytest.raises(BadInputError, match=key) as err:
        distribute.read_tf_config(env)
    assert "TF_CONFIG" in str(err.value) and "task" in err.value.fix


def test_tf_config_chief_and_workers():
    cluster, task = distribute.read_tf_config({"TF_CONFIG": json.dumps({
        "cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]},
        "task": {"type": "worker", "index": 1}})})
    assert cluster["worker"] == ["b:2", "c:3"] and task == ("worker", 1)


def test_cli_bad_input_exits_2_before_any_build(tmp_path, monkeypatch):
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    cases = {
        ("--strategy", "multiworker"): "TF_CONFIG",
        ("--shard", "0/2"): "--shard 0/2",
        ("--shard", "3/2"): "--shard 3/2",
        ("--shard", "one"): "1 ≤ K ≤ N",
        ("--ray-address", "127.0.0.1:1"): "needs --executor ray",
    }
    for args, needle in cases.items():
        result = runner.invoke(main, ["build", "-t", "host", *args])
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.output, (args, result.output)
    assert not (tmp_path / "build").exists()


def test_executor_ray_without_the_extra_names_it(monkeypatch):
    real = executor.importlib.util.find_spec
    monkeypatch.setattr(executor.importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(BadInputError, match=r"edgeprune\[ray\]"):
        executor.check("ray", None)


def test_unreachable_ray_address_is_exit_3_naming_it_within_30_s(tmp_path):
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    start = time.monotonic()
    proc = _edgeprune(["build", "-t", "host", "--executor", "ray", "--ray-address", address],
                      tmp_path)
    assert time.monotonic() - start < 30
    assert proc.returncode == 3, proc.stderr
    assert address in proc.stderr and "ray start --head" in proc.stderr


def test_shards_split_every_target_once_and_the_matrix_lists_them(tmp_path, monkeypatch):
    specs = ["a", "b", "c", "d", "e"]
    parts = [shards.share(specs, k, 2) for k in (1, 2)]
    assert [s for _, s in parts[0]] == ["a", "c", "e"] and [s for _, s in parts[1]] == ["b", "d"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "edgeprune.toml").write_text(f"[ci]\ntargets = {json.dumps(TARGETS)}\n")
    github = CliRunner().invoke(main, ["targets", "--matrix", "github"])
    assert json.loads(github.output) == {"include": [
        {"shard": "1/2", "targets": "host"}, {"shard": "2/2", "targets": "cortex-m4"}]}
    gitlab = CliRunner().invoke(main, ["targets", "--matrix", "gitlab", "--shards", "1"])
    assert gitlab.output.splitlines()[-1].strip() == '- SHARD: ["1/1"]'


# --- the same results, however the builds are spread ---------------------------------------

def _results(out: Path, junit: Path) -> dict:
    """What must not depend on where the builds ran: per target the verdict, each check (its
    value too unless measured on this host) and the model's bytes; the JUnit cases."""
    found = {}
    for target in TARGETS:
        rep = json.loads((out / target / "report.json").read_text())
        checks = [(c["name"], c["passed"], c["budget"], c["method"],
                   None if c["method"] == "host" and c["name"] == "latency" else c["value"])
                  for c in rep["checks"]]
        found[target] = (rep["passed"], checks, (out / target / "model.tflite").read_bytes())
    cases = [(c.get("classname"), c.get("name"), [e.tag for e in c if e.tag != "system-out"])
             for c in ET.parse(junit).getroot().iter("testcase")]
    return {"targets": found, "junit": cases}


def _table(stdout: str) -> list[list[str]]:
    """The summary table's target, verdict and exit code columns."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("target "))
    return [line.split()[:3] for line in lines[start + 1:]
            if not line.startswith(("worst", "JUnit"))] + [
        [line for line in lines if line.startswith("worst exit code")]]


@pytest.fixture(scope="module")
def project(tiny_files, tmp_path_factory):
    """A project of two targets, built once sequentially: the reference."""
    root = tmp_path_factory.mktemp("scale")
    (root / "edgeprune.toml").write_text(f"[ci]\ntargets = {json.dumps(TARGETS)}\n")
    args = ["build", "--all-targets", *_inputs(tiny_files), *SLIM]
    proc = _edgeprune([*args, "--out", "seq", "--junit", "seq.xml"], root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, args, _results(root / "seq", root / "seq.xml"), _table(proc.stdout)


@pytest.mark.slow
def test_shards_merged_equal_the_sequential_run(project):
    root, args, reference, table = project
    for k in (1, 2):
        proc = _edgeprune([*args, "--shard", f"{k}/2", "--out", f"shard-{k}"], root)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (root / f"shard-{k}" / shards.RUNS_FILE).is_file()
    merged = _edgeprune(["merge", "shard-2", "shard-1", "--junit", "merged.xml"], root)
    assert merged.returncode == 0, merged.stderr
    merged_out = root / "merged-view"
    merged_out.mkdir()
    for k, target in ((1, "host"), (2, "cortex-m4")):
        (merged_out / target).symlink_to(root / f"shard-{k}" / target)
    assert _results(merged_out, root / "merged.xml") == reference
    assert _table(merged.stdout) == table


@pytest.fixture()
def ray_head(tmp_path):
    """A Ray head on 127.0.0.1 with 2 CPUs, in its own process group, stopped afterwards."""
    port = _free_port()
    env = _env(RAY_AUTH_MODE="token")
    head = subprocess.Popen(
        [str(PYTHON_BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
         f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats", "--block"],
        env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "head.log").open("w"),
        start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(1)
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


@pytest.mark.slow
def test_all_targets_on_ray_equal_the_sequential_run(project, ray_head):
    root, args, reference, table = project
    proc = _edgeprune([*args, "--executor", "ray", "--ray-address", ray_head, "--out", "ray",
                       "--junit", "ray.xml"], root, RAY_AUTH_MODE="token")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _results(root / "ray", root / "ray.xml") == reference
    assert _table(proc.stdout) == table


@pytest.mark.slow
def test_multiworker_fine_tune_on_two_processes(tiny_files, tmp_path):
    """Two workers on 127.0.0.1: the chief's report records 2 replicas, the other worker
    writes nothing, and the model meets the same checks as the single-process build."""
    args = ["build", "-t", "host", *_inputs(tiny_files), *SLIM]
    single = _edgeprune([*args, "--out", "single"], tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = []
    for index, cwd in ((1, tmp_path / "w1"), (0, tmp_path)):
        cwd.mkdir(exist_ok=True)
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "edgeprune", *args, "--strategy", "multiworker",
             "--out", "cluster"], cwd=cwd, env=_env(TF_CONFIG=config), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    (out1, err1), (_, err0) = (w.communicate(timeout=900) for w in workers)
    assert workers[1].returncode == 0, err0[-3000:]
    assert workers[0].returncode == workers[1].returncode, err1[-3000:]
    assert "which wrote cluster" in out1
    assert list((tmp_path / "w1").iterdir()) == []  # the other worker wrote nothing
    chief = json.loads((tmp_path / "cluster" / "host" / "report.json").read_text())
    alone = json.loads((tmp_path / "single" / "host" / "report.json").read_text())
    assert chief["training"]["replicas"] == 2 and chief["training"]["workers"] == 2
    assert chief["training"]["global_batch_size"] == 32
    assert alone["training"]["replicas"] == 1
    assert chief["finetune"]["epochs_run"] == 1
    assert [(c["name"], c["passed"]) for c in chief["checks"]] == [
        (c["name"], c["passed"]) for c in alone["checks"]]
    assert chief["passed"] is alone["passed"] is True
