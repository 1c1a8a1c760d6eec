"""Reference models and their saving/loading."""

from .cnn import SmallCNN
from .io import load_model, read_config, save_model
from .logistic import LogisticRegression
from .registry import MODELS, RECIPES, build_for, build_model, register_model
from .resnet import SmallResNet

__all__ = ["MODELS", "RECIPES", "LogisticRegression", "SmallCNN", "SmallResNet", "build_for", "build_model",
           "load_model", "read_config", "register_model", "save_model"]
