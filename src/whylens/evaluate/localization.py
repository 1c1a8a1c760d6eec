"""Localisation of a heatmap against a ground-truth mask.

For a map ``A`` ``(B, H, W)`` (or ``(B, C, H, W)``, summed over channels) and a
mask ``M`` ``(B, H, W)`` in [0, 1]:

* ``mass_inside[b] = sum(relu(A_b) * M_b) / sum(relu(A_b))``: the fraction of the
  positive attribution mass that falls inside the mask (NaN for an all-non-positive map);
* ``pointing_game[b]``: whether the arg-max of ``A_b`` lies inside ``M_b`` (dilated by
  ``tolerance`` pixels, as in Zhang et al. 2016's 15-pixel tolerance).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import check


def _as_maps(maps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = maps.detach().float()
    if a.dim() == 4:
        a = a.sum(1)
    m = torch.as_tensor(masks).float()
    check(a.dim() == 3, f"maps: expected (B, H, W) or (B, C, H, W), got {tuple(maps.shape)}")
    check(a.shape == m.shape, f"masks: expected shape {tuple(a.shape)} to match the maps, got {tuple(m.shape)}")
    return a, m


def mass_inside(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Fraction ``(B,)`` of positive attribution mass inside each mask."""
    a, m = _as_maps(maps, masks)
    pos = a.clamp(min=0)
    total = pos.flatten(1).sum(1)
    inside = (pos * m).flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp(min=1e-30), torch.full_like(total, float("nan")))


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """``(B,)`` bool: the map's maximum lies inside the mask dilated by ``tolerance`` pixels."""
    a, m = _as_maps(maps, masks)
    if tolerance > 0:
        k = 2 * tolerance + 1
        m = F.max_pool2d(m[:, None], k, stride=1, padding=tolerance)[:, 0]
    flat = a.flatten(1).argmax(1)
    return m.flatten(1).gather(1, flat[:, None])[:, 0] > 0.5
