"""Datasets: arrays, image folders and TFRecord files, read in batches (see ``rows``)."""

from edgeprune.data.inputs import (
    MIN_MONITOR_TRAIN,
    Inputs,
    Labelled,
    Samples,
    calibration_sample,
    check_against_model,
    check_labels,
    fit_split,
    holdout_split,
    sample_positions,
)
from edgeprune.data.load import load_labelled, load_samples
from edgeprune.data.rows import Rows

__all__ = [
    "MIN_MONITOR_TRAIN", "Inputs", "Labelled", "Rows", "Samples", "calibration_sample",
    "check_against_model", "check_labels", "fit_split", "holdout_split", "load_labelled",
    "load_samples", "sample_positions",
]
