"""Occlusion (Zeiler & Fergus 2014): how much the class score drops when a patch is covered.

A ``ph x pw`` patch slides over the image with stride ``(sh, sw)``, covering all
channels. Its top-left corners are ``(i sh, j sw)`` for ``i = 0 .. ceil((H - ph)/sh)``
and ``j = 0 .. ceil((W - pw)/sw)``; a patch that runs past the border is cropped, so
every pixel is covered (Captum's ``Occlusion`` places windows the same way). With
``x^(p)`` the image with patch ``p`` set to the baseline value,

    A[b, c, u, v] = mean over the patches p covering (u, v) of  S_t(x_b) - S_t(x_b^(p)),

identical for every channel ``c``; positive = covering the pixel lowers the score.
"""

from __future__ import annotations

import math
import numbers

import torch

from ..errors import check
from .base import (
    DEFAULT_CHUNK,
    Attribution,
    check_chunk_size,
    eval_mode,
    forward,
    parse_target,
    predict_chunks,
    scores,
)


def _pair(value, argument: str) -> tuple[int, int]:
    v = (value, value) if isinstance(value, numbers.Integral) else tuple(value)
    check(len(v) == 2 and all(isinstance(a, numbers.Integral) and not isinstance(a, bool) and a >= 1
                              for a in v),
          f"{argument}: expected a positive int or a pair (h, w) of them, got {value!r}")
    return int(v[0]), int(v[1])


def window_starts(size: int, patch: int, stride: int) -> torch.Tensor:
    """Window starts along one axis: ``0, s, 2s, ...`` up to ``ceil((size - patch)/s) s``."""
    return torch.arange(math.ceil((size - patch) / stride) + 1) * stride


class Occlusion(Attribution):
    """Score drop when a sliding patch is replaced by a baseline value."""

    name = "occlusion"

    def attribute(self, images: torch.Tensor, target=None, *, patch=None, stride=None,
                  baseline: float = 0.0, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
        """Occlusion attributions ``(B, C, H, W)`` (the same map in every channel).

        Args:
            patch: ``int`` or ``(ph, pw)``; default ``max(1, min(H, W) // 8)``.
            stride: ``int`` or ``(sh, sw)``, at most the patch size so every pixel is
                covered; default ``max(1, patch // 2)`` per axis.
            baseline: the value a covered patch is filled with (0 = black).
            chunk_size: occluded images per forward pass (batched over patch positions
                and images).
        """
        x = self._images(images)
        targets = parse_target(target, len(x))
        chunk_size = check_chunk_size(chunk_size)
        n, c, h, w = x.shape
        ph, pw = _pair(max(1, min(h, w) // 8) if patch is None else patch, "patch")
        sh, sw = _pair((max(1, ph // 2), max(1, pw // 2)) if stride is None else stride, "stride")
        check(ph <= h and pw <= w, f"patch: ({ph}, {pw}) is larger than the images ({h}, {w})")
        check(sh <= ph and sw <= pw, f"stride: ({sh}, {sw}) must not exceed the patch "
              f"({ph}, {pw}), or some pixels would never be covered")
        check(isinstance(baseline, numbers.Real) and math.isfinite(baseline),
              f"baseline: expected a finite number, got {baseline!r}")
        dev = x.device
        ys, xs = window_starts(h, ph, sh).to(dev), window_starts(w, pw, sw).to(dev)
        y0, x0 = ys.repeat_interleave(len(xs)), xs.repeat(len(ys))  # (P,) corners, row-major
        npos = len(y0)
        rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)

        def masks(pos: torch.Tensor) -> torch.Tensor:  # (m, H, W) bool
            my = (rows >= y0[pos, None]) & (rows < y0[pos, None] + ph)
            mx = (cols >= x0[pos, None]) & (cols < x0[pos, None] + pw)
            return my[:, :, None] & mx[:, None, :]

        with eval_mode(self.model), torch.no_grad():
            clean, targets = scores(predict_chunks(self.model, x, chunk_size), targets)
            total = torch.zeros((n, h, w), dtype=x.dtype, device=dev)
            pairs = n * npos
            for s in range(0, pairs, chunk_size):
                p = torch.arange(s, min(s + chunk_size, pairs), device=dev)
                img, pos = p // npos, p % npos
                m = masks(pos)
                covered = torch.where(m[:, None], torch.as_tensor(float(baseline), dtype=x.dtype,
                                                                  device=dev), x[img])
                score, _ = scores(forward(self.model, covered), targets[img])
                total.index_add_(0, img, (clean[img] - score).view(-1, 1, 1) * m)
            count = masks(torch.arange(npos, device=dev)).sum(0)
        return (total / count)[:, None].expand(n, c, h, w).contiguous()
