"""Gradient methods: saliency, Gradient x Input, SmoothGrad.

All return ``(B, C, H, W)`` in the model's dtype, with ``S_t`` the class score of
:mod:`whylens.attribution.base`:

* saliency (Simonyan et al. 2014): ``dS_t/dx`` (signed), or ``|dS_t/dx|`` with ``abs=True``;
* Gradient x Input (Shrikumar et al. 2016): ``x * dS_t/dx``; on a linear model
  ``z = W x + b`` it is exactly ``W_t * x``;
* SmoothGrad (Smilkov et al. 2017): the mean of a base method over ``samples``
  noisy copies ``x + eps``, ``eps ~ N(0, sigma^2)``, with ``sigma`` *relative*:
  ``sigma_b = noise * (max(x_b) - min(x_b))`` per image (the paper's definition).
"""

from __future__ import annotations

import numbers

import torch

from ..errors import check
from .base import (
    DEFAULT_CHUNK,
    Attribution,
    check_chunk_size,
    eval_mode,
    input_gradients,
    parse_target,
    predict_chunks,
    scores,
)


class Saliency(Attribution):
    """Gradient of the class score with respect to the pixels."""

    name = "saliency"

    def attribute(self, images: torch.Tensor, target=None, *, abs: bool = False,
                  chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
        """``A[b] = dS_{t_b}(x_b)/dx_b`` ``(B, C, H, W)``; ``abs=True`` returns ``|A|``.

        ``chunk_size`` images go through each forward/backward pass.
        """
        x = self._images(images)
        targets = parse_target(target, len(x))
        chunk_size = check_chunk_size(chunk_size)
        with eval_mode(self.model):
            grads, _ = input_gradients(self.model, x, targets, chunk_size)
        return grads.abs() if abs else grads


class GradientXInput(Attribution):
    """Gradient times input, ``x * dS_t/dx``."""

    name = "gradient_x_input"

    def attribute(self, images: torch.Tensor, target=None, *,
                  chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
        """``A[b] = x_b * dS_{t_b}(x_b)/dx_b`` ``(B, C, H, W)`` (element-wise product)."""
        x = self._images(images)
        targets = parse_target(target, len(x))
        chunk_size = check_chunk_size(chunk_size)
        with eval_mode(self.model):
            grads, _ = input_gradients(self.model, x, targets, chunk_size)
        return grads * x


SMOOTHABLE = ("saliency", "gradient_x_input", "integrated_gradients")


class SmoothGrad(Attribution):
    """SmoothGrad around any gradient method (saliency, Gradient x Input, IG)."""

    name = "smoothgrad"

    def attribute(self, images: torch.Tensor, target=None, *, base: str = "saliency",
                  samples: int = 50, noise: float = 0.15, seed: int = 0,
                  chunk_size: int = DEFAULT_CHUNK, **base_options) -> torch.Tensor:
        """``A[b] = (1/n) sum_{i=1..n} M(x_b + eps_i)`` with ``eps_i ~ N(0, sigma_b^2 I)``.

        Args:
            base: the method ``M``: ``"saliency"`` (default), ``"gradient_x_input"``
                or ``"integrated_gradients"`` (short aliases accepted). ``M`` sees the
                noisy image itself, so Gradient x Input multiplies by ``x + eps``.
                ``base_options`` go to ``M`` (e.g. ``abs=True``, ``steps=20``).
            samples: ``n``, the number of noisy copies per image.
            noise: the noise level *relative to each image's range*:
                ``sigma_b = noise * (max(x_b) - min(x_b))`` (an image with a single
                value gets no noise). ``noise=0.15`` is 15 % of the image's range.
            seed: seeds the noise, so a call is reproducible.
            chunk_size: bounds the inputs per forward pass; noisy copies are made
                for ``max(1, chunk_size // samples)`` images at a time.
        The target is the class predicted on the *clean* image when ``target`` is None.
        """
        from .explain import check_options, method_class  # explain imports this module

        check(isinstance(samples, numbers.Integral) and samples >= 1,
              f"samples: expected a positive int, got {samples!r}")
        check(isinstance(noise, numbers.Real) and noise >= 0,
              f"noise: expected a non-negative fraction of the image range, got {noise!r}")
        check(isinstance(base, str), f"base: expected a method name, got {base!r}")
        method = method_class(base, argument="base")
        check(method.name in SMOOTHABLE,
              f"base: expected one of {', '.join(SMOOTHABLE)}, got {base!r}")
        check_options(method, base_options,
                      exclude=("chunk_size", "return_delta", "tol", "max_steps"))
        chunk_size = check_chunk_size(chunk_size)
        x = self._images(images)
        targets = parse_target(target, len(x))
        inner = method(self.model)
        gen = torch.Generator().manual_seed(int(seed))
        with eval_mode(self.model):
            if targets is None:
                _, targets = scores(predict_chunks(self.model, x, chunk_size), None)
            targets = targets.cpu()
            block = max(1, chunk_size // samples)
            out = []
            for s in range(0, len(x), block):
                xb = x[s:s + block]
                flat = xb.flatten(1)
                sigma = noise * (flat.max(1).values - flat.min(1).values)
                eps = torch.randn((len(xb), samples) + tuple(x.shape[1:]), generator=gen,
                                  dtype=x.dtype).to(x.device)
                noisy = (xb[:, None] + sigma.view(-1, 1, 1, 1, 1) * eps).flatten(0, 1)
                attr = inner.attribute(noisy, targets[s:s + block].repeat_interleave(samples),
                                       chunk_size=chunk_size, **base_options)
                out.append(attr.view((len(xb), samples) + tuple(x.shape[1:])).mean(1))
        return torch.cat(out)
