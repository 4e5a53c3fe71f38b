"""Image folders, TFRecord files and arrays (issue 21): the same images in any format give the
same build, bad datasets are refused naming the path, and samples are read in batches."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from tiny_models import blobs, tiny_classifier

from edgeprune import data
from edgeprune.cli import main
from edgeprune.data import tfrecord
from edgeprune.data.rows import Rows
from edgeprune.data.stream import training_dataset
from edgeprune.dataspec import DataSpec, data_spec
from edgeprune.errors import DataError, RecipeError

CLASSES = ("circle", "cross", "stripe")  # sorted: label i is CLASSES[i]
SHAPE = (None, 8, 8, 1)


def _pixels(n: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 8, 8, 1) of three learnable classes, ordered by class."""
    x, y = blobs(n, seed=seed)
    pixels = np.clip(np.round((x + 0.3) * 180), 0, 255).astype(np.uint8)
    order = np.argsort(y, kind="stable")  # the order an image folder lists them in
    return pixels[order], y[order]


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image[:, :, 0]).save(buf, format="PNG")
    return buf.getvalue()


def _write_folder(root: Path, pixels: np.ndarray, labels: np.ndarray) -> Path:
    for i, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:05d}.png").write_bytes(_png(image))
    return root


def _example(features: dict[str, tuple[str, list]]) -> bytes:
    from edgeprune import _tf

    tf = _tf.tf()
    made = {}
    for key, (kind, values) in features.items():
        made[key] = {"bytes": lambda v: tf.train.Feature(bytes_list=tf.train.BytesList(value=v)),
                     "int": lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=v)),
                     }[kind](values)
    return tf.train.Example(features=tf.train.Features(feature=made)).SerializeToString()


def _write_tfrecord(path: Path, blobs_: list[bytes]) -> Path:
    with path.open("wb") as f:
        for blob in blobs_:  # the TFRecord framing; CRCs are not checked by the reader
            f.write(struct.pack("<QI", len(blob), 0) + blob + b"\0\0\0\0")
    return path


@pytest.fixture(scope="module")
def formats(tmp_path_factory) -> dict[str, Path]:
    """The same 150 images as an .npz, an image folder and a TFRecord file; a tiny model
    trained on pixel / 255; a recipe whose [data] section scales pixels by 1/255."""
    from edgeprune.training import compile_for_training

    root = tmp_path_factory.mktemp("formats")
    pixels, labels = _pixels()
    model = tiny_classifier()
    compile_for_training(model, 1e-2)
    model.fit(pixels / 255.0, labels, epochs=15, batch_size=16, verbose=0)
    model.save(root / "tiny.keras")
    np.savez(root / "train.npz", x=pixels, y=labels)
    _write_folder(root / "train", pixels, labels)
    _write_tfrecord(root / "train.tfrecord", [
        _example({"image": ("bytes", [_png(p)]), "label": ("int", [int(label)])})
        for p, label in zip(pixels, labels, strict=True)])
    (root / "recipe.toml").write_text("[data]\nscale = 0.00392156862745098\n")
    return {"model": root / "tiny.keras", "npz": root / "train.npz",
            "folder": root / "train", "tfrecord": root / "train.tfrecord",
            "recipe": root / "recipe.toml"}


def test_every_format_reads_the_same_samples(formats):
    spec = DataSpec(scale=1 / 255)
    read = {name: data.load_labelled(formats[name], "--data", SHAPE, spec)
            for name in ("npz", "folder", "tfrecord")}
    assert isinstance(read["folder"].x, Rows) and isinstance(read["tfrecord"].x, Rows)
    assert isinstance(read["npz"].x, Rows)  # np.savez stores uncompressed: memory-mapped
    for name in ("folder", "tfrecord"):
        assert np.array_equal(read[name].y, read["npz"].y)
        assert np.array_equal(read[name].x[:], read["npz"].x[:])
    assert read["folder"].found["classes"] == {name: i for i, name in enumerate(CLASSES)}
    assert read["folder"].found["images_per_class"] == {
        name: int(np.sum(read["npz"].y == i)) for i, name in enumerate(CLASSES)}


