"""Device artifacts a target needs beside model.tflite, and the measurements they yield.

``tflm``: TFLite-Micro C sources and the measured tensor arena (Cortex-M). ``vela``: the model
compiled for an Arm Ethos-U NPU and Vela's performance estimate. ``stages/artifacts.py``
dispatches on the target's hardware kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.measurement import Measurement


@dataclass(frozen=True)
class Artifacts:
    measurements: list[Measurement] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)  # report.json["artifacts"]
    files: list[Path] = field(default_factory=list)  # written into the output folder
