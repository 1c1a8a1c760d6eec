"""Build reference models by name, remembering how they were built.

``build_model(name, **kwargs)`` returns an ``nn.Module`` with a ``whylens_config``
attribute ``{"model": name, "kwargs": kwargs}`` so that :func:`whylens.save_model`
can write a JSON config from which :func:`whylens.load_model` rebuilds it.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..errors import check
from .cnn import SmallCNN
from .logistic import LogisticRegression
from .resnet import SmallResNet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "logistic": LogisticRegression,
    "cnn": SmallCNN,
    "resnet": SmallResNet,
}


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``factory`` buildable (and loadable) under ``name``."""
    MODELS[name] = factory


def build_model(name: str, **kwargs) -> nn.Module:
    """Build the reference model ``name`` (``"logistic"``, ``"cnn"``, ``"resnet"``, ...)."""
    check(name in MODELS, f"model: expected one of {sorted(MODELS)}, got {name!r}")
    try:
        model = MODELS[name](**kwargs)
    except TypeError as exc:
        raise type(exc)(f"model {name!r}: bad arguments {kwargs}: {exc}") from None
    model.whylens_config = {"model": name, "kwargs": dict(kwargs)}
    return model


# Defaults that suit each reference model on the bundled data: the L2 lambda of the
# objective, the optimiser and its epochs. Recorded in the saved config.
RECIPES: dict[str, dict] = {
    "logistic": {"l2": 1e-2, "method": "lbfgs"},
    "cnn": {"l2": 1e-3, "method": "adam", "epochs": 40},
    "resnet": {"l2": 1e-3, "method": "adam", "epochs": 20},
    "svm": {"l2": 1e-3, "method": "lbfgs"},
}


def build_for(name: str, input_shape: tuple[int, int, int], num_classes: int, **kwargs) -> nn.Module:
    """Build reference model ``name`` for inputs ``(C, H, W)`` and ``num_classes`` classes.

    Fills in the shape arguments each model needs; ``kwargs`` override the rest
    (e.g. ``activation="tanh"`` for the CNN). CNNs on inputs of 32 pixels or more
    get three convs with 2x2 max-pools between them, to widen their receptive field
    (with two unpooled convs and global average pooling, a small marker's signal is
    averaged away over 64x64 positions and training stalls).
    """
    c, h, w = input_shape
    check(name in MODELS, f"model: expected one of {sorted(MODELS)}, got {name!r}")
    if name == "logistic":
        base = {"in_channels": c, "image_size": [h, w], "num_classes": num_classes}
    elif name == "cnn":
        base = {"in_channels": c, "num_classes": num_classes}
        if min(h, w) >= 32:
            base.update(widths=[16, 32, 32], pool=True)
    elif name == "svm":
        # The SVM picks its anchors and kernel width from the training data in prepare(train).
        check(num_classes == 2, f"model 'svm': the RBF SVM is binary; the data has {num_classes} classes")
        base = {"input_shape": [c, h, w]}
    else:
        base = {"in_channels": c, "num_classes": num_classes}
    base.update(kwargs)
    return build_model(name, **base)


# svm.py does not import this module, so registering it here creates no import cycle.
from .svm import RBFSVM  # noqa: E402

register_model("svm", RBFSVM)