def test_folder_tfrecord_and_npz_builds_are_identical(formats, tmp_path):
    """The same images through the whole pipeline (hold-out split, fine-tune, calibration,
    accuracy): the same accuracy and the same model bytes."""
    reports = {}
    for name in ("npz", "folder", "tfrecord"):
        out = tmp_path / name
        r = CliRunner().invoke(main, [
            "build", "--target", "host", "--model", str(formats["model"]), "--data",
            str(formats[name]), "--recipe", str(formats["recipe"]), "--prune", "structured",
            "--sparsity", "0.5", "--epochs", "2", "--out", str(out)])
        assert r.exit_code in (0, 1), r.output + repr(r.exception)
        reports[name] = json.loads((out / "host" / "report.json").read_text())
        reports[name]["bytes"] = (out / "host" / "model.tflite").read_bytes()
    base = reports["npz"]
    assert base["result"]["accuracy"] > 0.9  # the scale reached the model: it classifies
    for name in ("folder", "tfrecord"):
        assert reports[name]["result"]["accuracy"] == base["result"]["accuracy"]
        assert reports[name]["baseline"]["accuracy"] == base["baseline"]["accuracy"]
        assert reports[name]["bytes"] == base["bytes"]
    folder = reports["folder"]["data"]
    assert folder["classes"] == {"circle": 0, "cross": 1, "stripe": 2}
    assert folder["preprocessing"]["image_size"] == [8, 8]
    assert folder["preprocessing"]["color_mode"] == "grayscale"
    assert folder["train"]["format"] == "image folder" and folder["train"]["skipped"] == []
    assert reports["tfrecord"]["data"]["train"]["records"] == 150


def test_a_folder_of_other_sized_rgb_images_is_resized_to_the_model(tmp_path):
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        rgb = np.full((20, 30, 3), 200 if label == "a" else 10, np.uint8)
        Image.fromarray(rgb).save(tmp_path / label / "1.jpg")
    got = data.load_labelled(tmp_path, "--data", SHAPE)
    assert got.x.shape == (2, 8, 8, 1) and got.y.tolist() == [0, 1]
    assert abs(got.x[0].mean() - 200) < 2 and abs(got.x[1].mean() - 10) < 2


@pytest.mark.parametrize(("layout", "needle"), [
    ({"loose.png": "png"}, "has no class sub-folders"),
    ({"cat/1.png": "png", "dog/readme.txt": "text"}, "class folder"),
    ({"cat/1.png": "png", "dog/1.png": "broken"}, "1 of 2 image files cannot be used"),
])
def test_bad_folders_are_refused_naming_the_path(tmp_path, layout, needle):
    for rel, kind in layout.items():
        path = tmp_path / "d" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_png(np.zeros((8, 8, 1), np.uint8)) if kind == "png"
                         else b"not an image at all")
    with pytest.raises(DataError) as e:
        data.load_labelled(tmp_path / "d", "--data", SHAPE)
    assert needle in str(e.value) and str(tmp_path / "d") in str(e.value)


def test_a_few_undecodable_images_are_skipped_and_listed(tmp_path):
    pixels, labels = _pixels(200)
    _write_folder(tmp_path, pixels, labels)
    broken = tmp_path / CLASSES[0] / "broken.png"
    broken.write_bytes(_png(pixels[0])[:40])  # truncated: under 1 % of the folder
    got = data.load_labelled(tmp_path, "--data", SHAPE)
    assert len(got) == 200 and got.found["skipped"][0].startswith(str(broken))
    for name in CLASSES[1:]:  # now 3 of 203 (1.5 %): refused
        (tmp_path / name / "broken.png").write_bytes(b"x")
    with pytest.raises(DataError, match="3 of 203 image files cannot be used"):
        data.load_labelled(tmp_path, "--data", SHAPE)


