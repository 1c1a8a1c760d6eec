"""whylens: explain PyTorch image classifiers.

Two questions about every prediction: *where did the model look?*
(:func:`explain`, pixel attribution) and *which training images made it decide
so?* (:class:`Influence`, influence functions after Koh & Liang 2017).
"""

from .attribution import explain
from .data import ImageSet, digits_split, load_digits
from .errors import WhylensError
from .influence import Influence
from .models import build_model, load_model, save_model
from .outputs import class_score, per_sample_loss, predicted_class, probabilities
from .train import TrainResult, accuracy, objective, predict, train

__version__ = "0.1.0"
