"""The CAM family over a named layer: Grad-CAM, Grad-CAM++, HiResCAM.

Let ``A`` ``(K, h, w)`` be the layer's output for one image and ``G = dS_t/dA`` the
gradient of the class score there. Each variant is a channel weighting; the map is

    Grad-CAM   (Selvaraju et al. 2017):     M = ReLU(sum_k a_k A_k),  a_k = mean_ij G_kij
    Grad-CAM++ (Chattopadhyay et al. 2018): M = ReLU(sum_k a_k A_k),
               a_k = sum_ij alpha_kij ReLU(G_kij),
               alpha_kij = G_kij^2 / (2 G_kij^2 + G_kij^3 sum_ab A_kab)
               (alpha = 0 where the denominator is 0)
    HiResCAM   (Draelos & Carin 2020):      M = ReLU(sum_k G_k * A_k)
               (element-wise, no spatial mean)

Grad-CAM++'s alpha is the paper's closed form for the score ``Y = exp(S)``: its
second and third derivatives are ``exp(S) G^2`` and ``exp(S) G^3`` where ``S`` is
piecewise linear in ``A``, and the ``exp(S)`` factors cancel. The paper's channel
weight uses ``dY/dA = exp(S) G``; that positive per-image factor only rescales the
map, so it is left out (maps then have the units of Grad-CAM's).

At a layer whose output feeds only global average pooling and a linear layer,
``G_kij = W_tk / (h w)`` is constant over space, so Grad-CAM and HiResCAM are
*identical* (no constant factor). For :class:`~whylens.models.SmallCNN` that layer is
``act2`` (after the ReLU); at ``conv2`` the ReLU's mask makes ``G`` vary in space.

Maps are unnormalised, ``(B, H, W)`` bilinearly upsampled to the input
(``align_corners=False``, after the ReLU) or ``(B, h, w)`` with ``upsample=False``.
"""

from __future__ import annotations

import difflib

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WhylensError, check
from .base import (
    DEFAULT_CHUNK,
    Attribution,
    check_chunk_size,
    eval_mode,
    forward,
    parse_target,
    scores,
)


