"""Is the explanation right? Metrics of pixel attribution and of training-data attribution."""

from .deletion import Curve, deletion_insertion, perturbation_curve, random_orders
from .lds import LDSResult, linear_datamodeling_score, subset_masks, subset_measurements
from .localization import mass_inside, pointing_game
from .sanity import edge_detector, randomizable_layers, randomization_check
