import torch

from whylens import explain
from whylens.evaluate import deletion_insertion, perturbation_curve


def test_deletion_by_the_exact_attribution_drops_faster_than_random(digits, digits_logreg):
    """On logistic regression Gradient x Input is the exact contribution w_c * x of each pixel,
    so deleting pixels in its order must lower the class probability faster than random orders."""
    _, te = digits
    x = te.images[:60]
    attr = explain(digits_logreg, x, "gradient_x_input")
    res = deletion_insertion(digits_logreg, x, attr, steps=16, seed=0)
    print({k: round(v, 4) for k, v in res.items() if k != "curves"})
    assert res["deletion_auc"] < res["random_deletion_auc"] - 0.1
    assert res["insertion_auc"] > res["random_insertion_auc"] + 0.05
    d = res["curves"]["deletion"]
    # endpoints: nothing deleted is the model's own probability; everything deleted is the all-black image
    p = torch.softmax(digits_logreg(x), 1).max(1).values
    assert torch.allclose(d.scores[:, 0], p, atol=1e-6)
    black = torch.softmax(digits_logreg(torch.zeros_like(x)), 1).gather(1, p.new_zeros(60, dtype=torch.long)
                                                                      + digits_logreg(x).argmax(1)[:, None])[:, 0]
    assert torch.allclose(d.scores[:, -1], black, atol=1e-6)


def test_chunking_does_not_change_the_curve(digits, digits_logreg):
    _, te = digits
    x = te.images[:7]
    attr = explain(digits_logreg, x, "saliency")
    a = perturbation_curve(digits_logreg, x, attr, mode="insertion", steps=9, chunk_size=5)
    b = perturbation_curve(digits_logreg, x, attr, mode="insertion", steps=9, chunk_size=1000)
    assert torch.equal(a.scores, b.scores)
