"""The model as a pure function of a flat vector of its selected parameters.

Influence differentiates ``J(theta) = (1/n) sum_i L(z_i, theta) + (l2/2)||theta||^2`` with
respect to a chosen subset of the parameters (all trainable ones by default, or those
of named modules, ``params=["layer2", "fc"]``); the rest, and all buffers, are held
fixed. :class:`ModelFunction` owns that choice: the order of the flat vector
``theta`` (``model.named_parameters()`` order, each tensor row-major), the cast to the
working dtype (float64 by default: the curvature math needs it, and for the small
models of whylens it is cheap), and the functional call ``logits(theta, x)``.

The model runs in eval mode inside every influence computation (BatchNorm uses its
running statistics; ``torch.func.vmap`` cannot batch BatchNorm in train mode), and the
caller's mode is restored afterwards (:func:`eval_mode`).
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from torch.func import functional_call

from ..errors import check
from ..outputs import class_score, loss_for, margin, num_classes_of

MEASURES = ("loss", "margin", "logit")


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Run the block with ``model.eval()`` and autograd on (also inside a caller's ``no_grad``);
    restore each submodule's own mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.enable_grad():
            yield model
    finally:
        for m, was in modes:
            m.training = was


def flatten(tensors) -> torch.Tensor:
    """Concatenate tensors (a sequence or the values of a dict, in order) row-major into ``(p,)``."""
    values = list(tensors.values()) if isinstance(tensors, dict) else list(tensors)
    return torch.cat([t.reshape(-1) for t in values])


def unflatten(vector: torch.Tensor, shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`flatten`: split ``(..., p)`` into ``{name: (..., *shape)}`` views."""
    out, start = {}, 0
    lead = vector.shape[:-1]
    for name, shape in shapes.items():
        size = math.prod(shape)
        out[name] = vector[..., start:start + size].reshape(*lead, *shape)
        start += size
    check(start == vector.shape[-1], f"vector: expected {start} entries, got {vector.shape[-1]}")
    return out


def select_parameters(model: nn.Module, params=None) -> list[str]:
    """Names of the trainable parameters of ``model`` in the modules ``params`` (all if ``None``).

    ``params`` is a module name or a list of them (dotted, as in ``model.named_modules()``,
    e.g. ``["layer2", "fc"]``); every trainable parameter below each named module is kept,
    in ``model.named_parameters()`` order.
    """
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    check(trainable, "model: has no trainable parameters")
    if params is None:
        return trainable
    if isinstance(params, str):
        params = [params]
    modules = dict(model.named_modules())
    check(len(list(params)) > 0, "params: expected a non-empty list of module names, or None for all")
    for name in params:
        check(isinstance(name, str) and name in modules and name != "",
              f"params: no module named {name!r}; expected names such as "
              f"{[n for n in modules if n][:8]}")
    prefixes = [f"{name}." for name in params]
    chosen = [n for n in trainable if any(n.startswith(pre) for pre in prefixes)]
    check(chosen, f"params: the modules {list(params)} have no trainable parameters")
    return chosen


def measure_fn(model: nn.Module, measure: str):
    """The per-sample test measurement ``m(logits (B,K), labels (B,)) -> (B,)`` named ``measure``.

    ``"loss"``: the model's training loss ``L`` (:func:`whylens.outputs.loss_for`);
    ``"margin"``: :func:`whylens.outputs.margin`; ``"logit"``: the class score of the label
    (:func:`whylens.outputs.class_score`).
    """
    check(measure in MEASURES, f"measure: expected one of {list(MEASURES)}, got {measure!r}")
    if measure == "loss":
        return loss_for(model)
    return margin if measure == "margin" else class_score


class ModelFunction:
    """``model`` as a function of the flat selected parameters ``theta`` ``(p,)``.

    Attributes:
        names: the selected parameter names, in flat order.
        shapes: ``{name: shape}`` of the selected parameters.
        theta: the current selected parameters, flat, in ``dtype`` (detached copy).
        p: number of selected parameters.
        dtype: working dtype (float64 unless asked otherwise).
    """

    def __init__(self, model: nn.Module, params=None, dtype: torch.dtype = torch.float64,
                 state: dict[str, torch.Tensor] | None = None):
        check(isinstance(model, nn.Module), f"model: expected a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.dtype = dtype
        self.names = select_parameters(model, params)
        named = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        if state is not None:
            # Another point of training (a TracIn checkpoint): same architecture, its own tensors.
            missing = [k for k in list(named) + list(buffers) if k not in state]
            check(not missing, f"checkpoints: a state dict lacks {missing[:4]}; expected this model's")
            for k in named:
                check(tuple(state[k].shape) == tuple(named[k].shape),
                      f"checkpoints: tensor {k!r} has shape {tuple(state[k].shape)}, expected "
                      f"{tuple(named[k].shape)}")
            named = {k: state[k] for k in named}
            buffers = {k: state[k] for k in buffers}
        self.shapes = {n: named[n].shape for n in self.names}
        self.theta = flatten([named[n].detach().to(dtype) for n in self.names])
        self.p = int(self.theta.numel())
        chosen = set(self.names)
        # Everything not selected is a constant of the functional call (cast once).
        self.fixed = {n: t.detach().to(dtype) for n, t in named.items() if n not in chosen}
        for n, b in buffers.items():
            self.fixed[n] = b.detach().to(dtype) if b.is_floating_point() else b.detach()
        self.loss = loss_for(model)
        self.offsets: dict[str, slice] = {}
        start = 0
        for n in self.names:
            size = math.prod(self.shapes[n])
            self.offsets[n] = slice(start, start + size)
            start += size

    def params_dict(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        return unflatten(theta, self.shapes)

    def logits(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)`` of images ``x`` ``(B, C, H, W)`` at the selected parameters ``theta``."""
        return functional_call(self.model, (self.params_dict(theta), self.fixed), (x.to(self.dtype),))

    def num_classes(self, x: torch.Tensor) -> tuple[int, int]:
        """``(K, num_classes)``: the logit width and the number of classes (2 for one logit)."""
        with torch.no_grad(), eval_mode(self.model):
            z = self.logits(self.theta, x[:1])
        check(z.dim() == 2, f"model output: expected logits of shape (B, K), got {tuple(z.shape)}")
        return int(z.shape[1]), num_classes_of(z)
