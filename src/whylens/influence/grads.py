"""Per-sample gradients, Hessian-vector products and dense curvature, all with torch.func.

Notation: ``theta`` ``(p,)`` are the selected parameters (:class:`ModelFunction`), ``L`` the
model's per-sample training loss, ``n`` the number of training items and

    J(theta) = (1/n) sum_i L(z_i, theta) + (l2/2) ||theta||^2.

* :func:`per_sample_grads`: ``G[i] = grad_theta m(z_i, theta)`` ``(n, p)`` with ``m`` the loss (or
  another measure), as ``vmap(grad(m o functional_call))`` over chunks of ``chunk_size`` items.
* :func:`hvp`: ``H V`` for ``H = grad^2 J`` and ``V`` ``(p,)`` or ``(p, m)``, reverse-over-reverse
  (:class:`HessianOperator`), summed over data chunks.
* :func:`dense_hessian` / :func:`dense_gauss_newton`: the ``(p, p)`` matrices ``grad^2 J`` and
  ``(1/n) sum_i J_i^T H_out,i J_i + l2 I`` (``J_i = dz_i/dtheta`` the ``(K, p)`` Jacobian of the logits,
  ``H_out,i = d^2 L / dz^2``), the latter PSD for convex losses such as cross-entropy.

Nothing here loops over examples in Python; memory is bounded by the chunk sizes.
"""

from __future__ import annotations

import torch
from torch.func import grad, hessian, jvp, vjp, vmap
from tqdm.auto import tqdm

from ..data.imageset import as_tensors
from ..errors import check
from ..outputs import check_labels
from .functional import ModelFunction, eval_mode, measure_fn

DEFAULT_CHUNK = 256


def chunks(n: int, size: int):
    """Slices ``[0:size], [size:2 size], ...`` covering ``range(n)``."""
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def sample_grads(fn: ModelFunction, images: torch.Tensor, labels: torch.Tensor, measure: str = "loss",
                 chunk_size: int = DEFAULT_CHUNK, progress: bool = False, desc: str = "gradients",
                 theta: torch.Tensor | None = None) -> torch.Tensor:
    """``(n, p)`` rows ``grad_theta m(z_i, theta)`` (``m`` = ``measure``) at ``theta`` (default ``fn.theta``).

    The caller keeps the model in eval mode (see :func:`eval_mode`).
    """
    m = measure_fn(fn.model, measure)
    theta = fn.theta if theta is None else theta

    def one(t, x, y):
        return m(fn.logits(t, x[None]), y[None])[0]

    per_sample = vmap(grad(one), in_dims=(None, 0, 0))
    n = images.shape[0]
    out = torch.empty(n, fn.p, dtype=fn.dtype)
    for sl in tqdm(list(chunks(n, chunk_size)), desc=desc, disable=not progress, leave=False):
        out[sl] = per_sample(theta, images[sl].to(fn.dtype), labels[sl])
    return out


class HessianOperator:
    """``V (p,) or (p, m) -> H V`` with ``H = grad^2 [(1/N) sum_i L_i + (l2/2)||theta||^2]``.

    The sum runs over ``images``/``labels``; ``N`` is ``normaliser`` (default: their number), so
    a minibatch gives the minibatch estimate of ``H``. Reverse-over-reverse: per data chunk the
    gradient ``g_c = grad sum_{i in c} L_i`` is built once with ``create_graph=True`` and each
    column is one backward pass through it (``H v = grad (g_c^T v)``), vectorised over the
    chunk's items, and the ``m`` columns (one per test item in cg/lissa) go through one
    vmapped backward (``is_grads_batched``), not a Python loop. That is not free for
    convolutions on CPU: measured on the 5k CNN, 100 columns over 1,500 items took 29-32 s
    batched against 18-24 s as a loop (logistic regression: 0.042 s batched, 0.073 s loop);
    a model with an op that has no batching rule falls back to the loop. The chunk
    graphs are kept between calls while ``n <= cache_items`` (iterative solvers reuse them
    hundreds of times); above, they are rebuilt per call so memory stays at one chunk.
    """

    def __init__(self, fn: ModelFunction, images: torch.Tensor, labels: torch.Tensor, l2: float,
                 chunk_size: int = DEFAULT_CHUNK, theta: torch.Tensor | None = None,
                 normaliser: int | None = None, cache_items: int = 8192):
        self.fn, self.images, self.labels, self.l2 = fn, images, labels, float(l2)
        self.chunk_size = chunk_size
        self.theta = (fn.theta if theta is None else theta).detach().requires_grad_(True)
        self.n = int(images.shape[0])
        self.norm = float(normaliser or self.n)
        self.cache = self.n <= cache_items
        self._graphs: list[torch.Tensor] | None = None
        self.batched = True

    def _build(self):
        fn = self.fn
        with torch.enable_grad():
            for sl in chunks(self.n, self.chunk_size):
                x, y = self.images[sl].to(fn.dtype), self.labels[sl]
                loss = fn.loss(fn.logits(self.theta, x), y).sum()
                (g,) = torch.autograd.grad(loss, self.theta, create_graph=True)
                yield g

    def graphs(self):
        if not self.cache:
            return self._build()
        if self._graphs is None:
            self._graphs = list(self._build())
        return self._graphs

    def __call__(self, V: torch.Tensor) -> torch.Tensor:
        single = V.dim() == 1
        V = (V[:, None] if single else V).to(self.fn.dtype)
        out = torch.zeros_like(V)
        for g in self.graphs():
            if not g.requires_grad:  # the loss is linear in theta on this chunk
                continue
            if self.batched and V.shape[1] > 1:
                try:
                    (hv,) = torch.autograd.grad(g, self.theta, V.T, retain_graph=True,
                                                is_grads_batched=True)
                    out += hv.T
                    continue
                except RuntimeError:  # an op without a batching rule: columns one by one
                    self.batched = False
            for j in range(V.shape[1]):
                (hv,) = torch.autograd.grad(g, self.theta, V[:, j], retain_graph=True, allow_unused=True)
                if hv is not None:
                    out[:, j] += hv
        out = out / self.norm + self.l2 * V
        return out[:, 0] if single else out