def conv_layers(model: nn.Module) -> list[str]:
    """Dotted names of every ``nn.Conv2d`` in ``model.named_modules()`` order."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def last_conv_run(model: nn.Module, example: torch.Tensor) -> str:
    """Name of the last ``nn.Conv2d`` to *run* in a forward pass of ``example`` (no graph).

    Execution order, not registration order: a ResNet block registers its shortcut
    conv (``downsample.0``) after ``conv2`` but runs it first, and the CAM layer
    wanted is the conv nearest the output. Hooks are removed before returning.
    """
    order: list[str] = []
    handles = [m.register_forward_hook(lambda *_, name=name: order.append(name))
               for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    check(bool(handles), "layer: the model has no nn.Conv2d to default to; "
          "pass layer='<dotted name>'")
    try:
        with torch.no_grad():
            forward(model, example)
    finally:
        for h in handles:
            h.remove()
    check(bool(order), "layer: no nn.Conv2d ran in the forward pass; pass layer='<dotted name>'")
    return order[-1]


def resolve_layer(model: nn.Module, layer,
                  example: torch.Tensor | None = None) -> tuple[str, nn.Module]:
    """``(name, module)`` for a dotted path, a submodule, or None.

    None means the last ``nn.Conv2d`` to run on ``example`` (see :func:`last_conv_run`),
    or the last in ``model.named_modules()`` order when no example is given.
    """
    convs = conv_layers(model)
    if layer is None:
        if example is not None:
            name = last_conv_run(model, example)
            return name, model.get_submodule(name)
        check(bool(convs), "layer: the model has no nn.Conv2d to default to; "
              "pass layer='<dotted name>'")
        return convs[-1], model.get_submodule(convs[-1])
    named = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, m in named.items():
            if m is layer:
                return name, m
        raise WhylensError(f"layer: the given {type(layer).__name__} is not a submodule of the "
                           f"model; conv layers: {', '.join(convs) or 'none'}")
    check(isinstance(layer, str),
          f"layer: expected a dotted module name, got {type(layer).__name__}")
    if layer not in named or layer == "":
        close = difflib.get_close_matches(layer, [n for n in named if n], n=5, cutoff=0.4)
        raise WhylensError(f"layer: no module named {layer!r}; "
                           f"closest: {', '.join(close) or 'none'}; "
                           f"conv layers: {', '.join(convs) or 'none'}")
    return layer, named[layer]


class LayerCAM(Attribution):
    """Hooks, forward and backward shared by the CAM variants; subclasses weight channels."""

    def channel_map(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """``(b, K, h, w)`` activations and gradients -> map ``(b, h, w)`` before the ReLU."""
        raise NotImplementedError

    def attribute(self, images: torch.Tensor, target=None, *, layer=None, upsample: bool = True,
                  chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
        """CAM ``(B, H, W)`` (``upsample=True``) or ``(B, h, w)`` at ``layer``.

        Args:
            layer: dotted module path (``"layer2.0.conv2"``), the module itself, or None
                for the last ``nn.Conv2d`` to run in the forward pass (for most models the
                last in ``model.named_modules()`` order; in a ResNet whose last block has a
                shortcut conv, ``conv2`` rather than ``downsample.0``).
            upsample: bilinear upsampling of the (ReLU'd) map to the input size.
            chunk_size: images per forward/backward pass.
        """
        x = self._images(images)
        targets = parse_target(target, len(x))
        chunk_size = check_chunk_size(chunk_size)
        seen: list[torch.Tensor] = []

        def keep(_module, _inputs, output):
            if not (isinstance(output, torch.Tensor) and output.dim() == 4):
                got = tuple(output.shape) if isinstance(output, torch.Tensor) \
                    else type(output).__name__
                raise WhylensError(f"layer {name!r}: expected a (B, C, h, w) feature map as "
                                   f"output, got {got}")
            seen.append(output)
            # Later layers get a copy: an in-place op downstream (ReLU(inplace=True),
            # ``out += identity``) then cannot change the activation kept here.
            return output.clone()

        maps = []
        with eval_mode(self.model):
            name, module = resolve_layer(self.model, layer, x[:1])
            handle = module.register_forward_hook(keep)
            try:
                for s in range(0, len(x), chunk_size):
                    seen.clear()
                    # Input needs grad so the layer's output is in a graph even with frozen weights.
                    xi = x[s:s + chunk_size].clone().requires_grad_(True)
                    logits = forward(self.model, xi)
                    check(len(seen) == 1, f"layer {name!r}: ran {len(seen)} times in one forward "
                          "pass; expected a module that runs exactly once")
                    part = None if targets is None else targets[s:s + chunk_size]
                    score, _ = scores(logits, part)
                    acts = seen[0]
                    grads = None
                    if acts.requires_grad:
                        grads = torch.autograd.grad(score.sum(), acts, allow_unused=True)[0]
                    check(grads is not None,
                          f"layer {name!r}: the class score does not depend on its output")
                    maps.append(F.relu(self.channel_map(acts.detach(), grads)))
            finally:
                handle.remove()
                seen.clear()
        cam = torch.cat(maps)
        if upsample:
            cam = F.interpolate(cam[:, None], size=tuple(x.shape[-2:]), mode="bilinear",
                                align_corners=False)[:, 0]
        return cam


class GradCAM(LayerCAM):
    """Grad-CAM: channels weighted by their spatially averaged gradient."""

    name = "gradcam"

    def channel_map(self, acts, grads):
        """``sum_k mean_ij(G_kij) A_k``."""
        return (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(1)


class GradCAMPlusPlus(LayerCAM):
    """Grad-CAM++: channels weighted by alpha-weighted positive gradients."""

    name = "gradcam++"

    def channel_map(self, acts, grads):
        """``sum_k (sum_ij alpha_kij ReLU(G_kij)) A_k`` with the closed-form alpha."""
        g2 = grads * grads
        denom = 2 * g2 + g2 * grads * acts.sum(dim=(2, 3), keepdim=True)
        alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, 1), 0)
        weights = (alpha * F.relu(grads)).sum(dim=(2, 3), keepdim=True)
        return (weights * acts).sum(1)


class HiResCAM(LayerCAM):
    """HiResCAM: element-wise gradient times activation, summed over channels."""

    name = "hirescam"

    def channel_map(self, acts, grads):
        """``sum_k G_k * A_k``."""
        return (grads * acts).sum(1)
