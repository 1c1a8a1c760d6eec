"""Compute everything the HTML report shows, stage by stage, with a progress bar per stage.

``build_context(...)`` returns the context dict that :func:`whylens.report.html.render_report`
turns into one self-contained HTML page: the model and data, per-example heatmaps and
helpful/harmful training images, suspected mislabels, a second model side by side, and
the checks that say how far each explanation can be trusted. The sizes of the checks
are options, so the whole report stays within minutes on two CPU cores.
"""

from __future__ import annotations

import copy
import datetime as _dt
import time

import torch
from tqdm.auto import tqdm

from ..attribution import conv_layers
from ..commands import fit_influence
from ..errors import WhylensError
from ..outputs import loss_for, predicted_class, probabilities
from ..train import predict
from .images import image_png, overlay_png, png_bytes

CAM = {"gradcam", "gradcam++", "hirescam"}


def _say(progress: bool, msg: str) -> None:
    if progress:
        tqdm.write(msg)


def has_conv(model) -> bool:
    try:
        return bool(conv_layers(model))
    except WhylensError:
        return False


def usable_methods(model, methods: list[str]) -> list[str]:
    """Drop CAM methods for models without a conv layer (a logistic regression, an SVM)."""
    return [m for m in methods if m not in CAM or has_conv(model)]


