"""Pixel attribution: where did the model look?

``explain(model, images, method, target=None, **options)`` is the one entry point;
behind it each method is a small class with ``attribute(images, target, **options)``.
"""

from .base import Attribution
from .cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, conv_layers, resolve_layer
from .explain import ALIASES, METHODS, explain, method_class
from .gradients import GradientXInput, Saliency, SmoothGrad
from .integrated import RULES, IGResult, IntegratedGradients, quadrature
from .occlusion import Occlusion

__all__ = ["explain", "METHODS", "ALIASES", "method_class", "Attribution", "Saliency",
           "GradientXInput", "SmoothGrad", "IntegratedGradients", "IGResult", "RULES", "quadrature",
           "LayerCAM", "GradCAM", "GradCAMPlusPlus", "HiResCAM", "conv_layers", "resolve_layer",
           "Occlusion"]
