"""whylens: explain PyTorch image classifiers.

Two questions about every prediction: *where did the model look?*
(:func:`explain`, pixel attribution) and *which training images made it decide
so?* (:class:`Influence`, influence functions after Koh & Liang 2017).

Conventions used everywhere: images are ``(N, C, H, W)`` float in [0, 1]; models map
them to logits ``(N, K)`` (``K == 1`` is a sigmoid binary model); influence scores are
``I_up,loss = -g_test^T H^-1 g_train`` with ``H`` the Hessian of the mean training
objective, negative = helpful.
"""

from .attribution import explain
from .compare import ComparisonResult, compare_models
from .data import (
    ImageSet,
    digits_split,
    load_digits,
    load_folder,
    load_image_files,
    load_npz,
    load_npz_splits,
    load_source,
    synthetic_xrays,
)
from .errors import WhylensError
from .evaluate import (
    deletion_insertion,
    edge_detector,
    linear_datamodeling_score,
    mass_inside,
    pointing_game,
    randomization_check,
)
from .influence import Influence, per_sample_grads
from .influence.loo import leave_one_out, loo_agreement
from .influence.mislabel import detection_curve, flip_labels, mislabel_experiment
from .losses import smooth_hinge
from .models import build_for, build_model, load_model, save_model
from .models.svm import RBFSVM
from .outputs import class_score, per_sample_loss, predicted_class, probabilities
from .train import TrainResult, accuracy, objective, predict, train

__version__ = "0.1.0"

__all__ = [
    "RBFSVM", "ComparisonResult", "ImageSet", "Influence", "TrainResult", "WhylensError", "accuracy", "build_for",
    "build_model", "class_score", "compare_models", "deletion_insertion", "detection_curve", "digits_split",
    "edge_detector", "explain", "flip_labels", "leave_one_out", "linear_datamodeling_score", "load_digits",
    "load_folder", "load_image_files", "load_model", "load_npz", "load_npz_splits", "load_source", "loo_agreement",
    "mass_inside", "mislabel_experiment", "objective", "per_sample_grads", "per_sample_loss", "pointing_game",
    "predict", "predicted_class", "probabilities", "randomization_check", "save_model", "smooth_hinge", "train",
]
