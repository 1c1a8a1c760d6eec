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
