"""``Influence``: which training images made the model decide so (Koh & Liang 2017).

For a test item ``z_t`` and a training item ``z_j`` the influence score is

    scores[t, j] = -grad m(z_t, theta)^T (H + damping I)^-1 g_j,     g_j = grad_theta L(z_j, theta),

with ``H`` the Hessian of the mean training objective ``J = (1/n) sum_i L(z_i) + (l2/2)||theta||^2``
(or a solver's approximation of it) and ``m`` the test measurement (``measure``). It is the
derivative of ``m(z_t)`` when ``z_j``'s loss is upweighted by ``eps`` (Koh & Liang's
``I_up``). With the default ``measure="loss"`` it is ``I_up,loss(z_j, z_t)``:

* **negative = helpful** (upweighting ``z_j`` lowers the test loss), positive = harmful;
* removing ``z_j`` changes the test loss by about ``-scores[t, j] / n``.

For ``measure="margin"`` or ``"logit"`` the same formula gives the change of the margin or
logit, where *higher* is better: **positive = helpful** (upweighting ``z_j`` raises the
test item's margin/logit), negative = harmful; removing ``z_j`` changes the measure by
about ``-scores / n``. :meth:`Influence.top` follows the measure's direction.

``g_j`` excludes the ``l2 theta`` term: including it (``g_j + l2 theta``, the exact effect of
removing ``z_j`` from ``J``) adds ``-grad m^T H^-1 l2 theta`` to every score of a test row, a
constant per row that changes no ranking.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from ..data.imageset import ImageSet, as_tensors
from ..errors import WhylensError, check
from ..outputs import check_labels
from . import store
from .base import Problem, Solver
from .functional import MEASURES, ModelFunction, eval_mode
from .grads import DEFAULT_CHUNK, chunks, sample_grads
from .solvers import SOLVERS

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass
class Ranked:
    """Training items picked for one test item, best first: positions, scores, ids and labels."""

    indices: list[int]
    scores: list[float]
    ids: list[str]
    labels: list[int]


@dataclass
class TopInfluence:
    """The ``k`` most helpful and ``k`` most harmful training items for test item ``test_index``.

    For ``measure="loss"`` helpful items have the most negative scores and harmful the most
    positive ones; for ``"margin"``/``"logit"`` it is the other way round (see :class:`Influence`).
    """

    test_index: int
    helpful: Ranked
    harmful: Ranked


class Influence:
    """Influence of training items on test predictions, ``scores[t, j] = -grad m_t^T H^-1 g_j``.

    Args:
        model: the trained classifier (its weights are read, never changed).
        solver: how ``H^-1`` is applied: ``"exact"`` (dense Hessian), ``"cg"`` (conjugate
            gradient), ``"lissa"`` (stochastic Neumann series), ``"arnoldi"`` (top eigenpairs),
            ``"ekfac"`` (eigenvalue-corrected Kronecker factors), or the baselines ``"tracin"``,
            ``"grad_dot"``, ``"grad_cos"`` (no curvature).
        damping: ``d`` in ``(H + d I)^-1``; ``"auto"`` (exact solver) picks it from the spectrum.
        l2: the ``lambda`` of ``J`` the model was trained with (:func:`whylens.train.train`'s ``l2``).
        params: module names whose parameters are differentiated (e.g. ``["layer2", "fc"]``);
            the others are held fixed and ``H`` is the block of the selected parameters.
            ``None``: all trainable parameters (for ``ekfac``: all Linear/Conv2d layers).
        measure: ``"loss"`` (default), ``"margin"`` or ``"logit"``; the sign convention is in
            the module docstring: for the loss negative = helpful, for margin/logit positive =
            helpful.
        chunk_size: items per vmapped per-sample-gradient call (bounds memory).
        progress: show tqdm bars on long steps.
        dtype: working precision of gradients and curvature; ``None`` takes the solver's:
            float64 for all (the conditioning of ``H`` needs it; cheap for small models) except
            ``ekfac``, an approximation anyway, which runs its passes and scores in float32
            (its small Kronecker factors are still eigendecomposed in float64).
        **solver_options: options of the solver (e.g. ``hessian="gauss_newton"`` for exact,
            ``rank=`` for arnoldi, ``depth=`` for lissa, ``checkpoints=`` for tracin).

    Sign: for ``measure="loss"`` ``scores[t, j] = I_up,loss(z_j, z_t)``, negative = helpful,
    positive = harmful, and removing ``z_j`` changes the test loss by about ``-scores[t, j] / n``;
    for ``"margin"``/``"logit"`` positive = helpful (see the module docstring).
    Training gradients are those of the per-sample loss ``L`` only (no ``l2 theta`` term; adding
    it shifts each score row by a constant and changes no ranking).

    Typical use::

        inf = Influence(model, "exact", l2=0.01).fit(train)
        S = inf.scores(test)                  # (n_test, n_train)
        top = inf.top(test[:4], k=8)          # most helpful / harmful training items
        suspects = inf.self_influence().argsort()[:50]   # most negative = most unusual
    """

    def __init__(self, model: nn.Module, solver: str = "exact", damping=0.0, l2: float = 0.0,
                 params=None, measure: str = "loss", chunk_size: int = DEFAULT_CHUNK,
                 progress: bool = True, dtype: torch.dtype | str | None = None, **solver_options):
        check(isinstance(model, nn.Module), f"model: expected a torch.nn.Module, got {type(model).__name__}")
        check(isinstance(solver, str) and solver in SOLVERS,
              f"solver: expected one of {sorted(SOLVERS)}, got {solver!r}")
        check(isinstance(l2, (int, float)) and not isinstance(l2, bool) and l2 >= 0,
              f"l2: expected a number >= 0 (the lambda of J), got {l2!r}")
        check(measure in MEASURES, f"measure: expected one of {list(MEASURES)}, got {measure!r}")
        check(isinstance(chunk_size, int) and chunk_size > 0,
              f"chunk_size: expected a positive integer, got {chunk_size!r}")
        self.model = model
        self.solver_name = solver
        self.solver: Solver = SOLVERS[solver](damping, **solver_options)
        if dtype is None:
            dtype = self.solver.dtype
        if isinstance(dtype, str):
            check(dtype in _DTYPES, f"dtype: expected 'float64' or 'float32', got {dtype!r}")
            dtype = _DTYPES[dtype]
        check(dtype in (torch.float64, torch.float32), f"dtype: expected float64 or float32, got {dtype}")
        self.damping = damping
        self.l2 = float(l2)
        self.params = None if params is None else ([params] if isinstance(params, str) else list(params))
        self.measure = measure
        self.chunk_size = chunk_size
        self.progress = progress
        self.dtype = dtype
        self.solver_options = dict(solver_options)
        self._fn: ModelFunction | None = None
        self._train_grads: list[torch.Tensor] = []
        self._points: list[tuple[ModelFunction, float]] = []  # (where gradients are taken, weight)
        self.timings: dict[str, float] = {}

    # -- sign of "helpful" for the chosen measure ---------------------------------------------
    @property
    def helpful_sign(self) -> int:
        """``-1`` if helpful items have negative scores (``measure="loss"``), ``+1`` otherwise."""
        return -1 if self.measure == "loss" else 1

    @property
    def info(self) -> dict:
        """Solver facts after fit: damping used, eigenvalue range, convergence, ..."""
        return dict(self.solver.info)

    @property
    def min_eigenvalue(self) -> float | None:
        """Smallest eigenvalue of ``H`` (of its approximation for ekfac) seen by fit, if known."""
        return self.solver.info.get("min_eigenvalue")

    @property
    def damping_used(self) -> float | None:
        """The damping actually applied (the picked value for ``damping="auto"``)."""
        return self.solver.info.get("damping")

    @property
    def n(self) -> int:
        self._check_fitted()
        return int(self.train_labels.shape[0])

    @property
    def param_names(self) -> list[str]:
        self._check_fitted()
        return list(self._fn.names)

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, train) -> "Influence":
        """Fit the curvature and compute the training gradients ``g_j`` on ``train``; returns self.

        ``train`` is an :class:`~whylens.ImageSet` or an ``(images, labels)`` pair: the data the
        model was trained on, with the ``l2`` given to the constructor.
        """
        images, labels = as_tensors(train, "train")
        check(images.shape[0] > 0, "train: is empty; expected at least one training image")
        t0 = time.perf_counter()
        with eval_mode(self.model):
            selected = self.solver.select(self.model, self.params)
            fn = ModelFunction(self.model, selected, self.dtype)
            k, classes = fn.num_classes(images)
            labels = check_labels(labels, classes, "train labels")
            problem = Problem(fn, images, labels, self.l2, self.chunk_size, self.progress)
            self.solver.fit(problem)
            # Hold the state exactly as save() writes it (contiguous), so that scores after
            # load are bit-identical to scores before save (BLAS kernels depend on strides).
            self.solver.load_state({k: v.contiguous() for k, v in self.solver.state().items()},
                                   self.solver.info)
            if not self.solver.needs_data:
                problem.release()
            self.solver.attach(problem)
            self.solver.bind(fn)
            t1 = time.perf_counter()
            points = [(fn if state is None else ModelFunction(self.model, selected, self.dtype, state), w)
                      for state, w in self.solver.points(self.model)]
            grads = [sample_grads(f, images, labels, "loss", self.chunk_size, self.progress,
                                  "training gradients") for f, _ in points]
        self.timings = {"curvature": t1 - t0, "gradients": time.perf_counter() - t1}
        self._set_fitted(fn, selected, points, grads, images, labels,
                         train.ids if isinstance(train, ImageSet) else None, classes, k)
        return self

    def _set_fitted(self, fn, selected, points, grads, images, labels, ids, classes, k):
        self._fn = fn
        self._selected = selected
        self._points = points
        self._train_grads = grads
        self.train_labels = labels
        self.train_ids = list(ids) if ids is not None else [f"train:{j}" for j in range(len(labels))]
        self.num_classes = classes
        self.num_logits = k
        self.image_shape = tuple(images.shape[1:])
        self.model_fingerprint = store.model_fingerprint(self.model)
        self.data_fingerprint = store.data_fingerprint(images, labels)

    def _check_fitted(self) -> None:
        if self._fn is None:
            raise WhylensError("Influence: not fitted; call fit(train) before scores/top/self_influence/save")

    def _check_model(self) -> None:
        if store.model_fingerprint(self.model) != self.model_fingerprint:
            raise WhylensError("model: its weights changed since Influence.fit; call fit(train) again")

    def _test_data(self, images, labels, argument="images"):
        data = images if labels is None else (images, labels)
        x, y = as_tensors(data, argument)
        check(x.shape[0] > 0, f"{argument}: is empty; expected at least one test image")
        check(tuple(x.shape[1:]) == self.image_shape,
              f"{argument}: expected images of shape (N, {', '.join(map(str, self.image_shape))}) like "
              f"the training images, got {tuple(x.shape)}")
        return x, check_labels(y, self.num_classes, "labels")

    # -- scoring ----------------------------------------------------------------------------
    def scores(self, images, labels=None) -> torch.Tensor:
        """Influence scores ``(n_test, n_train)``: ``scores[t, j] = -grad m_t^T (H + d I)^-1 g_j``.

        ``images`` is an ImageSet (``labels`` omitted) or a ``(N, C, H, W)`` tensor with ``labels``
        ``(N,)`` (the labels whose loss/margin/logit is measured, usually the true ones).
        For ``measure="loss"`` this is ``I_up,loss(z_j, z_t)``: negative = helpful, positive =
        harmful, and removing ``z_j`` changes the test loss by about ``-scores[t, j] / n``. For
        ``"margin"``/``"logit"`` positive = helpful (upweighting ``z_j`` raises the measure) and
        removing ``z_j`` changes it by about ``-scores[t, j] / n``.
        """
        self._check_fitted()
        x, y = self._test_data(images, labels)
        self._check_model()
        out = torch.zeros(x.shape[0], self.n, dtype=self.dtype)
        with eval_mode(self.model):
            for sl in chunks(x.shape[0], self.chunk_size):
                for (f, weight), G_train in zip(self._points, self._train_grads):
                    G = sample_grads(f, x[sl], y[sl], self.measure, self.chunk_size, False)
                    out[sl] += weight * self.solver.scores(G, G_train)
        check(bool(torch.isfinite(out).all()),
              f"solver {self.solver_name!r}: produced non-finite scores; increase damping")
        return out

    def self_influence(self) -> torch.Tensor:
        """``(n_train,)`` with ``[j] = -g_j^T (H + d I)^-1 g_j = I_up,loss(z_j, z_j)``.

        It is ``<= 0`` when ``H + d I`` is positive definite: upweighting a point lowers its own
        loss. A larger magnitude marks a more unusual (suspect) training item: to rank likely
        mislabels, sort by ``-self_influence()`` (most negative first), i.e. by its magnitude.
        Always about the training loss, whatever ``measure`` is.
        """
        self._check_fitted()
        self._check_model()
        out = torch.zeros(self.n, dtype=self.dtype)
        for (_, weight), G in zip(self._points, self._train_grads):
            for sl in chunks(self.n, self.chunk_size):
                out[sl] += weight * self.solver.self_scores(G[sl])
        return out

    def top(self, images, labels=None, k: int = 8) -> list[TopInfluence]:
        """For each test item the ``k`` most helpful and ``k`` most harmful training items.

        Scores are those of :meth:`scores`: for ``measure="loss"`` helpful = most negative,
        harmful = most positive (removing a helpful item would raise the test loss by about
        ``|score| / n``); for ``"margin"``/``"logit"`` helpful = most positive.
        """
        check(isinstance(k, int) and k > 0, f"k: expected a positive integer, got {k!r}")
        S = self.scores(images, labels)
        k = min(k, S.shape[1])
        good = (S * self.helpful_sign).topk(k, dim=1)
        bad = (-S * self.helpful_sign).topk(k, dim=1)

        def ranked(idx_row):
            idx = idx_row.tolist()
            return idx, [self.train_ids[j] for j in idx], [int(self.train_labels[j]) for j in idx]

        out = []
        for t in range(S.shape[0]):
            gi, gids, glab = ranked(good.indices[t])
            bi, bids, blab = ranked(bad.indices[t])
            out.append(TopInfluence(t, Ranked(gi, S[t, gi].tolist(), gids, glab),
                                    Ranked(bi, S[t, bi].tolist(), bids, blab)))
        return out

    # -- persistence ------------------------------------------------------------------------
    def _options(self) -> dict:
        # Checkpoints are stored as tensors and their learning rates as the point weights.
        opts = {k: v for k, v in self.solver_options.items() if k not in ("checkpoints", "learning_rates")}
        return {"solver": self.solver_name, "damping": self.damping, "l2": self.l2,
                "params": self._selected, "measure": self.measure, "chunk_size": self.chunk_size,
                "dtype": str(self.dtype).replace("torch.", ""), "solver_options": opts}

    def save(self, directory) -> "Influence":
        """Write what :meth:`fit` computed to ``directory`` (safetensors + JSON), atomically.

        Stored: the solver's curvature tensors, training gradients and labels, options, the
        model fingerprint (architecture string + parameter tensors) and the training-data
        fingerprint. An interrupted save leaves no directory that :meth:`load` accepts.
        """
        self._check_fitted()
        tensors = {f"solver.{k}": v for k, v in self.solver.state().items()}
        own = []
        for c, ((f, _), G) in enumerate(zip(self._points, self._train_grads)):
            tensors[f"grads.{c}"] = G
            own.append(f is not self._fn)
            if f is not self._fn:  # a checkpoint: keep all its tensors to rebuild it
                for key, value in {**f.params_dict(f.theta), **f.fixed}.items():
                    tensors[f"ckpt.{c}.{key}"] = value
        tensors["train_labels"] = self.train_labels
        meta = {"options": self._options(), "solver_info": self.solver.info,
                "param_names": self._fn.names, "weights": [w for _, w in self._points],
                "checkpoint_states": own,
                "model_fingerprint": self.model_fingerprint, "data_fingerprint": self.data_fingerprint,
                "n": self.n, "train_ids": self.train_ids, "num_classes": self.num_classes,
                "num_logits": self.num_logits, "image_shape": list(self.image_shape)}
        store.write(directory, meta, tensors)
        return self

    @classmethod
    def load(cls, directory, model: nn.Module, train=None, progress: bool = True) -> "Influence":
        """Rebuild an :class:`Influence` saved by :meth:`save` for ``model``.

        Raises a one-line error if ``model`` is not the one it was fitted on (fingerprint of
        architecture and weights) or, when ``train`` is given, if ``train`` is not the training
        data it was fitted on. Solvers that need the training data to solve (``cg``, ``lissa``)
        require ``train``.
        """
        meta, tensors = store.read(directory)
        opts = meta["options"]
        check(store.model_fingerprint(model) == meta["model_fingerprint"],
              f"model: does not match the model {directory} was fitted on (different architecture "
              "or weights)")
        inf = cls(model, opts["solver"], opts["damping"], opts["l2"], opts["params"], opts["measure"],
                  opts["chunk_size"], progress, opts["dtype"], **opts["solver_options"])
        fn = ModelFunction(model, opts["params"], inf.dtype)
        check(fn.names == meta["param_names"], f"model: its parameters differ from those saved in {directory}")
        solver_tensors = {k[len("solver."):]: v for k, v in tensors.items() if k.startswith("solver.")}
        inf.solver.load_state(solver_tensors, meta["solver_info"])
        inf.solver.bind(fn)
        points = []
        for c, (w, has_state) in enumerate(zip(meta["weights"], meta["checkpoint_states"])):
            prefix = f"ckpt.{c}."
            state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            points.append((ModelFunction(model, opts["params"], inf.dtype, state) if has_state else fn,
                           float(w)))
        grads = [tensors[f"grads.{c}"] for c in range(len(points))]
        labels = tensors["train_labels"]
        fingerprint = meta["data_fingerprint"]
        if train is not None:
            images, train_labels = as_tensors(train, "train")
            check(store.data_fingerprint(images, train_labels.long()) == fingerprint,
                  f"train: is not the training data {directory} was fitted on (fingerprint differs)")
            inf.solver.attach(Problem(fn, images, labels, inf.l2, inf.chunk_size, progress))
        elif inf.solver.needs_data:
            raise WhylensError(f"train: solver {opts['solver']!r} needs the training data to score; "
                               "pass train= to Influence.load")
        inf._fn = fn
        inf._selected = opts["params"]
        inf._points = points
        inf._train_grads = grads
        inf.train_labels = labels
        inf.train_ids = list(meta["train_ids"])
        inf.num_classes = int(meta["num_classes"])
        inf.num_logits = int(meta["num_logits"])
        inf.image_shape = tuple(meta["image_shape"])
        inf.model_fingerprint = meta["model_fingerprint"]
        inf.data_fingerprint = fingerprint
        return inf

    def __repr__(self) -> str:
        state = f"fitted on {self.n}" if self._fn is not None else "not fitted"
        return f"Influence(solver={self.solver_name!r}, measure={self.measure!r}, l2={self.l2}, {state})"
