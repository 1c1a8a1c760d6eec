"""The synthetic X-rays: determinism, where the lesions are, the marker rates, learnability."""

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from whylens.data import make_xray_images, synthetic_xrays
from whylens.data.synthetic import marker_box
from whylens.errors import WhylensError


@pytest.fixture(scope="module")
def big():
    """Many small images, so that rates are measured to about +-1 %."""
    return synthetic_xrays(n_train=3000, n_test=3000, size=32, seed=0, shortcut=0.95)


def _close(rate, p, n, sds=4.0):
    """|rate - p| within ``sds`` binomial standard deviations."""
    return abs(rate - p) <= sds * math.sqrt(p * (1 - p) / n) + 1e-12


def test_shapes_range_balance():
    sets = synthetic_xrays(n_train=60, n_test=30, size=48, seed=1)
    assert list(sets) == ["train", "test_confounded", "test_clean"]
    for name, ds in sets.items():
        n = 60 if name == "train" else 30
        assert ds.images.shape == (n, 1, 48, 48) and ds.images.dtype == torch.float32
        assert float(ds.images.min()) >= 0.0 and float(ds.images.max()) <= 1.0
        assert ds.classes == ["normal", "pneumonia"]
        assert int(ds.labels.sum()) == n // 2
        assert ds.masks.shape == (n, 48, 48)
        assert ds.extras["marker"].dtype == torch.bool and ds.extras["marker"].shape == (n,)
        assert ds.extras["marker_mask"].shape == (n, 48, 48)
        assert len(set(ds.ids)) == n and ds.ids[0] == f"synthetic-xrays:{name}:0"


def test_determinism_and_seed_sensitivity():
    a = synthetic_xrays(n_train=40, n_test=20, seed=3)
    b = synthetic_xrays(n_train=40, n_test=20, seed=3)
    c = synthetic_xrays(n_train=40, n_test=20, seed=4)
    torch.manual_seed(123)  # the global RNG plays no part
    d = synthetic_xrays(n_train=80, n_test=20, seed=3)
    for k in a:
        assert torch.equal(a[k].images, b[k].images) and torch.equal(a[k].labels, b[k].labels)
        assert torch.equal(a[k].masks, b[k].masks)
        assert torch.equal(a[k].extras["marker_mask"], b[k].extras["marker_mask"])
        assert float((a[k].images - c[k].images).abs().mean()) > 0.01
    # Test splits have their own random streams: they do not move with n_train.
    assert torch.equal(a["test_clean"].images, d["test_clean"].images)
    assert not torch.equal(a["train"].images, d["train"].images[:40])


def test_masks_inside_lungs_and_zero_for_normal(big):
    ds = big["train"]
    normal, pneu = ds.labels == 0, ds.labels == 1
    assert float(ds.masks[normal].abs().sum()) == 0.0
    area = ds.masks[pneu].sum((1, 2))
    assert bool((area > 0).all())  # every pneumonia image has a visible opacity
    lung = ds.extras["lung_mask"]
    assert float((ds.masks * (1 - lung)).sum()) == 0.0
    # lungs are a real part of the picture, not the whole of it
    assert 0.1 < float(lung.mean()) < 0.4


def test_lesion_is_an_added_bright_opacity_inside_a_lung():
    """Rendering the same draws with the lesion switched off isolates it: d = x(c) - x(0)."""
    labels = torch.tensor([0, 1] * 20)
    marker = torch.zeros(40, dtype=torch.bool)
    on = make_xray_images(labels, marker, size=64, seed=7, lesion_contrast=0.5)
    off = make_xray_images(labels, marker, size=64, seed=7, lesion_contrast=0.0)
    d = (on["images"] - off["images"])[:, 0]
    assert float(d[labels == 0].abs().max()) == 0.0
    assert float(d.min()) >= 0.0
    inside = on["masks"] > 0
    clipped = on["images"][:, 0] >= 1.0
    # inside the mask the blob is above half height, times a gain >= 0.9, times 0.5
    assert bool((d[inside & ~clipped] > 0.5 * 0.9 * 0.5 - 1e-6).all())
    # well outside the lung fields (3 px away) nothing was added
    lung = on["lung_mask"].unsqueeze(1)
    near = F.max_pool2d(lung, 7, stride=1, padding=3)[:, 0] > 0
    assert float(d[~near].max()) < 0.02
    assert torch.equal(on["masks"][labels == 0], torch.zeros(20, 64, 64))


