"""The ``ekfac`` solver: eigenvalue-corrected Kronecker-factored curvature.

After George et al. (2018) and Grosse et al. (2023). For each ``nn.Linear`` / ``nn.Conv2d``
layer with input activations ``a`` (a 1 appended when the layer has a bias; for Conv2d the
unfolded patches, one per output location) and pre-activation output gradients ``g``:

    A = E[a a^T] = Q_A diag(.) Q_A^T,        S = E[g g^T] = Q_S diag(.) Q_S^T,

then the eigenvalues are refitted in the Kronecker eigenbasis from per-sample gradients
``G_i = sum_locations g a^T`` (``(d_out, d_in [+1])``):

    Lambda[r, c] = (1/n) sum_i ((Q_S^T G_i Q_A)[r, c])^2,

and ``(H + d I)^-1 V`` is, per layer, ``Q_S ((Q_S^T V Q_A) / (Lambda + l2 + d)) Q_A^T``. The mean
over training items matches the mean-loss scale of ``J`` and ``l2`` (``J``'s L2 term, whose
Hessian is ``l2 I`` in any orthonormal basis) is added to the eigenvalues, so the block-diagonal
``Fisher + l2 I`` approximates ``H``. Cross-layer blocks are ignored.

``fisher="true"`` (default): ``g`` comes from labels sampled from the model's predictive
distribution (``samples`` draws per item, seeded), the Fisher that equals the Gauss-Newton
matrix in expectation; ``fisher="empirical"`` uses the given labels. With ``params=None`` every
Linear/Conv2d layer is used and all other parameters (BatchNorm's, ...) are held fixed;
naming other modules in ``params`` is an error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..errors import WhylensError, check
from ..outputs import probabilities
from .base import Problem, Solver
from .functional import ModelFunction, select_parameters
from .grads import chunks

SUPPORTED = (nn.Linear, nn.Conv2d)


class _Layer:
    """One Kronecker-factored layer: where its weight/bias sit in ``theta`` and how to read ``a``."""

    def __init__(self, name: str, module: nn.Module, fn: ModelFunction):
        self.name, self.module = name, module
        self.w = fn.offsets[f"{name}.weight"]
        self.b = fn.offsets.get(f"{name}.bias")
        w = fn.shapes[f"{name}.weight"]
        self.d_out = int(w[0])
        self.d_in = int(torch.tensor(w[1:]).prod()) + (1 if self.b is not None else 0)
        if isinstance(module, nn.Conv2d):
            check(module.groups == 1, f"params: ekfac needs groups=1 in Conv2d {name!r}")
            check(module.padding_mode == "zeros", f"params: ekfac needs padding_mode='zeros' in {name!r}")
            pad = module.padding
            if isinstance(pad, str):
                k, dil = module.kernel_size, module.dilation
                check(pad == "valid" or all((di * (ki - 1)) % 2 == 0 for ki, di in zip(k, dil)),
                      f"params: ekfac cannot unfold padding={pad!r} of Conv2d {name!r}")
                pad = (0, 0) if pad == "valid" else tuple(di * (ki - 1) // 2 for ki, di in zip(k, dil))
            self.pad = pad

    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, locations, d_in_w)`` inputs of the layer (patches for conv); the bias's ones
        column is implicit (see :meth:`input_moment` and :meth:`sample_grads`)."""
        if isinstance(self.module, nn.Conv2d):
            m = self.module
            a = F.unfold(x, m.kernel_size, dilation=m.dilation, padding=self.pad, stride=m.stride)
            a = a.transpose(1, 2)
        else:
            a = x.reshape(x.shape[0], -1, x.shape[-1])
        return a

    def input_moment(self, a: torch.Tensor) -> torch.Tensor:
        """``sum_{b,l} [a, 1][a, 1]^T`` ``(d_in, d_in)`` without materialising the ones column."""
        flat = a.reshape(-1, a.shape[-1])
        aa = flat.T @ flat
        if self.b is None:
            return aa
        s = flat.sum(0)
        top = torch.cat([aa, s[:, None]], dim=1)
        bottom = torch.cat([s, s.new_tensor([float(flat.shape[0])])])[None]
        return torch.cat([top, bottom], dim=0)

    def sample_grads(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Per-sample gradients ``G_i = sum_l g_il [a_il, 1]^T`` ``(B, d_out, d_in)``."""
        G = torch.einsum("bls,bla->bsa", g, a)
        if self.b is None:
            return G
        return torch.cat([G, g.sum(1)[..., None]], dim=2)

    def out_grads(self, g: torch.Tensor) -> torch.Tensor:
        """``(B, locations, d_out)`` gradients w.r.t. the layer's outputs."""
        if isinstance(self.module, nn.Conv2d):
            return g.flatten(2).transpose(1, 2)
        return g.reshape(g.shape[0], -1, g.shape[-1])

    def matrices(self, V: torch.Tensor) -> torch.Tensor:
        """``(m, d_out, d_in)`` layer view of the columns of ``V`` ``(p, m)``."""
        m = V.shape[1]
        W = V[self.w].T.reshape(m, self.d_out, -1)
        if self.b is None:
            return W
        return torch.cat([W, V[self.b].T.reshape(m, self.d_out, 1)], dim=2)

    def write(self, out: torch.Tensor, M: torch.Tensor) -> None:
        m = M.shape[0]
        if self.b is None:
            out[self.w] = M.reshape(m, -1).T
        else:
            out[self.w] = M[:, :, :-1].reshape(m, -1).T
            out[self.b] = M[:, :, -1].T


class EKFACSolver(Solver):
    """EK-FAC curvature for Linear/Conv2d layers (see the module docstring for the math).

    Options: ``fisher`` (``"true"`` | ``"empirical"``), ``samples`` (label draws per item for the
    true Fisher, 1), ``seed`` (0), ``batch_size`` (items per batched forward/backward, 256),
    ``keep_bytes`` (256 MiB: if the activations and output gradients of the factor pass fit in
    this, they are kept to fit the eigenvalues; otherwise a second pass recomputes them, so
    memory stays bounded by a batch).
    """

    name = "ekfac"
    dtype = torch.float32
    defaults = {"fisher": "true", "samples": 1, "seed": 0, "batch_size": 256, "keep_bytes": 256 << 20}

    def __init__(self, damping=0.0, **options):
        super().__init__(damping, **options)
        check(self.options["fisher"] in ("true", "empirical"),
              f"fisher: expected 'true' or 'empirical', got {self.options['fisher']!r}")
        check(isinstance(self.options["samples"], int) and self.options["samples"] > 0,
              f"samples: expected a positive integer, got {self.options['samples']!r}")
        self.layers: list[_Layer] = []
        self.factors: dict[str, torch.Tensor] = {}

    def select(self, model: nn.Module, params):
        modules = dict(model.named_modules())
        if params is None:
            names = [n for n, m in modules.items() if isinstance(m, SUPPORTED)
                     and any(p.requires_grad for p in m.parameters(recurse=False))]
            check(names, "model: has no nn.Linear or nn.Conv2d layer with trainable parameters for ekfac")
            return names
        owners = []
        for pname in select_parameters(model, params):
            owner = pname.rsplit(".", 1)[0] if "." in pname else ""
            if owner not in owners:
                owners.append(owner)
        bad = [f"{o or '<root>'} ({type(modules[o]).__name__})" for o in owners
               if not isinstance(modules[o], SUPPORTED)]
        check(not bad, f"params: solver 'ekfac' supports only nn.Linear and nn.Conv2d layers; the "
                       f"selection includes {', '.join(bad[:4])}; select Linear/Conv2d modules")
        return owners

    def _layers(self, fn: ModelFunction) -> list[_Layer]:
        modules = dict(fn.model.named_modules())
        owners = []
        for pname in fn.names:
            owner = pname.rsplit(".", 1)[0]
            if owner not in owners:
                owners.append(owner)
        for o in owners:
            check(f"{o}.weight" in fn.offsets, f"params: ekfac needs the weight of {o!r} to be trainable")
        return [_Layer(o, modules[o], fn) for o in owners]

    def _passes(self, problem: Problem, layers, visit, desc: str) -> None:
        """Batched forward/backward passes; ``visit(layer, a, g)`` gets activations and output grads."""
        fn = problem.fn
        gen = torch.Generator().manual_seed(int(self.options["seed"]))
        draws = int(self.options["samples"]) if self.options["fisher"] == "true" else 1
        store: dict[str, torch.Tensor] = {}
        outputs: dict[str, torch.Tensor] = {}

        def hook_for(layer):
            def hook(module, inputs, output):
                store[layer.name] = layer.activations(inputs[0].detach())
                outputs[layer.name] = output
                # Hand later layers a copy: an in-place op after this layer (ReLU(inplace=True))
                # must not overwrite the pre-activation whose gradient is read here.
                return output.clone()
            return hook

        handles = [la.module.register_forward_hook(hook_for(la)) for la in layers]
        try:
            theta = fn.theta.detach().requires_grad_(True)
            steps = list(chunks(problem.n, int(self.options["batch_size"])))
            for _ in range(draws):
                for sl in tqdm(steps, desc=desc, disable=not problem.progress, leave=False):
                    x, y = problem.images[sl].to(fn.dtype), problem.labels[sl]
                    logits = fn.logits(theta, x)
                    if self.options["fisher"] == "true":
                        y = torch.multinomial(probabilities(logits.detach()), 1, generator=gen)[:, 0]
                    loss = fn.loss(logits, y).sum()
                    grads = torch.autograd.grad(loss, [outputs[la.name] for la in layers],
                                                allow_unused=True)
                    for la, g in zip(layers, grads):
                        if g is None:
                            raise WhylensError(f"params: layer {la.name!r} does not affect the loss")
                        visit(la, store[la.name], la.out_grads(g.detach()))
                    store.clear()
                    outputs.clear()
        finally:
            for h in handles:
                h.remove()
        self._draws = draws

    def fit(self, problem: Problem) -> None:
        fn = problem.fn
        layers = self._layers(fn)
        dt = fn.dtype
        A = {la.name: torch.zeros(la.d_in, la.d_in, dtype=dt) for la in layers}
        S = {la.name: torch.zeros(la.d_out, la.d_out, dtype=dt) for la in layers}

        kept: list[tuple[_Layer, torch.Tensor, torch.Tensor]] = []
        budget = [int(self.options["keep_bytes"])]

        def covariances(la, a, g):
            A[la.name] += la.input_moment(a)
            gf = g.reshape(-1, g.shape[-1])
            S[la.name] += gf.T @ gf
            size = (a.numel() + g.numel()) * a.element_size()
            if budget[0] >= size:  # small enough: keep for the eigenvalue fit, no second pass
                kept.append((la, a, g))
                budget[0] -= size
            else:
                budget[0] = -1

        self._passes(problem, layers, covariances, "EK-FAC factors")
        # Eigenbases in float64 (the factors are small), used in the working dtype.
        QA = {k: torch.linalg.eigh(v.double())[1].to(dt) for k, v in A.items()}
        QS = {k: torch.linalg.eigh(v.double())[1].to(dt) for k, v in S.items()}
        lam = {la.name: torch.zeros(la.d_out, la.d_in, dtype=dt) for la in layers}

        def eigenvalues(la, a, g):
            # G_i first, then rotate: cheaper than rotating every location's a and g.
            P = QS[la.name].T @ la.sample_grads(a, g) @ QA[la.name]
            lam[la.name] += (P * P).sum(0)

        if budget[0] >= 0:
            for la, a, g in kept:
                eigenvalues(la, a, g)
        else:
            self._passes(problem, layers, eigenvalues, "EK-FAC eigenvalues")
        kept.clear()
        count = problem.n * self._draws
        self.layers = layers
        self.factors = {}
        for la in layers:
            self.factors[f"{la.name}.QA"] = QA[la.name]
            self.factors[f"{la.name}.QS"] = QS[la.name]
            self.factors[f"{la.name}.lambda"] = lam[la.name] / count + problem.l2
        self.info = {"damping": self.damping, "fisher": self.options["fisher"], "layers": [la.name for la in layers],
                     "min_eigenvalue": float(min(self.factors[f"{la.name}.lambda"].min() for la in layers))}

    def bind(self, fn: ModelFunction) -> None:
        self.layers = self._layers(fn)

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        check(bool(self.factors), "solver 'ekfac': not fitted; call fit(train) first")
        out = torch.empty_like(V)
        for la in self.layers:
            QA, QS = self.factors[f"{la.name}.QA"], self.factors[f"{la.name}.QS"]
            lam = self.factors[f"{la.name}.lambda"] + self.damping
            M = QS.T @ la.matrices(V) @ QA
            la.write(out, QS @ (M / lam) @ QA.T)
        return out

    def state(self) -> dict[str, torch.Tensor]:
        return dict(self.factors)

    def load_state(self, tensors, info) -> None:
        super().load_state(tensors, info)
        self.factors = dict(tensors)