def hvp_fn(fn: ModelFunction, images, labels, l2: float, chunk_size: int = DEFAULT_CHUNK,
           theta: torch.Tensor | None = None, normaliser: int | None = None) -> HessianOperator:
    """A :class:`HessianOperator` for ``grad^2 J`` on ``images``/``labels`` (see there)."""
    return HessianOperator(fn, images, labels, l2, chunk_size, theta, normaliser)


def parameter_groups(fn: ModelFunction) -> dict[str, slice]:
    """``{module name: slice of theta}``: the selected parameters grouped by the module owning them.

    A module's own parameters are adjacent in ``named_parameters()`` order, so each group is
    one contiguous slice of the flat ``theta``.
    """
    groups: dict[str, slice] = {}
    for name in fn.names:
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        sl = fn.offsets[name]
        prev = groups.get(owner)
        if prev is not None and prev.stop != sl.start:  # not adjacent after all: no groups
            return {}
        groups[owner] = sl if prev is None else slice(prev.start, sl.stop)
    return groups


def _columns(op: "HessianOperator", cols: torch.Tensor, progress: bool) -> torch.Tensor:
    """``(p, len(cols))``: the columns ``cols`` of ``sum_i grad^2 L_i`` (not yet divided by ``n``)."""
    p = op.fn.p
    out = torch.zeros(p, len(cols), dtype=op.fn.dtype)
    e = torch.zeros(p, dtype=op.fn.dtype)
    bar = tqdm(total=len(cols) * len(range(0, op.n, op.chunk_size)), desc="Hessian (exact)",
               disable=not progress, leave=False)
    # Data chunks outside, basis vectors inside: one chunk graph alive at a time.
    for g in op.graphs():
        for k, j in enumerate(cols.tolist()):
            e[j] = 1.0
            if g.requires_grad:
                (col,) = torch.autograd.grad(g, op.theta, e, retain_graph=True, allow_unused=True)
                if col is not None:
                    out[:, k] += col
            e[j] = 0.0
        bar.update(len(cols))
    bar.close()
    return out


