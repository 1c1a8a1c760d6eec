"""The one container for images in whylens.

An :class:`ImageSet` holds ``images`` ``(N, C, H, W)`` float32 in [0, 1], integer
``labels`` ``(N,)`` in ``[0, len(classes))``, the class names, one stable id per item
(a file path where the item came from a file) and, optionally, ground-truth masks
``(N, H, W)`` and per-item extra tensors (``extras``, e.g. a "has_marker" flag).
Indexing and splitting keep all of these aligned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..errors import WhylensError, check


@dataclass
class ImageSet:
    """Images ``(N,C,H,W)`` float32 in [0,1] with aligned labels, ids, masks and extras.

    Args:
        images: ``(N, C, H, W)`` float tensor with values in [0, 1] (C is 1 or 3).
        labels: ``(N,)`` integer tensor, each in ``[0, len(classes))``.
        classes: class names; ``labels[i]`` indexes into it.
        ids: one stable string id per item (file path for file-backed sets);
            defaults to ``"<name>:<index>"``.
        masks: optional ``(N, H, W)`` ground-truth masks (float in [0, 1]; all-zero
            where an item has no lesion).
        extras: optional per-item tensors with first dimension N.
        name: a short name of the source, used in ids and reports.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    ids: list[str] | None = None
    masks: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    name: str = "data"

    def __post_init__(self) -> None:
        imgs = torch.as_tensor(self.images)
        check(imgs.dim() == 4, f"images: expected a (N, C, H, W) tensor, got shape {tuple(imgs.shape)}")
        check(imgs.shape[1] in (1, 3), f"images: expected 1 or 3 channels, got {imgs.shape[1]}")
        check(imgs.is_floating_point(), f"images: expected a float tensor in [0, 1], got {imgs.dtype}")
        imgs = imgs.to(torch.float32)
        check(bool(torch.isfinite(imgs).all()), "images: contain NaN or inf pixels; expected finite values in [0, 1]")
        if imgs.numel():
            lo, hi = float(imgs.min()), float(imgs.max())
            check(lo >= 0.0 and hi <= 1.0, f"images: expected values in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
        self.images = imgs.contiguous()
        n = imgs.shape[0]
        labels = torch.as_tensor(self.labels)
        check(labels.dim() == 1 and labels.shape[0] == n,
              f"labels: expected shape ({n},) to match the images, got {tuple(labels.shape)}")
        check(not labels.is_floating_point() or bool((labels == labels.round()).all()),
              "labels: expected integer class indices")
        labels = labels.to(torch.int64)
        self.classes = [str(c) for c in self.classes]
        k = len(self.classes)
        check(k >= 1, "classes: expected at least one class name")
        if n:
            lo, hi = int(labels.min()), int(labels.max())
            check(lo >= 0 and hi < k,
                  f"labels: expected values in [0, {k - 1}] for {k} classes, got range [{lo}, {hi}]")
        self.labels = labels
        if self.ids is None:
            self.ids = [f"{self.name}:{i}" for i in range(n)]
        self.ids = [str(i) for i in self.ids]
        check(len(self.ids) == n, f"ids: expected {n} ids, got {len(self.ids)}")
        if self.masks is not None:
            m = torch.as_tensor(self.masks).to(torch.float32)
            check(m.shape == (n, imgs.shape[2], imgs.shape[3]),
                  f"masks: expected shape {(n, imgs.shape[2], imgs.shape[3])}, got {tuple(m.shape)}")
            self.masks = m
        for key, value in self.extras.items():
            v = torch.as_tensor(value)
            check(v.shape[:1] == (n,), f"extras[{key!r}]: expected first dimension {n}, got {tuple(v.shape)}")
            self.extras[key] = v

    # -- shape -------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def __repr__(self) -> str:
        c, (h, w) = self.channels, self.image_size
        return (f"ImageSet(name={self.name!r}, n={len(self)}, shape=({c},{h},{w}), "
                f"classes={self.classes}, masks={self.masks is not None})")

    # -- selection ---------------------------------------------------------------
    def __getitem__(self, index) -> "ImageSet":
        """Select items by int, slice, list/tensor of indices or a boolean mask."""
        n = len(self)
        if isinstance(index, int):
            check(-n <= index < n, f"index {index} out of range for {n} items")
            idx = torch.tensor([index % n])
        elif isinstance(index, slice):
            idx = torch.arange(n)[index]
        else:
            idx = torch.as_tensor(index)
            if idx.dtype == torch.bool:
                check(idx.shape == (n,), f"boolean index: expected shape ({n},), got {tuple(idx.shape)}")
                idx = idx.nonzero().flatten()
            idx = idx.to(torch.int64).flatten()
            if idx.numel():
                check(int(idx.min()) >= -n and int(idx.max()) < n, f"indices out of range for {n} items")
            idx = idx % max(n, 1)
        pos = idx.tolist()
        return ImageSet(
            images=self.images[idx],
            labels=self.labels[idx],
            classes=list(self.classes),
            ids=[self.ids[i] for i in pos],
            masks=None if self.masks is None else self.masks[idx],
            extras={k: v[idx] for k, v in self.extras.items()},
            name=self.name,
        )

    def split(self, fraction: float, seed: int = 0, stratify: bool = True) -> tuple["ImageSet", "ImageSet"]:
        """Split into ``(first, second)`` with ``fraction`` of each class in ``first``.

        Deterministic for a given ``seed``; with ``stratify`` each class is split
        separately so both parts keep the class balance.
        """
        check(0.0 < fraction < 1.0, f"fraction: expected a number in (0, 1), got {fraction}")
        g = torch.Generator().manual_seed(seed)
        groups = [self.labels.eq(c).nonzero().flatten() for c in range(self.num_classes)] if stratify \
            else [torch.arange(len(self))]
        first, second = [], []
        for members in groups:
            perm = members[torch.randperm(len(members), generator=g)]
            k = int(round(fraction * len(members)))
            first.append(perm[:k])
            second.append(perm[k:])
        a, b = torch.cat(first).sort().values, torch.cat(second).sort().values
        return self[a], self[b]

    def select_classes(self, classes: Sequence[int | str]) -> "ImageSet":
        """Keep only the given classes (by index or name) and relabel them 0..k-1 in that order."""
        idx = []
        for c in classes:
            if isinstance(c, str) and c not in self.classes and c.isdigit():
                c = int(c)
            if isinstance(c, str):
                check(c in self.classes, f"class {c!r} not found; expected one of {self.classes}")
                c = self.classes.index(c)
            check(0 <= int(c) < self.num_classes, f"class index {c} out of range [0, {self.num_classes - 1}]")
            idx.append(int(c))
        check(len(set(idx)) == len(idx) and len(idx) >= 1, f"classes: expected distinct classes, got {list(classes)}")
        keep = torch.isin(self.labels, torch.tensor(idx))
        sub = self[keep]
        remap = torch.full((self.num_classes,), -1, dtype=torch.int64)
        remap[torch.tensor(idx)] = torch.arange(len(idx))
        sub.labels = remap[sub.labels]
        sub.classes = [self.classes[i] for i in idx]
        return sub

    def with_labels(self, labels: torch.Tensor) -> "ImageSet":
        """A copy with other labels (same images, ids, masks, extras)."""
        return ImageSet(self.images, torch.as_tensor(labels), list(self.classes), list(self.ids),
                        self.masks, dict(self.extras), self.name)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)``."""
        return self.images, self.labels


def as_tensors(data, argument: str = "data") -> tuple[torch.Tensor, torch.Tensor]:
    """Accept an :class:`ImageSet` or an ``(images, labels)`` pair; return the two tensors.

    Raises a one-line :class:`WhylensError` naming ``argument`` for anything else.
    """
    if isinstance(data, ImageSet):
        return data.images, data.labels
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = torch.as_tensor(data[0]), torch.as_tensor(data[1])
        check(images.dim() == 4, f"{argument}: expected images of shape (N, C, H, W), got {tuple(images.shape)}")
        check(images.is_floating_point(), f"{argument}: expected float images, got {images.dtype}")
        check(bool(torch.isfinite(images).all()), f"{argument}: images contain NaN or inf pixels")
        labels = labels.reshape(-1) if labels.dim() == 2 and labels.shape[1] == 1 else labels
        check(labels.dim() == 1 and labels.shape[0] == images.shape[0],
              f"{argument}: expected {images.shape[0]} labels, got shape {tuple(labels.shape)}")
        check(images.shape[0] > 0, f"{argument}: is empty; expected at least one image")
        return images, labels.to(torch.int64)
    raise WhylensError(f"{argument}: expected an ImageSet or an (images, labels) pair, got {type(data).__name__}")
