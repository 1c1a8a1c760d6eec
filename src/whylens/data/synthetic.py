"""A synthetic chest-X-ray-like set with known lesions and a planted shortcut.

Every image is greyscale ``(1, S, S)`` in [0, 1]. With pixel centres mapped to
``u, v in (-1, 1)`` (``u`` across, ``v`` down), each image draws a shift
``(dx, dy) ~ U(-0.05, 0.05)^2`` and a scale ``s ~ U(0.92, 1.08)`` and works in body
coordinates ``X = (u - dx) / s``, ``Y = (v - dy) / s``. With ``sig(t) = 1 / (1 + e^-t)``:

* background ``0.04``;
* body: a rounded torso, the superellipse ``r_b = (|X/0.72|^3 + |(Y - 0.14)/0.9|^3)^(1/3)``,
  ``body = sig((1 - r_b) / 0.03)``, adding ``0.58 * body``;
* lungs: two ellipses at ``(+-0.33, -0.02)`` with semi-axes about ``(0.23, 0.5)``
  (each jittered by 6 %), tilted by ``+-0.12`` rad so the apices lean towards the spine,
  ``lung = sig((1 - r_l) / 0.06)``, which subtract ``0.34 * lung``; the ``lung_mask``
  extra is ``lung > 0.5``;
* ribs: stripes ``rib = ((1 + cos(2 pi (Y - 0.45 X^2) / 0.17 + phi)) / 2)^3`` (curving
  down away from the spine, random phase ``phi``), adding ``0.12 * rib * lung``;
* pneumonia only (label 1): one opacity (two with probability 0.4), each an
  anisotropic Gaussian ``g`` with ``sigma_x ~ U(0.12, 0.25)``, ``sigma_y = sigma_x *
  U(0.8, 1.25)``, centred at a random point within 55 % of a lung's radii, adding
  ``lesion_contrast * max(g) * lung``: it lies inside a lung field, and a large one
  fills much of it, as a lobar consolidation does. The ground truth ``mask`` is
  ``max(g) * lung > 0.5`` (all zero for normal images);
* a global gain ``U(0.9, 1.1)`` and offset ``U(-0.03, 0.03)``, then pixel noise
  ``N(0, noise^2)``;
* the shortcut marker: a bright "L" (an ``m x m`` box, ``m = round(6 S / 64)``, at
  ``round(2 S / 64)`` pixels from the top-left corner, strokes ``ceil(m / 3)`` wide)
  painted at value 1 after the noise. It sits at a fixed place (outside the body for
  ``S >= 32``) and has the highest contrast in the image, so it is easier to learn
  than the lesion.
  ``marker_mask`` is 1 on the whole box where a marker is drawn, 0 elsewhere.

Finally values are clipped into [0, 1].

Splits: in ``"train"`` and ``"test_confounded"`` the marker is drawn with
probability ``shortcut`` on a pneumonia image and ``1 - shortcut`` on a normal one;
in ``"test_clean"`` with probability 0.5 independently of the label. Each split
has its own random stream ``numpy.random.default_rng([seed, split])``, so the test
splits do not change with ``n_train``; the global RNGs are never touched.

Visibility, measured with the defaults (``lesion_contrast=0.5``: an opacity is
brighter than the soft tissue around the lungs, yet dimmer and softer than the
marker), 600 training images, ``seed=1``: with ``marker=False`` a pixel-wise
logistic regression (L2 0.1) reaches 99 % on test_clean at 32x32, and a SmallCNN
(widths 8, 16, pooled; Adam 3e-3, 40 epochs) about 83 % at 64x64. With the marker at
``shortcut=0.95`` both lean on it: the logistic regression scores 94 % on
test_confounded but 52 % on test_clean, the CNN 89 % against 74 %.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import check
from .imageset import ImageSet

CLASSES = ["normal", "pneumonia"]
_SPLIT_CODES = {"train": 0, "test_confounded": 1, "test_clean": 2}
_CHUNK = 256  # images generated at once: memory stays bounded for large sets
_BLOB_SIGMA = (0.12, 0.25)
_GAIN = 0.1
_BODY, _LUNG, _RIB = 0.58, 0.34, 0.12  # brightness added by body, removed by lungs, added by ribs


def _sig(t: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(t, -40.0, 40.0)))


def marker_box(size: int) -> tuple[int, int, int]:
    """``(offset, m, stroke)`` of the "L" marker in an ``size x size`` image (top-left)."""
    m = max(4, int(round(6 * size / 64)))
    return max(1, int(round(2 * size / 64))), m, max(1, math.ceil(m / 3))


def _params(rng: np.random.Generator, labels: np.ndarray) -> dict[str, np.ndarray]:
    n = len(labels)
    u = lambda lo, hi, shape=(n,): rng.uniform(lo, hi, shape)  # noqa: E731
    p = {"dx": u(-0.05, 0.05), "dy": u(-0.05, 0.05), "scale": u(0.92, 1.08),
         "lung_ax": 0.23 * u(0.94, 1.06, (n, 2)), "lung_ay": 0.5 * u(0.94, 1.06, (n, 2)),
         "phase": u(0.0, 2 * np.pi), "gain": u(1 - _GAIN, 1 + _GAIN), "offset": u(-0.03, 0.03)}
    # Two blob slots per image; the second is used with probability 0.4, both only for pneumonia.
    active = np.stack([labels == 1, (labels == 1) & (rng.uniform(size=n) < 0.4)], axis=1)
    side = rng.integers(0, 2, (n, 2)) * 2 - 1
    r = 0.55 * np.sqrt(rng.uniform(size=(n, 2)))
    theta = rng.uniform(0, 2 * np.pi, (n, 2))
    sx = rng.uniform(*_BLOB_SIGMA, (n, 2))
    p.update(active=active, side=side, blob_r=r, blob_theta=theta, sx=sx,
             sy=sx * rng.uniform(0.8, 1.25, (n, 2)))
    return p


def _lung(X, Y, side, ax, ay):
    cx, cy, tilt = 0.33 * side, -0.02, 0.12 * side
    dx, dy = X - cx, Y - cy
    c, s = np.cos(tilt), np.sin(tilt)
    a, b = c * dx + s * dy, -s * dx + c * dy
    return _sig((1.0 - np.sqrt((a / ax) ** 2 + (b / ay) ** 2)) / 0.06)


def _render(p: dict, sl: slice, size: int, rng: np.random.Generator, lesion_contrast: float,
            noise: float) -> tuple[np.ndarray, ...]:
    t = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    col = lambda key: p[key][sl].astype(np.float32)[:, None, None]  # noqa: E731
    X = (t[None, None, :] - col("dx")) / col("scale")
    Y = (t[None, :, None] - col("dy")) / col("scale")
    rb = (np.abs(X / 0.72) ** 3 + np.abs((Y - 0.14) / 0.9) ** 3) ** (1.0 / 3.0)
    body = _sig((1.0 - rb) / 0.03)
    ax, ay = p["lung_ax"][sl].astype(np.float32), p["lung_ay"][sl].astype(np.float32)
    lungs = [_lung(X, Y, side, ax[:, k, None, None], ay[:, k, None, None])
             for k, side in enumerate((-1, 1))]
    lung = np.maximum(lungs[0], lungs[1])
    rib = ((1 + np.cos(2 * np.pi * (Y - 0.45 * X ** 2) / 0.17 + col("phase"))) / 2) ** 3
    img = 0.04 + _BODY * body - _LUNG * lung + _RIB * rib * lung
    blob = np.zeros_like(img)
    for k in range(2):
        act = p["active"][sl, k]
        if not act.any():
            continue
        side = p["side"][sl, k]
        which = (side > 0).astype(int)
        lax = ax[np.arange(len(side)), which]
        lay = ay[np.arange(len(side)), which]
        bx = 0.33 * side + p["blob_r"][sl, k] * np.cos(p["blob_theta"][sl, k]) * lax
        by = -0.02 + p["blob_r"][sl, k] * np.sin(p["blob_theta"][sl, k]) * lay
        sx, sy = p["sx"][sl, k], p["sy"][sl, k]
        q = ((X - bx[:, None, None].astype(np.float32)) ** 2 / sx[:, None, None] ** 2
             + (Y - by[:, None, None].astype(np.float32)) ** 2 / sy[:, None, None] ** 2)
        g = np.exp(-q / 2)
        blob = np.maximum(blob, g * act[:, None, None])
    lesion = (blob * lung).astype(np.float32)
    img = img + lesion_contrast * lesion
    img = col("gain") * img + col("offset")
    if noise:
        img = img + noise * rng.standard_normal(img.shape, dtype=np.float32)
    return img.astype(np.float32), (lesion > 0.5), (lung > 0.5)


def make_xray_images(labels, marker, size: int = 64, seed: int | np.random.Generator = 0,
                     lesion_contrast: float = 0.5, noise: float = 0.02) -> dict[str, torch.Tensor]:
    """Render one image per label (0 normal, 1 pneumonia) by the model of the module docstring.

    Args:
        labels: ``(N,)`` ints in {0, 1}.
        marker: ``(N,)`` bools, where to paint the "L" marker.
        seed: an int or a ``numpy.random.Generator`` (consumed in place).
    Returns ``{"images": (N, 1, S, S), "masks": (N, S, S), "lung_mask": (N, S, S),
    "marker_mask": (N, S, S)}``, float32 in [0, 1].
    """
    labels = np.asarray(torch.as_tensor(labels).to(torch.int64)).reshape(-1)
    marker = np.asarray(torch.as_tensor(marker).to(torch.bool)).reshape(-1)
    check(labels.size == 0 or bool(np.isin(labels, (0, 1)).all()),
          "labels: expected 0 (normal) or 1 (pneumonia)")
    check(marker.shape == labels.shape,
          f"marker: expected {labels.shape[0]} flags to match the labels, got {marker.shape[0]}")
    check(isinstance(size, (int, np.integer)) and size >= 16, f"size: expected an int >= 16, got {size!r}")
    check(lesion_contrast >= 0, f"lesion_contrast: expected a number >= 0, got {lesion_contrast}")
    check(noise >= 0, f"noise: expected a number >= 0, got {noise}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n, size = len(labels), int(size)
    p = _params(rng, labels)
    images = np.empty((n, size, size), np.float32)
    masks, lungs = np.empty_like(images), np.empty_like(images)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(n, start + _CHUNK))
        images[sl], masks[sl], lungs[sl] = _render(p, sl, size, rng, lesion_contrast, noise)
    o, m, w = marker_box(size)
    box = np.zeros((size, size), np.float32)
    box[o:o + m, o:o + m] = 1.0
    stroke = np.zeros((size, size), bool)
    stroke[o:o + m, o:o + w] = True
    stroke[o + m - w:o + m, o:o + m] = True
    images[marker] = np.where(stroke, np.float32(1.0), images[marker])
    marker_mask = marker[:, None, None] * box[None]
    return {"images": torch.from_numpy(np.clip(images, 0.0, 1.0)).unsqueeze(1),
            "masks": torch.from_numpy(masks), "lung_mask": torch.from_numpy(lungs),
            "marker_mask": torch.from_numpy(marker_mask.astype(np.float32))}


def _split(name: str, n: int, size: int, seed: int, p_marker: tuple[float, float],
           lesion_contrast: float, noise: float) -> ImageSet:
    rng = np.random.default_rng([seed, _SPLIT_CODES[name]])
    labels = rng.permutation(np.arange(n) % 2)
    # p_marker = (P(marker | normal), P(marker | pneumonia))
    marker = rng.uniform(size=n) < np.where(labels == 1, p_marker[1], p_marker[0])
    out = make_xray_images(labels, marker, size, rng, lesion_contrast, noise)
    return ImageSet(out["images"], torch.from_numpy(labels), list(CLASSES),
                    ids=[f"synthetic-xrays:{name}:{i}" for i in range(n)], masks=out["masks"],
                    extras={"marker": torch.from_numpy(marker), "marker_mask": out["marker_mask"],
                            "lung_mask": out["lung_mask"]},
                    name="synthetic-xrays")


def synthetic_xrays(n_train: int = 600, n_test: int = 200, size: int = 64, seed: int = 0,
                    shortcut: float | None = 0.95, lesion_contrast: float = 0.5,
                    marker: bool = True, noise: float = 0.02) -> dict[str, ImageSet]:
    """Splits ``"train"``, ``"test_confounded"``, ``"test_clean"`` of the synthetic X-rays.

    Classes ``["normal", "pneumonia"]`` (label 1 = pneumonia), balanced (``n // 2``
    normal in each split). ``P(marker | pneumonia) = shortcut`` and
    ``P(marker | normal) = 1 - shortcut`` in train and test_confounded; 0.5 for both
    in test_clean. ``shortcut=None`` (or 0.5) means no confounding; ``marker=False``
    means no marker anywhere. ``masks`` are the lesion masks; ``extras`` hold
    ``"marker"`` ``(N,)`` bool, ``"marker_mask"`` and ``"lung_mask"`` ``(N, S, S)``.
    ``n_test`` images in each test split. Deterministic in ``seed``.
    """
    for arg, v in (("n_train", n_train), ("n_test", n_test)):
        check(isinstance(v, (int, np.integer)) and v >= 2, f"{arg}: expected an int >= 2, got {v!r}")
    check(isinstance(seed, (int, np.integer)), f"seed: expected an int, got {seed!r}")
    q = 0.5 if shortcut is None else float(shortcut)
    check(0.0 <= q <= 1.0, f"shortcut: expected a probability in [0, 1] or None, got {shortcut!r}")
    confounded = (1.0 - q, q) if marker else (0.0, 0.0)
    clean = (0.5, 0.5) if marker else (0.0, 0.0)
    args = (size, int(seed))
    return {"train": _split("train", int(n_train), *args, confounded, lesion_contrast, noise),
            "test_confounded": _split("test_confounded", int(n_test), *args, confounded,
                                      lesion_contrast, noise),
            "test_clean": _split("test_clean", int(n_test), *args, clean, lesion_contrast, noise)}
