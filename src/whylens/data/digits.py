"""scikit-learn's handwritten digits (1,797 real 8x8 greyscale images, bundled with scikit-learn).

Pixels are the dataset's integers 0..16 divided by 16, so they lie in [0, 1].
Ids are ``"digits:<row>"`` with the row in the original dataset, stable across
subsets and splits.
"""

from __future__ import annotations

import torch

from ..errors import WhylensError
from .imageset import ImageSet


def load_digits(classes: list[int] | None = None) -> ImageSet:
    """All 1,797 digits as an :class:`ImageSet` ``(N, 1, 8, 8)``; ``classes`` keeps a subset (relabelled 0..k-1).

    ``load_digits(classes=[1, 7])`` is the binary 1-vs-7 task (label 0 = "1", 1 = "7").
    """
    try:
        from sklearn.datasets import load_digits as _sk_digits
    except ImportError:
        raise WhylensError("--data digits: needs scikit-learn (pip install scikit-learn); "
                           "it ships the digits data, so nothing is downloaded") from None
    raw = _sk_digits()
    images = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(raw.target, dtype=torch.int64)
    ds = ImageSet(images, labels, [str(c) for c in range(10)],
                  ids=[f"digits:{i}" for i in range(len(labels))], name="digits")
    if classes is not None:
        ds = ds.select_classes([int(c) for c in classes])
    return ds


def digits_split(n_train: int = 1500, classes: list[int] | None = None) -> tuple[ImageSet, ImageSet]:
    """The split of ``shared/NOTES.md``: the first ``n_train`` rows train, the rest test.

    With ``classes`` the subset is taken first, then split at the same fraction
    ``n_train / 1797`` of its rows (in dataset order).
    """
    ds = load_digits(classes)
    if classes is None:
        return ds[:n_train], ds[n_train:]
    k = int(round(len(ds) * n_train / 1797))
    return ds[:k], ds[k:]
