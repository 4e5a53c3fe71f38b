"""Progress bars (fine-tuning, calibration) and the TensorBoard logs under OUT/<target>/logs."""

import io
import logging

import numpy as np
import pytest
from click.testing import CliRunner
from tiny_models import blobs, tiny_classifier

from edgeprune import progress
from edgeprune.cli import main


@pytest.fixture
def terminal(monkeypatch, capsys):
    """Bars on, as on a terminal at INFO level; returns a reader of what stderr got."""
    monkeypatch.setattr(progress, "enabled", lambda: True)
    return lambda: capsys.readouterr().err


def test_fine_tuning_draws_one_bar_over_every_batch(terminal):
    from edgeprune.training import compile_for_training

    model = tiny_classifier()
    x, y = blobs(64)
    compile_for_training(model, 1e-2)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[progress.keras_callback(epochs=2, steps_per_epoch=4)])
    text = terminal()  # tqdm throttles redraws: the first and the closing state are certain
    assert "fine-tuning" in text and "0/8" in text and "batch" in text


def test_calibration_counts_samples(terminal):
    from edgeprune.converter import representative_dataset

    assert len(list(representative_dataset(np.zeros((5, 8, 8, 1), np.float32)))) == 5
    text = terminal()
    assert "calibrating" in text and "/5" in text


def test_bars_are_off_when_quiet_or_not_a_terminal(monkeypatch):
    monkeypatch.setattr(progress.sys, "stderr", io.StringIO())  # not a TTY
    assert not progress.enabled()
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True)
    logger = logging.getLogger("edgeprune")
    level = logger.level
    logger.setLevel(logging.WARNING)  # -q (setLevel, not the attribute: it clears the cache)
    try:
        assert not progress.enabled()
    finally:
        logger.setLevel(level)


def _event_tags(folder) -> set[str]:
    from edgeprune import _tf

    tf = _tf.tf()
    tags = set()
    for events in folder.rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            tags.update(v.tag for v in event.summary.value)
    return tags


def test_tensorboard_logs_hold_tfmot_pruning_summaries(tiny_files, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "build", "--target", "host", "--model", str(tiny_files["model"]),
        "--data", str(tiny_files["data"]), "--val", str(tiny_files["val"]),
        "--prune", "magnitude", "--sparsity", "0.5", "--epochs", "2", "--quantize", "none",
        "--tensorboard", "--out", str(out)])
    assert result.exit_code in (0, 1), result.output
    tags = _event_tags(out / "host" / "logs")
    assert any("sparsity" in t for t in tags), tags  # TF-MOT's PruningSummaries
    assert any("loss" in t for t in tags), tags  # Keras' TensorBoard callback
