"""Images and their sources."""

from .digits import digits_split, load_digits
from .folder import IMAGE_EXTENSIONS, load_folder, load_image_files
from .imageset import ImageSet, as_tensors
from .npz import load_npz, load_npz_splits
from .sources import adapt, describe_sources, load_source
from .synthetic import make_xray_images, synthetic_xrays

__all__ = ["ImageSet", "as_tensors", "load_digits", "digits_split",
           "IMAGE_EXTENSIONS", "load_folder", "load_image_files", "load_npz", "load_npz_splits",
           "synthetic_xrays", "make_xray_images", "load_source", "describe_sources", "adapt"]
