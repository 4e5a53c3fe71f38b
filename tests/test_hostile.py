"""Hostile inputs, part two (issue 25): resource limits checked from declared sizes before
anything is allocated, files that are not files, SavedModel ops that write files.

Every case is a real crafted file (or a real FIFO, device, socket) given to `edgeprune build`:
exit 2 naming the file, the declared size and the limit, no output folder, and refused within
seconds (each case is timed against the issue's 60 s).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from hostile_files import (
    deflate_bomb,
    keras_with,
    npy_header,
    npz,
    png_declaring,
    tfrecord_declaring,
)

from edgeprune import _tf, data, limits, model_io
from edgeprune.cli import main
from edgeprune.errors import DataError, ModelLoadError

REFUSED_WITHIN_S = 60  # the bound for any hostile case


def _build(tiny_files, out: Path, **override: str):
    opts = {"--target": "host", "--model": str(tiny_files["model"]),
            "--data": str(tiny_files["data"]), "--val": str(tiny_files["val"]),
            "--calib": str(tiny_files["calib"]), "--out": str(out), "--epochs": "0", **override}
    limit = opts.pop("--limit", None)
    args = ["build", *[x for kv in opts.items() for x in kv]]
    args += ["--limit", limit] if limit else []
    start = time.monotonic()
    result = CliRunner().invoke(main, args)
    return result, time.monotonic() - start


def _refused(result, seconds: float, out: Path, *needles: str) -> None:
    assert result.exit_code == 2, result.output + repr(result.exception)
    for needle in needles:
        assert needle in result.output, (needle, result.output)
    assert "internal failure" not in result.output and "Traceback" not in result.output
    assert seconds < REFUSED_WITHIN_S
    assert not out.exists()


# -- .npz / .npy headers -----------------------------------------------------------------------

@pytest.mark.parametrize("compress", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_terabyte_npz_header_is_refused_from_the_header(tiny_files, tmp_path, compress):
    path = npz(tmp_path / "tb.npz", {"x": npy_header((2**40, 8, 8, 1)) + bytes(256),
                                      "y": npy_header((4,), "<i8") + bytes(32)}, compress)
    result, seconds = _build(tiny_files, tmp_path / "o", **{"--data": str(path)})
    _refused(result, seconds, tmp_path / "o", "--data", "tb.npz",
             "declares 281,474,976,710,656 bytes ((1099511627776, 8, 8, 1) float32)",
             "holds 256")


def test_a_forged_npy_header_is_refused_before_mapping(tiny_files, tmp_path):
    path = tmp_path / "c.npy"
    path.write_bytes(npy_header((2**31, 8, 8, 1)) + bytes(1024))
    result, seconds = _build(tiny_files, tmp_path / "o", **{"--calib": str(path)})
    _refused(result, seconds, tmp_path / "o", "--calib", "c.npy", "declares 549,755,813,888 "
             "bytes", "holds 1,024")


def test_a_deflate_bomb_is_refused_before_decompressing(tiny_files, tmp_path):
    bomb = deflate_bomb(tmp_path / "bomb.npz")  # 400 MiB of zeros in under 0.5 MiB
    assert bomb.stat().st_size < 2**20
    result, seconds = _build(tiny_files, tmp_path / "o", **{"--data": str(bomb)})
    _refused(result, seconds, tmp_path / "o", "bomb.npz", "declares 419,430,528 bytes from",
             "expansion), over the limit of 200× for data over 16 MiB",
             "--limit compression_ratio=")


def test_the_memory_limit_is_named_and_can_be_raised(tiny_files, tmp_path):
    x = np.random.default_rng(0).random((2048, 8, 8, 1), dtype=np.float32)  # 512 KiB
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=x, y=np.zeros(len(x), np.int64))
    result, seconds = _build(tiny_files, tmp_path / "o", **{"--data": str(path),
                                                            "--limit": "memory_mb=0.25"})
    _refused(result, seconds, tmp_path / "o", "d.npz", "declares 524,288 bytes (array 'x' "
             "(2048, 8, 8, 1) float32)", "over the limit of 262,144 bytes (memory_mb=0.25)",
             "--limit memory_mb=")
    with limits.using(limits.parse(["memory_mb=1"])):
        assert len(data.load_labelled(path, "--data", (None, 8, 8, 1)).x) == 2048


def test_limits_are_parsed_strictly(tiny_files, tmp_path):
    for bad in ("memory=3", "memory_mb", "memory_mb=-1", "image_pixels=nan", "record_mb=inf"):
        result = CliRunner().invoke(main, ["build", "--limit", bad, "--out", str(tmp_path)])
        assert result.exit_code == 2 and "--limit" in result.output, (bad, result.output)
    assert limits.parse(["image_pixels=1e8", "record-mb=128"]) == limits.Limits(
        image_pixels=100_000_000, record_mb=128.0)


# -- images and TFRecord -----------------------------------------------------------------------

def test_an_image_declaring_ten_billion_pixels_is_refused_before_decoding(tiny_files, tmp_path):
    folder = tmp_path / "calib"
    folder.mkdir()
    (folder / "ok.png").write_bytes(png_declaring(8, 8))
    (folder / "huge.png").write_bytes(png_declaring(100_000, 100_000))  # 200 bytes on disk
    result, seconds = _build(tiny_files, tmp_path / "o", **{"--calib": str(folder)})
    _refused(result, seconds, tmp_path / "o", "huge.png",
             "declares 100000×100000 = 10,000,000,000 pixels",
             "over the limit of 64,000,000 pixels (image_pixels)", "--limit image_pixels=")


def test_a_tfrecord_declaring_a_terabyte_record_is_refused(tiny_files, tmp_path):
    path = tmp_path / "train.tfrecord"
    path.write_bytes(tfrecord_declaring(2**40))
    result, seconds = _build(tiny_files, tmp_path / "o", **{"--data": str(path)})
    _refused(result, seconds, tmp_path / "o", "train.tfrecord (record 0)",
             "declares a record of 1,099,511,627,776 bytes", "over the limit of 67,108,864 "
             "bytes (record_mb)", "--limit record_mb=")


# -- .keras archives and HDF5 ------------------------------------------------------------------

def _keras_case(name: str, tiny: Path, tmp: Path) -> tuple[Path, list[str]]:
    if name == "traversal-member":
        return keras_with(tiny, tmp / "m.keras", {"../../escaped.txt": b"x"}), [
            "'../../escaped.txt'", "leading out of the archive"]
    if name == "absolute-member":
        return keras_with(tiny, tmp / "m.keras", {"/tmp/escaped.txt": b"x"}), [
            "'/tmp/escaped.txt'", "an absolute path"]
    if name == "deep-config":
        return keras_with(tiny, tmp / "m.keras", replace={
            "config.json": b"[" * 200_000 + b"]" * 200_000}), [
            "nested 200,000 levels deep", "100 levels (config_depth=100)"]
    if name == "config-bomb":
        return keras_with(tiny, tmp / "m.keras", replace={
            "config.json": b"{}" + b" " * 48 * 2**20}), [
            "member config.json", "over the limit of 200×", "compression_ratio"]
    if name == "huge-config":  # 33 MiB that does not compress: no bomb, just too big
        return keras_with(tiny, tmp / "m.keras", replace={
            "config.json": b'{"x": "' + os.urandom(33 * 2**19).hex().encode() + b'"}'}), [
            "a config.json of 34,603,0", "over the limit of 33,554,432 bytes (config_mb=32)"]
    if name == "many-members":
        return keras_with(tiny, tmp / "m.keras", {f"assets/{i}": b"" for i in range(10_001)}), [
            "declares 10,00", "files, over the limit of 10,000 files", "archive_members"]
    if name == "h5-unallocated-dataset":  # storage is only allocated when written: 0 bytes
        h5 = tmp / "m.h5"
        _tf.keras().models.load_model(tiny).save(h5)
        with h5py.File(h5, "a") as f:
            f.create_dataset("model_weights/huge", shape=(2**20, 2**20), dtype="f4",
                             chunks=(64, 64))
        return h5, ["dataset model_weights/huge (1048576, 1048576) float32",
                    "4,398,046,511,104 bytes from 0 stored"]
    if name == "weights-bomb-in-keras":
        with zipfile.ZipFile(tiny) as z:
            weights = z.read("model.weights.h5")
        path = tmp / "w.h5"
        path.write_bytes(weights)
        with h5py.File(path, "a") as f:
            f.create_dataset("huge", data=np.zeros((8192, 4096), "f4"), chunks=(512, 4096),
                             compression="gzip")  # 128 MiB in about 130 KiB
        return keras_with(tiny, tmp / "m.keras", replace={
            "model.weights.h5": path.read_bytes()}), ["model.weights.h5", "dataset huge",
                                                      "compression_ratio"]
    raise AssertionError(name)


KERAS_CASES = ["traversal-member", "absolute-member", "deep-config", "config-bomb", "huge-config",
               "many-members", "h5-unallocated-dataset", "weights-bomb-in-keras"]


@pytest.mark.parametrize("name", KERAS_CASES)
def test_crafted_model_archives_are_refused_before_keras_reads_them(name, tiny_files, tmp_path,
                                                                   monkeypatch):
    model, needles = _keras_case(name, tiny_files["model"], tmp_path)
    monkeypatch.chdir(tmp_path)  # where a relative traversal member would land
    result, seconds = _build(tiny_files, tmp_path / "o", **{"--model": str(model)})
    _refused(result, seconds, tmp_path / "o", model.name, *needles)
    assert not list(tmp_path.rglob("escaped.txt")) and not Path("/tmp/escaped.txt").exists()


# -- files that are not files ------------------------------------------------------------------

def _not_a_file(kind: str, tmp: Path) -> Path:
    if kind == "fifo":
        path = tmp / "pipe"
        os.mkfifo(path)
    elif kind == "device":
        path = tmp / "zero"
        path.symlink_to("/dev/zero")  # a link is followed: it is the device that counts
    elif kind == "socket":
        path = tmp / "sock"
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.listen()
    else:
        path = tmp / "folder"
        path.mkdir()
    return path


def _unblock_fifos_after(paths: list[Path], seconds: float) -> threading.Timer:
    """If the code under test hangs opening a FIFO, a writer opens it later: the hang becomes
    a slow, failing case instead of a stuck suite."""
    def write() -> None:
        for path in paths:
            if path.exists() and not path.is_dir():
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                    os.close(fd)
                except OSError:
                    pass
    timer = threading.Timer(seconds, write)
    timer.start()
    return timer


EXPECTED = {"fifo": "is a FIFO (named pipe), not a regular file",
            "device": "is a character device, not a regular file",
            "socket": "is a socket, not a regular file", "folder": "is a folder"}


# A folder is a SavedModel or an image folder for the model and data options (bad-input cases).
NOT_FILES = [(option, kind) for option in ("--model", "--data", "--val", "--calib", "--recipe",
                                           "--target")
             for kind in ("fifo", "device", "socket", "folder")
             if kind != "folder" or option in ("--recipe", "--target")]


@pytest.mark.parametrize(("option", "kind"), NOT_FILES)
def test_fifos_devices_sockets_and_folders_are_refused_at_once(option, kind, tiny_files,
                                                               tmp_path):
    path = _not_a_file(kind, tmp_path)
    if option == "--target":
        path = path.rename(tmp_path / f"{path.name}.toml")
    timer = _unblock_fifos_after([path], 20)
    try:
        result, seconds = _build(tiny_files, tmp_path / "o", **{option: str(path)})
    finally:
        timer.cancel()
    assert seconds < 15, f"{option} {kind} took {seconds:.0f} s: it blocked"
    _refused(result, seconds, tmp_path / "o", str(path), EXPECTED[kind])


def test_a_fifo_inside_a_savedmodel_folder_is_refused(tmp_path):
    keras = _tf.keras()
    inputs = keras.Input((4,))
    folder = tmp_path / "sm"
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(folder, save_format="tf")
    data_file = next((folder / "variables").glob("*.data-*"))
    data_file.unlink()
    os.mkfifo(data_file)
    timer = _unblock_fifos_after([data_file], 20)
    try:
        with pytest.raises(ModelLoadError, match="is a FIFO"):
            model_io.load_model(folder)
    finally:
        timer.cancel()


# -- SavedModel ops that write files -----------------------------------------------------------

def _savedmodel_writing(folder: Path, marker: Path) -> Path:
    """A SavedModel whose custom layer's call function holds a SaveV2 op (a checkpoint write
    to ``marker``), as TensorFlow traced it."""
    keras, tf = _tf.keras(), _tf.tf()

    class Leaky(keras.layers.Layer):
        def call(self, x):
            tf.raw_ops.SaveV2(prefix=str(marker), tensor_names=["x"], shape_and_slices=[""],
                              tensors=[x])
            return x

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(Leaky(name="leaky")(inputs)))
    model.save(folder, save_format="tf")
    return folder


def test_savedmodel_writing_a_checkpoint_when_run_is_refused(tmp_path):
    marker = tmp_path / "stolen"
    folder = _savedmodel_writing(tmp_path / "sm", marker)
    assert not list(tmp_path.glob("stolen*"))  # saving traced the layer; it wrote nothing
    with pytest.raises(ModelLoadError, match="graph op SaveV2 .*--trust-model"):
        model_io.load_model(folder)
    assert not list(tmp_path.glob("stolen*"))
    assert model_io.load_model(folder, trust_model=True).count_params() == 10  # trusted: loads


def test_the_savers_own_functions_do_not_refuse_a_plain_savedmodel(tiny_files, tmp_path):
    folder = tmp_path / "sm"
    _tf.keras().models.load_model(tiny_files["model"]).save(folder, save_format="tf")
    assert not model_io.savedmodel_run_ops(folder) & (
        model_io.UNSAFE_GRAPH_OPS | model_io.RESTORE_OPS)
    assert model_io.load_model(folder).count_params() > 0


def test_non_file_data_paths_are_named_by_the_loader(tmp_path):
    for kind in ("fifo", "device"):
        path = _not_a_file(kind, tmp_path)
        with pytest.raises(DataError, match=re.escape(EXPECTED[kind])):
            data.load_samples(path, "--calib", (None, 8, 8, 1))
