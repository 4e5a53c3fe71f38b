"""Emulated ARM runs: aarch64 LiteRT under QEMU user mode, instruction counting, IPC.

The slow tests provision the arm64 Debian root once (minutes) into the user's cache folder
(``EDGEPRUNE_CACHE`` or ~/.cache/edgeprune) and reuse it afterwards.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edgeprune.errors import BadInputError
from edgeprune.runners import host
from edgeprune.runners.qemu import (
    CALIBRATION,
    MOBILENET_V1_INT8_INSTRUCTIONS_A72,
    count_instructions,
    cpuinfo_text,
    measure_in_qemu,
)
from edgeprune.runners.qemu_provision import cache_dir, locked
from edgeprune.targets import load_target


@pytest.mark.slow
def test_int8_model_is_bit_identical_and_gets_a_qemu_latency(rpi4_tflite, samples):
    target = load_target("rpi4")
    result = measure_in_qemu(rpi4_tflite, target, samples)
    assert result.bit_identical, result.detail
    assert result.outputs_compared == len(samples)
    assert "bit-identical" in result.detail
    assert result.report["machine"] == "aarch64"
    assert result.instructions_per_inference and result.instructions_per_inference > 1e3
    (latency,) = result.measurements
    assert (latency.quantity, latency.method, latency.where, latency.unit) == \
        ("latency_ms", "qemu", "rpi4", "ms")
    # rpi4 runs 4 threads, the thread count the IPC was calibrated at.
    assert result.ipc == pytest.approx(CALIBRATION["cortex-a72"]["ipc4"])
    expected_ms = result.instructions_per_inference / (result.ipc * 1500e3)
    assert latency.value == pytest.approx(expected_ms)
    assert "calibrated on MobileNet v1 int8" in latency.detail


@pytest.mark.slow
def test_int8_io_model_raw_int8_outputs_on_cortex_a76(int8_io_tflite, samples):
    target = load_target("rpi5")
    result = measure_in_qemu(int8_io_tflite, target, samples[:8])
    assert host.predict(int8_io_tflite, samples[:1], raw=True).dtype == np.int8
    assert result.bit_identical, result.detail
    assert "raw int8 tensors" in result.detail
    assert result.measurements and result.measurements[0].where == "rpi5"


@pytest.mark.slow
def test_mobilenet_v1_count_matches_the_calibration_constant(tmp_path):
    """Re-count the network the IPC is calibrated on; it must match the constant in qemu.py."""
    from edgeprune import _tf
    from edgeprune.converter import to_tflite

    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNet(input_shape=(224, 224, 3), weights=None)
    calib = np.random.default_rng(0).uniform(-1, 1, (4, 224, 224, 3)).astype(np.float32)
    path = tmp_path / "mobilenet_v1_int8.tflite"
    path.write_bytes(to_tflite(model, "int8", calib, load_target("rpi4")))
    count = count_instructions(path, "cortex-a72", calib[0], invokes=2)
    assert count == pytest.approx(MOBILENET_V1_INT8_INSTRUCTIONS_A72, rel=0.01)


def test_cpuinfo_describes_the_target_core():
    text = cpuinfo_text("cortex-a72", 4)
    assert text.count("processor\t:") == 4
    assert "CPU part\t: 0xd08" in text and "CPU implementer\t: 0x41" in text
    assert "asimddp" in cpuinfo_text("cortex-a76", 1)


def test_non_cortex_a_targets_are_refused(tmp_path):
    with pytest.raises(BadInputError, match="cortex-a"):
        measure_in_qemu(tmp_path / "m.tflite", load_target("cortex-m4"), np.zeros((1, 8, 8, 1)))


def test_calibration_numbers():
    a72, a76 = CALIBRATION["cortex-a72"], CALIBRATION["cortex-a76"]
    # 174.77 M instructions in 24 ms × 1.5 GHz (4 threads on a Pi 4).
    assert a72["ipc4"] == pytest.approx(174.77e6 / (24e-3 * 1.5e9))
    assert a72["time_vs_4_threads"][3] == 1
    assert a72["time_vs_4_threads"][0] == pytest.approx(1.870, abs=1e-3)
    assert a76["ipc4"] / a72["ipc4"] == pytest.approx((175.8 / 62.2) / 1.6)


def test_cache_dir_override_and_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("EDGEPRUNE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "edgeprune"
    order = []

    def second():
        with locked(tmp_path / "l.lock"):
            order.append("second")

    with locked(tmp_path / "l.lock"):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.2)
        order.append("first")
    t.join(5)
    assert order == ["first", "second"]
