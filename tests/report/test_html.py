"""The HTML report: structure, self-containment, escaping, atomic writing, and a real headless Chromium render."""

import base64
import io
import os
import re
import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from whylens.errors import WhylensError  # noqa: E402
from whylens.report.html import format_score, render_report, write_report  # noqa: E402
from whylens.report.images import data_uri, image_png, overlay_png, png_bytes  # noqa: E402

HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>']
SECTION_IDS = ["model-data", "examples", "mislabels", "comparison", "trust"]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
N_PNG = 2 * (1 + 3 + 3 + 2) + (3 + 1) + (1 + 1 + 2 * 3) + 1  # examples, mislabels, comparison, trust


class Page(HTMLParser):
    """Parses the page strictly: every non-void element must be closed in order; records tags, ids and text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.tags, self.decls = [], [], [], []
        self.ids = Counter()
        self.section_text = {}

    def handle_decl(self, decl):
        self.decls.append(decl)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if "id" in attrs:
            self.ids[attrs["id"]] += 1
        if tag == "section":
            self.section_text.setdefault(attrs.get("id"), [])
        if tag not in VOID:
            self.stack.append((tag, attrs.get("id")))

    def handle_startendtag(self, tag, attrs):
        self.errors.append(f"self-closing <{tag}/>")
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag in VOID:
            self.errors.append(f"end tag for void element </{tag}>")
        elif not self.stack or self.stack[-1][0] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1][0] if self.stack else 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        for tag, sid in self.stack:
            if tag == "section":
                self.section_text[sid].append(data)

    def text(self, sid):
        return " ".join(" ".join(self.section_text[sid]).split())

    def find(self, tag):
        return [a for t, a in self.tags if t == tag]


def parse(html: str) -> Page:
    p = Page()
    p.feed(html)
    p.close()
    assert not p.errors, p.errors[:5]
    assert not p.stack, f"unclosed elements: {p.stack}"
    return p


def supplied_pngs(obj):
    """Every PNG the context supplies (values of ``png`` / ``*_png`` keys), in a multiset."""
    out = Counter()
    if isinstance(obj, dict):
        for k, v in obj.items():
            if (k == "png" or k.endswith("_png")) and v is not None:
                out[bytes(v)] += 1
            else:
                out += supplied_pngs(v)
    elif isinstance(obj, list):
        for v in obj:
            out += supplied_pngs(v)
    return out


def embedded_pngs(page: Page):
    out = Counter()
    for a in page.find("img"):
        src = a["src"]
        assert src.startswith("data:image/png;base64,"), src[:40]
        out[base64.b64decode(src.split(",", 1)[1], validate=True)] += 1
    return out


def assert_self_contained(html: str, page: Page):
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower() and "javascript:" not in html.lower()
    assert "url(" not in html and "@import" not in html
    assert not {"script", "link", "iframe", "object", "embed", "base", "form"} & {t for t, _ in page.tags}
    handlers = [(t, k) for t, a in page.tags for k in a if k.startswith("on")]
    assert not handlers, handlers
    for t, a in page.tags:
        for k in ("href", "src"):
            if k in a:
                assert a[k].startswith("#") or a[k].startswith("data:image/png;base64,"), (t, k, a[k][:40])


# --- the full page -------------------------------------------------------------------------------------------


def test_full_report_structure(full_context):
    ctx, n = full_context
    assert n == N_PNG
    html = render_report(ctx)
    page = parse(html)
    assert page.decls and page.decls[0].lower() == "doctype html"
    assert page.find("html")[0].get("lang") == "en"
    assert any(a.get("charset", "").lower() == "utf-8" for a in page.find("meta"))
    assert page.find("title") and "<title>Digits audit</title>" in html
    for sid in SECTION_IDS + ["notes"]:
        assert page.ids[sid] == 1, sid
    assert max(page.ids.values()) == 1, "duplicate ids"
    links = [a["href"] for a in page.find("a")]
    assert set(SECTION_IDS) <= {h[1:] for h in links}
    assert all(h[1:] in page.ids for h in links), "a contents link points nowhere"
    # Each supplied PNG is embedded exactly once, byte for byte.
    assert len(page.find("img")) == N_PNG == html.count("<img")
    assert embedded_pngs(page) == supplied_pngs(ctx)
    assert all(a.get("alt") is not None for a in page.find("img"))
    assert_self_contained(html, page)
    for sid in SECTION_IDS:
        assert "Not computed" not in page.text(sid), sid


def test_numbers_and_text_are_shown(full_context):
    ctx, _ = full_context
    page = parse(render_report(ctx))
    md = page.text("model-data")
    for s in ["5,130", "99.1 %", "93.6 %", "1500", "297", "mean cross-entropy", "scikit-learn digits",
              "Conv2d(1, 16, kernel_size=(3, 3))"]:
        assert s in md, s
    ex = page.text("examples")
    for s in ["97.3 %", "67.3 %", "-1.23", "-0.00123", "-1.23e-06", "0.00123", "img_0051.png", "gradcam",
              "integrated_gradients", "Negative scores are helpful"]:
        assert s in ex, s
    assert "train/seven/img_0051.png" not in ex  # the file name is shown ...
    assert {"title": "train/seven/img_0051.png", "class": "fid"} in page.find("span")  # ... the full id on hover
    assert "seven → one 3.2 m_0.png" in page.text("mislabels") and "91 %" in page.text("mislabels")
    cmp_text = page.text("comparison")
    assert "89.2 %" in cmp_text and "logistic" in cmp_text and "80.0 %" in cmp_text
    tr = page.text("trust")
    assert "LOO Pearson" in tr and "Maps change little" in tr
    badges = [a["class"] for a in page.find("span") if a.get("class", "").startswith("badge")]
    assert badges == ["badge ok", "badge warn", "badge info"]
    assert "Influence is exact" in page.text("notes")


def test_architecture_keeps_its_lines(full_context):
    ctx, _ = full_context
    html = render_report(ctx)
    pre = re.search(r"<pre>(.*?)</pre>", html, re.S).group(1)
    assert pre == ctx["model"]["architecture"]  # nothing to escape here; the newlines are kept
    assert pre.count("\n") == 4


def test_confusion_matrix_table(full_context):
    ctx, _ = full_context
    html = render_report(ctx)
    table = re.search(r'<table class="confusion" id="confusion">(.*?)</table>', html, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)
    header = re.findall(r"<th[^>]*>(.*?)</th>", rows[0])
    conf = ctx["data"]["confusion"]
    assert header[1:] == conf["classes"]
    for r, (cls, counts) in enumerate(zip(conf["classes"], conf["matrix"])):
        assert re.findall(r"<th>(.*?)</th>", rows[1 + r]) == [cls]  # rows = true class
        cells = re.findall(r"<td( class=\"diag\")?[^>]*>(.*?)</td>", rows[1 + r])
        assert [int(v) for _, v in cells] == counts
        assert [bool(d) for d, _ in cells] == [i == r for i in range(len(counts))]


@pytest.mark.parametrize("value, text", [(0.012345, "0.0123"), (-1.234e-7, "-1.23e-07"), (1.0, "1"),
                                         (123.456, "123"), (-2.5, "-2.5"), (98765.0, "9.88e+04"),
                                         (0.001, "0.001"), (0.000999, "9.99e-04"), (0.0, "0"),
                                         (float("nan"), "nan"), (np.float32(0.5), "0.5"),
                                         (torch.tensor(-3e-5), "-3.00e-05")])
def test_format_score(value, text):
    assert format_score(value) == text


# --- escaping ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_strings_are_escaped(hostile, make_report_context):
    ctx, n = make_report_context(hostile)
    html = render_report(ctx)
    assert hostile not in html
    assert "<script" not in html and "<img src=x" not in html
    assert "&lt;script&gt;" in html or "&lt;img src=x" in html
    page = parse(html)
    assert_self_contained(html, page)
    assert len(page.find("img")) == n == N_PNG
    # Shown faithfully, not mangled: the parser gets the original string back from the escaped text/attributes.
    assert {"title": hostile} in page.find("span")
    assert any(a.get("alt") == f"heatmap: {hostile}" for a in page.find("img"))
    assert hostile in page.text("examples") and hostile in page.text("model-data")


def test_hostile_title_and_notes_are_escaped():
    bad = HOSTILE[0]
    html = render_report({"title": bad, "generated": bad, "notes": [bad], "trust": [{"name": bad, "value": bad,
                                                                                      "meaning": bad}]})
    assert bad not in html and "<script" not in html
    assert "<title>&lt;script&gt;alert(1)&lt;/script&gt;</title>" in html
    page = parse(html)
    assert bad in page.text("notes") and bad in page.text("trust")


# --- missing parts -------------------------------------------------------------------------------------------


def test_empty_context_says_not_computed():
    html = render_report({})
    page = parse(html)
    assert_self_contained(html, page)
    for sid in SECTION_IDS:
        assert page.ids[sid] == 1 and "Not computed" in page.text(sid), sid
    assert "notes" not in page.ids and not page.find("img")
    assert "<title>whylens report</title>" in html


def test_partial_context(full_context):
    full, _ = full_context
    ex = {k: v for k, v in full["examples"][1].items() if k not in ("heatmaps", "helpful", "harmful", "probability")}
    ctx = {"model": {"name": "cnn"}, "examples": [ex], "mislabels": {"items": [], "curve_png": None},
           "trust": [{"name": "damping", "value": "1e-3"}]}
    page = parse(render_report(ctx))
    assert "cnn" in page.text("model-data") and "Not computed: data summary" in page.text("model-data")
    assert "Not computed: influence for this image" in page.text("examples")
    assert "Not computed" in page.text("mislabels") and "Not computed" in page.text("comparison")
    assert "Info" in page.text("trust")  # a missing status is shown as info
    assert len(page.find("img")) == 1


# --- bad input -----------------------------------------------------------------------------------------------


def test_bad_input_is_rejected(full_context):
    full, _ = full_context
    with pytest.raises(WhylensError, match="context: expected a dict"):
        render_report([("title", "x")])
    with pytest.raises(WhylensError, match=r"context\.examples\[0\]\.image_png: expected PNG bytes"):
        render_report({"examples": [{"image_png": b"GIF89a..."}]})
    with pytest.raises(WhylensError, match=r"context\.mislabels\.curve_png"):
        render_report({"mislabels": {"curve_png": "curve.png"}})
    with pytest.raises(WhylensError, match="2 x 2"):
        render_report({"data": {"confusion": {"classes": ["a", "b"], "matrix": [[1, 2, 3], [4, 5, 6]]}}})
    with pytest.raises(WhylensError, match=r"trust\[0\]\.status"):
        render_report({"trust": [{"name": "x", "status": "great"}]})
    with pytest.raises(WhylensError, match="context.examples: expected a list"):
        render_report({"examples": {"id": "x"}})


def test_write_report_is_atomic(tmp_path, full_context):
    ctx, _ = full_context
    out = tmp_path / "sub" / "report.html"
    bad = {**ctx, "trust": [{"name": "x", "status": "bogus"}]}
    with pytest.raises(WhylensError):
        write_report(bad, out)
    assert not out.exists()
    assert write_report(ctx, out) == out
    good = out.read_text(encoding="utf-8")
    assert good == render_report(ctx)
    with pytest.raises(WhylensError):
        write_report(bad, out)
    assert out.read_text(encoding="utf-8") == good  # the old report is untouched
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]  # and no temporary file is left


# --- image helpers -------------------------------------------------------------------------------------------


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_image_png_is_nearest_neighbour():
    g = torch.Generator().manual_seed(1)
    gray = torch.rand(1, 5, 7, generator=g)
    ref = np.repeat(np.repeat(np.round(gray[0].double().numpy() * 255).astype(np.uint8), 4, 0), 4, 1)
    got = decode(image_png(gray, scale=4))
    assert got.shape == (20, 28) and np.array_equal(got, ref)
    rgb = torch.rand(3, 4, 6, generator=g)
    ref = np.kron(np.round(rgb.double().numpy().transpose(1, 2, 0) * 255), np.ones((3, 3, 1))).astype(np.uint8)
    got = decode(image_png(rgb, scale=3))
    assert got.shape == (12, 18, 3) and np.array_equal(got, ref)
    assert decode(image_png(torch.zeros(1, 8, 8))).shape == (96, 96)  # automatic scale: 8 * 12 = 96
    assert decode(image_png(torch.zeros(1, 28, 20))).shape == (112, 80)  # ceil(96 / 28) = 4
    assert decode(image_png(torch.zeros(3, 200, 10))).shape == (200, 10, 3)


def test_image_png_rejects_bad_input():
    for bad, msg in [(torch.zeros(8, 8), "image: expected a"), (torch.zeros(2, 8, 8), "C = 1 or 3"),
                     (torch.full((1, 4, 4), 1.5), r"\[0, 1\]"), (torch.full((1, 4, 4), float("nan")), "NaN")]:
        with pytest.raises(WhylensError, match=msg):
            image_png(bad)
    for scale in (0, 2.5, True):
        with pytest.raises(WhylensError, match="scale"):
            image_png(torch.zeros(1, 4, 4), scale=scale)


def test_png_bytes_closes_the_figure():
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    data = png_bytes(fig, dpi=50)
    assert not plt.fignum_exists(fig.number)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and decode(data).std() > 0


def test_overlay_png_colours_signed_maps():
    """On a black image, positive attribution on the left shows red, negative on the right shows blue."""
    image = torch.zeros(1, 8, 8)
    attr = torch.ones(1, 8, 8)
    attr[..., 4:] = -1.0
    px = decode(overlay_png(image, attr, size=1.0, dpi=80)).astype(float)
    h, w = px.shape[:2]
    left, right = px[h // 4: 3 * h // 4, w // 8: 3 * w // 8], px[h // 4: 3 * h // 4, 5 * w // 8: 7 * w // 8]
    assert (left[..., 0] - left[..., 2]).mean() > 60
    assert (right[..., 2] - right[..., 0]).mean() > 60
    with pytest.raises(WhylensError, match="attr: expected shape"):
        overlay_png(image, torch.zeros(1, 4, 4))


def test_data_uri_round_trip():
    png = image_png(torch.rand(1, 3, 3))
    uri = data_uri(png)
    assert uri.startswith("data:image/png;base64,") and base64.b64decode(uri[22:]) == png
    with pytest.raises(WhylensError, match="png: expected PNG bytes"):
        data_uri(b"not a png")


# --- a real browser ------------------------------------------------------------------------------------------


def chromium_binary():
    for name in ("chromium", "/usr/bin/chromium"):
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium(exe, args, tmp_path, timeout=90):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([exe, *flags, *args], capture_output=True, timeout=timeout, cwd=tmp_path)


@pytest.mark.slow
def test_chromium_renders_the_report(tmp_path, make_report_context):
    exe = chromium_binary()
    if exe is None:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail("chromium is not installed but CI is set (.ci/run installs it)")
        pytest.skip("chromium is not installed (install the Debian package 'chromium' to run this check)")
    ctx, n = make_report_context()
    # The first test image in pure green: a colour nothing else on the page uses, so the screenshot shows
    # whether the embedded images were decoded and drawn.
    green = torch.zeros(3, 8, 8)
    green[1] = 1.0
    ctx["examples"][0]["image_png"] = image_png(green)
    report = write_report(ctx, tmp_path / "report.html")
    url = Path(report).resolve().as_uri()

    shot = tmp_path / "shot.png"
    r = chromium(exe, [f"--screenshot={shot}", "--window-size=1280,2000", url], tmp_path)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    assert shot.exists()
    px = np.asarray(Image.open(shot).convert("RGB"))
    assert px.shape == (2000, 1280, 3)
    assert px.std() > 20, "the screenshot is (nearly) blank"
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 200
    is_green = (px[..., 1] > 240) & (px[..., 0] < 16) & (px[..., 2] < 16)
    assert is_green.sum() > 0.8 * 132 * 132, "the embedded test image was not drawn"

    r = chromium(exe, ["--dump-dom", url], tmp_path)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    dom = r.stdout.decode("utf-8")
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in dom, sid
    assert dom.count("<img") == n == N_PNG
    assert "<script" not in dom
