"""Training under a ``tf.distribute`` strategy (``--strategy``), one per process.

``auto``: ``MirroredStrategy`` when TensorFlow sees more than one GPU, else TensorFlow's default
strategy (one device: CPU builds are what they were, byte for byte). ``mirrored``: every local
GPU (or the CPU). ``multiworker``: ``MultiWorkerMirroredStrategy`` over the cluster in
``TF_CONFIG``; every worker runs the same command and the same seeded pipeline, so each takes
the same steps, and the gradients are all-reduced at every step. TensorFlow requires that
strategy to exist before any other TensorFlow op, so the CLI starts it first (``start``).

Models are built outside the strategy (loading, surgery, TF-MOT wrapping); ``training_copy``
gives each training phase a twin created in the strategy's scope and copies the trained weights
back, so everything after training (conversion, measurement) sees plain variables. Batch sizes
are global: each replica takes its share of every batch.

A non-chief learns the chief's exit code through one all-reduce at the end (``agree_exit_code``):
the chief contributes its code, every other worker 0, and all of them exit with the sum.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from edgeprune import _tf
from edgeprune.errors import BadInputError
from edgeprune.recipe import STRATEGIES

_EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}\' on the first worker, index 1 on the second')


@dataclass(frozen=True)
class Active:
    """The process's strategy: ``strategy`` None is TensorFlow's default (one device)."""

    mode: str  # as asked: auto, none, mirrored, multiworker
    kind: str  # what runs: default, mirrored, multiworker
    strategy: Any = None
    workers: int = 1
    task: tuple[str, int] = ("worker", 0)
    chief_task: tuple[str, int] = ("worker", 0)

    @property
    def replicas(self) -> int:
        return 1 if self.strategy is None else int(self.strategy.num_replicas_in_sync)

    @property
    def is_chief(self) -> bool:
        return self.task == self.chief_task

    def to_dict(self, batch_size: int) -> dict[str, Any]:
        """report.json's ``training``: the batch size is global, split over the replicas."""
        return {"strategy": self.mode, "ran": self.kind, "replicas": self.replicas,
                "workers": self.workers, "global_batch_size": batch_size,
                "per_replica_batch_size": batch_size / self.replicas}


_active: Active | None = None


