"""Is the explanation right? Metrics of pixel attribution and of training-data attribution."""

from .deletion import Curve, deletion_insertion, perturbation_curve, random_orders
from .localization import mass_inside, pointing_game
from .sanity import edge_detector, randomization_check, randomizable_layers