def gauss_newton_vp(fn: ModelFunction, images, labels, v: torch.Tensor,
                    chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
    """``(p,)``: ``sum_i J_i^T H_out,i J_i v`` (no ``1/n``, no ``l2``), by a JVP, ``H_out`` and a VJP.

    ``J_i v`` is one forward-mode pass (``torch.func.jvp``) over a chunk, ``H_out,i`` ``(K, K)``
    the Hessian of the loss in the logits (vmapped), ``J^T u`` one reverse pass.
    """
    def loss_of_logits(z, y):
        return fn.loss(z[None], y[None])[0]

    out_hess = vmap(hessian(loss_of_logits))
    out = torch.zeros(fn.p, dtype=fn.dtype)
    for sl in chunks(images.shape[0], chunk_size):
        x, y = images[sl].to(fn.dtype), labels[sl]
        def logits(t, x=x):
            return fn.logits(t, x)

        z, jv = jvp(logits, (fn.theta,), (v,))
        u = torch.einsum("bkl,bl->bk", out_hess(z.detach(), y), jv)
        _, pull = vjp(logits, fn.theta)
        out += pull(u)[0]
    return out


def gauss_newton_block(fn: ModelFunction, images, labels,
                       chunk_size: int = DEFAULT_CHUNK) -> tuple[str, float] | None:
    """The largest parameter group whose within-group Hessian block equals its Gauss-Newton block.

    ``grad^2 J = GGN + (1/n) sum_i sum_k (dL_i/dz_ik) grad^2 z_ik``. The second term vanishes
    on the block ``(A, A)`` of a group ``A`` when the logits are piecewise linear in ``A``'s
    parameters: the last Linear layer always, and every layer of a ReLU / max-pool network
    (their second derivatives are zero almost everywhere). That is checked, not assumed: for
    a Gaussian vector ``v`` supported on ``A``, ``r = ||(H v)_A - GGN_AA v_A|| / ||GGN_AA v_A||``.
    With ``M`` the residual block, ``E ||M v||^2 = ||M||_F^2`` (and ``M v = 0`` has probability
    zero unless ``M = 0``), so ``r <= tol`` says ``M_AA`` is at most about ``tol`` relative to
    the Gauss-Newton block: ``tol`` is ``1e-9`` in float64 and ``1e-5`` in float32, near the
    rounding of the HVPs themselves (measured: ``1e-14``-``1e-16`` and ``1e-7``-``1e-6`` for
    ReLU layers; tanh convolutions give ``1e-2`` and more). A wrong rejection costs only time.
    Groups are probed largest first, one HVP and one GGN-vector product each. Returns
    ``(group, r)`` or ``None``.
    """
    groups = parameter_groups(fn)
    tol = 1e-9 if fn.dtype == torch.float64 else 1e-5
    op = HessianOperator(fn, images, labels, 0.0, chunk_size, cache_items=0)
    gen = torch.Generator().manual_seed(0)
    for name, sl in sorted(groups.items(), key=lambda kv: kv[1].start - kv[1].stop):
        if sl.stop - sl.start < 2:
            continue
        v = torch.zeros(fn.p, dtype=fn.dtype)
        v[sl] = torch.randn(sl.stop - sl.start, generator=gen, dtype=torch.float64).to(fn.dtype)
        hv = op(v)[sl]
        gv = gauss_newton_vp(fn, images, labels, v, chunk_size)[sl] / op.norm
        r = float((hv - gv).norm() / gv.norm().clamp_min(1e-300))
        if r <= tol:
            return name, r
    return None


def dense_hessian(fn: ModelFunction, images, labels, l2: float, chunk_size: int = DEFAULT_CHUNK,
                  progress: bool = False, structured: bool = True, info: dict | None = None) -> torch.Tensor:
    """The dense ``(p, p)`` true Hessian ``grad^2 J``, from HVPs with basis vectors.

    Column ``j`` is ``grad^2 J e_j``: one backward pass over the data per column. With
    ``structured`` (the default) the largest parameter group ``A`` whose block ``H_AA`` equals
    its Gauss-Newton block (:func:`gauss_newton_block`, verified by a random probe) is not
    built from columns: ``H[:, S]`` (``S`` the other parameters) comes from ``|S|`` HVPs,
    ``H[A, S] = H[S, A]^T`` by symmetry and ``H[A, A] = GGN_AA`` (per-sample gradients only).
    On the 5,130-parameter ReLU CNN that is 490 columns instead of 5,130 (conv2 is ``A``), on a
    tanh CNN the classifier is ``A``, on logistic regression ``H = GGN`` needs no column.
    ``info`` (a dict), when given, receives ``{"gn_block", "gn_probe", "hvp_columns"}``.
    """
    p = fn.p
    found = gauss_newton_block(fn, images, labels, chunk_size) if structured else None
    block = parameter_groups(fn)[found[0]] if found else slice(0, 0)
    cols = torch.cat([torch.arange(0, block.start), torch.arange(block.stop, p)])
    # l2 goes on the diagonal once, below: the operator's columns and the GGN block carry none.
    op = HessianOperator(fn, images, labels, 0.0, chunk_size, cache_items=0)
    H = torch.zeros(p, p, dtype=fn.dtype)
    if len(cols):
        C = _columns(op, cols, progress) / op.norm
        H[:, cols] = C
        H[cols[:, None], torch.arange(block.start, block.stop)[None, :]] = C[block].T
    if found:
        H[block, block] = dense_gauss_newton(fn, images, labels, 0.0, chunk_size, block=block)
    H.diagonal().add_(l2)
    if info is not None:
        info.update({"gn_block": found[0] if found else None, "gn_probe": found[1] if found else None,
                     "hvp_columns": int(len(cols))})
    return 0.5 * (H + H.T)


def dense_gauss_newton(fn: ModelFunction, images, labels, l2: float, chunk_size: int = DEFAULT_CHUNK,
                       progress: bool = False, block: slice | None = None) -> torch.Tensor:
    """``(1/n) sum_i J_i^T H_out,i J_i + l2 I`` ``(p, p)``: the generalised Gauss-Newton matrix of ``J``.

    ``J_i`` ``(K, p)`` is the Jacobian of the logits of item ``i``; ``H_out,i`` ``(K, K)`` the Hessian
    of the loss in the logits (``diag(p) - p p^T`` for softmax cross-entropy). It equals the
    Hessian for models linear in ``theta`` (logistic regression) and is PSD for convex losses.

    Computed without Jacobians: with ``H_out,i = sum_r s_ir b_ir b_ir^T`` (its eigendecomposition,
    ``s = +-1``), the rows ``grad_theta (b_ir^T z_i)`` are per-sample gradients (one vmapped pass
    per output direction ``r``; directions with zero curvature for every item, such as softmax's
    all-ones direction, are skipped), and ``H`` accumulates their signed Gram matrix.
    ``block`` (a slice of ``theta``) returns only the diagonal block ``GGN[block, block]``.
    """
    n = images.shape[0]
    block = slice(0, fn.p) if block is None else block
    p = block.stop - block.start

    def loss_of_logits(z, y):
        return fn.loss(z[None], y[None])[0]

    def projected(t, x, b):
        return (fn.logits(t, x[None])[0] * b).sum()

    out_hess = vmap(hessian(loss_of_logits))
    rows = vmap(grad(projected), in_dims=(None, 0, 0))
    H = torch.zeros(p, p, dtype=fn.dtype)
    for sl in tqdm(list(chunks(n, chunk_size)), desc="Hessian (Gauss-Newton)", disable=not progress,
                   leave=False):
        x, y = images[sl].to(fn.dtype), labels[sl]
        with torch.no_grad():
            z = fn.logits(fn.theta, x)
        w, U = torch.linalg.eigh(out_hess(z, y))                # (c, K), (c, K, K)
        B = U * w.abs().sqrt()[:, None, :]
        scale = float(w.abs().max()) if w.numel() else 0.0
        for r in range(w.shape[1]):
            if float(w[:, r].abs().max()) <= 1e-12 * scale:
                continue
            R = rows(fn.theta, x, B[:, :, r])[:, block]         # (c, p)
            H.addmm_(R.T, R * w[:, r].sign()[:, None])
    H /= n
    H.diagonal().add_(l2)
    return 0.5 * (H + H.T)


def prepare(model, data, argument: str, params=None, dtype=torch.float64, k: int | None = None):
    """``(fn, images, labels)`` with labels checked against the model's number of classes."""
    images, labels = as_tensors(data, argument)
    check(images.shape[0] > 0, f"{argument}: is empty; expected at least one image")
    fn = ModelFunction(model, params, dtype)
    _, classes = fn.num_classes(images)
    labels = check_labels(labels, classes if k is None else k, f"{argument} labels")
    return fn, images, labels


def per_sample_grads(model, images, labels=None, params=None, chunk_size: int = DEFAULT_CHUNK,
                     measure: str = "loss", dtype: torch.dtype = torch.float64,
                     progress: bool = False) -> torch.Tensor:
    """Per-sample gradients ``G`` ``(n, p)``: ``G[i] = grad_theta L(z_i, theta)``, flattened.

    ``theta`` are the parameters of the modules named in ``params`` (all trainable ones if
    ``None``), in ``model.named_parameters()`` order, each tensor row-major. ``L`` is the model's
    training loss (``measure="loss"``; ``"margin"``/``"logit"`` differentiate those measures
    instead). No ``l2 theta`` term is included. Computed as ``vmap(grad(...))`` over chunks of
    ``chunk_size`` in eval mode (the model's mode is restored), in ``dtype``.

    ``images`` may be an ImageSet (then ``labels`` is omitted) or a tensor with ``labels``.
    """
    data = images if labels is None else (images, labels)
    with eval_mode(model):
        fn, x, y = prepare(model, data, "images", params, dtype)
        return sample_grads(fn, x, y, measure, chunk_size, progress)


def hvp(model, data, vectors: torch.Tensor, *, l2: float = 0.0, params=None,
        chunk_size: int = DEFAULT_CHUNK, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``H V`` with ``H = grad^2 J(theta)``, ``J = (1/n) sum_i L(z_i) + (l2/2)||theta||^2`` over ``data``.

    ``vectors`` is ``(p,)`` or ``(p, m)`` in the flat order of :func:`per_sample_grads`; the
    result has the same shape, in ``dtype``. Exact (double backward), chunked over data.
    """
    with eval_mode(model):
        fn, x, y = prepare(model, data, "data", params, dtype)
        V = torch.as_tensor(vectors)
        check(V.dim() in (1, 2) and V.shape[0] == fn.p,
              f"vectors: expected shape ({fn.p},) or ({fn.p}, m), got {tuple(V.shape)}")
        return hvp_fn(fn, x, y, l2, chunk_size)(V)
