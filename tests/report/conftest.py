"""A full report context built from small synthetic images, with the number of PNGs it holds."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from whylens.report.images import image_png, overlay_png, png_bytes  # noqa: E402


def blob(seed: int, channels: int = 1, size: int = 8) -> torch.Tensor:
    """A ``(C, size, size)`` image in [0, 1]: a bright Gaussian blob at a seed-dependent place."""
    g = torch.Generator().manual_seed(seed)
    cy, cx = (torch.rand(2, generator=g) * (size - 3) + 1.5).tolist()
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    img = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0)
    img = (img + 0.15 * torch.rand(size, size, generator=g)).clamp(0, 1)
    if channels == 3:
        return torch.stack([img, img.flip(0), 1 - img]) * 0.9
    return img[None]


class Counter:
    """Makes PNGs and counts them, so a test knows how many ``<img>`` the page must hold."""

    def __init__(self):
        self.n = 0

    def image(self, seed, channels=1):
        self.n += 1
        return image_png(blob(seed, channels))

    def overlay(self, seed, signed):
        self.n += 1
        x = blob(seed)
        attr = x - x.mean() if signed else x ** 2
        return overlay_png(x, attr)

    def figure(self, kind):
        self.n += 1
        fig, ax = plt.subplots(figsize=(4.2, 2.8))
        t = np.linspace(0, 1, 21)
        if kind == "curve":
            ax.plot(t, np.minimum(1, 1.6 * t), label="self-influence")
            ax.plot(t, t, "--", color="grey", label="random")
            ax.set_xlabel("fraction of training data checked")
            ax.set_ylabel("fraction of flips found")
            ax.legend(fontsize=8)
        else:
            ax.bar(["A", "B", "C"], [0.9, 0.7, 0.4], color=["#2563eb", "#16a34a", "#dc2626"])
            ax.set_title(kind, fontsize=9)
        return png_bytes(fig, dpi=80)


def train_items(c: Counter, seed: int, k: int, sign: float, label="seven", id_prefix="train/seven/"):
    return [{"png": c.image(seed + j), "label": label, "score": sign * 10.0 ** (-j * 3) * 1.234,
             "id": f"{id_prefix}img_{seed + j:04d}.png"} for j in range(k)]


def make_context(hostile: str | None = None) -> tuple[dict, int]:
    """A context with every section; ``hostile`` (if given) replaces a class name, a file id and a method name."""
    c = Counter()
    classes = ["zero", "one", "seven"]
    bad_cls = hostile or "seven"
    bad_id = hostile or "test/seven/t_0001.png"
    method = hostile or "gradcam"
    examples = []
    for e in range(2):
        examples.append({
            "id": bad_id if e == 0 else f"test/one/t_{e:04d}.png",
            "image_png": c.image(100 + e),
            "label": bad_cls if e == 0 else "one",
            "predicted": "seven",
            "probability": 0.9731 - 0.3 * e,
            "heatmaps": [{"method": "saliency", "png": c.overlay(100 + e, True)},
                         {"method": "integrated_gradients", "png": c.overlay(200 + e, True)},
                         {"method": method, "png": c.overlay(300 + e, False)}],
            "helpful": train_items(c, 10 * e, 3, -1.0, label=bad_cls, id_prefix=(hostile or "train/seven/")),
            "harmful": train_items(c, 50 + 10 * e, 2, +1.0),
        })
    context = {
        "title": "Digits audit",
        "generated": "2025-01-02 03:04 UTC",
        "model": {"name": "cnn", "architecture": "SmallCNN(\n  (conv1): Conv2d(1, 16, kernel_size=(3, 3))\n"
                  "  (act): ReLU()\n  (fc): Linear(in_features=32, out_features=10)\n)",
                  "parameters": 5130, "training": {"objective": "mean cross-entropy + (0.001/2) ||theta||^2",
                                                   "optimizer": "adam", "epochs": 15, "lr": 0.03}},
        "data": {"source": "scikit-learn digits", "classes": classes[:2] + [bad_cls],
                 "splits": {"train": {"n": 1500, "accuracy": 0.991,
                                      "per_class": {"zero": 1.0, "one": 0.98, bad_cls: 0.99}},
                            "test": {"n": 297, "accuracy": 0.936,
                                     "per_class": {"zero": 0.97, "one": 0.9, bad_cls: 0.93}}},
                 "confusion": {"split": "test", "classes": classes[:2] + [bad_cls],
                               "matrix": [[97, 2, 1], [5, 88, 7], [0, 3, 94]]}},
        "examples": examples,
        "influence_note": "Negative scores are helpful: up-weighting that image lowers the test loss.",
        "mislabels": {"items": [{"png": c.image(400 + j), "given": bad_cls, "predicted": "one",
                                 "score": 3.2 / (j + 1), "id": f"train/x/m_{j}.png"} for j in range(3)],
                      "curve_png": c.figure("curve"),
                      "summary": [{"name": "flips found at 10 % checked", "value": "91 %"}]},
        "comparison": {"models": ["logistic", "cnn"], "figure_png": c.figure("agreement"),
                       "table": {"header": ["metric", "logistic", "cnn"],
                                 "rows": [["test accuracy", "89.2 %", "93.6 %"], ["LDS", "0.41", "0.22"]]},
                       "examples": [{"id": "test/one/t_0009.png", "image_png": c.image(500), "label": "one",
                                     "per_model": [{"model": m, "predicted": p, "probability": 0.8,
                                                    "heatmap_png": c.overlay(600 + i, True),
                                                    "helpful": train_items(c, 700 + 10 * i, 1, -1.0),
                                                    "harmful": train_items(c, 800 + 10 * i, 1, 1.0)}
                                                   for i, (m, p) in enumerate([("logistic", "seven"),
                                                                               ("cnn", "one")])]}]},
        "trust": [{"name": "LOO Pearson", "value": "0.89", "meaning": "Influence predicts retraining well.",
                   "status": "ok", "figure_png": c.figure("loo")},
                  {"name": "sanity check", "value": "0.71", "meaning": "Maps change little when weights are random.",
                   "status": "warn", "figure_png": None},
                  {"name": "damping", "value": "1e-3", "meaning": "Added to the Hessian diagonal.", "status": "info"}],
        "notes": ["Scores computed on CPU.", "Influence is exact for the logistic model."],
    }
    return context, c.n


@pytest.fixture(scope="session")
def make_report_context():
    """``make(hostile=None) -> (context, number of PNGs in it)``."""
    return make_context


@pytest.fixture(scope="session")
def full_context():
    return make_context()
