import numpy as np
import pytest

from edgeprune import data
from edgeprune.errors import DataError


def _npz(tmp_path, **arrays):
    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    return p


def test_labelled_roundtrip_and_one_hot(tmp_path):
    x = np.zeros((4, 2, 2, 1), np.float32)
    d = data.load_labelled(_npz(tmp_path, x=x, y=np.eye(3)[[0, 1, 2, 1]]), "--data")
    assert d.y.tolist() == [0, 1, 2, 1] and d.x.dtype == np.float32


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"x": np.zeros((4, 2))}, "'y'"),
        ({"y": np.zeros(4)}, "'x'"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(3, int)}, "4 samples"),
        ({"x": np.array([[np.nan, 1.0]] * 2), "y": np.zeros(2, int)}, "NaN or inf"),
        ({"x": np.array([[np.inf, 1.0]] * 2), "y": np.zeros(2, int)}, "NaN or inf"),
        ({"x": np.zeros((0, 2)), "y": np.zeros(0, int)}, "N ≥ 1"),
        ({"x": np.zeros((2, 2)), "y": np.array([0.5, 1.0])}, "non-integer"),
        ({"x": np.zeros((2, 2)), "y": np.array([-1, 1])}, "negative"),
        ({"x": np.array([["a", "b"]] * 2), "y": np.zeros(2, int)}, "dtype"),
    ],
)
def test_bad_labelled_data(tmp_path, arrays, needle):
    p = _npz(tmp_path, **arrays)
    with pytest.raises(DataError) as e:
        data.load_labelled(p, "--data")
    assert "--data" in str(e.value) and "d.npz" in str(e.value) and needle in str(e.value)


def test_not_an_npz(tmp_path):
    p = tmp_path / "d.npz"
    p.write_text("hello")
    with pytest.raises(DataError, match="not a readable .npz"):
        data.load_labelled(p, "--data")
    with pytest.raises(DataError, match="no such file"):
        data.load_labelled(tmp_path / "missing.npz", "--data")


def test_calib_forms(tmp_path):
    x = np.random.default_rng(0).random((5, 4, 4, 1)).astype(np.float32)
    np.save(tmp_path / "c.npy", x)
    assert data.load_samples(tmp_path / "c.npy", "--calib").shape == (5, 4, 4, 1)
    np.savez(tmp_path / "c.npz", samples=x)
    assert data.load_samples(tmp_path / "c.npz", "--calib").shape == (5, 4, 4, 1)
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((x[i, :, :, 0] * 255).astype(np.uint8)).save(folder / f"{i}.png")
    imgs = data.load_samples(folder, "--calib", (None, 4, 4, 1))  # pixel values as stored
    assert imgs.shape == (3, 4, 4, 1)
    assert np.array_equal(imgs[:], (x[:3] * 255).astype(np.uint8))


def test_shape_checks_against_model():
    x = np.zeros((3, 8, 8), np.float32)
    assert data.check_against_model(x, (None, 8, 8, 1), "--calib c").shape == (3, 8, 8, 1)
    with pytest.raises(DataError, match=r"\(N, 8, 8, 1\)"):
        data.check_against_model(np.zeros((3, 4, 4, 1)), (None, 8, 8, 1), "--calib c")


def test_holdout_is_seeded_and_disjoint():
    d = data.Labelled(np.arange(100, dtype=np.float32)[:, None], np.zeros(100, int), "d")
    train, val = data.holdout_split(d, seed=3)
    _, val2 = data.holdout_split(d, seed=3)
    assert len(val) == 15 and len(train) == 85
    assert np.array_equal(val.x, val2.x)
    assert not set(train.x[:, 0]) & set(val.x[:, 0])


def test_label_range_against_model(tmp_path):
    d = data.load_labelled(_npz(tmp_path, x=np.zeros((2, 2)), y=np.array([0, 5])), "--data")
    with pytest.raises(DataError, match="label 5"):
        data.check_labels(d, 3, "--data")
