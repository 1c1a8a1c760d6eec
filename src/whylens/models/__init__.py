"""Reference models and their saving/loading."""

from .cnn import SmallCNN
from .io import load_model, read_config, save_model
from .logistic import LogisticRegression
from .registry import MODELS, build_model, register_model
from .resnet import SmallResNet

__all__ = ["LogisticRegression", "SmallCNN", "SmallResNet", "build_model", "register_model",
           "MODELS", "save_model", "load_model", "read_config"]