def read_tf_config(environ: Mapping[str, str] = os.environ) -> tuple[dict[str, list[str]],
                                                                       tuple[str, int]]:
    """``TF_CONFIG``'s cluster and this process's (type, index), each key checked."""
    raw = environ.get("TF_CONFIG")

    def bad(key: str, problem: str) -> BadInputError:
        return BadInputError(f"--strategy multiworker: TF_CONFIG {key}", problem,
                             f"Set TF_CONFIG on every worker, e.g. {_EXAMPLE}")

    if not raw:
        raise bad("", "is not set (it names the workers and this one)")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise bad("", f"is not JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise bad("", "must be a JSON object with keys cluster and task")
    cluster = config.get("cluster")
    if not isinstance(cluster, dict) or not cluster:
        raise bad("key 'cluster'", "is missing or not an object of job → [host:port, …]")
    unknown = sorted(set(cluster) - {"worker", "chief"})
    if unknown:
        raise bad(f"key 'cluster.{unknown[0]}'", "is not a job edgeprune runs (worker, chief)")
    if "worker" not in cluster:
        raise bad("key 'cluster.worker'", "is missing")
    for job, hosts in cluster.items():
        if (not isinstance(hosts, list) or not hosts or
                not all(isinstance(h, str) and _host_port(h) for h in hosts)):
            raise bad(f"key 'cluster.{job}'", f"= {hosts!r} is not a list of host:port")
    if len(cluster.get("chief", [])) > 1:
        raise bad("key 'cluster.chief'", "lists more than one chief")
    task = config.get("task")
    if not isinstance(task, dict):
        raise bad("key 'task'", "is missing or not an object {type, index}")
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster:
        raise bad("key 'task.type'", f"= {kind!r} is not a job of the cluster "
                  f"({', '.join(sorted(cluster))})")
    if not isinstance(index, int) or isinstance(index, bool) or not (
            0 <= index < len(cluster[kind])):
        raise bad("key 'task.index'", f"= {index!r} is not 0 to {len(cluster[kind]) - 1}")
    return cluster, (kind, index)


def _host_port(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def check(mode: str) -> None:
    """Bad input before anything starts (exit 2)."""
    if mode not in STRATEGIES:
        raise BadInputError(f"--strategy {mode}", f"is not one of {', '.join(STRATEGIES)}",
                            "Pick one of those")
    if mode == "multiworker":
        read_tf_config()


def start(mode: str) -> Active:
    """Create the process's strategy; call before any other TensorFlow op (multiworker)."""
    global _active
    if _active is not None:
        if mode != _active.mode:
            raise BadInputError(f"strategy {mode}", f"this process already trains with "
                                f"{_active.mode} (one strategy a process)",
                                "Build with one --strategy, or run the builds separately")
        return _active
    check(mode)
    tf = _tf.tf()
    if mode == "multiworker":
        cluster, task = read_tf_config()
        chief = ("chief", 0) if "chief" in cluster else ("worker", 0)
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        _active = Active(mode, "multiworker", strategy, sum(map(len, cluster.values())), task,
                         chief)
    elif mode == "mirrored" or (mode == "auto" and len(tf.config.list_physical_devices("GPU"))
                                > 1):
        _active = Active(mode, "mirrored", tf.distribute.MirroredStrategy())
    else:
        _active = Active(mode, "default")
    return _active


def current(mode: str | None = None) -> Active:
    """The strategy started (which must be ``mode``'s when given), or (library use, no CLI)
    one started now for ``mode`` (default auto)."""
    if mode is None and _active is not None:
        return _active
    return start(mode or "auto")


def active() -> Active | None:
    return _active


@contextlib.contextmanager
def training_copy(model: Any) -> Iterator[Any]:
    """The model to compile and train: itself under the default strategy, else a twin built
    in the strategy's scope whose trained weights are copied back when the block ends."""
    strategy = None if _active is None else _active.strategy
    if strategy is None:
        yield model
        return
    keras, tfmot = _tf.keras(), _tf.tfmot()
    with strategy.scope():
        # TF-MOT's wrappers (pruning, QAT) are rebuilt from their configs
        with tfmot.quantization.keras.quantize_scope(), tfmot.sparsity.keras.prune_scope():
            twin = keras.models.clone_model(model)
        twin.set_weights(model.get_weights())
        yield twin
    model.set_weights(twin.get_weights())


def scope() -> contextlib.AbstractContextManager[Any]:
    """The strategy's scope (for variables a custom training loop creates), or nothing."""
    if _active is None or _active.strategy is None:
        return contextlib.nullcontext()
    return _active.strategy.scope()


def per_replica_step(step: Any, x: Any, y: Any) -> Any:
    """``step(x_part, y_part, n)`` on every replica with its share of the global batch (x, y)
    of ``n`` samples; the sum of what they return. ``step`` averages its loss over ``n`` and
    applies its gradients, which the optimizer all-reduces across the replicas."""
    tf = _tf.tf()
    n = tf.constant(len(y), tf.float32)
    if _active is None or _active.strategy is None:
        return step(x, y, n)
    strategy = _active.strategy
    size = -(-len(y) // strategy.num_replicas_in_sync)

    def share(ctx: Any) -> Any:
        i = ctx.replica_id_in_sync_group
        return x[i * size:(i + 1) * size], y[i * size:(i + 1) * size]

    parts = strategy.experimental_distribute_values_from_function(share)
    out = strategy.run(step, args=(*parts, n))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)


def _all_sum(value: float) -> float:
    """Sum of one value per worker (each worker's replicas carry an equal share of it)."""
    assert _active is not None and _active.strategy is not None
    tf, strategy = _tf.tf(), _active.strategy
    local = strategy.num_replicas_in_sync / _active.workers
    out = strategy.run(lambda: tf.constant(value / local, tf.float64))
    return float(strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None))


def time_up(deadline: float) -> bool:
    """Past ``deadline`` (time.monotonic)? Under multiworker, past it on some worker: every
    worker then takes the same decision, so they keep training the same steps together."""
    late = time.monotonic() >= deadline
    if _active is None or _active.kind != "multiworker":
        return late
    return _all_sum(1.0 if late else 0.0) > 0


def agree_exit_code(code: int) -> int:
    """Every worker ends with the chief's exit code (one all-reduce; see the module doc)."""
    if _active is None or _active.kind != "multiworker":
        return code
    return round(_all_sum(float(code) if _active.is_chief else 0.0))
