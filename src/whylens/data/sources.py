"""One string names a data source: ``load_source("digits:1,7")`` and friends.

Accepted forms of ``spec`` (the CLI's ``--data``):

* ``digits``: scikit-learn's 8x8 digits, first 1,500 rows train, the rest test;
* ``digits:1,7``: only those classes (relabelled 0..k-1 in the order given);
* ``synthetic-xrays[:key=value,...]``: :func:`whylens.data.synthetic.synthetic_xrays`,
  with keys ``n`` (or ``n_train``), ``n_test``, ``size``, ``seed``, ``shortcut``
  (a probability, or ``none``), ``contrast`` (or ``lesion_contrast``), ``noise``,
  ``marker`` (``true``/``false``); e.g. ``synthetic-xrays:shortcut=0.5,n=400``.
  It returns ``train``, ``test_confounded``, ``test_clean`` and ``test`` (the
  confounded split);
* a folder: with ``train/`` and ``test/`` subfolders (and optionally ``val/``) each is
  a class-subfolder tree used as given; otherwise the folder itself is the class
  tree and is split 80/20 per class by ``ImageSet.split(0.8, seed=seed)``;
* a ``.npz`` file in the MedMNIST layout: its ``train`` and ``test`` splits, and
  ``val`` when the file has one.

The names ``digits`` and ``synthetic-xrays`` win over a folder of the same name;
write ``./digits`` for the folder.

Shapes: folders are decoded at ``image_size`` (default 64x64) with their own
channel count unless ``channels`` is given; bundled sets (digits, synthetic,
``.npz``) keep their own size unless ``image_size`` is given, and are then resized
with bilinear interpolation (antialiased when shrinking), masks and per-pixel
extras included. ``channels`` converts 1 -> 3 by repeating the plane and 3 -> 1
by luma ``Y = 0.299 R + 0.587 G + 0.114 B``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import WhylensError, check
from .digits import digits_split
from .folder import LUMA, load_folder, size_pair
from .imageset import ImageSet
from .npz import load_npz_splits
from .synthetic import synthetic_xrays

_FORMS = ("digits, digits:<class>,<class>,... (e.g. digits:1,7), "
          "synthetic-xrays[:key=value,...] (keys n, n_test, size, seed, shortcut, contrast, "
          "noise, marker), a folder with one subfolder per class (or with train/ and test/), "
          "or a MedMNIST-style .npz file")

_SYNTH_KEYS = {"n": "n_train", "n_train": "n_train", "n_test": "n_test", "size": "size",
               "seed": "seed", "shortcut": "shortcut", "contrast": "lesion_contrast",
               "lesion_contrast": "lesion_contrast", "noise": "noise", "marker": "marker"}


def describe_sources() -> str:
    """Help text for ``--data``: the accepted forms, one per line."""
    return "\n".join([
        "digits                    scikit-learn's 8x8 digits (1,500 train / 297 test)",
        "digits:1,7                a subset of the digit classes, relabelled in that order",
        "synthetic-xrays[:k=v,..]  synthetic chest X-rays with lesion masks and an 'L' marker",
        "                          shortcut; keys n, n_test, size, seed, shortcut, contrast,",
        "                          noise, marker (e.g. synthetic-xrays:shortcut=0.5,n=400)",
        "PATH/                     a folder of class subfolders (split 80/20 per class), or",
        "                          with train/ and test/ (and val/) subfolders used as given",
        "PATH.npz                  MedMNIST-style train/val/test _images and _labels arrays",
    ])


def _bad(spec: str, why: str) -> WhylensError:
    return WhylensError(f"--data {spec!r}: {why}; expected one of: {_FORMS}")


# -- shape adaptation of bundled sets --------------------------------------------------
def _resize_maps(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(N, C, H, W)``; antialiased when shrinking, clipped into [0, 1]."""
    if tuple(x.shape[-2:]) == size:
        return x
    if x.shape[0] == 0:
        return x.new_zeros((*x.shape[:-2], *size))
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    y = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return y.clamp(0.0, 1.0)


