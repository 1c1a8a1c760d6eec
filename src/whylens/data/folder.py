"""Folders of image files: one subfolder per class, decoded with Pillow.

Layout: ``root/<class name>/**/<image>``; class names are the subfolder names, sorted,
so ``labels[i]`` is the index of the subfolder that holds file ``i``. Files are
``.png .jpg .jpeg .bmp .tif .tiff`` (any case), found recursively inside each class
folder and sorted by path; names starting with ``.`` (hidden files, macOS ``._*``
forks, ``.ipynb_checkpoints``) are ignored.

Decoding of one file, in order:

1. ``Image.open`` and a full ``.load()`` (so a truncated file fails here, not later),
   with Pillow's decompression-bomb guard on and its warning turned into an error;
   multi-frame files use their first frame;
2. ``ImageOps.exif_transpose`` (a phone photo with EXIF orientation 6 or 8 is turned
   upright, so its height and width swap);
3. conversion to float pixels ``x`` in [0, 1], ``(H, W, 1)`` or ``(H, W, 3)``:
   ``1``/``L``: ``v/255``; ``I;16*``: ``v/65535``; ``I`` (32-bit int): ``v/65535``,
   or ``v/255`` if no value exceeds 255; ``F``: clipped into [0, 1]; palette images
   are expanded through their palette (greyscale if every colour in it is grey);
   an alpha channel is composited over black, ``x = c * a`` (transparent = black,
   the pixel baseline 0 of whylens); other modes (CMYK, YCbCr, ...) via Pillow's RGB;
4. bilinear resizing to ``image_size`` per channel in float (Pillow's resampling
   widens its kernel when shrinking, so downscaling is antialiased).

Channels: ``channels=None`` gives 1 channel if every image is greyscale and 3
otherwise (greyscale images are then repeated into R=G=B); ``channels=1`` turns
colour into luma ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, Pillow's ``L``).

Ids are absolute, normalised file paths (``os.path.abspath``), so they do not depend
on the working directory the set was loaded from.

Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left as the caller set it; with its
default (False) a truncated file is an error.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import WhylensError, check
from .imageset import ImageSet

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LUMA = (0.299, 0.587, 0.114)
_EXPECTED = "a readable PNG, JPEG, BMP or TIFF image"


def size_pair(image_size, argument: str = "image_size") -> tuple[int, int]:
    """``int s -> (s, s)``; ``(H, W) -> (H, W)``; anything else is a :class:`WhylensError`."""
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        pair = (int(image_size), int(image_size))
    elif (isinstance(image_size, (tuple, list)) and len(image_size) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in image_size)):
        pair = (int(image_size[0]), int(image_size[1]))
    else:
        raise WhylensError(f"{argument}: expected a positive int or a (height, width) pair, "
                           f"got {image_size!r}")
    check(pair[0] > 0 and pair[1] > 0,
          f"{argument}: expected positive sizes, got {image_size!r}")
    return pair


def _check_channels(channels) -> None:
    check(channels in (None, 1, 3), f"channels: expected None, 1 or 3, got {channels!r}")


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _palette_to_array(img: Image.Image) -> tuple[np.ndarray, bool]:
    has_alpha = img.mode == "PA" or "transparency" in img.info
    rgba = np.asarray(img.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    rgb = rgba[..., :3] * (rgba[..., 3:] if has_alpha else 1.0)
    # A palette of greys (as greyscale GIFs and 8-bit PNGs often ship) is a greyscale image.
    grey = bool(np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2]))
    return (rgb[..., :1] if grey else rgb), grey


def _to_array(img: Image.Image) -> tuple[np.ndarray, bool]:
    """Float32 pixels ``(H, W, C)`` in [0, 1] and whether the image is greyscale."""
    mode = img.mode
    if mode in ("1", "L"):
        return np.asarray(img.convert("L"), dtype=np.float32)[..., None] / 255.0, True
    if mode.startswith("I;16"):
        return np.asarray(img, dtype=np.float32)[..., None] / 65535.0, True
    if mode == "I":
        v = np.asarray(img, dtype=np.float64)
        scale = 255.0 if v.size == 0 or v.max() <= 255 else 65535.0
        return np.clip(v / scale, 0.0, 1.0).astype(np.float32)[..., None], True
    if mode == "F":
        return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)[..., None], True
    if mode in ("P", "PA"):
        return _palette_to_array(img)
    if mode in ("LA", "La"):
        la = np.asarray(img.convert("LA"), dtype=np.float32) / 255.0
        return la[..., :1] * la[..., 1:], True
    if mode in ("RGBA", "RGBa"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        return rgba[..., :3] * rgba[..., 3:], False
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0, False


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if pixels.shape[:2] == (h, w):
        return pixels
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., c]), mode="F")
                         .resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
              for c in range(pixels.shape[2])]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0)


def decode_image(path, image_size=64) -> tuple[np.ndarray, bool]:
    """Decode one file to float32 ``(H, W, C)`` in [0, 1] (C = 1 or 3) at ``image_size``.

    Returns the pixels and whether the image is greyscale. Raises a one-line
    :class:`WhylensError` naming the file if it cannot be decoded, is truncated, or is
    larger than Pillow's ``Image.MAX_IMAGE_PIXELS`` (the decompression-bomb guard).
    """
    h, w = size_pair(image_size)
    name = str(path)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a warning would
            # let a huge image through, so it is an error here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.format == "JPEG":
                    # Let libjpeg shrink by 2/4/8 while decoding; the result stays at
                    # least max(h, w) on each side whatever the EXIF orientation.
                    m = max(h, w)
                    img.draft(None, (m, m))
                img.load()
                img = ImageOps.exif_transpose(img)
                pixels, grey = _to_array(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise WhylensError(f"{name}: image too large to decode safely ({exc}); expected at most "
                           f"PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS} pixels "
                           "(raise it only for files you trust)") from None
    except FileNotFoundError:
        raise WhylensError(f"{name}: file not found; expected {_EXPECTED}") from None
    except Exception as exc:  # Pillow's plugins raise many types on corrupt input.
        reason = f"{type(exc).__name__}: {exc}"
        raise WhylensError(f"{name}: cannot decode image ({reason}); expected {_EXPECTED}") from None
    return _resize(pixels, (h, w)), grey


def _stack(pixels: list[np.ndarray], grey: list[bool], channels) -> torch.Tensor:
    """``(N, C, H, W)`` from per-image ``(H, W, c)`` arrays, with C chosen as the module says."""
    c = channels if channels is not None else (1 if all(grey) else 3)
    out = []
    for p in pixels:
        if c == 3 and p.shape[2] == 1:
            p = np.repeat(p, 3, axis=2)
        elif c == 1 and p.shape[2] == 3:
            p = p @ np.asarray(LUMA, dtype=np.float32)
            p = p[..., None]
        out.append(p)
    arr = np.clip(np.stack(out), 0.0, 1.0).astype(np.float32)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def load_image_files(paths: Sequence, image_size=64, channels: int | None = None) -> torch.Tensor:
    """Decode the given files into one ``(N, C, H, W)`` float32 tensor in [0, 1].

    Same decoding and errors as :func:`load_folder` (see the module docstring);
    ``channels=None`` gives 1 channel if every file is greyscale, else 3. The order
    of the rows is the order of ``paths``.
    """
    size = size_pair(image_size)
    _check_channels(channels)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    check(len(paths) > 0, "images: expected at least one image file, got none")
    pixels, grey = [], []
    for p in paths:
        check(Path(p).is_file(), f"{p}: file not found; expected {_EXPECTED}")
        x, g = decode_image(p, size)
        pixels.append(x)
        grey.append(g)
    return _stack(pixels, grey, channels)


def _list_class_files(root: Path) -> tuple[list[str], list[list[Path]]]:
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [sorted(f for f in d.rglob("*") if _is_image_file(f) and not _hidden(f, d))
             for d in subdirs]
    return [d.name for d in subdirs], files


def load_folder(path, image_size=64, channels: int | None = None,
                skip_bad: bool = False) -> ImageSet:
    """Load ``path/<class>/<image>`` files into an :class:`ImageSet` ``(N, C, H, W)``.

    Classes are the sorted subfolder names (at least 2, each with images); label
    ``y_i`` is the index of the subfolder that holds file ``i``; ids are absolute file
    paths. ``image_size`` is an int or ``(H, W)``. With ``skip_bad`` a file that cannot
    be decoded (unreadable, truncated, too large) is left out and one warning lists
    all such files; otherwise the first one raises a :class:`WhylensError`.
    """
    size = size_pair(image_size)
    _check_channels(channels)
    root = Path(path)
    expected = "a folder with one subfolder of images per class"
    check(root.exists(), f"{path}: folder not found; expected {expected}")
    check(root.is_dir(), f"{path}: is not a folder; expected {expected}")
    classes, files = _list_class_files(root)
    total = sum(len(f) for f in files)
    if total == 0:
        loose = sum(1 for f in root.iterdir() if _is_image_file(f))
        where = (f" ({loose} images lie directly in it; move them into one subfolder per class)"
                 if loose else "")
        raise WhylensError(f"{path}: no images found{where}; expected {expected} "
                           f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
    check(len(classes) >= 2, f"{path}: found a single class subfolder {classes[0]!r}; "
                             "expected at least 2 class subfolders")
    for name, f in zip(classes, files):
        check(len(f) > 0, f"{root / name}: class folder has no images; expected files with "
                          f"extensions {', '.join(IMAGE_EXTENSIONS)}")
    pixels, grey, labels, ids, bad = [], [], [], [], []
    for label, class_files in enumerate(files):
        for f in class_files:
            try:
                x, g = decode_image(f, size)
            except WhylensError as exc:
                if not skip_bad:
                    raise
                bad.append(str(exc))
                continue
            pixels.append(x)
            grey.append(g)
            labels.append(label)
            ids.append(os.path.abspath(f))
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} unreadable image(s): " + " | ".join(bad),
                      stacklevel=2)
    check(len(pixels) > 0, f"{path}: no images could be decoded ({len(bad)} skipped); "
                           f"expected {expected}")
    images = _stack(pixels, grey, channels)
    return ImageSet(images, torch.tensor(labels, dtype=torch.int64), classes, ids=ids,
                    name=root.resolve().name or str(root))
