"""Samples read on demand: ``Rows`` looks enough like an array (len, shape, slicing, fancy
indexing, iteration) for the code that reads data in batches, while holding only an index.

An image folder, a TFRecord file or a memory-mapped ``.npy`` is read batch by batch: a
training epoch, a scoring pass or a calibration sample never holds more than the batch in
memory. Subsets (held-out split, monitor split, seeded samples) compose indices and copy no
sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

ReadFn = Callable[[np.ndarray], np.ndarray]  # sample indices -> float32 (n, *shape)
CHUNK = 256  # samples read at a time when iterating


class Rows:
    """Samples ``index`` of a source read by ``read`` (which takes the source's own indices)."""

    def __init__(self, read: ReadFn, sample_shape: tuple[int, ...],
                 index: np.ndarray) -> None:
        self._read = read
        self.sample_shape = tuple(sample_shape)
        self.index = np.asarray(index, dtype=np.int64)

    @classmethod
    def over(cls, read: ReadFn, n: int, sample_shape: tuple[int, ...]) -> Rows:
        return cls(read, sample_shape, np.arange(n, dtype=np.int64))

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.sample_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.sample_shape)

    dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: Any) -> np.ndarray:
        """A slice, an integer array or a boolean mask reads those samples; an int reads one."""
        if isinstance(key, int | np.integer):
            return self._read(self.index[[key]])[0]
        picked = self.index[key]
        if len(picked) == 0:
            return np.zeros((0, *self.sample_shape), np.float32)
        return self._read(picked)

    def take(self, positions: np.ndarray) -> Rows:
        """The samples at ``positions`` (of this view), still unread."""
        return Rows(self._read, self.sample_shape, self.index[positions])

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self), CHUNK):
            yield from self[start:start + CHUNK]


def subset(x: np.ndarray | Rows, positions: np.ndarray) -> np.ndarray | Rows:
    """``x[positions]``: a copy for an in-memory array, an unread view for ``Rows``."""
    return x.take(positions) if isinstance(x, Rows) else x[positions]
