"""bench/anchors.toml: every published figure the latency estimators are calibrated on names
its source and conditions, and the independence rule of issue 24 holds."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from edgeprune.targets import ENGINES, load_target

ROWS = tomllib.loads((Path(__file__).resolve().parent.parent / "bench" / "anchors.toml")
                     .read_text())["anchor"]
ROLES = {"anchor", "held-out", "scaling", "ratio", "unused"}


@pytest.mark.parametrize("row", ROWS, ids=[r["id"] for r in ROWS])
def test_every_figure_names_its_source_conditions_and_role(row):
    assert row["source"].startswith("https://")
    assert len(row["conditions"]) > 20
    assert row["role"] in ROLES
    if row["role"] in ("held-out", "unused", "scaling", "ratio"):
        assert row.get("reason")
    if row["role"] in ("anchor", "held-out"):
        assert row["ms"] > 0 and row["engine"] in ENGINES
        est = load_target(row["profile"]).estimator
        if row["family"] != "edgetpu":  # a CPU/MCU engine: the profile prices it
            assert row["engine"] in est.macs_per_cycle


def test_ids_are_unique():
    ids = [r["id"] for r in ROWS]
    assert len(ids) == len(set(ids))


def test_ruy_engine_has_four_or_more_pinned_anchors_of_one_submission():
    ruy = [r for r in ROWS if r.get("engine") == "litert-ruy-2021" and r["role"] == "anchor"]
    assert len(ruy) >= 4
    pinned = re.compile(r"/inference_results_v1\.0/blob/[0-9a-f]{40}/open/Krai/results/"
                        r"rpi4coral-fan\.on-tflite-v2\.4\.1-ruy/")
    for r in ruy:
        assert pinned.search(r["source"]), r["id"]
        assert r["ms"] == pytest.approx(r["mean_ns"] / 1e6, abs=0.005)  # the file's figure
        assert "threads not stated" in r["conditions"]
    assert {r["dtype"] for r in ruy} == {"float32", "int8"}


def test_independence_rule_no_mobilenet_v2_or_tiny_validation_row_is_fitted():
    for r in ROWS:
        if r["role"] == "anchor":
            assert r["model"] not in ("MobileNetV2", "mobilenet_v2"), r["id"]
            assert not (r["family"] == "cortex-m" and "stm32l4r5" in r["id"]
                        and r["model"] != "ds_cnn"), r["id"]
