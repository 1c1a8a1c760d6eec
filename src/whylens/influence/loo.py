"""Leave-one-out retraining: the naive ground truth that influence functions approximate.

Training minimises the mean objective (``whylens.train``)

    J(theta) = (1/n) sum_i L(z_i, theta) + (lambda/2) ||theta||^2.

Removing the training point ``z_j`` gives

    J_{-j}(theta) = (1/(n-1)) sum_{i != j} L(z_i, theta) + (lambda/2) ||theta||^2,

the same ``lambda`` and the MEAN over the ``n - 1`` points that remain, so that removing
a point is exactly the upweighting ``epsilon = -1/n`` of its loss plus its share of the
L2 term (``shared/NOTES.md``). :func:`leave_one_out` minimises ``J`` and each ``J_{-j}``
to a small gradient norm, in float64, and returns the actual change of every test
loss ``Delta L_test = L(z_test, theta_{-j}) - L(z_test, theta_hat)``. Influence predicts
``Delta L_test ~= -scores / n`` (:func:`loo_agreement` compares the two).

The solver is a Newton method whose directions come from preconditioned conjugate
gradients on exact Hessian-vector products, with an Armijo line search. The
preconditioner (the Hessian or Gauss-Newton matrix at ``theta_hat``) and the dtype of the
Hessian-vector products only change how fast it gets there: convergence is judged by
the float64 gradient norm of ``J_{-j}`` itself, which :class:`LOOResult` reports for
every retrain, so the answer is the minimiser whichever path led to it. Each retrain
starts from ``theta_hat``, so on a non-convex model it finds the minimum next to it.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call, grad, grad_and_value, vjp, vmap
from tqdm.auto import tqdm

from ..data.imageset import as_tensors
from ..errors import check
from ..outputs import check_labels, class_score, loss_for, margin, num_classes_of
from ..stats import pearson, spearman
from ..train import lbfgs

#: test-side measurements: the loss, the margin ``z_y - max_{c!=y} z_c``, the label's logit
MEASURES = ("loss", "margin", "logit")


def _vector(x, argument: str) -> torch.Tensor:
    x = torch.as_tensor(x).detach().to(torch.float64).flatten()
    check(x.numel() >= 2, f"{argument}: expected at least 2 values, got {x.numel()}")
    check(bool(torch.isfinite(x).all()), f"{argument}: contains NaN or inf")
    return x


def loo_agreement(predicted, actual) -> dict:
    """How well predicted changes of a test measure match leave-one-out retraining.

    ``predicted`` and ``actual`` have the same number of entries (both are flattened), e.g.
    ``predicted = -scores[t, remove] / n`` and ``actual = LOOResult.delta[:, t]``.

    Returns a dict with ``pearson``, ``spearman``, ``slope`` and ``intercept`` (least
    squares ``actual ~= slope * predicted + intercept``), ``slope_origin`` (least squares
    through the origin, ``sum(p a) / sum(p^2)``) and ``n``. A slope near 1 means the
    predictions have the right scale as well as the right order.
    """
    p, a = _vector(predicted, "predicted"), _vector(actual, "actual")
    check(p.shape == a.shape, f"actual: expected {p.numel()} values to match predicted, got {a.numel()}")
    pc = p - p.mean()
    var = float(pc @ pc)
    slope = float(pc @ (a - a.mean())) / var if var > 0 else float("nan")
    pp = float(p @ p)
    return {
        "pearson": pearson(p, a),
        "spearman": spearman(p, a),
        "slope": slope,
        "intercept": float(a.mean()) - slope * float(p.mean()) if var > 0 else float("nan"),
        "slope_origin": float(p @ a) / pp if pp > 0 else float("nan"),
        "n": int(p.numel()),
    }


# -- the objective as a function of one flat float64 parameter vector -----------------

class _Objective:
    """``F(theta; w) = sum_i w_i L(z_i, theta) + (lambda/2)||theta||^2`` over a flat ``theta``.

    With ``w_i = 1/n`` it is ``J``; with ``w_j = 0`` and ``w_i = 1/(n-1)`` it is ``J_{-j}``.
    The model runs in eval mode (fixed BatchNorm statistics), as in ``whylens.train``.
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, l2: float,
                 chunk_size: int, dtype: torch.dtype):
        self.model = model
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shapes = [params[n].shape for n in self.names]
        self.sizes = [params[n].numel() for n in self.names]
        self.buffers = {n: b.to(dtype) if b.is_floating_point() else b
                        for n, b in model.named_buffers()}
        self.frozen = {n: p.detach().to(dtype) for n, p in params.items() if not p.requires_grad}
        self.images = images.to(dtype)
        self.labels = labels
        self.l2 = float(l2)
        self.dtype = dtype
        self.loss = loss_for(model)
        n = images.shape[0]
        self.slices = [slice(s, min(n, s + chunk_size)) for s in range(0, n, chunk_size)]

    def unflatten(self, theta: torch.Tensor) -> dict:
        return {n: c.view(s) for n, c, s in zip(self.names, theta.split(self.sizes), self.shapes)}

    def logits(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        state = {**self.unflatten(theta), **self.frozen, **self.buffers}
        return functional_call(self.model, state, (x,))

    def _chunk(self, theta, sl, w):
        data = (self.logits(theta, self.images[sl]), self.labels[sl])
        return (self.loss(*data) * w[sl]).sum()

    def _reg(self, theta):
        return 0.5 * self.l2 * (theta * theta).sum()

    def value_and_grad(self, theta: torch.Tensor, w: torch.Tensor):
        theta, w = theta.to(self.dtype), w.to(self.dtype)
        g, f = grad_and_value(self._reg)(theta)
        for sl in self.slices:
            gc, fc = grad_and_value(self._chunk)(theta, sl, w)
            g, f = g + gc, f + fc
        return float(f), g.detach().to(torch.float64)

    def value(self, theta: torch.Tensor, w: torch.Tensor) -> float:
        theta, w = theta.to(self.dtype), w.to(self.dtype)
        with torch.no_grad():
            return float(self._reg(theta) + sum(self._chunk(theta, sl, w) for sl in self.slices))

    def hvp_operator(self, theta: torch.Tensor, w: torch.Tensor):
        """``v -> H v`` with ``H`` the Hessian of ``F`` at ``theta`` (linearised once, reused)."""
        theta, w = theta.to(self.dtype), w.to(self.dtype)
        pulls = [vjp(lambda t, sl=sl: grad(self._chunk)(t, sl, w), theta)[1] for sl in self.slices]
        l2, dtype = self.l2, self.dtype

        def apply(v: torch.Tensor) -> torch.Tensor:
            vv = v.to(dtype)
            out = l2 * vv
            for pull in pulls:
                out = out + pull(vv)[0]
            return out.to(v.dtype)
        return apply

    def gauss_newton(self, theta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``G = sum_i w_i J_iᵀ (d²L/dz²) J_i + lambda I`` with ``J_i = dz_i/dtheta``, dense ``(P, P)``."""
        theta, w = theta.to(self.dtype), w.to(self.dtype)
        p = theta.numel()
        out = torch.eye(p, dtype=self.dtype) * self.l2
        loss = self.loss

        def one(x, y):
            jac = torch.func.jacrev(lambda t: self.logits(t, x[None])[0])(theta)
            z = self.logits(theta, x[None])[0]
            # reverse-over-reverse: no forward mode (whose first use loads jit decompositions)
            a = torch.func.jacrev(torch.func.jacrev(lambda zz: loss(zz[None], y[None]).sum()))(z)
            return jac, a

        for sl in self.slices:
            jac, a = vmap(one)(self.images[sl], self.labels[sl])
            left = (jac * w[sl, None, None]).flatten(0, 1)
            out += left.T @ torch.bmm(a, jac).flatten(0, 1)
        return out


def _dense(apply, p: int, dtype) -> torch.Tensor:
    """The matrix of the linear map ``apply`` by its action on each basis vector."""
    eye = torch.eye(p, dtype=dtype)
    return torch.stack([apply(eye[k]) for k in range(p)], 1)


def _inverse_operator(matrix: torch.Tensor):
    """``v -> |M|⁺ v`` from the eigendecomposition of symmetric ``M``, small eigenvalues floored.

    Taking absolute values and a floor keeps the preconditioner positive definite where
    ``M`` (a Hessian of a non-convex model) is not.
    """
    m = 0.5 * (matrix + matrix.T)
    evals, evecs = torch.linalg.eigh(m)
    top = float(evals.abs().max())
    inv = 1.0 / evals.abs().clamp_min(max(top * 1e-10, 1e-300))
    return (lambda v: evecs @ (inv * (evecs.T @ v))), float(evals.min()), top


def _pcg(apply, b: torch.Tensor, precond, rtol: float, maxiter: int):
    """Preconditioned conjugate gradients for ``H d = b``; stops at negative curvature.

    Returns ``(d, iterations)``. When ``pᵀHp <= 0`` appears (an indefinite Hessian) it
    returns the iterate so far (or the preconditioned gradient if none), which is
    still a descent direction for the line search.
    """
    d = torch.zeros_like(b)
    r = b.clone()
    z = precond(r)
    p = z.clone()
    rz = float(r @ z)
    bnorm = float(b.norm())
    for it in range(1, maxiter + 1):
        hp = apply(p)
        curv = float(p @ hp)
        if curv <= 0:
            return (d if it > 1 else z), it
        alpha = rz / curv
        d = d + alpha * p
        r = r - alpha * hp
        if float(r.norm()) <= rtol * bnorm:
            return d, it
        z = precond(r)
        rz_new = float(r @ z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return d, maxiter


@dataclass
class _Solve:
    theta: torch.Tensor
    grad_norm: float
    iterations: int
    cg_iterations: int
    converged: bool


def _newton(obj: _Objective, hobj: _Objective, theta0: torch.Tensor, w: torch.Tensor, precond,
            tol: float, max_iter: int, cg_maxiter: int, refresh=None) -> _Solve:
    """Minimise ``F(.; w)`` from ``theta0`` until ``||grad F||_2 <= tol`` (or ``max_iter`` steps).

    ``refresh(theta)``, when given, rebuilds the preconditioner at ``theta`` after a step
    whose solve took many CG iterations (a preconditioner from far away has gone stale).
    """
    theta = theta0.clone()
    f, g = obj.value_and_grad(theta, w)
    gn = float(g.norm())
    cg_total = 0
    it = 0
    while gn > tol and it < max_iter:
        it += 1
        # Eisenstat-Walker forcing: loose solves far away, tight ones near the end.
        rtol = min(0.1, max(math.sqrt(gn), 1e-8))
        d, k = _pcg(hobj.hvp_operator(theta, w), -g, precond, rtol, cg_maxiter)
        cg_total += k
        stale = refresh is not None and k > 25
        slope = float(g @ d)
        if slope >= 0:  # not a descent direction: fall back on the preconditioned gradient
            d = -precond(g)
            slope = float(g @ d)
        # Rounding slack: near the optimum the decrease is below float64's resolution of f.
        slack = 1e-13 * max(1.0, abs(f))
        # The full step is nearly always taken: evaluate the gradient with it, once.
        step, accepted = 1.0, False
        f_new, g_new = obj.value_and_grad(theta + d, w)
        for _ in range(40):
            if f_new <= f + 1e-4 * step * slope + slack:
                accepted = True
                break
            step *= 0.5
            f_new, g_new = obj.value(theta + step * d, w), None
        if not accepted:
            break
        theta = theta + step * d
        f, g = (f_new, g_new) if g_new is not None else obj.value_and_grad(theta, w)
        gn = float(g.norm())
        if stale and gn > tol:
            precond = refresh(theta)
    return _Solve(theta, gn, it, cg_total, gn <= tol)


# -- public API -----------------------------------------------------------------------

@dataclass
class LOOResult:
    """Leave-one-out retraining, one row per removed training point.

    Attributes:
        remove: the removed training indices, in order (``R`` of them).
        measure: the test measure ``m``: ``"loss"`` (the model's loss, cross-entropy),
            ``"margin"`` (``z_y - max_{c!=y} z_c``) or ``"logit"`` (``z_y``).
        base: ``(n_test,)`` ``m(z_test, theta_hat)`` at the full-data optimum.
        retrained: ``(R, n_test)`` ``m(z_test, theta_{-j})`` for each removed ``j``.
        delta: ``(R, n_test)`` ``retrained - base``, the actual change caused by removing
            ``z_j``. Influence predicts ``delta[r, t] ~= -scores[t, remove[r]] / n``.
        grad_norms: ``(R,)`` final ``||grad J_{-j}||_2`` of each retrain.
        converged: ``(R,)`` bool, ``grad_norms <= tol``.
        iterations: ``(R,)`` Newton steps each retrain took.
        base_grad_norm: ``||grad J(theta_hat)||_2`` after polishing.
        model: the polished float64 copy of the model at ``theta_hat`` (eval mode).
        tol: the gradient-norm tolerance.
        hessian_min_eig: smallest eigenvalue of the Hessian of ``J`` at ``theta_hat`` when
            the preconditioner was that Hessian (NaN otherwise).
        seconds: wall time of the whole call.
    """

    remove: list[int]
    measure: str
    base: torch.Tensor
    retrained: torch.Tensor
    delta: torch.Tensor
    grad_norms: torch.Tensor
    converged: torch.Tensor
    iterations: torch.Tensor
    base_grad_norm: float
    model: nn.Module = field(repr=False)
    tol: float = 1e-9
    hessian_min_eig: float = float("nan")
    seconds: float = 0.0


def _measure(obj: _Objective, theta: torch.Tensor, images, labels, measure: str) -> torch.Tensor:
    with torch.no_grad():
        z = obj.logits(theta, images)
        fn = {"loss": obj.loss, "margin": margin, "logit": class_score}[measure]
        return fn(z, labels).double()


def _check_options(tol, max_iter, preconditioner) -> None:
    check(isinstance(tol, (int, float)) and tol > 0, f"tol: expected a positive number, got {tol!r}")
    check(isinstance(max_iter, int) and max_iter >= 1, f"max_iter: expected an integer >= 1, got {max_iter!r}")
    if isinstance(preconditioner, torch.Tensor) or callable(preconditioner):
        return
    check(preconditioner in PRECONDITIONERS, f"preconditioner: expected one of {PRECONDITIONERS}, "
                                             f"a (P, P) tensor or a function, got {preconditioner!r}")


def _setup(model, train, l2, chunk_size, hvp_dtype):
    check(isinstance(model, nn.Module), f"model: expected a torch.nn.Module, got {type(model).__name__}")
    check(isinstance(l2, (int, float)) and not isinstance(l2, bool) and l2 >= 0,
          f"l2: expected a number >= 0 (the lambda of J), got {l2!r}")
    check(hvp_dtype in (torch.float32, torch.float64), f"hvp_dtype: expected float32 or float64, got {hvp_dtype}")
    images, labels = as_tensors(train, "train")
    model64 = copy.deepcopy(model).double().eval()
    check(any(p.requires_grad for p in model64.parameters()), "model: has no trainable parameters")
    with torch.no_grad():
        k = num_classes_of(model64(images[:1].double()))
    labels = check_labels(labels, k, "train labels")
    obj = _Objective(model64, images, labels, l2, chunk_size, torch.float64)
    hobj = obj if hvp_dtype == torch.float64 else _Objective(model64, images, labels, l2, chunk_size, hvp_dtype)
    return model64, obj, hobj, _flat(model64), k


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad])


def _write_back(model64: nn.Module, theta: torch.Tensor) -> None:
    with torch.no_grad():
        trainable = [p for p in model64.parameters() if p.requires_grad]
        for p, c in zip(trainable, theta.split([p.numel() for p in trainable])):
            p.copy_(c.view_as(p))


PRECONDITIONERS = ("auto", "hessian", "gauss_newton", "none")


def _preconditioner(kind, obj: _Objective, hobj: _Objective, theta, w):
    """``(v -> M^-1 v, lambda_min)`` for the chosen ``M`` (``lambda_min`` only for the Hessian)."""
    p = theta.numel()
    if callable(kind):
        return (lambda v: torch.as_tensor(kind(v)).to(torch.float64).reshape(p)), float("nan")
    if isinstance(kind, torch.Tensor):
        check(kind.shape == (p, p), f"preconditioner: expected a ({p}, {p}) matrix, got {tuple(kind.shape)}")
        return _inverse_operator(kind.detach().double())[0], float("nan")
    if kind == "auto":
        kind = "hessian" if p <= 2000 else ("gauss_newton" if p <= 6000 else "none")
    if kind == "none":
        return (lambda v: v), float("nan")
    if kind == "gauss_newton":
        return _inverse_operator(obj.gauss_newton(theta, w))[0], float("nan")
    inv, lo, _ = _inverse_operator(_dense(hobj.hvp_operator(theta, w), p, hobj.dtype).double())
    return inv, lo


def _polish(model64, obj, hobj, theta, tol, max_iter, lbfgs_iter, preconditioner, cg_maxiter,
            chunk_size, progress, need_precond):
    """Polish ``theta`` to ``||grad J|| <= tol``; return ``(theta_hat, grad_norm, precond, min_eig)``."""
    n = obj.images.shape[0]
    w_full = torch.full((n,), 1.0 / n, dtype=torch.float64)
    _, g = obj.value_and_grad(theta, w_full)
    gn = float(g.norm())
    check(math.isfinite(gn), "model: the objective or its gradient is not finite at the given weights")
    # L-BFGS first: far from the optimum of a non-convex model the Hessian can be indefinite
    # and Newton would crawl; near it, Newton finishes in a few steps.
    if gn > 1e3 * tol and lbfgs_iter > 0:
        _write_back(model64, theta)
        lbfgs(model64, obj.images, obj.labels, obj.l2, max_iter=lbfgs_iter, tol=max(tol, 1e-7),
              chunk_size=chunk_size, progress=progress, desc="polish (L-BFGS)")
        model64.zero_grad(set_to_none=True)
        theta = _flat(model64)
        _, g = obj.value_and_grad(theta, w_full)
        gn = float(g.norm())
    precond, min_eig = None, float("nan")
    if gn > tol or need_precond:
        precond, min_eig = _preconditioner(preconditioner, obj, hobj, theta, w_full)
    if gn > tol:
        solve = _newton(obj, hobj, theta, w_full, precond, tol, max_iter, cg_maxiter,
                        refresh=lambda t: _preconditioner(preconditioner, obj, hobj, t, w_full)[0])
        theta, gn = solve.theta, solve.grad_norm
        if need_precond and isinstance(preconditioner, str):
            # The retrains start at theta_hat: give them a preconditioner built there.
            precond, min_eig = _preconditioner(preconditioner, obj, hobj, theta, w_full)
    _write_back(model64, theta)
    if gn > tol:
        warnings.warn(f"polish: the full-data optimum reached ||grad J|| = {gn:.2e}, above "
                      f"tol={tol:g}; leave-one-out changes are measured from there", stacklevel=3)
    return theta, gn, precond, min_eig


def polish(model: nn.Module, train, l2: float, *, tol: float = 1e-9, max_iter: int = 100,
           lbfgs_iter: int = 200, preconditioner="auto", hvp_dtype: torch.dtype = torch.float32,
           cg_maxiter: int = 200, chunk_size: int = 2048, progress: bool = True) -> tuple[nn.Module, float]:
    """``(model64, grad_norm)``: a float64 copy of ``model`` at the optimum ``theta_hat`` of ``J``.

    ``J(theta) = (1/n) sum_i L(z_i, theta) + (l2/2)||theta||^2`` is minimised from the given
    weights, as in step 1 of :func:`leave_one_out`, until ``||grad J||_2 <= tol``; the
    returned ``grad_norm`` is the final ``||grad J(theta_hat)||_2``. ``model`` is not
    modified. Fit influence on ``model64`` and pass ``model64`` to :func:`leave_one_out`,
    so that the scores and the retrains refer to the same ``theta_hat``.
    """
    _check_options(tol, max_iter, preconditioner)
    model64, obj, hobj, theta, _ = _setup(model, train, l2, chunk_size, hvp_dtype)
    _, gn, _, _ = _polish(model64, obj, hobj, theta, tol, max_iter, lbfgs_iter, preconditioner,
                          cg_maxiter, chunk_size, progress, need_precond=False)
    return model64, gn


def leave_one_out(model: nn.Module, train, remove, test, l2: float, *, measure: str = "loss",
                  max_iter: int = 50, tol: float = 1e-9, lbfgs_iter: int = 200,
                  preconditioner="auto", hvp_dtype: torch.dtype = torch.float32,
                  cg_maxiter: int = 200, chunk_size: int = 2048, progress: bool = True) -> LOOResult:
    """Retrain without each training point in ``remove``; measure the change on ``test``.

    1. A float64 copy of ``model`` is polished to the optimum ``theta_hat`` of
       ``J(theta) = (1/n) sum_i L(z_i) + (l2/2)||theta||^2``: up to ``lbfgs_iter`` full-batch
       L-BFGS iterations (skipped when already near it), then Newton steps until
       ``||grad J||_2 <= tol``. ``model`` itself is not modified.
    2. For each ``j`` in ``remove``, ``J_{-j}(theta) = (1/(n-1)) sum_{i!=j} L(z_i) +
       (l2/2)||theta||^2`` is minimised by Newton's method warm-started from ``theta_hat``
       until ``||grad J_{-j}||_2 <= tol`` (or ``max_iter`` steps).
    3. ``delta[r, t] = m(z_test_t, theta_{-remove[r]}) - m(z_test_t, theta_hat)``, with ``m``
       the test ``measure``. Influence predicts ``delta[r, t] ~= -scores[t, remove[r]] / n``
       (negative scores = helpful: removing the point raises the test loss).

    Args:
        model: the trained model (any dtype); a float64 copy is retrained.
        train, test: :class:`~whylens.ImageSet` or ``(images, labels)`` pairs.
        remove: training indices to leave out, one retrain each.
        l2: the ``lambda`` the model was trained with (the same number influence uses).
        measure: ``"loss"``, ``"margin"`` or ``"logit"`` (see :class:`LOOResult`).
        tol: stopping tolerance on the L2 norm of the float64 gradient.
        preconditioner: ``M`` in the conjugate-gradient solves: ``"hessian"`` (the dense
            Hessian of ``J`` at ``theta_hat`` from ``P`` Hessian-vector products),
            ``"gauss_newton"``, ``"none"``, ``"auto"`` (Hessian up to 2,000 parameters,
            Gauss-Newton up to 6,000, none above), a ``(P, P)`` tensor approximating the
            Hessian, or a function ``v (P,) -> M^-1 v`` (e.g. an influence solver's
            ``(H + d I)^-1``, already computed). It must be positive definite; it changes
            the speed only.
        hvp_dtype: dtype of the Hessian-vector products inside the solves (float32 is
            several times faster for convolutions on CPU); the objective, its gradient
            and the stopping test are always float64.
        chunk_size: training items per forward pass. The Hessian-vector products keep
            one autograd graph per chunk while a Newton step lasts, so memory grows with
            ``n``: this ground truth is meant for small models and data sets.
    Returns a :class:`LOOResult`; retrains that stopped above ``tol`` are flagged in
    ``converged`` and a warning says how many.
    """
    t0 = time.perf_counter()
    check(measure in MEASURES, f"measure: expected one of {MEASURES}, got {measure!r}")
    _check_options(tol, max_iter, preconditioner)
    model64, obj, hobj, theta, k = _setup(model, train, l2, chunk_size, hvp_dtype)
    n = obj.images.shape[0]
    check(n >= 2, "train: expected at least 2 training images to leave one out")
    idx = torch.as_tensor(remove)
    check(idx.dim() <= 1 and idx.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8),
          "remove: expected a list of integer training indices")
    remove = [int(j) for j in idx.reshape(-1)]
    check(len(remove) > 0, "remove: expected at least one training index")
    bad = [j for j in remove if not 0 <= j < n]
    check(not bad, f"remove: indices {bad[:5]} out of range [0, {n - 1}]")
    test_images, test_labels = as_tensors(test, "test")
    test_images = test_images.double()
    test_labels = check_labels(test_labels, k, "test labels")

    # 1. theta_hat, and the preconditioner every retrain reuses.
    theta_hat, base_gn, precond, min_eig = _polish(model64, obj, hobj, theta, tol, max_iter,
                                                   lbfgs_iter, preconditioner, cg_maxiter,
                                                   chunk_size, progress, need_precond=True)
    base = _measure(obj, theta_hat, test_images, test_labels, measure)

    # 2. One retrain per removed index, each from theta_hat.
    rows, norms, conv, iters = [], [], [], []
    bar = tqdm(remove, desc="leave-one-out", disable=not progress, unit="retrain")
    for j in bar:
        w = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
        w[j] = 0.0
        s = _newton(obj, hobj, theta_hat, w, precond, tol, max_iter, cg_maxiter)
        rows.append(_measure(obj, s.theta, test_images, test_labels, measure))
        norms.append(s.grad_norm)
        conv.append(s.converged)
        iters.append(s.iterations)
        bar.set_postfix(grad=f"{s.grad_norm:.1e}")
    retrained = torch.stack(rows)
    converged = torch.tensor(conv)
    if not bool(converged.all()):
        warnings.warn(f"leave_one_out: {int((~converged).sum())} of {len(remove)} retrains stopped "
                      f"above tol={tol:g} (largest ||grad J_-j|| = {max(norms):.2e})", stacklevel=2)
    return LOOResult(remove=remove, measure=measure, base=base, retrained=retrained,
                     delta=retrained - base[None], grad_norms=torch.tensor(norms, dtype=torch.float64),
                     converged=converged, iterations=torch.tensor(iters), base_grad_norm=base_gn,
                     model=model64, tol=float(tol), hessian_min_eig=min_eig,
                     seconds=time.perf_counter() - t0)
