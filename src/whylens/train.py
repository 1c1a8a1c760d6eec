"""Deterministic training with the objective stated exactly.

Every model in whylens is trained to minimise the *mean* regularised objective

    J(theta) = (1/n) sum_i L(z_i, theta) + (l2 / 2) * ||theta||^2,

with ``L`` the model's loss (:func:`whylens.outputs.loss_for`: cross-entropy unless the
model defines its own, as the SVM does) and the
L2 term over every trainable parameter (biases included). Influence functions
(``whylens.influence``) differentiate exactly this ``J``, so the ``l2`` used here
must be the ``l2`` given to :class:`whylens.Influence`; it is stored in the saved
model's config. For BatchNorm models minibatch training uses batch statistics;
influence and this module's :func:`objective` use eval mode (running statistics).

Methods: full-batch L-BFGS with a strong-Wolfe line search (in float64, for
convex models: logistic regression, the SVM), or minibatch Adam/SGD with a seeded
shuffle for networks, optionally followed by full-batch L-BFGS "polishing" so
that the gradient of ``J`` is near zero (warm-started leave-one-out retraining
then measures the response to the removal, not optimiser noise).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .data.imageset import as_tensors
from .errors import check
from .modes import eval_mode
from .outputs import check_labels, loss_for, num_classes_of


@dataclass
class TrainResult:
    """What training did: the objective per epoch/iteration, the final ``J`` and ``||grad J||``."""

    method: str
    history: list[float] = field(default_factory=list)
    objective: float = float("nan")
    grad_norm: float = float("nan")
    seconds: float = 0.0


def l2_term(model: nn.Module, l2: float) -> torch.Tensor:
    """``(l2 / 2) * sum_p ||p||^2`` over trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not l2 or not params:
        return torch.zeros((), dtype=params[0].dtype if params else torch.float32)
    return 0.5 * l2 * sum((p * p).sum() for p in params)


def _chunks(n: int, size: int):
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def objective(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, l2: float = 0.0,
              chunk_size: int = 1024, backward: bool = False) -> torch.Tensor:
    """``J = mean_i L(z_i) + (l2/2)||theta||^2`` evaluated in chunks of ``chunk_size``.

    With ``backward=True`` the gradient of ``J`` is accumulated into ``.grad`` chunk
    by chunk (memory bounded by the chunk, not by ``n``) and the value is returned
    detached.
    """
    n = images.shape[0]
    dtype = next(model.parameters()).dtype
    total = torch.zeros((), dtype=dtype)
    for sl in _chunks(n, chunk_size):
        x = images[sl].to(dtype)
        part = loss_for(model)(model(x), labels[sl]).sum() / n
        if backward:
            part.backward()
            part = part.detach()
        total = total + part
    reg = l2_term(model, l2)
    if backward and reg.requires_grad:
        reg.backward()
        reg = reg.detach()
    return total + reg


def _grad_norm(model: nn.Module) -> float:
    g = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
    return float(torch.cat(g).norm()) if g else 0.0


def lbfgs(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, l2: float, *,
          max_iter: int = 500, tol: float = 1e-10, chunk_size: int = 1024, progress: bool = False,
          desc: str = "L-BFGS") -> TrainResult:
    """Minimise ``J`` by full-batch L-BFGS (strong Wolfe), in the model's current dtype.

    Stops when ``||grad J||_inf < tol`` or after ``max_iter`` iterations.
    """
    t0 = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=20, history_size=50, tolerance_grad=tol,
                            tolerance_change=1e-16, line_search_fn="strong_wolfe")
    result = TrainResult("lbfgs")

    def closure():
        opt.zero_grad(set_to_none=False)
        return objective(model, images, labels, l2, chunk_size, backward=True)

    bar = tqdm(total=max_iter, desc=desc, disable=not progress, leave=False, unit="it")
    done, previous = 0, float("inf")
    while done < max_iter:
        loss = float(opt.step(closure))
        state = opt.state[params[0]]
        steps = max(int(state.get("n_iter", done + 1)) - done, 1)
        done += steps
        bar.update(steps)
        result.history.append(loss)
        bar.set_postfix(J=f"{loss:.6g}")
        closure()
        gmax = max(float(p.grad.abs().max()) for p in params)
        # Stop at a stationary point, or once a whole L-BFGS call no longer lowers J (float64 floor):
        # spinning on at the floor costs time and changes nothing.
        if gmax < tol or previous - loss <= 1e-15 * max(abs(loss), 1.0):
            break
        previous = loss
    bar.close()
    opt.zero_grad(set_to_none=False)
    result.objective = float(objective(model, images, labels, l2, chunk_size, backward=True))
    result.grad_norm = _grad_norm(model)
    opt.zero_grad(set_to_none=True)
    result.seconds = time.perf_counter() - t0
    return result


