"""MedMNIST-style .npz files: round trips in both layouts and the one-line errors."""

import numpy as np
import pytest
import torch

from whylens.data import load_npz, load_npz_splits
from whylens.errors import WhylensError

RNG = np.random.default_rng(0)


def _arrays(shape=(7, 6), rgb=False, counts=(5, 3, 4), label_col=True, kmax=(1, 1, 2)):
    out = {}
    for split, n, k in zip(("train", "val", "test"), counts, kmax):
        out[f"{split}_images"] = RNG.integers(0, 256, (n, *shape, 3) if rgb else (n, *shape),
                                              dtype=np.uint8)
        y = np.arange(n) % (k + 1)
        out[f"{split}_labels"] = (y[:, None] if label_col else y).astype(np.int64)
    return out


def _write(tmp_path, name="pneumoniamnist.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _msg(e):
    m = str(e.value)
    assert "\n" not in m
    return m


def test_greyscale_round_trip(tmp_path):
    arrays = _arrays()
    path = _write(tmp_path, **arrays)
    sets = load_npz_splits(path)
    assert list(sets) == ["train", "val", "test"]
    for split, ds in sets.items():
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"][:, 0]
        assert ds.images.shape == (len(x), 1, 7, 6) and ds.images.dtype == torch.float32
        np.testing.assert_allclose(ds.images[:, 0].numpy(), x / 255.0, atol=1e-7)
        assert ds.labels.tolist() == y.tolist()
        # K = 1 + max label over all splits (test has a 2), the same for every split.
        assert ds.classes == ["0", "1", "2"]
        assert ds.ids == [f"pneumoniamnist.npz:{split}:{i}" for i in range(len(x))]
    one = load_npz(path, "test", classes=["normal", "pneumonia", "other"])
    assert one.classes == ["normal", "pneumonia", "other"]
    assert torch.equal(one.images, sets["test"].images)


def test_rgb_round_trip_and_flat_labels(tmp_path):
    arrays = _arrays(shape=(4, 5), rgb=True, label_col=False)
    path = _write(tmp_path, **arrays)
    ds = load_npz(path, "train")
    x = arrays["train_images"]
    assert ds.images.shape == (5, 3, 4, 5)
    # pixel [n, c, h, w] is file[n, h, w, c] / 255
    assert float(ds.images[3, 2, 1, 4]) == pytest.approx(x[3, 1, 4, 2] / 255.0)
    np.testing.assert_allclose(ds.images.permute(0, 2, 3, 1).numpy(), x / 255.0, atol=1e-7)
    assert ds.labels.tolist() == arrays["train_labels"].tolist()


def test_split_none_concatenates_in_order(tmp_path):
    arrays = _arrays()
    ds = load_npz(_write(tmp_path, **arrays), split=None)
    assert len(ds) == 5 + 3 + 4
    assert ds.ids[5] == "pneumoniamnist.npz:val:0" and ds.ids[-1] == "pneumoniamnist.npz:test:3"
    y = np.concatenate([arrays[f"{s}_labels"][:, 0] for s in ("train", "val", "test")])
    assert ds.labels.tolist() == y.tolist()


def test_missing_keys_are_named_with_what_the_file_has(tmp_path):
    arrays = _arrays()
    del arrays["test_labels"], arrays["val_images"], arrays["val_labels"]
    path = _write(tmp_path, **arrays)
    with pytest.raises(WhylensError) as e:
        load_npz_splits(path)
    m = _msg(e)
    assert "missing key(s) test_labels" in m
    assert "the file has test_images, train_images, train_labels" in m
    with pytest.raises(WhylensError, match="missing key.*val_images, val_labels"):
        load_npz(_write(tmp_path, "t.npz", **_arrays_without_val()), "val")
    with pytest.raises(WhylensError, match="the file has other"):
        load_npz_splits(_write(tmp_path, "o.npz", other=np.zeros(3)))


def _arrays_without_val():
    a = _arrays()
    del a["val_images"], a["val_labels"]
    return a


def test_not_an_archive(tmp_path):
    txt = tmp_path / "x.npz"
    txt.write_text("hello")
    with pytest.raises(WhylensError, match="not an .npz"):
        load_npz(txt)
    npy = tmp_path / "y.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(WhylensError, match="not an .npz"):
        load_npz(npy)
    with pytest.raises(WhylensError, match="file not found"):
        load_npz(tmp_path / "missing.npz")
    with pytest.raises(WhylensError, match="split"):
        load_npz(txt, split="validation")


@pytest.mark.parametrize("change, pattern", [
    (lambda a: a.update(train_images=a["train_images"].astype(np.float32)), "dtype float32.*uint8"),
    (lambda a: a.update(train_labels=a["train_labels"].astype(np.float64)), "integer labels"),
    (lambda a: a.update(train_images=np.zeros((5, 7, 6, 2), np.uint8)), r"shape \(5, 7, 6, 2\)"),
    (lambda a: a.update(train_images=np.zeros((5, 42), np.uint8)), r"expected \(N, H, W\)"),
    (lambda a: a.update(train_labels=-np.ones((5, 1), np.int64)), "negative labels"),
    (lambda a: a.update(train_labels=np.zeros((4, 1), np.int64)), "5 images but train_labels has 4"),
    (lambda a: a.update(train_labels=np.zeros((5, 14), np.int64)), "multi-label"),
    (lambda a: a.update(test_images=np.zeros((4, 8, 8), np.uint8)), "different image shapes"),
])
def test_bad_arrays(tmp_path, change, pattern):
    arrays = _arrays()
    change(arrays)
    with pytest.raises(WhylensError, match=pattern) as e:
        load_npz_splits(_write(tmp_path, **arrays))
    assert "pneumoniamnist.npz" in _msg(e)


def test_pickled_objects_are_refused(tmp_path):
    arrays = _arrays()
    arrays["train_labels"] = np.array([object()] * 5, dtype=object)
    with pytest.raises(WhylensError, match="train_labels.*unpickling"):
        load_npz(_write(tmp_path, **arrays), "train")


def test_too_few_class_names(tmp_path):
    with pytest.raises(WhylensError, match="classes: 2 names given.*labels up to 2"):
        load_npz(_write(tmp_path, **_arrays()), "train", classes=["a", "b"])
