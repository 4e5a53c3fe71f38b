"""Progress bars for the long stages (fine-tuning, calibration), on stderr.

Bars show only where a person watches: stderr is a terminal and logging is at INFO or more
verbose (``-q`` hides them). In CI logs and pipes tqdm disables itself, and the per-stage lines
of the pipeline remain.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")
log = logging.getLogger("edgeprune")


def enabled() -> bool:
    return log.isEnabledFor(logging.INFO) and sys.stderr.isatty()


def bar(total: int | None, desc: str, unit: str = "it") -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True,
                disable=not enabled(), file=sys.stderr)


def track(items: Iterable[T], total: int | None, desc: str, unit: str = "it") -> Iterator[T]:
    """``items``, advancing a bar as each is consumed (the bar closes when they run out)."""
    with bar(total, desc, unit) as b:
        for item in items:
            yield item
            b.update(1)


def keras_callback(epochs: int, steps_per_epoch: int) -> Any:
    """A Keras callback drawing one bar over every batch of every epoch, with the latest
    loss/accuracy (and monitor-split accuracy once an epoch ends)."""
    from edgeprune import _tf

    class _Progress(_tf.keras().callbacks.Callback):
        def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
            self.bar = bar(epochs * steps_per_epoch, "fine-tuning", "batch")
            self.epoch = 0

        def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            self.epoch = epoch
            # early stopping ends epochs early: keep the bar at the epoch's true start
            self.bar.n = epoch * steps_per_epoch

        def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
            self.bar.update(1)
            if logs:
                self.bar.set_postfix(epoch=f"{self.epoch + 1}/{epochs}",
                                     loss=f"{logs.get('loss', float('nan')):.3f}",
                                     refresh=False)

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            # -v logs every epoch: where no bar is drawn (CI logs, pipes) this is the progress
            logs = logs or {}
            log.debug("fine-tuning epoch %d/%d: %s", epoch + 1, epochs,
                      ", ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items())))
            # the shipped model's monitor accuracy where the fine-tune stage measures it
            shown = logs.get("val_shipped_accuracy", logs.get("val_accuracy"))
            if shown is not None:
                self.bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", val_acc=f"{shown:.3f}")

        def on_train_end(self, logs: dict[str, float] | None = None) -> None:
            self.bar.close()

    return _Progress()