def convert_channels(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    """``(N, C, H, W)`` to ``channels``: 1 -> 3 repeats, 3 -> 1 is luma ``0.299 R + 0.587 G + 0.114 B``."""
    check(channels in (None, 1, 3), f"channels: expected None, 1 or 3, got {channels!r}")
    c = images.shape[1]
    if channels is None or channels == c:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    w = torch.tensor(LUMA, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * w).sum(1, keepdim=True).clamp(0.0, 1.0)


def adapt(ds: ImageSet, image_size=None, channels: int | None = None) -> ImageSet:
    """``ds`` resized to ``image_size`` (int or ``(H, W)``; None keeps it) with ``channels``.

    Masks and extras shaped ``(N, H, W)`` are resized with the images (bilinear), so
    they stay aligned with the pixels; the result is a new :class:`ImageSet`.
    """
    size = ds.image_size if image_size is None else size_pair(image_size)
    images = convert_channels(ds.images, channels)
    if size == ds.image_size and images is ds.images:
        return ds
    hw = ds.image_size

    def maps(t: torch.Tensor) -> torch.Tensor:
        return _resize_maps(t.float().unsqueeze(1), size).squeeze(1)

    masks = None if ds.masks is None else maps(ds.masks)
    extras = {k: (maps(v) if v.dim() == 3 and tuple(v.shape[1:]) == hw else v)
              for k, v in ds.extras.items()}
    return ImageSet(_resize_maps(images, size), ds.labels, list(ds.classes), list(ds.ids),
                    masks, extras, ds.name)


# -- the forms -----------------------------------------------------------------------
def _digits(spec: str, rest: str | None) -> dict[str, ImageSet]:
    classes = None
    if rest is not None:
        parts = [p.strip() for p in rest.split(",") if p.strip()]
        if not parts or not all(p.isdigit() and int(p) <= 9 for p in parts):
            raise _bad(spec, f"digit classes {rest!r} are not integers 0-9")
        classes = [int(p) for p in parts]
        if len(set(classes)) != len(classes) or len(classes) < 2:
            raise _bad(spec, "expected at least 2 distinct digit classes")
    train, test = digits_split(1500, classes)
    return {"train": train, "test": test}


def _parse_value(spec: str, key: str, value: str):
    v = value.strip().lower()
    try:
        if key == "marker":
            if v in ("1", "true", "yes", "on"):
                return True
            if v in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if key == "shortcut":
            return None if v == "none" else float(v)
        if key in ("n_train", "n_test", "size", "seed"):
            return int(v)
        return float(v)
    except ValueError:
        raise _bad(spec, f"option {key}={value!r} has a bad value") from None


def _synthetic(spec: str, rest: str | None, image_size, seed: int) -> dict[str, ImageSet]:
    kwargs = {"seed": seed}
    for item in (rest or "").split(","):
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or key not in _SYNTH_KEYS:
            raise _bad(spec, f"unknown option {item.strip()!r} (keys: "
                             f"{', '.join(sorted(_SYNTH_KEYS))})")
        kwargs[_SYNTH_KEYS[key]] = _parse_value(spec, _SYNTH_KEYS[key], value)
    if "size" not in kwargs and image_size is not None:
        h, w = size_pair(image_size)
        if h == w:  # render at the asked size: masks stay crisp, no resampling
            kwargs["size"] = h
    return synthetic_xrays(**kwargs)


def _folder(root: Path, image_size, channels, skip_bad: bool, seed: int) -> dict[str, ImageSet]:
    size = 64 if image_size is None else image_size
    subs = {d.name for d in root.iterdir() if d.is_dir()}
    if "train" in subs or "test" in subs:
        check("train" in subs and "test" in subs,
              f"{root}: has a {'train' if 'train' in subs else 'test'}/ subfolder but no "
              f"{'test' if 'train' in subs else 'train'}/; expected both (each with one subfolder "
              "per class) or one subfolder per class")
        names = [s for s in ("train", "val", "test") if s in subs]
        out = {s: load_folder(root / s, size, channels, skip_bad) for s in names}
        ref = out["train"].classes
        for s, d in out.items():
            check(d.classes == ref, f"{root / s}: has classes {d.classes} but {root / 'train'} "
                                    f"has {ref}; expected the same class subfolders")
        if channels is None and len({d.channels for d in out.values()}) > 1:
            out = {s: adapt(d, None, 3) for s, d in out.items()}
        return out
    train, test = load_folder(root, size, channels, skip_bad).split(0.8, seed=seed)
    return {"train": train, "test": test}


def _npz(path: Path, image_size, channels) -> dict[str, ImageSet]:
    sets = load_npz_splits(path)
    missing = [s for s in ("train", "test") if s not in sets]
    check(not missing, f"{path}: has no {' or '.join(missing)} split (keys <split>_images, "
                       f"<split>_labels); expected train and test, val optional")
    return {s: adapt(d, image_size, channels) for s, d in sets.items()}


def load_source(spec, image_size=None, channels: int | None = None, skip_bad: bool = False,
                seed: int = 0) -> dict[str, ImageSet]:
    """The splits named by ``spec`` (see the module docstring), at least ``train`` and ``test``.

    ``image_size`` (int or ``(H, W)``) and ``channels`` (1 or 3) reshape the result;
    ``seed`` fixes the 80/20 split of a plain folder and the synthetic set's seed
    (unless ``seed=`` is in the spec). ``skip_bad`` is passed to the folder loader.
    Raises a one-line :class:`WhylensError` listing the accepted forms on a bad spec.
    """
    check(channels in (None, 1, 3), f"channels: expected None, 1 or 3, got {channels!r}")
    if image_size is not None:
        size_pair(image_size)
    check(isinstance(spec, (str, os.PathLike)), f"--data: expected a string, got {type(spec).__name__}")
    text = os.fspath(spec).strip()
    if not text:
        raise _bad(text, "is empty")
    head, colon, rest = text.partition(":")
    name = head.strip().lower()
    if name == "digits":
        sets = _digits(text, rest if colon else None)
        return {k: adapt(v, image_size, channels) for k, v in sets.items()}
    if name == "synthetic-xrays":
        sets = _synthetic(text, rest if colon else None, image_size, seed)
        sets = {k: adapt(v, image_size, channels) for k, v in sets.items()}
        sets["test"] = sets["test_confounded"]
        return sets
    path = Path(text).expanduser()
    if path.is_dir():
        return _folder(path, image_size, channels, skip_bad, seed)
    if path.is_file() and path.suffix.lower() == ".npz":
        return _npz(path, image_size, channels)
    if path.is_file():
        raise _bad(text, "is a file but not a .npz archive")
    raise _bad(text, "no such folder or file, and not a known data set name")
