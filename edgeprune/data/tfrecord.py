"""TFRecord files of ``tf.train.Example``: indexed once (offset and length of every record,
with its label), then read by record as batches need them.

The features are named in the recipe's ``[data]`` section (``image_key``, ``label_key``,
``encoding``): an encoded image (PNG/JPEG/BMP bytes), raw uint8 pixels in the model's
height×width×channels order, or a float list. Uncompressed files only (random access).
"""

from __future__ import annotations

import glob
import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import limits
from edgeprune.data.preprocess import Preprocessing
from edgeprune.data.rows import Rows
from edgeprune.dataspec import DataSpec
from edgeprune.errors import DataError
from edgeprune.files import require_file

SUFFIXES = (".tfrecord", ".tfrecords", ".tfrec")
_HEADER = struct.Struct("<QI")  # length, masked CRC of the length


def is_tfrecord(path: str) -> bool:
    name = path.lower()
    return any(name.endswith(s) or f"{s}-" in name or f"{s}*" in name for s in SUFFIXES)


def expand(pattern: str, what: str) -> list[Path]:
    """A file, or a glob of files (``train-*.tfrecord``), sorted."""
    if any(c in pattern for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file())
        if not files:
            raise DataError(what, "matches no files", "Check the pattern")
        return files
    return [require_file(Path(pattern), what, "Give a TFRecord file or a glob of them",
                         DataError)]


@dataclass(frozen=True)
class Records:
    files: list[Path]
    refs: np.ndarray  # (n, 4): file number, offset of the record's data, length, record no.
    labels: np.ndarray
    spec: DataSpec

    def summary(self) -> dict[str, Any]:
        counts = np.bincount(self.labels) if len(self.labels) else np.zeros(0, int)
        return {"format": "TFRecord", "files": [str(f) for f in self.files],
                "records": len(self.labels), "image_key": self.spec.image_key,
                "label_key": self.spec.label_key, "encoding": self.spec.encoding,
                "records_per_label": {str(i): int(c) for i, c in enumerate(counts)}}


def _where(what: str, files: list[Path], number: int, record: int) -> str:
    """An error's subject: the option and path, the file when a glob matched several."""
    return (f"{what} (record {record})" if len(files) == 1
            else f"{what}: {files[number]} (record {record})")


def _example(blob: bytes) -> Any:
    from edgeprune import _tf

    _tf.tf()  # TensorFlow's start-up output captured before its protobuf modules load
    from tensorflow.core.example import example_pb2

    return example_pb2.Example.FromString(blob)


def _label(example: Any, spec: DataSpec, where: str) -> int:
    features = example.features.feature
    for key in (spec.image_key, spec.label_key):
        if key not in features:
            raise DataError(where, f"has no feature {key!r} (it has: "
                            f"{', '.join(sorted(features)) or 'none'})",
                            "Set image_key/label_key in the recipe's [data] section")
    values = features[spec.label_key].int64_list.value
    if len(values) != 1:
        raise DataError(where, f"feature {spec.label_key!r} is not one int64 label",
                        "Store the class index as an int64 feature")
    return int(values[0])


def index(pattern: str, spec: DataSpec, what: str) -> Records:
    """Every record's place and label, checked (one pass over the files)."""
    files = expand(pattern, what)
    most = int(limits.current().record_mb * limits.MiB)  # larger: corrupt or hostile
    refs: list[tuple[int, int, int, int]] = []
    labels: list[int] = []
    for number, file in enumerate(files):
        with file.open("rb") as f:
            if f.read(2) == b"\x1f\x8b":
                raise DataError(f"{what}: {file}", "is a compressed (GZIP) TFRecord",
                                "Decompress it (gunzip) so records can be read at random")
            f.seek(0)
            record = 0
            while head := f.read(_HEADER.size):
                where = _where(what, files, number, record)
                if len(head) < _HEADER.size:
                    raise DataError(where, "is truncated", "Rewrite the file")
                (length, _), offset = _HEADER.unpack(head), f.tell()
                if length > most:
                    raise limits.refuse(where, f"a record of {length:,} bytes",
                                        f"{most:,} bytes (record_mb)", "record_mb", DataError)
                blob = f.read(length)
                if len(blob) < length or len(f.read(4)) < 4:
                    raise DataError(where, "is truncated", "Rewrite the file")
                try:
                    example = _example(blob)
                except Exception as exc:  # protobuf's DecodeError
                    raise DataError(where, f"is not a tf.train.Example ({exc})",
                                    "Write records with tf.train.Example") from exc
                labels.append(_label(example, spec, where))
                if labels[-1] < 0:
                    raise DataError(where, f"has negative label {labels[-1]}",
                                    "Use class indices 0..K-1")
                refs.append((number, offset, length, record))
                record += 1
    if not refs:
        raise DataError(what, "holds no records", "Give TFRecord files with examples")
    return Records(files, np.array(refs, dtype=np.int64), np.array(labels, np.int64), spec)


def _pixels(example: Any, spec: DataSpec, pre: Preprocessing, where: str) -> np.ndarray:
    from edgeprune.data.images import decode_bytes

    feature = example.features.feature[spec.image_key]
    shape = (pre.height, pre.width, pre.channels)
    if spec.encoding == "image":
        return decode_bytes(io.BytesIO(feature.bytes_list.value[0]), pre, where)
    if spec.encoding == "raw":
        values = np.frombuffer(feature.bytes_list.value[0], np.uint8)
    else:
        values = np.asarray(feature.float_list.value, np.float32)
    if values.size != int(np.prod(shape)):
        raise DataError(where, f"feature {spec.image_key!r} holds {values.size} values, not "
                        f"{'×'.join(map(str, shape))} = {int(np.prod(shape))}",
                        "Check [data] encoding and image_size against the records")
    return pre.apply(values.reshape(shape))


def reader(records: Records, pre: Preprocessing, what: str) -> Callable[[np.ndarray], np.ndarray]:
    def read(idx: np.ndarray) -> np.ndarray:
        out = []
        handles: dict[int, Any] = {}
        try:
            for i in idx:
                number, offset, length, record = (int(v) for v in records.refs[i])
                f = handles.get(number) or handles.setdefault(number,
                                                              records.files[number].open("rb"))
                f.seek(offset)
                where = _where(what, records.files, number, record)
                out.append(_pixels(_example(f.read(length)), records.spec, pre, where))
        finally:
            for f in handles.values():
                f.close()
        return np.stack(out)

    return read


def rows(records: Records, pre: Preprocessing, what: str) -> Rows:
    return Rows.over(reader(records, pre, what), len(records.labels),
                     (pre.height, pre.width, pre.channels))