def test_class_count_and_label_range_against_the_model(tmp_path, formats):
    folder = data.load_labelled(formats["folder"], "--data", SHAPE)
    with pytest.raises(DataError, match="has 3 class folders but the model has 5 outputs"):
        data.check_labels(folder, 5, "--data")
    path = _write_tfrecord(tmp_path / "l.tfrecord", [
        _example({"image": ("bytes", [_png(np.zeros((8, 8, 1), np.uint8))]),
                  "label": ("int", [7])})])
    records = data.load_labelled(path, "--data", SHAPE)
    with pytest.raises(DataError, match="has label 7 but the model has 3 outputs"):
        data.check_labels(records, 3, "--data")


def test_bad_tfrecords_name_the_file_and_record(tmp_path):
    good = _example({"image": ("bytes", [_png(np.zeros((8, 8, 1), np.uint8))]),
                     "label": ("int", [0])})
    wrong = _example({"img": ("bytes", [b""]), "y": ("int", [0])})
    path = _write_tfrecord(tmp_path / "k.tfrecord", [good, wrong])
    with pytest.raises(DataError) as e:
        data.load_labelled(path, "--data", SHAPE)
    assert "record 1" in str(e.value) and "has no feature 'image'" in str(e.value)
    assert "it has: img, y" in str(e.value)
    spec = data_spec("recipe.toml", {"image_key": "img", "label_key": "y"})
    with pytest.raises(DataError, match=r"record 0\).*has no feature 'img'"):
        data.load_labelled(path, "--data", SHAPE, spec)
    truncated = tmp_path / "t.tfrecord"
    truncated.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"record 1\).*truncated"):
        data.load_labelled(truncated, "--data", SHAPE)
    gz = tmp_path / "z.tfrecord"
    gz.write_bytes(b"\x1f\x8b" + b"\0" * 20)
    with pytest.raises(DataError, match="compressed"):
        data.load_labelled(gz, "--data", SHAPE)
    with pytest.raises(DataError, match="matches no files"):
        data.load_labelled(tmp_path / "none-*.tfrecord", "--data", SHAPE)


def test_raw_and_glob_tfrecords(tmp_path):
    pixels, labels = _pixels(20)
    for part in (0, 1):
        _write_tfrecord(tmp_path / f"train-{part}.tfrecord", [
            _example({"image": ("bytes", [p.tobytes()]), "label": ("int", [int(label)])})
            for p, label in zip(pixels[part::2], labels[part::2], strict=True)])
    spec = DataSpec(encoding="raw")
    got = data.load_labelled(Path(f"{tmp_path}/train-*.tfrecord"), "--data", SHAPE, spec)
    assert len(got) == 20 and np.array_equal(got.x[:10], pixels[0::2][:10].astype(np.float32))


def test_a_bad_folder_exits_2_before_any_slow_work(formats, tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "1.png").write_bytes(_png(np.zeros((8, 8, 1), np.uint8)))
    r = CliRunner().invoke(main, ["build", "--target", "host", "--model",
                                  str(formats["model"]), "--data", str(tmp_path / "flat"),
                                  "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "has no class sub-folders" in r.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("table", "needle"), [
    ({"scale": 0}, "scale"), ({"color_mode": "cmyk"}, "color_mode"),
    ({"image_size": [8]}, "image_size"), ({"flip": "sideways"}, "flip"),
    ({"translate": 0.7}, "translate"), ({"bogus": 1}, "unknown key 'bogus'"),
    ({"crop_padding": 1.5}, "crop_padding"),
])
def test_bad_data_sections_are_refused(table, needle):
    with pytest.raises(RecipeError, match=needle):
        data_spec("r.toml", table)


