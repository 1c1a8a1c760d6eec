"""MedMNIST-style ``.npz`` files: ``<split>_images`` and ``<split>_labels`` per split.

The layout is the one PneumoniaMNIST (and the other single-label MedMNIST sets)
ship: for each split ``s`` in ``train``, ``val``, ``test`` a pair of arrays

* ``s_images``: uint8, ``(N, H, W)`` (greyscale) or ``(N, H, W, 3)`` (RGB;
  ``(N, H, W, 1)`` is read as greyscale);
* ``s_labels``: integer, ``(N, 1)`` or ``(N,)``, each ``>= 0``.

Pixels become ``x = v / 255`` as float32 ``(N, C, H, W)``. The class count is
``K = 1 + max label`` over every split in the file (so all splits agree on it), and
the class names are ``"0" .. "K-1"`` unless ``classes`` names them. Item ids are
``"<file name>:<split>:<row>"``. The file is read with ``allow_pickle=False``, so a
file holding Python objects is refused instead of executed. All splits of a file
must share one image shape.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import WhylensError, check
from .imageset import ImageSet

SPLITS = ("train", "val", "test")
_EXPECTED = ("a MedMNIST-style .npz with train_images/train_labels, val_images/val_labels, "
             "test_images/test_labels")


class _Npz:
    """The open archive plus the path, so every message can name the file."""

    def __init__(self, path):
        self.path = str(path)
        p = Path(path)
        check(p.exists(), f"{self.path}: file not found; expected {_EXPECTED}")
        check(p.is_file(), f"{self.path}: is not a file; expected {_EXPECTED}")
        check(zipfile.is_zipfile(p), f"{self.path}: is not an .npz (zip) archive; expected {_EXPECTED}")
        try:
            data = np.load(p, allow_pickle=False)
        except Exception as exc:  # numpy/zipfile raise several types on a damaged archive.
            raise WhylensError(f"{self.path}: cannot read the archive ({type(exc).__name__}: "
                               f"{exc}); expected {_EXPECTED}") from None
        # is_zipfile also accepts a zip appended to other bytes, which np.load reads as .npy.
        check(isinstance(data, np.lib.npyio.NpzFile),
              f"{self.path}: is not an .npz archive of named arrays; expected {_EXPECTED}")
        self.data = data
        self.keys = sorted(data.files)

    def __enter__(self) -> "_Npz":
        return self

    def __exit__(self, *exc) -> None:
        self.data.close()

    def array(self, key: str) -> np.ndarray:
        try:
            return self.data[key]
        except ValueError as exc:  # allow_pickle=False refuses object arrays here
            raise WhylensError(f"{self.path}: key {key!r} cannot be read without unpickling "
                               f"({exc}); expected plain numeric arrays") from None
        except Exception as exc:
            raise WhylensError(f"{self.path}: key {key!r} is damaged ({type(exc).__name__}: "
                               f"{exc})") from None

    def present_splits(self) -> list[str]:
        """Splits with at least one of their two keys; a lone half of a pair is an error."""
        found = []
        for s in SPLITS:
            have = [k in self.keys for k in (f"{s}_images", f"{s}_labels")]
            if any(have):
                self.require([s])
                found.append(s)
        return found

    def require(self, splits: Sequence[str]) -> None:
        missing = [k for s in splits for k in (f"{s}_images", f"{s}_labels") if k not in self.keys]
        check(not missing, f"{self.path}: missing key(s) {', '.join(missing)}; the file has "
                           f"{', '.join(self.keys) or 'no arrays'}; expected {_EXPECTED}")


def _labels(npz: _Npz, split: str) -> np.ndarray:
    key = f"{split}_labels"
    y = npz.array(key)
    check(y.dtype.kind in "iu", f"{npz.path}: {key} has dtype {y.dtype}; expected integer labels")
    check(y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1),
          f"{npz.path}: {key} has shape {y.shape}; expected (N,) or (N, 1), one label per image "
          "(multi-label files are not supported)")
    y = y.reshape(-1).astype(np.int64)
    if y.size:
        check(int(y.min()) >= 0, f"{npz.path}: {key} has negative labels (min {int(y.min())}); "
                                 "expected class indices >= 0")
    return y


def _images(npz: _Npz, split: str) -> np.ndarray:
    key = f"{split}_images"
    x = npz.array(key)
    check(x.dtype == np.uint8, f"{npz.path}: {key} has dtype {x.dtype}; expected uint8 pixels 0..255")
    ok = x.ndim == 3 or (x.ndim == 4 and x.shape[3] in (1, 3))
    check(ok, f"{npz.path}: {key} has shape {x.shape}; expected (N, H, W) or (N, H, W, 3)")
    return x if x.ndim == 4 else x[..., None]


def _class_names(npz: _Npz, splits: Sequence[str], classes) -> list[str]:
    k = 1 + max((int(y.max()) for y in (_labels(npz, s) for s in splits) if y.size), default=0)
    if classes is None:
        return [str(c) for c in range(max(k, 1))]
    names = [str(c) for c in classes]
    check(len(names) >= k, f"classes: {len(names)} names given but {npz.path} has labels up to "
                           f"{k - 1}; expected at least {k} names")
    return names


def _imageset(npz: _Npz, split: str, classes: list[str]) -> ImageSet:
    x, y = _images(npz, split), _labels(npz, split)
    check(len(x) == len(y), f"{npz.path}: {split}_images has {len(x)} images but {split}_labels "
                            f"has {len(y)} labels; expected the same number")
    images = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    fname = Path(npz.path).name
    return ImageSet(images.contiguous(), torch.from_numpy(y), classes,
                    ids=[f"{fname}:{split}:{i}" for i in range(len(y))], name=Path(npz.path).stem)


def load_npz_splits(path, classes: Sequence[str] | None = None) -> dict[str, ImageSet]:
    """Every split present in the file, as ``{"train": ..., "val": ..., "test": ...}``.

    Each :class:`ImageSet` is ``(N, C, H, W)`` float32 with ``x = v / 255``; labels are
    the file's integers; see the module docstring for the accepted layout and ids.
    """
    with _Npz(path) as npz:
        splits = npz.present_splits()
        check(bool(splits), f"{npz.path}: missing key(s) train_images, train_labels, test_images, "
                            f"test_labels; the file has {', '.join(npz.keys) or 'no arrays'}; "
                            f"expected {_EXPECTED}")
        names = _class_names(npz, splits, classes)
        out = {s: _imageset(npz, s, names) for s in splits}
    shapes = {s: tuple(d.images.shape[1:]) for s, d in out.items()}
    check(len(set(shapes.values())) == 1,
          f"{npz.path}: splits have different image shapes {shapes}; expected one shape (C, H, W)")
    return out


def load_npz(path, split: str | None = "train", classes: Sequence[str] | None = None) -> ImageSet:
    """One split (``"train"``, ``"val"``, ``"test"``) of a MedMNIST-style file.

    ``split=None`` concatenates every split present, in train, val, test order (ids
    keep the split name). Class count and names as in :func:`load_npz_splits`.
    """
    check(split is None or split in SPLITS,
          f"split: expected one of {', '.join(SPLITS)} or None, got {split!r}")
    with _Npz(path) as npz:
        if split is not None:
            npz.require([split])
        splits = npz.present_splits()
        check(bool(splits), f"{npz.path}: no <split>_images/<split>_labels keys; the file has "
                            f"{', '.join(npz.keys) or 'no arrays'}; expected {_EXPECTED}")
        names = _class_names(npz, splits, classes)
        if split is not None:
            return _imageset(npz, split, names)
        parts = [_imageset(npz, s, names) for s in splits]
    shapes = {tuple(p.images.shape[1:]) for p in parts}
    check(len(shapes) == 1, f"{npz.path}: splits have different image shapes {sorted(shapes)}; "
                            "expected one shape (C, H, W)")
    return ImageSet(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]),
                    names, ids=[i for p in parts for i in p.ids], name=parts[0].name)
