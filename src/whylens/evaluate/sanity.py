"""The model-randomisation sanity check (Adebayo et al. 2018, "Sanity checks for saliency maps").

Layers are re-initialised one at a time from the output towards the input
(cascading randomisation). After each step the maps are recomputed for the
same images and the same targets (the original model's predictions), and the
Spearman rank correlation between the magnitudes of the original and the
randomised maps is reported per image and averaged. A method that explains the
model should lose its correlation once the network is randomised; a method
whose maps barely change (an edge detector, say) is explaining the input, not
the model. Gradient x Input and Integrated Gradients multiply by the input and
so keep some input structure by construction, as Adebayo et al. found.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..outputs import predicted_class
from ..stats import spearman_rows
from ..train import predict


def edge_detector(model, images: torch.Tensor, target=None, **_) -> torch.Tensor:
    """A deliberately model-independent "explanation": the Sobel gradient magnitude of the input.

    Returns ``(B, 1, H, W)``. It ignores ``model`` and ``target``, so it must fail
    the randomisation check; it is here to show that the check can fail.
    """
    x = images.detach().float().mean(1, keepdim=True)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]).view(1, 1, 3, 3)
    gx = F.conv2d(x, kx, padding=1)
    gy = F.conv2d(x, kx.transpose(2, 3), padding=1)
    return (gx ** 2 + gy ** 2).sqrt()


def randomizable_layers(model: nn.Module) -> list[str]:
    """Names of modules with their own parameters and ``reset_parameters``, input to output order."""
    return [name for name, m in model.named_modules()
            if name and hasattr(m, "reset_parameters") and any(True for _ in m.parameters(recurse=False))]


def _magnitude(maps: torch.Tensor) -> torch.Tensor:
    m = maps.detach().double().abs()
    if m.dim() == 4:
        m = m.sum(1)
    return m.flatten(1)


def randomization_check(model: nn.Module, images: torch.Tensor, methods: list, *, target=None,
                        seed: int = 0, cascade: bool = True, options: dict | None = None) -> dict:
    """Spearman correlation of ``|map|`` between the trained and progressively randomised model.

    Args:
        methods: method names for :func:`whylens.explain`, or callables
            ``f(model, images, target=...) -> maps`` (such as :func:`edge_detector`).
        cascade: re-initialise layers cumulatively from the top (True), or one at a time.
    Returns ``{"layers": [names randomised at each step], "<method>": [mean Spearman per step]}``;
    the last entry of each list is the fully randomised network when ``cascade``.
    """
    from ..attribution import explain
    options = options or {}
    if target is None:
        target = predicted_class(predict(model, images))

    def maps_of(m, net):
        if callable(m):
            return m(net, images, target=target)
        return explain(net, images, m, target=target, **options.get(m, {}))

    names = [m if isinstance(m, str) else getattr(m, "__name__", "method") for m in methods]
    originals = {n: _magnitude(maps_of(m, model)) for n, m in zip(names, methods)}
    layers = list(reversed(randomizable_layers(model)))
    result: dict = {"layers": layers, **{n: [] for n in names}}
    net = copy.deepcopy(model)
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        for layer in layers:
            if not cascade:
                net = copy.deepcopy(model)
            dict(net.named_modules())[layer].reset_parameters()
            for n, m in zip(names, methods):
                rho = spearman_rows(originals[n], _magnitude(maps_of(m, net)))
                result[n].append(float(rho.nan_to_num(0.0).mean()))
    finally:
        torch.random.set_rng_state(gen_state)
    return result