def test_marker_is_drawn_where_flagged(big):
    ds = big["train"]
    o, m, w = marker_box(32)
    box = torch.zeros(32, 32)
    box[o:o + m, o:o + m] = 1
    flag = ds.extras["marker"]
    assert torch.equal(ds.extras["marker_mask"][flag], box.expand(int(flag.sum()), 32, 32))
    assert float(ds.extras["marker_mask"][~flag].abs().sum()) == 0.0
    x = ds.images[:, 0]
    # the "L": the left stroke and bottom stroke are white, the rest of its box is background
    assert bool((x[flag, o:o + m, o:o + w] == 1.0).all())
    assert bool((x[flag, o + m - w:o + m, o:o + m] == 1.0).all())
    assert float(x[flag, o:o + m - w, o + w:o + m].max()) < 0.3
    assert float(x[~flag, o:o + m, o:o + m].max()) < 0.3


def test_marker_rates_follow_the_shortcut(big):
    for split in ("train", "test_confounded"):
        ds = big[split]
        flag, y = ds.extras["marker"].double(), ds.labels
        n1, n0 = int((y == 1).sum()), int((y == 0).sum())
        assert _close(float(flag[y == 1].mean()), 0.95, n1)
        assert _close(float(flag[y == 0].mean()), 0.05, n0)
        agree = float((flag == y.double()).double().mean())
        assert _close(agree, 0.95, len(y))


def test_clean_split_marker_independent_of_label(big):
    ds = big["test_clean"]
    flag, y = ds.extras["marker"].double(), ds.labels
    r1, r0 = float(flag[y == 1].mean()), float(flag[y == 0].mean())
    n = len(y) // 2
    assert _close(r1, 0.5, n) and _close(r0, 0.5, n)
    # difference of two independent rates: sd sqrt(2 * 0.25 / n)
    assert abs(r1 - r0) <= 4 * math.sqrt(0.5 / n)


def test_no_confounding_and_no_marker():
    for shortcut in (0.5, None):
        ds = synthetic_xrays(n_train=2000, n_test=2, size=24, seed=2, shortcut=shortcut)["train"]
        flag, y = ds.extras["marker"].double(), ds.labels
        assert _close(float(flag[y == 1].mean()), 0.5, 1000)
        assert _close(float(flag[y == 0].mean()), 0.5, 1000)
    full = synthetic_xrays(n_train=100, n_test=10, size=24, shortcut=1.0)["train"]
    assert torch.equal(full.extras["marker"], full.labels == 1)
    none = synthetic_xrays(n_train=100, n_test=100, size=32, marker=False)
    o, m, _ = marker_box(32)
    for ds in none.values():
        assert not bool(ds.extras["marker"].any())
        assert float(ds.extras["marker_mask"].abs().sum()) == 0.0
        assert float(ds.images[:, 0, o:o + m, o:o + m].max()) < 0.3


def test_bad_arguments():
    with pytest.raises(WhylensError, match="shortcut"):
        synthetic_xrays(shortcut=1.5)
    with pytest.raises(WhylensError, match="n_train"):
        synthetic_xrays(n_train=1)
    with pytest.raises(WhylensError, match="size"):
        synthetic_xrays(size=8)
    with pytest.raises(WhylensError, match="marker: expected 4 flags"):
        make_xray_images([0, 1, 0, 1], [True, False, True])
    with pytest.raises(WhylensError, match="labels"):
        make_xray_images([0, 2], [True, False])


def test_generation_is_fast():
    synthetic_xrays(n_train=10, n_test=2)  # warm up
    t0 = time.perf_counter()
    make_xray_images(np.arange(1000) % 2, np.zeros(1000, bool), size=64, seed=0)
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.slow
def test_lesion_learnable_and_marker_is_a_shortcut(capsys):
    """Logistic regression on pixels: the lesion alone is learnable; with the marker it leans on it."""
    from whylens.models import build_model
    from whylens.train import accuracy, train

    def fit(sets):
        model = build_model("logistic", in_channels=1, image_size=32, num_classes=2, single_logit=True)
        train(model, sets["train"], l2=0.1, max_iter=200, tol=1e-6, progress=False)
        return accuracy(model, sets["test_confounded"]), accuracy(model, sets["test_clean"])

    _, clean_only = fit(synthetic_xrays(n_train=600, n_test=400, size=32, seed=1, marker=False))
    conf, clean = fit(synthetic_xrays(n_train=600, n_test=400, size=32, seed=1, shortcut=0.95))
    with capsys.disabled():
        print(f"\n[synthetic xrays, logistic] no marker: clean {clean_only:.3f}; "
              f"shortcut 0.95: confounded {conf:.3f}, clean {clean:.3f}")
    assert clean_only > 0.9  # chance is 0.5; measured 0.988
    assert conf > clean + 0.2  # measured 0.940 vs 0.522
