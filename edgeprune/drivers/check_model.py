"""``edgeprune check``: the check stage on any existing .tflite."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import converter
from edgeprune import data as data_mod
from edgeprune.data import load as data_load
from edgeprune.device import check_device_for_target
from edgeprune.drivers import pipeline
from edgeprune.files import require_file
from edgeprune.measurement import CheckResult, Measurement
from edgeprune.stages import artifacts, check, measure
from edgeprune.targets import load_target


@dataclass(frozen=True)
class CheckOutcome:
    target: str
    measurements: list[Measurement]
    checks: list[CheckResult]
    on_target: dict[str, Any] = field(default_factory=dict)  # device / emulation details

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "measurements": [m.to_dict() for m in self.measurements],
            "checks": [c.to_dict() for c in self.checks],
            "passed": check.passed(self.checks),
            **self.on_target,
        }


def check_tflite(
    path: Path, target_spec: str, data: Path | None,
    on_target: measure.OnTarget | None = None,
) -> CheckOutcome:
    from edgeprune.tflite.graph import parse_tflite
    target = load_target(target_spec)
    if on_target is not None and on_target.device is not None:
        check_device_for_target(on_target.device, target)  # serial: for an MCU, else ssh://
    require_file(path, str(path), "Give the path to a .tflite model")
    blob = path.read_bytes()
    graph = parse_tflite(blob, name=str(path))  # BadInputError for anything not a .tflite
    converter.check_model_for_target(graph, target, str(path))  # float model, integer target
    shape = graph.tensors[graph.inputs[0]].shape
    measurements = [measure.flash(blob, target, path.name)]
    inputs = None
    if data is not None:
        labelled = data_load.load_labelled(data, "--data", tuple(shape))
        data_mod.check_labels(labelled, graph.tensors[graph.outputs[0]].shape[-1], "--data")
        measurements.append(measure.accuracy(blob, labelled.x, labelled.y, str(data)))
        samples = np.asarray(labelled.x[:pipeline.SAMPLES_ON_TARGET])
        inputs = data_mod.Inputs(None, labelled, None)
    else:
        samples = np.random.default_rng(0).random((4, *shape[1:]), dtype=np.float32)
    measurements.append(measure.host_latency(blob, samples[0], target))
    measurements.extend(measure.estimates(blob, target).measurements)
    if on_target is not None:  # a device that is not this target's machine: exit 2, now
        measure.require_device_fit(on_target, [target])
    # What a build's artifacts stage measures (the TFLite-Micro arena, Vela's figures) outranks
    # the generic estimates here too; its files go to a scratch folder, the input is only read.
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgeprune-check-") as scratch:
        device = artifacts.run(path, Path(scratch), target, inputs)
        if device.report:
            details["artifacts"] = {k: v for k, v in device.report.items()
                                    if k not in ("files", "command")}
        measurements[:0] = device.measurements
        if on_target is not None and on_target.wanted:  # the compiled Edge TPU model is here
            on_target_ms, on_target_details = measure.on_target(
                path, target, on_target, samples, artifacts_dir=Path(scratch))
            measurements[:0] = on_target_ms
            details.update(on_target_details)
    checks = check.run(measurements, target, None, details.get("device_not_used"))
    return CheckOutcome(target.name, check.mark_used(measurements, checks, target), checks,
                        details)
