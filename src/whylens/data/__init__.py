"""Images and their sources."""

from .digits import digits_split, load_digits
from .imageset import ImageSet, as_tensors

__all__ = ["ImageSet", "as_tensors", "load_digits", "digits_split"]
