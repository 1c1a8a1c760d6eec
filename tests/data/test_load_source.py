"""``load_source``: every accepted spec form, reshaping, and the error for a bad spec."""

import numpy as np
import pytest
import torch
from PIL import Image

from whylens.data import adapt, describe_sources, load_source, synthetic_xrays
from whylens.errors import WhylensError

RNG = np.random.default_rng(0)


def _class_tree(root, per_class=10, classes=("ant", "bee"), size=(12, 10), rgb=False):
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (*size, 3) if rgb else size
            Image.fromarray(RNG.integers(0, 256, shape, dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_digits_and_subsets():
    s = load_source("digits")
    assert set(s) == {"train", "test"}
    assert len(s["train"]) == 1500 and len(s["test"]) == 297
    assert s["train"].images.shape[1:] == (1, 8, 8) and s["train"].num_classes == 10
    sub = load_source(" digits:1,7 ")
    assert sub["train"].classes == ["1", "7"]
    assert set(sub["train"].labels.tolist()) == {0, 1}
    rows = [int(i.split(":")[1]) for i in sub["train"].ids + sub["test"].ids]
    from sklearn.datasets import load_digits
    target = load_digits().target
    assert sorted(set(target[rows].tolist())) == [1, 7] and len(rows) == int(np.isin(target, [1, 7]).sum())


def test_bundled_sets_resize_and_convert():
    base = load_source("digits")["test"]
    s = load_source("digits", image_size=16, channels=3)["test"]
    assert s.images.shape == (297, 3, 16, 16)
    assert torch.equal(s.images[:, 0], s.images[:, 2])
    # Bilinear upsampling by 2 keeps each image's mean brightness (up to the border rows).
    diff = (s.images[:, 0].mean((1, 2)) - base.images[:, 0].mean((1, 2))).abs().max()
    assert float(diff) < 0.02
    assert float(s.images.min()) >= 0 and float(s.images.max()) <= 1
    assert s.ids == base.ids and torch.equal(s.labels, base.labels)
    # 3 -> 1 is luma, 1 -> 3 -> 1 is the identity.
    back = adapt(adapt(base, channels=3), channels=1)
    assert torch.allclose(back.images, base.images, atol=1e-6)


def test_synthetic_spec_and_options():
    s = load_source("synthetic-xrays:n=60,n_test=20,size=32", seed=5)
    assert set(s) == {"train", "test", "test_confounded", "test_clean"}
    assert s["test"] is s["test_confounded"]
    ref = synthetic_xrays(n_train=60, n_test=20, size=32, seed=5)
    for k in ref:
        assert torch.equal(s[k].images, ref[k].images)
    full = load_source("synthetic-xrays:shortcut=1,n=40,n_test=10,size=32")["train"]
    assert torch.equal(full.extras["marker"], full.labels == 1)
    off = load_source("synthetic-xrays:marker=false,n=40,n_test=10,size=32,seed=2", seed=9)
    assert not any(bool(d.extras["marker"].any()) for d in off.values())
    assert torch.equal(off["train"].images,
                       synthetic_xrays(40, 10, size=32, seed=2, marker=False)["train"].images)
    loose = load_source("synthetic-xrays:shortcut=none,contrast=0.2,noise=0,n=20,n_test=4,size=32")
    assert len(loose["train"]) == 20


def test_synthetic_image_size():
    sq = load_source("synthetic-xrays:n=20,n_test=4", image_size=32)["train"]
    assert sq.images.shape == (20, 1, 32, 32)
    assert set(torch.unique(sq.masks).tolist()) <= {0.0, 1.0}  # rendered at 32, not resampled
    rect = load_source("synthetic-xrays:n=20,n_test=4,size=32", image_size=(24, 40))["train"]
    assert rect.images.shape == (20, 1, 24, 40) and rect.masks.shape == (20, 24, 40)
    assert rect.extras["marker_mask"].shape == (20, 24, 40)
    assert rect.extras["marker"].shape == (20,)


def test_plain_folder_is_split_80_20_per_class(tmp_path):
    root = _class_tree(tmp_path / "bugs")
    s = load_source(str(root), seed=1)
    assert set(s) == {"train", "test"}
    tr, te = s["train"], s["test"]
    assert tr.images.shape == (16, 1, 64, 64) and te.images.shape == (4, 1, 64, 64)
    assert tr.labels.bincount().tolist() == [8, 8] and te.labels.bincount().tolist() == [2, 2]
    assert not set(tr.ids) & set(te.ids) and len(set(tr.ids) | set(te.ids)) == 20
    assert load_source(root, seed=1)["test"].ids == te.ids
    assert load_source(root, seed=2)["test"].ids != te.ids
    small = load_source(root, image_size=(8, 6), channels=3)["train"]
    assert small.images.shape == (16, 3, 8, 6)


def test_folder_with_train_val_test(tmp_path):
    root = tmp_path / "ds"
    _class_tree(root / "train", per_class=3)
    _class_tree(root / "test", per_class=2, rgb=True)
    _class_tree(root / "val", per_class=1)
    s = load_source(root, image_size=16)
    assert set(s) == {"train", "val", "test"}
    assert [len(s[k]) for k in ("train", "val", "test")] == [6, 2, 4]
    assert all(d.channels == 3 for d in s.values())  # one RGB split makes all RGB
    assert all(d.classes == ["ant", "bee"] for d in s.values())
    bad = tmp_path / "bad"
    _class_tree(bad / "train", per_class=2)
    _class_tree(bad / "test", per_class=2, classes=("ant", "cow"))
    with pytest.raises(WhylensError, match="has classes"):
        load_source(bad)
    half = tmp_path / "half"
    _class_tree(half / "train", per_class=2)
    with pytest.raises(WhylensError, match="no test/"):
        load_source(half)


def test_npz_source(tmp_path):
    arrays = {}
    for split, n in (("train", 6), ("val", 2), ("test", 4)):
        arrays[f"{split}_images"] = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2)[:, None]
    path = tmp_path / "pneumoniamnist.npz"
    np.savez(path, **arrays)
    s = load_source(path)
    assert set(s) == {"train", "val", "test"}
    assert s["train"].images.shape == (6, 1, 28, 28)
    np.testing.assert_allclose(s["test"].images[:, 0].numpy(), arrays["test_images"] / 255.0,
                               atol=1e-7)
    r = load_source(str(path), image_size=14, channels=3)
    assert r["val"].images.shape == (2, 3, 14, 14)
    del arrays["test_images"], arrays["test_labels"]
    np.savez(tmp_path / "notest.npz", **arrays)
    with pytest.raises(WhylensError, match="no test split"):
        load_source(tmp_path / "notest.npz")


@pytest.mark.parametrize("spec, pattern", [
    ("no/such/place", "no such folder or file"),
    ("digits:11", "not integers 0-9"),
    ("digits:3", "at least 2 distinct"),
    ("digits:", "not integers"),
    ("synthetic-xrays:colour=red", "unknown option 'colour=red'"),
    ("synthetic-xrays:n=lots", "n_train='lots' has a bad value"),
    ("synthetic-xrays:marker=maybe", "bad value"),
    ("", "is empty"),
])
def test_bad_specs_list_the_accepted_forms(spec, pattern):
    with pytest.raises(WhylensError, match=pattern) as e:
        load_source(spec)
    msg = str(e.value)
    assert "\n" not in msg
    for form in ("digits", "synthetic-xrays", "folder", ".npz"):
        assert form in msg


def test_other_bad_inputs(tmp_path):
    txt = tmp_path / "labels.csv"
    txt.write_text("a,b")
    with pytest.raises(WhylensError, match="not a .npz"):
        load_source(txt)
    with pytest.raises(WhylensError, match="channels"):
        load_source("digits", channels=2)
    with pytest.raises(WhylensError, match="image_size"):
        load_source("digits", image_size=-3)
    with pytest.raises(WhylensError, match="shortcut"):
        load_source("synthetic-xrays:shortcut=2")


def test_describe_sources_names_every_form():
    text = describe_sources()
    for form in ("digits", "digits:1,7", "synthetic-xrays", "shortcut=", "train/", ".npz"):
        assert form in text
