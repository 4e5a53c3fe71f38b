"""The calibration anchor: MobileNet v1 on a Raspberry Pi 4 (XNNPACK README), and the Pi 5."""

from __future__ import annotations

import pytest
from tiny_models import convert

from edgeprune.estimate import estimate_target
from edgeprune.targets import load_target

# google/XNNPACK README, Raspberry Pi 4, aarch64, 4 threads, MobileNet v1 1.0 224.
PUBLISHED_RPI4_MS = {"float": 77.0, "int8": 24.0}


@pytest.fixture(scope="module")
def mobilenet_v1() -> dict[str, bytes]:
    from edgeprune import _tf

    keras = _tf.keras()
    inp = keras.Input((224, 224, 3), batch_size=1)
    model = keras.applications.MobileNet(input_tensor=inp, alpha=1.0, weights=None)
    return {kind: convert(model, None if kind == "float" else kind) for kind in ("float", "int8")}


def _latency(blob: bytes, target: str) -> float:
    result = estimate_target(blob, load_target(target))
    return next(m.value for m in result.measurements if m.quantity == "latency_ms")


@pytest.mark.slow  # two conversions of a 4.2 M-parameter model: about 2-3 minutes here
@pytest.mark.parametrize("kind", ["float", "int8"])
def test_mobilenet_v1_rpi4_within_20_percent_of_published(mobilenet_v1, kind):
    estimate = _latency(mobilenet_v1[kind], "rpi4")
    assert estimate == pytest.approx(PUBLISHED_RPI4_MS[kind], rel=0.20)


@pytest.mark.slow
def test_pi5_is_faster_than_pi4_and_int8_faster_than_float(mobilenet_v1):
    for kind in ("float", "int8"):
        assert _latency(mobilenet_v1[kind], "rpi5") < _latency(mobilenet_v1[kind], "rpi4")
    assert _latency(mobilenet_v1["int8"], "rpi4") < _latency(mobilenet_v1["float"], "rpi4")
