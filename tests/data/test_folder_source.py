"""Folders of image files: decoding, conversion, resizing, EXIF, and the one-line errors."""

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from whylens.data import load_folder, load_image_files
from whylens.errors import WhylensError

RNG = np.random.default_rng(0)


def _grey(h, w):
    return RNG.integers(0, 256, (h, w), dtype=np.uint8)


def _rgb(h, w):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path, arr, mode=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    img.save(path, **kw)
    return path


def _one_line(exc_info):
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


@pytest.fixture
def tree(tmp_path):
    """cat: PNG (grey), JPEG (upper-case extension, grey), BMP (RGB); dog: TIFF (RGB), TIFF (grey)."""
    root = tmp_path / "pets"
    arrays = {}
    for rel, arr in [("cat/a.png", _grey(10, 12)), ("cat/b.JPG", _grey(14, 9)),
                     ("cat/sub/c.bmp", _rgb(8, 8)), ("dog/d.tif", _rgb(11, 7)),
                     ("dog/e.tiff", _grey(6, 13))]:
        _save(root / rel, arr)
        arrays[rel] = arr
    _save(root / "dog" / ".hidden.png", _grey(5, 5))       # hidden: ignored
    (root / "dog" / "notes.txt").write_text("not an image")  # other extension: ignored
    (root / ".ipynb_checkpoints").mkdir()                    # hidden folder: not a class
    return root, arrays


def test_mixed_folder_shapes_labels_ids(tree):
    root, _ = tree
    ds = load_folder(root, image_size=16)
    assert ds.classes == ["cat", "dog"]
    assert ds.images.shape == (5, 3, 16, 16)  # one RGB file makes the folder RGB
    assert ds.images.dtype == torch.float32
    assert 0.0 <= float(ds.images.min()) and float(ds.images.max()) <= 1.0
    assert ds.labels.tolist() == [0, 0, 0, 1, 1]
    expected = [os.path.abspath(root / r) for r in
                ["cat/a.png", "cat/b.JPG", "cat/sub/c.bmp", "dog/d.tif", "dog/e.tiff"]]
    assert ds.ids == expected
    # Greyscale files are repeated into R = G = B.
    grey_rows = [0, 1, 4]
    for i in grey_rows:
        assert torch.equal(ds.images[i, 0], ds.images[i, 1])
        assert torch.equal(ds.images[i, 1], ds.images[i, 2])
    assert not torch.equal(ds.images[2, 0], ds.images[2, 1])


def test_native_size_pixels_are_exact(tree):
    root, arrays = tree
    ds = load_folder(root, image_size=(10, 12), channels=1)
    np.testing.assert_allclose(ds.images[0, 0].numpy(), arrays["cat/a.png"] / 255.0, atol=1e-7)
    rgb = load_image_files([root / "dog/d.tif"], image_size=(11, 7))
    assert rgb.shape == (1, 3, 11, 7)
    np.testing.assert_allclose(rgb[0].permute(1, 2, 0).numpy(), arrays["dog/d.tif"] / 255.0,
                               atol=1e-7)
    # channels=1 on colour is BT.601 luma, computed here independently.
    grey = load_image_files([root / "dog/d.tif"], image_size=(11, 7), channels=1)
    a = arrays["dog/d.tif"].astype(np.float64) / 255.0
    luma = 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]
    np.testing.assert_allclose(grey[0, 0].numpy(), luma, atol=1e-6)


def test_resize_is_bilinear_and_keeps_levels(tmp_path):
    half = np.zeros((40, 40), np.uint8)
    half[:, 20:] = 255
    flat = np.full((30, 50), 153, np.uint8)
    p1 = _save(tmp_path / "half.png", half)
    p2 = _save(tmp_path / "flat.png", flat)
    x = load_image_files([p1, p2], image_size=20)
    assert x.shape == (2, 1, 20, 20)
    h = x[0, 0]
    # A step edge halved: columns well away from the edge keep their value, the mean stays 1/2.
    assert torch.all(h[:, :9] == 0) and torch.allclose(h[:, 11:], torch.ones(20, 9))
    assert abs(float(h.mean()) - 0.5) < 1e-6
    assert torch.allclose(x[1, 0], torch.full((20, 20), 153 / 255.0), atol=1e-6)
    # Non-square target, (H, W).
    assert load_image_files([p2], image_size=(8, 24)).shape == (1, 1, 8, 24)


