"""``make demo``: the whole story on synthetic chest X-rays with a shortcut.

1. Build the synthetic set: a small marker token in a corner co-occurs with
   "pneumonia" in 95 % of training images.
2. Train the small CNN. Accuracy on the confounded test split (same co-occurrence)
   is near 100 %; on the clean split (marker independent of the label) it drops.
3. Explain pneumonia predictions: the heatmaps point at the marker, not at the
   opacity, and the Grad-CAM mass inside each region is measured and printed.
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
    _say(f"[1/3] synthetic chest X-rays: {n_train} train, {n_test} test per split, marker with 95 % of pneumonia")
    splits = synthetic_xrays(n_train=n_train, n_test=n_test, seed=seed, shortcut=0.95)
    train = splits["train"]

    _say("[2/3] training the small CNN (mean cross-entropy + L2)")
    model, info = train_reference("cnn", train, seed=seed, epochs=20 if quick else 30, progress=progress)
    save_model(model, out / "model", classes=train.classes, input_shape=tuple(train.images.shape[1:]),
               training=info, extra={"data": "synthetic-xrays"})
    acc = split_accuracies(model, {k: splits[k] for k in ("train", "test_confounded", "test_clean")})
    _say(f"      accuracy: confounded test {acc['test_confounded']['accuracy']:.3f}, "
         f"clean test {acc['test_clean']['accuracy']:.3f} (train {acc['train']['accuracy']:.3f})")

    _say("[3/3] where did it look? explaining pneumonia predictions on the confounded split")
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
    summary = {
        "accuracy": acc, "training": info,
        "gradcam_mass": {"marker_median": float(in_marker[ok].median()), "lesion_median": float(in_lesion[ok].median()),
                         "fraction_marker_gt_lesion": frac, "n": int(ok.sum())},
        "seconds": time.perf_counter() - t0,
    }
    write_json(out / "summary.json", summary)
    _say(f"done in {summary['seconds']:.0f} s: {out}/explain/explanations.png, {out}/summary.json")
    return summary