def _default_method(model: nn.Module) -> str:
    return "lbfgs" if getattr(model, "convex", False) or type(model).__name__ == "LogisticRegression" \
        else "adam"


def train(model: nn.Module, data, *, l2: float = 1e-3, method: str = "auto", epochs: int = 30,
          lr: float = 1e-2, batch_size: int = 64, seed: int = 0, max_iter: int = 500,
          tol: float = 1e-10, polish: int = 0, float64: bool = True, chunk_size: int = 1024,
          progress: bool = True) -> TrainResult:
    """Train ``model`` in place to minimise ``J(theta) = mean_i L(z_i) + (l2/2)||theta||^2``.

    Args:
        data: an :class:`~whylens.ImageSet` or an ``(images, labels)`` pair.
        l2: the L2 coefficient ``lambda`` of ``J`` (the same number influence needs).
        method: ``"lbfgs"`` (full batch), ``"adam"``, ``"sgd"`` (minibatch, seeded
            shuffle) or ``"auto"`` (L-BFGS for convex models, Adam otherwise).
        polish: after Adam/SGD, run up to this many full-batch L-BFGS iterations.
        float64: run L-BFGS in float64 (then cast back), which lets it reach
            ``||grad J|| ~ 1e-9`` on convex models.
    Returns the :class:`TrainResult`; the model is left in eval mode.
    """
    images, labels = as_tensors(data, "data")
    check(len(images) > 0, "data: is empty; expected at least one training image")
    check(l2 >= 0, f"l2: expected a non-negative number, got {l2}")
    with torch.no_grad():
        k = num_classes_of(model(images[:1].to(next(model.parameters()).dtype)))
    labels = check_labels(labels, k, "labels")
    method = _default_method(model) if method == "auto" else method
    check(method in ("lbfgs", "adam", "sgd"), f"method: expected 'lbfgs', 'adam', 'sgd' or 'auto', got {method!r}")
    t0 = time.perf_counter()
    dtype0 = next(model.parameters()).dtype
    if method == "lbfgs":
        model.eval()
        if float64:
            model.double()
        try:
            result = lbfgs(model, images, labels, l2, max_iter=max_iter, tol=tol, chunk_size=chunk_size,
                           progress=progress, desc="train (L-BFGS)")
        finally:
            model.to(dtype0)
        result.seconds = time.perf_counter() - t0
        return result

    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr) if method == "adam" else torch.optim.SGD(params, lr=lr, momentum=0.9)
    result = TrainResult(method)
    n = len(images)
    bar = tqdm(range(epochs), desc=f"train ({method})", disable=not progress, unit="epoch")
    model.train()
    for _ in bar:
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for sl in _chunks(n, batch_size):
            idx = perm[sl]
            opt.zero_grad(set_to_none=True)
            loss = loss_for(model)(model(images[idx].to(dtype0)), labels[idx]).mean() + l2_term(model, l2)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        result.history.append(total / n)
        bar.set_postfix(J=f"{total / n:.4f}")
    model.eval()
    if polish:
        if float64:
            model.double()
        try:
            lbfgs(model, images, labels, l2, max_iter=polish, tol=tol, chunk_size=chunk_size,
                  progress=progress, desc="polish (L-BFGS)")
        finally:
            model.to(dtype0)
    model.zero_grad(set_to_none=True)
    result.objective = float(objective(model, images, labels, l2, chunk_size, backward=True))
    result.grad_norm = _grad_norm(model)
    model.zero_grad(set_to_none=True)
    result.seconds = time.perf_counter() - t0
    return result


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, chunk_size: int = 512) -> torch.Tensor:
    """Logits ``(N, K)`` in eval mode, in chunks; each module's train/eval flag is restored."""
    with eval_mode(model):
        dtype = next(model.parameters()).dtype
        return torch.cat([model(images[sl].to(dtype)) for sl in _chunks(len(images), chunk_size)])


def accuracy(model: nn.Module, data) -> float:
    """Fraction of items whose predicted class equals the label."""
    from .outputs import predicted_class
    images, labels = as_tensors(data, "data")
    return float((predicted_class(predict(model, images)) == labels).float().mean())