def test_modes_palette_alpha_16bit(tmp_path):
    root = tmp_path / "modes"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir(parents=True)
    Image.fromarray(np.full((6, 6), 32768, np.uint16)).save(root / "a" / "i16.png")
    la = Image.merge("LA", [Image.new("L", (6, 6), 200), Image.new("L", (6, 6), 128)])
    la.save(root / "a" / "la.png")
    Image.fromarray(np.full((6, 6), 90, np.uint8)).convert("P").save(root / "b" / "pal.png")
    Image.fromarray(_grey(6, 6)).convert("1").save(root / "b" / "bw.png")
    with Image.open(root / "a" / "i16.png") as im:
        assert im.mode.startswith("I")  # really a 16-bit file
    ds = load_folder(root, image_size=6)
    assert ds.images.shape == (4, 1, 6, 6)  # all greyscale: one channel
    by = {os.path.basename(i): ds.images[k, 0] for k, i in enumerate(ds.ids)}
    assert torch.allclose(by["i16.png"], torch.full((6, 6), 32768 / 65535), atol=1e-6)
    assert torch.allclose(by["la.png"], torch.full((6, 6), 200 / 255 * 128 / 255), atol=1e-6)
    assert torch.allclose(by["pal.png"], torch.full((6, 6), 90 / 255), atol=1e-6)
    assert set(torch.unique(by["bw.png"]).tolist()) <= {0.0, 1.0}
    # A colour palette and RGBA make the folder RGB; alpha is composited over black.
    Image.new("RGBA", (6, 6), (255, 0, 0, 255)).save(root / "b" / "red.png")
    Image.new("RGBA", (6, 6), (0, 255, 0, 0)).save(root / "b" / "clear.png")
    Image.new("RGB", (6, 6), (10, 200, 30)).convert("P").save(root / "a" / "pal_rgb.png")
    ds = load_folder(root, image_size=6)
    assert ds.channels == 3
    by = {os.path.basename(i): ds.images[k] for k, i in enumerate(ds.ids)}
    assert torch.allclose(by["red.png"][:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.all(by["clear.png"] == 0)
    with Image.open(root / "a" / "pal_rgb.png") as im:
        assert im.mode == "P"
        colour = torch.tensor(im.convert("RGB").getpixel((0, 0))) / 255.0  # the palette entry
    assert torch.allclose(by["pal_rgb.png"][:, 0, 0], colour, atol=1e-6)


@pytest.mark.parametrize("orientation, k", [(6, -1), (8, 1)])
def test_exif_orientation_is_honoured(tmp_path, orientation, k):
    h, w = 16, 24
    arr = np.zeros((h, w), np.uint8)
    arr[:4, :8] = 255  # a bright block at the stored top-left marks the orientation
    arr[8:, 12:] = 120
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"rot{orientation}.jpg"
    img.save(path, exif=exif, quality=95)
    with Image.open(path) as raw:
        stored = np.asarray(raw.convert("L"), dtype=np.float64) / 255.0
    # Orientation 6: rotate 90 degrees clockwise to view; 8: counter-clockwise.
    expected = np.rot90(stored, k=k)
    x = load_image_files([path], image_size=(w, h))
    assert x.shape == (1, 1, w, h)
    np.testing.assert_allclose(x[0, 0].numpy(), expected, atol=1e-6)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(x[0, 0].numpy(), np.rot90(stored, k=-k), atol=0.05)


@pytest.mark.parametrize("name", ["broken.png", "broken.jpg"])
def test_truncated_file_names_the_file(tree, name):
    root, _ = tree
    good = root / "dog" / ("ok" + os.path.splitext(name)[1])
    _save(good, _rgb(64, 64), quality=95) if name.endswith("jpg") else _save(good, _rgb(64, 64))
    data = good.read_bytes()
    bad = root / "dog" / name
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(WhylensError) as e:
        load_folder(root)
    msg = _one_line(e)
    assert str(bad) in msg and "cannot decode" in msg


def test_skip_bad_warns_once_and_keeps_the_rest(tree):
    root, _ = tree
    (root / "cat" / "garbage.png").write_bytes(b"this is not a png at all")
    data = (root / "cat" / "a.png").read_bytes()
    (root / "dog" / "short.png").write_bytes(data[:40])
    with pytest.raises(WhylensError, match="garbage.png"):
        load_folder(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_folder(root, image_size=8, skip_bad=True)
    ours = [w for w in caught if "skipped" in str(w.message)]
    assert len(ours) == 1
    text = str(ours[0].message)
    assert "garbage.png" in text and "short.png" in text and "skipped 2" in text
    assert len(ds) == 5 and ds.labels.tolist() == [0, 0, 0, 1, 1]


def test_skip_bad_with_nothing_left_is_the_no_images_error(tmp_path):
    for c in ("x", "y"):
        (tmp_path / c).mkdir()
        (tmp_path / c / "bad.png").write_bytes(b"nope")
    with pytest.warns(UserWarning, match="skipped 2"):
        with pytest.raises(WhylensError, match="no images could be decoded"):
            load_folder(tmp_path, skip_bad=True)


def test_folder_errors(tmp_path):
    with pytest.raises(WhylensError, match="folder not found") as e:
        load_folder(tmp_path / "missing")
    assert str(tmp_path / "missing") in _one_line(e)
    f = tmp_path / "file.png"
    _save(f, _grey(4, 4))
    with pytest.raises(WhylensError, match="is not a folder"):
        load_folder(f)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WhylensError, match="no images found"):
        load_folder(empty)
    (empty / "a").mkdir()
    (empty / "b").mkdir()
    with pytest.raises(WhylensError, match="no images found"):
        load_folder(empty)
    loose = tmp_path / "loose"
    _save(loose / "x.png", _grey(4, 4))
    with pytest.raises(WhylensError, match="directly in it"):
        load_folder(loose)
    single = tmp_path / "single"
    _save(single / "only" / "x.png", _grey(4, 4))
    with pytest.raises(WhylensError, match="at least 2 class subfolders"):
        load_folder(single)
    _save(empty / "a" / "x.png", _grey(4, 4))
    with pytest.raises(WhylensError, match="class folder has no images") as e:
        load_folder(empty)
    assert str(empty / "b") in _one_line(e)
    with pytest.raises(WhylensError, match="channels"):
        load_folder(empty, channels=2)
    with pytest.raises(WhylensError, match="image_size"):
        load_folder(empty, image_size=0)


@pytest.mark.parametrize("limit", [100, 300])
def test_decompression_bomb_guard_stays_on(tmp_path, monkeypatch, limit):
    """400 pixels: above 2 * 100 Pillow raises; between 300 and 600 it only warns, and we refuse."""
    for c in ("a", "b"):
        _save(tmp_path / c / "img.png", _grey(20, 20))
    assert len(load_folder(tmp_path, image_size=4)) == 2  # default limit: fine
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(WhylensError, match="too large to decode safely") as e:
        load_folder(tmp_path, image_size=4)
    assert str(tmp_path / "a" / "img.png") in _one_line(e)
    with pytest.raises(WhylensError, match="too large"):
        load_image_files([tmp_path / "b" / "img.png"])


def test_load_image_files_order_and_errors(tmp_path):
    a = _save(tmp_path / "a.png", np.full((5, 5), 10, np.uint8))
    b = _save(tmp_path / "b.bmp", np.full((5, 5), 250, np.uint8))
    x = load_image_files([b, a], image_size=5)
    assert x.shape == (2, 1, 5, 5)
    assert torch.allclose(x[:, 0, 0, 0], torch.tensor([250, 10]) / 255.0)
    assert load_image_files(str(a), image_size=3, channels=3).shape == (1, 3, 3, 3)
    with pytest.raises(WhylensError, match="file not found") as e:
        load_image_files([a, tmp_path / "nope.png"])
    assert "nope.png" in _one_line(e)
    with pytest.raises(WhylensError, match="at least one image"):
        load_image_files([])
    with pytest.raises(WhylensError, match="image_size"):
        load_image_files([a], image_size=(4, 4, 4))


def test_large_jpeg_matches_a_full_decode_then_resize(tmp_path):
    """The loader lets libjpeg shrink while decoding; the result must match decode-then-resize."""
    yy, xx = np.mgrid[0:512, 0:384]
    arr = np.stack([(xx / 384 * 255), (yy / 512 * 255), ((xx + yy) % 64) * 4], -1).astype(np.uint8)
    path = _save(tmp_path / "big.jpg", arr, quality=95)
    x = load_image_files([path], image_size=(32, 24))
    with Image.open(path) as im:
        ref = np.asarray(im.convert("RGB").resize((24, 32), Image.Resampling.BILINEAR),
                         dtype=np.float64) / 255.0
    got = x[0].permute(1, 2, 0).numpy()
    assert x.shape == (1, 3, 32, 24)
    assert np.abs(got - ref).mean() < 0.02