def test_npy_is_memory_mapped_and_checked_in_chunks(tmp_path):
    x = np.arange(2 * 64, dtype=np.float32).reshape(2, 8, 8, 1)
    np.save(tmp_path / "x.npy", x)
    got = data.load_samples(tmp_path / "x.npy", "--calib", SHAPE)
    assert isinstance(got, Rows) and np.array_equal(got[[1, 0]], x[[1, 0]])
    x[1, 0, 0, 0] = np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(DataError, match="first in sample 1"):
        data.load_samples(tmp_path / "x.npy", "--calib", SHAPE)
    with pytest.raises(DataError, match="holds no labels"):
        data.load_labelled(tmp_path / "x.npy", "--data")


def test_training_batches_are_seeded_and_cover_every_sample_each_epoch():
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    y = np.arange(10)
    ds, steps = training_dataset(x, y, 4, seed=1, epochs=2)
    batches = [b.numpy().tolist() for _, b in ds]
    assert steps == 3 and len(batches) == 6
    epochs = [[i for b in batches[:3] for i in b], [i for b in batches[3:] for i in b]]
    assert all(sorted(e) == list(range(10)) for e in epochs) and epochs[0] != epochs[1]
    again = [b.numpy().tolist() for _, b in training_dataset(x, y, 4, seed=1, epochs=2)[0]]
    assert again == batches


def test_augmentation_flips_and_shifts_deterministically():
    x = np.zeros((16, 8, 8, 1), np.float32)
    x[:, :, :4] = 1.0  # left half bright
    y = np.zeros(16, np.int64)
    spec = DataSpec(flip="horizontal", crop_padding=2)
    ds, _ = training_dataset(x, y, 16, seed=0, epochs=1, augment=spec)
    (out, _), = list(ds)
    out = out.numpy()
    again = next(iter(training_dataset(x, y, 16, seed=0, epochs=1, augment=spec)[0]))[0]
    assert np.array_equal(out, again.numpy())
    flipped = out[:, :, 6:].mean(axis=(1, 2, 3)) > out[:, :, :2].mean(axis=(1, 2, 3))
    assert 0 < flipped.sum() < 16  # some images flipped, some not
    assert not np.array_equal(out, x)


def test_the_tflm_header_carries_the_input_contract():
    from edgeprune.artifacts.tflm import input_contract

    text = input_contract({"image_size": [96, 96], "color_mode": "rgb", "scale": 1 / 255,
                           "offset": 0.0, "interpolation": "bilinear",
                           "formula": "x = pixel * 0.00392157 + 0"}, ["cat", 'say "hi"'])
    assert "constexpr int kInputHeight = 96;" in text and "kInputChannels = 3;" in text
    assert "kInputScale = 0.00392156862745098f;" in text
    assert 'kClassNames[kNumClasses] = {"cat", "say \\"hi\\""};' in text


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    from edgeprune import limits

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "big.png").write_bytes(_png(np.zeros((8, 8, 1), np.uint8)))
    with limits.using(limits.Limits(image_pixels=50)), \
            pytest.raises(DataError, match="8×8 = 64 pixels, over the limit of 50 pixels"):
        data.load_labelled(tmp_path, "--data", SHAPE)


def test_tfrecord_names_are_recognised():
    assert tfrecord.is_tfrecord("train.tfrecord") and tfrecord.is_tfrecord("a.tfrec")
    assert tfrecord.is_tfrecord("train.tfrecord-00001-of-00004")
    assert not tfrecord.is_tfrecord("train.npz")


def test_channel_pruning_never_reads_a_whole_dataset():
    """A weight criterion reads no sample; a data criterion reads in batches (bench/data_memory
    found the input check converting a 100,000-image folder to one array)."""
    from edgeprune.pruning import prune_structured

    x, y = blobs(300)
    sizes: list[int] = []

    def read(index: np.ndarray) -> np.ndarray:
        sizes.append(len(index))
        return x[index]

    rows = Rows.over(read, len(x), x.shape[1:])
    prune_structured(tiny_classifier(), sparsity=0.5, criterion="l1", data=(rows, y))
    assert sizes == []
    prune_structured(tiny_classifier(), sparsity=0.5, criterion="taylor", data=(rows, y))
    assert sum(sizes) == len(x) and max(sizes) <= 256
