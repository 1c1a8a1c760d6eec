"""What every attribution method shares: input checks, targets, model state, chunking.

An attribution method explains the *class score* ``S_t(x)`` of target class ``t``
(:func:`whylens.outputs.class_score`: the logit ``z_t`` for ``K >= 2`` logits; ``+z`` for
class 1 and ``-z`` for class 0 of a one-logit binary model). Each method is a small
class whose ``attribute(images, target=None, **options)`` returns a tensor; the
base class below owns the parts that must be the same everywhere:

* images are checked (4-D, floating point, finite, non-empty) and cast to the
  dtype and device of the model's parameters (a float64 model gets float64 images);
* targets are one class per image (None = predicted class, an int for all, or a
  sequence/tensor of length B), checked for length and range, never truncated;
* the model runs in eval mode for the call, and every module's own train/eval flag
  is restored afterwards, also when the call raises;
* gradients are taken with ``torch.autograd.grad`` with respect to the inputs only,
  so the parameters' ``.grad`` and ``requires_grad`` are left untouched;
* a forward pass that fails because the images do not fit the model is re-raised
  as a one-line :class:`~whylens.errors.WhylensError` naming the images' shape and
  what the model's first layer expects.
"""

from __future__ import annotations

import numbers
import re
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..errors import WhylensError, check
from ..modes import eval_mode as _eval_mode
from ..outputs import class_score, num_classes_of, predicted_class

DEFAULT_CHUNK = 512

_SHAPE_ERROR = re.compile(r"shape|size|channel|dimension", re.IGNORECASE)


def model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    """dtype and device of the model's first floating-point parameter (float32/CPU if none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    return torch.float32, torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """:func:`whylens.modes.eval_mode` with gradients enabled (attribution differentiates)."""
    with _eval_mode(model), torch.enable_grad():
        yield


def prepare_images(images, model: nn.Module, argument: str = "images") -> torch.Tensor:
    """Check ``images`` ``(B, C, H, W)`` and return them detached in the model's dtype/device."""
    check(isinstance(images, torch.Tensor),
          f"{argument}: expected a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}")
    check(images.dim() == 4,
          f"{argument}: expected a (B, C, H, W) tensor, got shape {tuple(images.shape)}")
    check(images.is_floating_point(),
          f"{argument}: expected a float tensor in [0, 1], got {images.dtype}")
    check(images.shape[0] > 0, f"{argument}: is empty; expected at least one image")
    check(bool(torch.isfinite(images).all()),
          f"{argument}: contain NaN or inf pixels; expected finite values in [0, 1]")
    dtype, device = model_dtype_device(model)
    return images.detach().to(device=device, dtype=dtype)


def _first_layer_expectation(model: nn.Module) -> str:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return (f"{m.in_channels} channels "
                    f"(its first Conv2d {name!r} has in_channels={m.in_channels})")
        if isinstance(m, nn.Linear):
            return (f"C*H*W = {m.in_features} "
                    f"(its first Linear {name!r} has in_features={m.in_features})")
    return "another input shape"


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` as logits ``(b, K)``; a shape mismatch becomes a one-line WhylensError.

    There is no static pre-check of the channel count: a model may transform its
    input before its first layer, so only a failing forward pass proves a mismatch.
    """
    try:
        logits = model(x)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not _SHAPE_ERROR.search(first) or "out of memory" in first.lower():
            raise
        raise WhylensError(f"images: shape {tuple(x.shape[1:])} per image does not fit the model, "
                           f"which expects {_first_layer_expectation(model)} ({first})") from None
    check(isinstance(logits, torch.Tensor) and logits.dim() == 2 and logits.shape[0] == x.shape[0],
          f"model output: expected logits of shape ({x.shape[0]}, K), got "
          f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
    return logits


def parse_target(target, n: int) -> torch.Tensor | None:
    """Targets as int64 ``(n,)``, or None for "the predicted class".

    ``target`` is None, one int for every image, or a sequence/1-D tensor of length
    ``n``. Anything else (a wrong length, a fraction, a negative index) is a
    one-line error; the upper bound is checked by :func:`scores` once the number
    of classes is known.
    """
    if target is None:
        return None
    if isinstance(target, bool):
        raise WhylensError(f"target: expected a class index, got {target!r}")
    if isinstance(target, numbers.Integral):
        t = torch.full((n,), int(target), dtype=torch.int64)
    else:
        try:
            t = torch.as_tensor(target)
        except (TypeError, ValueError, RuntimeError):
            raise WhylensError(f"target: expected None, an int or {n} class indices, "
                               f"got {type(target).__name__}") from None
        check(t.dtype != torch.bool and t.dim() <= 1,
              f"target: expected None, an int or a 1-D sequence of {n} class indices, "
              f"got {t.dtype} of shape {tuple(t.shape)}")
        check(not t.is_floating_point() or bool((t == t.round()).all()),
              "target: expected integer class indices")
        t = t.to(torch.int64).cpu()
        if t.dim() == 0:
            t = t.expand(n).clone()
        check(t.shape[0] == n,
              f"target: expected one class per image ({n} images), got {t.shape[0]}")
    lo = int(t.min())
    check(lo >= 0, f"target: expected class indices >= 0, got {lo}")
    return t


def scores(logits: torch.Tensor, targets: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Class scores ``S_t(x)`` ``(b,)`` and the targets used (predicted ones where None)."""
    if targets is None:
        targets = predicted_class(logits.detach())
    k = num_classes_of(logits)
    hi = int(targets.max())
    check(hi < k, f"target: expected class indices in [0, {k - 1}] for a {k}-class model, got {hi}")
    return class_score(logits, targets), targets.to(logits.device)


def predict_chunks(model: nn.Module, x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Logits of ``x`` without a graph, ``chunk_size`` images per forward pass."""
    with torch.no_grad():
        return torch.cat([forward(model, x[s:s + chunk_size])
                          for s in range(0, len(x), chunk_size)])


def check_chunk_size(chunk_size) -> int:
    check(isinstance(chunk_size, numbers.Integral) and not isinstance(chunk_size, bool)
          and chunk_size >= 1, f"chunk_size: expected a positive int, got {chunk_size!r}")
    return int(chunk_size)


def input_gradients(model: nn.Module, x: torch.Tensor, targets: torch.Tensor | None,
                    chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``dS_t(x_b)/dx_b`` for each image, ``(B, C, H, W)``, and the targets used ``(B,)``.

    One forward and one backward per chunk: the gradient of the *summed* score
    gives every image's own gradient because images do not interact in eval mode.
    """
    grads, used = [], []
    for s in range(0, len(x), chunk_size):
        xi = x[s:s + chunk_size].clone().requires_grad_(True)
        part = None if targets is None else targets[s:s + chunk_size]
        score, t = scores(forward(model, xi), part)
        grads.append(torch.autograd.grad(score.sum(), xi)[0])
        used.append(t)
    return torch.cat(grads), torch.cat(used)


class Attribution:
    """Base of every method: ``Method(model).attribute(images, target=None, **options)``."""

    #: the canonical method name used by :func:`whylens.attribution.explain`
    name: str = ""

    def __init__(self, model: nn.Module):
        check(isinstance(model, nn.Module),
              f"model: expected a torch.nn.Module, got {type(model).__name__}")
        self.model = model

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"

    def _images(self, images) -> torch.Tensor:
        return prepare_images(images, self.model)

    def attribute(self, images: torch.Tensor, target=None, **options) -> torch.Tensor:
        raise NotImplementedError
