"""``make demo``: the whole story on synthetic chest X-rays with a shortcut.

1. Build the synthetic set: a small marker token in a corner co-occurs with
   "pneumonia" in 95 % of training images.
2. Train the small CNN. Accuracy on the confounded test split (same co-occurrence)
   is near 100 %; on the clean split (marker independent of the label) it drops.
3. Explain pneumonia predictions: the heatmaps point at the marker, not at the
   opacity, and the Grad-CAM mass inside each region is measured and printed.
4. Find the training images that taught it: marker-bearing pneumonia images
   dominate the most helpful ones.
5. Write ``out/report.html``: mislabels found again after flipping 10 % of the
   labels, a logistic regression beside the CNN, and every check.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from .files import write_json


def _say(msg: str) -> None:
    print(msg, flush=True)


def run_demo(out: str | os.PathLike = "out", quick: bool = False, seed: int = 0, progress: bool = True) -> dict:
    """Run the demo and write its outputs under ``out``; return the summary dict (also ``out/summary.json``)."""
    from .commands import split_accuracies, train_reference
    from .data.synthetic import synthetic_xrays
    from .evaluate.localization import mass_inside
    from .models import save_model
    from .outputs import predicted_class
    from .report.explanations import write_explanations
    from .train import predict

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_train, n_test = (400, 160) if quick else (800, 300)
    _say(f"[1/5] synthetic chest X-rays: {n_train} train, {n_test} test per split, marker with 95 % of pneumonia")
    splits = synthetic_xrays(n_train=n_train, n_test=n_test, seed=seed, shortcut=0.95)
    train = splits["train"]

    _say("[2/5] training the small CNN (mean cross-entropy + L2)")
    model, info = train_reference("cnn", train, seed=seed, epochs=20 if quick else 30, progress=progress)
    save_model(model, out / "model", classes=train.classes, input_shape=tuple(train.images.shape[1:]),
               training=info, extra={"data": "synthetic-xrays"})
    acc = split_accuracies(model, {k: splits[k] for k in ("train", "test_confounded", "test_clean")})
    _say(f"      accuracy: confounded test {acc['test_confounded']['accuracy']:.3f}, "
         f"clean test {acc['test_clean']['accuracy']:.3f} (train {acc['train']['accuracy']:.3f})")

    _say("[3/5] where did it look? explaining pneumonia predictions on the confounded split")
    conf = splits["test_confounded"]
    pred = predicted_class(predict(model, conf.images))
    pneu = conf.classes.index("pneumonia")
    chosen = ((conf.labels == pneu) & (pred == pneu)).nonzero().flatten()
    with_marker = chosen[conf.extras["marker"][chosen].bool()]
    show = torch.cat([with_marker[:3], chosen[~conf.extras["marker"][chosen].bool()][:1]])
    methods = ["gradcam", "integrated_gradients", "gradient_x_input", "saliency"]
    write_explanations(model, conf.images[show], [conf.ids[i] for i in show.tolist()], conf.classes, methods,
                       out / "explain", progress=progress)

    from .attribution import explain
    sick = (conf.labels == pneu).nonzero().flatten()
    sick_marked = sick[conf.extras["marker"][sick].bool()]
    cams = explain(model, conf.images[sick_marked], "gradcam", target=pneu)
    in_marker = mass_inside(cams, conf.extras["marker_mask"][sick_marked])
    in_lesion = mass_inside(cams, conf.masks[sick_marked])
    ok = torch.isfinite(in_marker) & torch.isfinite(in_lesion)
    frac = float((in_marker[ok] > in_lesion[ok]).float().mean()) if ok.any() else float("nan")
    _say(f"      Grad-CAM mass on {len(sick_marked)} marked pneumonia images: inside the marker "
         f"{float(in_marker[ok].median()):.1%} (median), inside the opacity {float(in_lesion[ok].median()):.1%}; "
         f"marker > opacity for {frac:.0%} of them")
    _say("[4/5] which training images taught it? influence of training images on marked pneumonia predictions")
    from .commands import fit_influence
    inf = fit_influence(model, train, info["l2"], "auto", progress=False)
    k = 8
    tops = inf.top(conf.images[sick_marked[:20]], conf.labels[sick_marked[:20]], k=k)
    marker_train = train.extras["marker"].bool()
    helpful_marked = torch.tensor([[bool(marker_train[j]) and int(train.labels[j]) == pneu for j in r.helpful.indices]
                                   for r in tops]).float().mean()
    base_rate = float((marker_train & (train.labels == pneu)).float().mean())
    _say(f"      {float(helpful_marked):.0%} of the top-{k} helpful training images are marker-bearing pneumonia "
         f"images (they are {base_rate:.0%} of the training set); solver {inf.solver_name}")

    _say("[5/5] the audit report: mislabels, a logistic regression beside it, and the checks")
    from .report.html import write_report
    from .report.pipeline import build_context
    lr, lr_info = train_reference("logistic", train, seed=seed, progress=False)
    save_model(lr, out / "model_logistic", classes=train.classes, input_shape=tuple(train.images.shape[1:]),
               training=lr_info, extra={"data": "synthetic-xrays"})
    config = {"model": "cnn", "kwargs": model.whylens_config["kwargs"], "training": info,
              "data_source": "synthetic-xrays (shortcut 0.95)"}
    report_splits = {"train": train, "test": conf, "test_clean": splits["test_clean"]}
    context = build_context(model, config, report_splits, compare=(lr, {"model": "logistic", "training": lr_info}),
                            examples=show.tolist(), top=6, check_images=24 if quick else 32,
                            loo=6 if quick else 10, lds_subsets=8 if quick else 12, flip=0.1, seed=seed,
                            progress=progress, title="whylens audit: a CNN on synthetic chest X-rays with a shortcut")
    context["trust"].insert(0, {
        "name": "shortcut: Grad-CAM mass on the marker vs the opacity",
        "value": f"marker {float(in_marker[ok].median()):.0%} vs opacity {float(in_lesion[ok].median()):.0%} (median); "
                 f"marker larger for {frac:.0%} of {int(ok.sum())} marked pneumonia test images",
        "meaning": "The accuracy on the confounded split is high because the model reads the corner marker, not the "
                   f"lung: on the clean split it scores {acc['test_clean']['accuracy']:.0%}.",
        "status": "warn" if frac > 0.5 else "ok", "figure_png": None})
    context["trust"].insert(1, {
        "name": "shortcut: who taught it",
        "value": f"{float(helpful_marked):.0%} of the top-{k} helpful training images carry the marker and the "
                 f"pneumonia label (base rate {base_rate:.0%})",
        "meaning": "Influence traces the shortcut back to the training images that carry it.", "status": "info",
        "figure_png": None})
    write_report(context, out / "report.html")
    summary = {
        "accuracy": acc, "training": info,
        "gradcam_mass": {"marker_median": float(in_marker[ok].median()), "lesion_median": float(in_lesion[ok].median()),
                         "fraction_marker_gt_lesion": frac, "n": int(ok.sum())},
        "helpful_marker_fraction": float(helpful_marked), "marker_base_rate": base_rate,
        "seconds": time.perf_counter() - t0,
    }
    write_json(out / "summary.json", summary)
    _say(f"done in {summary['seconds']:.0f} s: {out}/report.html, {out}/explain/explanations.png, {out}/summary.json")
    return summary
