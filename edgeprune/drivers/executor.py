"""Where the independent builds of ``--all-targets`` and ``--sweep`` run: one after another in
this process (``local``), or as Ray tasks (``--executor ray``), one build a task.

Ray schedules the tasks over the cluster's CPUs (a task asks for one) and runs each in a worker
process of its own; the paths given (model, data, ``--out`` with its stage cache) must be ones
every node sees, e.g. a shared file system. A task is never retried: a build whose task or
worker died is reported for its target with exit code 3, and the others finish and keep their
folders (``--resume`` then reuses their finished stages). Without ``--ray-address`` a Ray
instance is started on 127.0.0.1 for this run and stopped after it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.errors import BadInputError, EdgepruneError, ToolError

if TYPE_CHECKING:
    from edgeprune.drivers.pipeline import BuildRequest

log = logging.getLogger(__name__)
EXECUTORS = ("local", "ray")
EXTRA = "pip install 'edgeprune[ray]'"
_LOOPBACK = ("127.0.0.1", "localhost")
CONNECT_SECONDS = 10.0  # an unreachable --ray-address fails well within 30 s


@dataclass(frozen=True)
class Job:
    """One build: ``request`` for target ``spec``; ``label`` names it in messages."""

    label: str
    request: BuildRequest
    spec: str


@dataclass(frozen=True)
class TargetRun:
    """What one build ended with: its report, or the error that stopped it."""

    target: str
    exit_code: int
    report: dict[str, Any] | None = None
    folder: Path | None = None
    error: str | None = None
    seconds: float = 0.0
    checks: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_report(cls, report: dict[str, Any], folder: Path, exit_code: int,
                    seconds: float) -> TargetRun:
        return cls(report["target"]["name"], exit_code, report, folder, None, seconds,
                   list(report["checks"]))


def check(executor: str, address: str | None) -> None:
    """Before any build: Ray installed (exit 2) and the cluster reachable (exit 3)."""
    if executor == "local":
        if address is not None:
            raise BadInputError(f"--ray-address {address}", "needs --executor ray",
                                "Add --executor ray, or drop --ray-address")
        return
    if importlib.util.find_spec("ray") is None:
        raise BadInputError("--executor ray", "needs Ray, which is not installed",
                            f"Install the extra: {EXTRA}")
    if address is not None:
        _reachable(address)


def _reachable(address: str) -> None:
    """A TCP connect to the head's GCS port: Ray's own connect retries take minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise BadInputError(f"--ray-address {address}", "is not host:port",
                            "Give the head node's address, e.g. 10.0.0.1:6379")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise ToolError(f"--ray-address {address}", f"no Ray head answers there ({exc})",
                        "Start one there (`ray start --head --port PORT`) or fix the "
                        "address") from exc


def absolute(request: BuildRequest) -> BuildRequest:
    """Paths as every worker process resolves them, whatever its working folder."""
    paths = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)}
    return dataclasses.replace(request, **{
        name: value.absolute() for name, value in paths.items() if isinstance(value, Path)})


def build_one(job: Job) -> TargetRun:
    """One build, its error (exit 2/3) recorded rather than raised."""
    from edgeprune.drivers.pipeline import build

    if not logging.getLogger().handlers:  # a Ray worker: warnings as the CLI prints them
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
    start = time.perf_counter()
    try:
        outcome = build(job.request, job.spec)
    except EdgepruneError as exc:
        log.debug("%s failed", job.label, exc_info=True)
        return TargetRun(job.label, exc.exit_code, error=str(exc),
                         seconds=time.perf_counter() - start)
    return TargetRun.from_report(outcome.report, outcome.folder, outcome.exit_code,
                                 time.perf_counter() - start)


def run(jobs: list[Job], executor: str, address: str | None,
        done: Callable[[TargetRun], None]) -> list[TargetRun]:
    """Every job's ``TargetRun``, in the jobs' order; ``done`` is called as each finishes."""
    if executor == "local":
        results = []
        for job in jobs:
            results.append(build_one(job))
            done(results[-1])
        return results
    return _on_ray(jobs, address, done)


def _on_ray(jobs: list[Job], address: str | None,
            done: Callable[[TargetRun], None]) -> list[TargetRun]:
    import ray

    for job in jobs:  # made here: a task that made --out would remove it on bad input
        job.request.out.mkdir(parents=True, exist_ok=True)
    try:
        if address is None:  # a Ray of our own, on loopback, stopped at the end
            ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                     logging_level=logging.WARNING)
        else:  # a head on loopback: this driver's node is on loopback too, not the LAN's
            host = address.removeprefix("ray://").rpartition(":")[0]
            local = {"_node_ip_address": "127.0.0.1"} if host in _LOOPBACK else {}
            ray.init(address=address, logging_level=logging.WARNING, **local)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ToolError(f"--ray-address {address or 'local'}", f"Ray did not start ({exc})",
                        "Check the Ray cluster (`ray status`)") from exc
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(build_one)
        refs = {remote.remote(job): i for i, job in enumerate(jobs)}
        results: list[TargetRun | None] = [None] * len(jobs)
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                job = jobs[refs[ref]]
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the task or its worker died
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    result = TargetRun(job.label, int(ToolError.exit_code),
                                  error=f"{job.label}: the Ray task building it failed "
                                  f"({type(exc).__name__}: {first}). Rerun with --resume to "
                                  "build what is missing")
                results[refs[ref]] = result
                done(result)
        return [r for r in results if r is not None]
    finally:
        ray.shutdown()