def choose_examples(model, test, n: int) -> list[int]:
    """Up to ``n // 2`` misclassified test items (highest loss first), then correct ones of distinct classes."""
    logits = predict(model, test.images)
    pred = predicted_class(logits)
    loss = loss_for(model)(logits.double(), test.labels)
    wrong = (pred != test.labels).nonzero().flatten()
    wrong = wrong[loss[wrong].argsort(descending=True)][: n // 2].tolist()
    chosen, seen = list(wrong), set()
    for i in (pred == test.labels).nonzero().flatten().tolist():
        if len(chosen) >= n:
            break
        c = int(test.labels[i])
        if c not in seen:
            chosen.append(i)
            seen.add(c)
    return chosen[:n]


def _items(train, idx: list[int], scores: list[float]) -> list[dict]:
    return [{"png": image_png(train.images[j]), "label": train.classes[int(train.labels[j])], "score": float(s),
             "id": train.ids[j]} for j, s in zip(idx, scores)]


def model_section(model, config: dict, splits: dict) -> tuple[dict, dict]:
    from ..commands import split_accuracies
    train, test = splits["train"], splits["test"]
    acc = split_accuracies(model, splits)
    pred = predicted_class(predict(model, test.images))
    k = test.num_classes
    matrix = torch.zeros(k, k, dtype=torch.long)
    matrix.index_put_((test.labels, pred), torch.ones_like(pred), accumulate=True)
    m = {"name": config.get("model", type(model).__name__), "architecture": str(model),
         "parameters": sum(p.numel() for p in model.parameters()), "training": config.get("training", {})}
    d = {"source": config.get("data_source", ""), "classes": train.classes,
         "splits": {s: {"n": v["n"], "accuracy": v["accuracy"], "per_class": v["per_class"]} for s, v in acc.items()},
         "confusion": {"split": "test", "classes": test.classes, "matrix": matrix.tolist()}}
    return m, d


def example_section(model, inf, train, test, idx: list[int], methods: list[str], top: int) -> list[dict]:
    from ..attribution import explain
    x, y = test.images[idx], test.labels[idx]
    logits = predict(model, x)
    pred, prob = predicted_class(logits), probabilities(logits)
    maps = {m: explain(model, x, m) for m in usable_methods(model, methods)}
    tops = inf.top(x, y, k=top)
    out = []
    for t, i in enumerate(idx):
        c = int(pred[t])
        out.append({"id": test.ids[i], "image_png": image_png(x[t]), "label": test.classes[int(y[t])],
                    "predicted": test.classes[c], "probability": float(prob[t, c]),
                    "heatmaps": [{"method": m, "png": overlay_png(x[t], a[t])} for m, a in maps.items()],
                    "helpful": _items(train, tops[t].helpful.indices, tops[t].helpful.scores),
                    "harmful": _items(train, tops[t].harmful.indices, tops[t].harmful.scores)})
    return out


def build_context(model, config: dict, splits: dict, *, compare=None, examples: int | list[int] = 4, top: int = 6,
                  methods: tuple[str, ...] = ("gradcam", "integrated_gradients", "gradient_x_input", "saliency"),
                  solver: str = "auto", check_images: int = 32, loo: int = 10, lds_subsets: int = 16,
                  flip: float | None = 0.1, seed: int = 0, progress: bool = True, title: str | None = None) -> dict:
    """The report's context. ``compare`` is ``(model, config)`` of a second model, or None to train a
    logistic regression on the same data. ``examples`` is a count or explicit test indices."""
    from . import trust as checks
    t0 = time.perf_counter()
    train, test = splits["train"], splits["test"]
    l2 = float(config.get("training", {}).get("l2", 0.0))
    stages = tqdm(total=7, desc="report", disable=not progress, unit="stage")

    def stage(name):
        stages.set_postfix_str(name)

    stage("model and data")
    model_info, data_info = model_section(model, config, splits)
    stages.update()

    stage("influence")
    inf = fit_influence(model, train, l2, solver, progress=False)
    stages.update()

    stage("examples")
    idx = list(examples) if isinstance(examples, (list, tuple)) else choose_examples(model, test, int(examples))
    ex = example_section(model, inf, train, test, idx, list(methods), top)
    stages.update()

    stage("mislabels")
    mis = checks.mislabel_section(model, config, inf, train, flip=flip, l2=l2, solver=solver, seed=seed)
    stages.update()

    stage("comparison")
    comparison = checks.comparison_section(model, config, compare, splits, idx, top=top, seed=seed,
                                           progress=progress)
    stages.update()

    stage("checks")
    trust = checks.attribution_checks(model, test, list(methods), n=check_images, seed=seed)
    stages.update()
    trust += checks.influence_checks(model, config, inf, train, test, l2=l2, loo=loo, subsets=lds_subsets,
                                     solver=solver, seed=seed)
    if mis.get("trust"):
        trust.append(mis.pop("trust"))
    stages.update()
    stages.close()
    n_params = model_info["parameters"]
    return {
        "title": title or f"whylens audit: {model_info['name']} on {data_info['source'] or 'data'}",
        "generated": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "model": model_info, "data": data_info, "examples": ex,
        "influence_note": ("Influence scores are I_up,loss = -g_test^T H^-1 g_train (Koh & Liang 2017): negative "
                           "= helpful (upweighting the training image lowers this test image's loss), positive = "
                           f"harmful; removing it changes the test loss by about -score/n (n = {len(train)}). "
                           f"Solver: {inf.solver_name}."),
        "mislabels": mis, "comparison": comparison, "trust": trust,
        "notes": [f"{n_params:,} parameters; built in {time.perf_counter() - t0:.0f} s.",
                  "Heatmaps are normalised for display only: red raises the class score, blue lowers it; CAMs "
                  "are non-negative by construction."],
    }


def clone_untrained(config: dict, seed: int):
    """A fresh model of the same architecture, initialised with ``seed``."""
    from ..models import build_model
    torch.manual_seed(seed)
    return build_model(config["model"], **config["kwargs"])


def warm_or_fresh(model, config: dict, seed: int):
    """Factory for retraining: convex models restart from their (unique-optimum) weights, networks from a seed."""
    convex = getattr(model, "convex", False) or type(model).__name__ == "LogisticRegression"
    if convex:
        return lambda: copy.deepcopy(model)
    return lambda: clone_untrained(config, seed)


def figure_png(fig) -> bytes:
    return png_bytes(fig)
