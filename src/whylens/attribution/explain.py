"""``explain(model, images, method, target=None, **options)``: one call for every method.

It looks the method up by name (or alias), checks that every option is one the
method takes, and calls ``Method(model).attribute(images, target, **options)``.
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import nn

from ..errors import WhylensError, check
from .base import Attribution
from .cam import GradCAM, GradCAMPlusPlus, HiResCAM
from .gradients import GradientXInput, Saliency, SmoothGrad
from .integrated import IntegratedGradients
from .occlusion import Occlusion

METHODS: dict[str, type[Attribution]] = {
    cls.name: cls for cls in (Saliency, GradientXInput, IntegratedGradients, SmoothGrad,
                              GradCAM, GradCAMPlusPlus, HiResCAM, Occlusion)
}

ALIASES: dict[str, str] = {
    "gradient": "saliency", "gradients": "saliency", "vanilla_gradient": "saliency",
    "gxi": "gradient_x_input", "input_x_gradient": "gradient_x_input",
    "grad_x_input": "gradient_x_input", "inputxgradient": "gradient_x_input",
    "ig": "integrated_gradients", "integratedgradients": "integrated_gradients",
    "sg": "smoothgrad", "smooth_grad": "smoothgrad",
    "grad_cam": "gradcam", "gradcampp": "gradcam++", "grad_cam++": "gradcam++",
    "gradcam_plus_plus": "gradcam++", "grad_cam_plus_plus": "gradcam++",
    "gradcamplusplus": "gradcam++",
    "hires_cam": "hirescam", "hi_res_cam": "hirescam",
}


def method_class(method: str, argument: str = "method") -> type[Attribution]:
    """The class behind a method name or alias (case, ``-`` and spaces ignored)."""
    check(isinstance(method, str),
          f"{argument}: expected a method name, got {type(method).__name__}")
    key = method.strip().lower().replace("-", "_").replace(" ", "_")
    key = ALIASES.get(key, key)
    if key not in METHODS:
        raise WhylensError(f"{argument}: unknown method {method!r}; expected one of "
                           f"{', '.join(METHODS)} (aliases: {', '.join(sorted(ALIASES))})")
    return METHODS[key]


@functools.lru_cache(maxsize=None)
def _keyword_options(cls: type[Attribution]) -> tuple[str, ...]:
    params = inspect.signature(cls.attribute).parameters.values()
    return tuple(p.name for p in params if p.kind == p.KEYWORD_ONLY)


def accepted_options(cls: type[Attribution]) -> list[str]:
    """Keyword options of ``cls.attribute`` (beyond images and target)."""
    return list(_keyword_options(cls))


def check_options(cls: type[Attribution], options: dict, exclude: tuple[str, ...] = ()) -> None:
    """One-line error for an option ``cls`` does not take (or one in ``exclude``)."""
    known = [o for o in accepted_options(cls) if o not in exclude]
    for key in options:
        check(key in known,
              f"{cls.name}: unknown option {key!r}; expected one of {', '.join(known)}")


def explain(model: nn.Module, images: torch.Tensor, method: str, target=None, **options):
    """Attribute the class score ``S_t`` of ``model`` on ``images`` to pixels (or a layer's map).

    Args:
        model: any ``nn.Module`` mapping ``(B, C, H, W)`` images to logits ``(B, K)``
            (``K == 1``: binary, class 1 score ``z``, class 0 score ``-z``).
        images: ``(B, C, H, W)`` floats in pixel space [0, 1] (normalisation belongs
            inside the model), cast to the dtype of the model's parameters.
        method: ``"saliency"``, ``"gradient_x_input"``, ``"integrated_gradients"``,
            ``"smoothgrad"``, ``"gradcam"``, ``"gradcam++"``, ``"hirescam"`` or
            ``"occlusion"``; aliases such as ``"ig"``, ``"gxi"``, ``"grad_cam"`` work too.
        target: None (the predicted class), an int for every image, or a sequence /
            tensor of one class per image (length B; a mismatch is an error).
        options: the method's own options (see each class's ``attribute``).

    Returns:
        Gradient methods and occlusion: ``(B, C, H, W)``. CAM methods: ``(B, H, W)``
        (``upsample=False``: ``(B, h, w)`` at the layer), unnormalised, after ReLU.
        Integrated Gradients with ``return_delta=True``: an
        :class:`~whylens.attribution.integrated.IGResult` ``(attributions, delta)``.
    """
    cls = method_class(method)
    if cls is not SmoothGrad:  # SmoothGrad checks its base method's options itself
        check_options(cls, options)
    return cls(model).attribute(images, target, **options)
