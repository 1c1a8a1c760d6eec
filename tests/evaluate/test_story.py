"""The demo's story, measured: a shortcut model looks at the marker; a clean model at the lesion."""

import pytest
import torch

import whylens
from whylens.commands import split_accuracies, train_reference
from whylens.evaluate import mass_inside, pointing_game


@pytest.mark.slow
def test_shortcut_cnn_looks_at_the_marker(xrays, xray_shortcut_cnn):
    acc = split_accuracies(xray_shortcut_cnn, xrays)
    conf, clean = acc["test_confounded"]["accuracy"], acc["test_clean"]["accuracy"]
    test = xrays["test_confounded"]
    sick = (test.labels == 1) & test.extras["marker"].bool()
    cams = whylens.explain(xray_shortcut_cnn, test.images[sick], "gradcam", target=1)
    in_marker = mass_inside(cams, test.extras["marker_mask"][sick])
    in_lesion = mass_inside(cams, test.masks[sick])
    ok = torch.isfinite(in_marker) & torch.isfinite(in_lesion)
    frac = float((in_marker[ok] > in_lesion[ok]).float().mean())
    print(f"accuracy confounded {conf:.3f}, clean {clean:.3f}; Grad-CAM mass on {int(ok.sum())} marked pneumonia "
          f"images: marker median {in_marker[ok].median():.3f}, lesion median {in_lesion[ok].median():.3f}; "
          f"marker > lesion for {frac:.0%}")
    assert conf > 0.85 and conf - clean > 0.2
    assert frac > 0.5


@pytest.mark.slow
def test_pointing_game_hits_the_lesion_without_the_shortcut():
    """Trained without the marker, the model must use the opacity: the peak of its exact attribution
    (Gradient x Input of a logistic regression) falls on the planted lesion."""
    from whylens.data.synthetic import synthetic_xrays
    s = synthetic_xrays(n_train=400, n_test=160, seed=0, marker=False)
    te = s["test_clean"]
    sick = te.labels == 1
    model, _ = train_reference("logistic", s["train"], seed=0, progress=False)
    hits = pointing_game(whylens.explain(model, te.images[sick], "gradient_x_input", target=1), te.masks[sick])
    acc = split_accuracies(model, {"clean": te})["clean"]["accuracy"]
    print(f"logistic regression without the shortcut: clean accuracy {acc:.3f}, pointing game "
          f"{float(hits.float().mean()):.0%} of {int(sick.sum())} pneumonia images")
    assert float(hits.float().mean()) >= 0.8
