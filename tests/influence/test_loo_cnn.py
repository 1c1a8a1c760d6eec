"""Koh & Liang's protocol on a small CNN: exact influence against leave-one-out.

The CNN (Conv 1->8 -> act -> Conv 8->16 -> act -> global average pool -> Linear 16->10,
1,418 parameters) is trained on the first 500 digits with Adam, then polished in float64
(Newton) on ``J = mean CE + (l2/2)||theta||^2``. The 3 test images with the highest loss
at ``theta_hat`` are fixed before any influence is computed; for each, the top 30 training
points by ``|influence|`` are left out one at a time and the model retrained warm-started
(the retrains shared between test images are done once, each gives the change of all
three test losses).

* tanh (as Koh & Liang's CNN): the Hessian exists everywhere, the polish reaches
  ``||grad J|| <= 1e-9`` and every retrain converges, so LOO measures the response to the
  removal rather than optimiser noise.
* ReLU, reported as it is: at ``l2 = 0.01`` Adam drives this CNN to the constant network
  (10 % accuracy; bench/influence.py --loo shows it), so it runs at ``l2 = 1e-3``, where
  the Newton polish stalls near ``||grad J|| ~ 1e-2`` (piecewise curvature) and the
  retrains stop at their step limit.
"""

import time
import warnings

import pytest
import torch

import whylens
from whylens.influence import koh_liang_study
from whylens.influence.loo import polish

L2 = 0.01

def _protocol(digits, activation: str, l2: float, max_iter: int):
    """Train, polish, pick the 3 highest-loss test images, score, retrain; print and return."""
    tr, te = digits
    train = tr[:500]
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = whylens.build_model("cnn", in_channels=1, num_classes=10, widths=(8, 16), activation=activation)
    assert sum(p.numel() for p in model.parameters()) == 1418
    whylens.train(model, train, l2=l2, method="adam", epochs=200, lr=1e-2, polish=100, progress=False)
    # Gauss-Newton preconditioning: cheap to build, and the polish starts near the optimum.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a stalled polish warns; the figures below say it
        model64, grad_norm = polish(model, train, l2, preconditioner="gauss_newton", progress=False)
    trained = time.perf_counter() - t0

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stalled retrains warn; the figures below say it
        st = koh_liang_study(model64, train, te, l2, max_iter=max_iter)
    inf, res, damping, test_loss = st.influence, st.loo, st.damping, st.test_loss
    print(f"\n{activation} CNN (1,418 params, 500 digits, l2 {l2:g}): ||grad J|| {grad_norm:.1e}, accuracy "
          f"{whylens.accuracy(model64, te):.3f}, Hessian eigenvalues [{inf.info['min_eigenvalue']:.2e}, "
          f"{inf.info['max_eigenvalue']:.2f}], damping {damping:.2e}")
    print(f"  train + polish {trained:.1f} s, exact influence fit {inf.timings['curvature']:.1f} s")
    print(f"  {len(st.union)} retrains in {res.seconds:.1f} s ({int(res.converged.sum())} converged), Newton "
          f"steps {res.iterations.min()}-{res.iterations.max()}, largest ||grad J_-j|| "
          f"{float(res.grad_norms.max()):.1e}")
    for a in st.per_test:
        print(f"  test {a['test']} (loss {float(test_loss[a['test']]):.3f}): Pearson {a['pearson']:.3f}  "
              f"Spearman {a['spearman']:.3f}  slope {a['slope']:.3f}  through origin {a['slope_origin']:.3f}")
    print(f"  mean Pearson {st.mean_pearson:.3f}")
    return grad_norm, inf, res, st.per_test, st.mean_pearson


@pytest.mark.slow
def test_koh_liang_protocol_on_tanh_cnn(digits):
    grad_norm, inf, res, per_test, mean = _protocol(digits, "tanh", L2, max_iter=50)
    for a in per_test:
        assert a["spearman"] >= 0.7
        assert 0.8 <= a["slope"] <= 1.25
    assert grad_norm <= 1e-9
    assert inf.info["min_eigenvalue"] > 0  # a real minimum: the retrains are well posed
    assert bool(res.converged.all())
    assert mean >= 0.8


@pytest.mark.slow
def test_koh_liang_protocol_on_relu_cnn(digits):
    """The same protocol on the ReLU CNN, printed for the record. Measured in this test (one
    thread): ||grad J|| 9.9e-3 after the polish, H indefinite (lambda_min -3.5e-3, damping
    3.9e-3), 0/59 retrains converged in 10 Newton steps, Pearson 0.775 / 0.708 / 0.739 (mean
    0.741), Spearman 0.59-0.76, slopes 0.29-0.42 (bench/influence.py --loo on two threads:
    mean Pearson 0.774): the ranking survives, the scale does not. Asserted: that this is not
    the tanh case (the polish does not reach a stationary point) and that influence still
    ranks the LOO changes (Spearman > 0.3 for each test image), which a sign or indexing
    error would break.
    """
    grad_norm, inf, res, per_test, mean = _protocol(digits, "relu", 1e-3, max_iter=10)
    assert grad_norm > 1e-6
    for a in per_test:
        assert a["spearman"] > 0.3
