"""What do two models learn from? Influence side by side (Koh & Liang 2017, section 5.1).

For each model and each chosen test image ``t``, influence scores over the training set
(:class:`whylens.influence.Influence`, Koh & Liang's sign: ``scores[t, j] = I_up,loss(z_j, z_t)
= -g_t^T H^-1 g_j``, negative = helpful, positive = harmful), the ``k`` most helpful and
harmful training images, and three numbers per test image, averaged over the test images:

* ``spearman``: Spearman rank correlation over all ``n`` training images between ``|scores[t, j]|``
  and the pixel-space similarity of ``x_j`` to ``x_t``. It is computed on the negative squared
  Euclidean distance ``-||vec(x_t) - vec(x_j)||^2``, which ranks training images exactly as
  the RBF kernel value ``exp(-gamma ||.||^2)`` does for any ``gamma > 0`` (a monotone map), so
  ``similarity="rbf"`` and ``"euclidean"`` give the same number; ``similarity`` only chooses
  which values are kept in :attr:`ComparisonResult.similarity_values`.
* ``same_label``: the fraction of the ``k`` most helpful training images whose label is the
  test image's label.
* ``nearest_overlap``: the fraction of the ``k`` most helpful training images that are also
  among the ``k`` training images nearest to ``x_t`` in pixel space (chance: ``k / n``).

Koh & Liang found that for an RBF SVM the most helpful images are the ones close in pixel
space, while for a deep network (whose influence they computed on the top layer only) they
share the class and higher-level patterns but not pixels.

Which curvature (:func:`influence_options`): a convex model (``model.convex``, e.g. the SVM,
or logistic regression) gets the exact Hessian of all its parameters. Any other model with
``solver="exact"`` gets the exact Hessian of its *last* ``nn.Linear`` layer only (the CNN's
``fc``): that block of ``J`` is convex for cross-entropy (positive definite with ``l2 > 0``),
tiny and exact, and it is what Koh & Liang did for Inception (all but the top layer
frozen). The full network's Hessian is dense in thousands of parameters, indefinite
away from a minimum, and its exact influence agrees with retraining only loosely on
ReLU nets (``shared/NOTES.md``). Other solvers (``"ekfac"``, ``"cg"``, ...) use all
parameters; per-model options override all of this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from .data.imageset import ImageSet  # noqa: E402
from .errors import check  # noqa: E402
from .stats import spearman_rows  # noqa: E402

SIMILARITIES = ("rbf", "euclidean")
HELPFUL_COLOUR = "#1a9850"
HARMFUL_COLOUR = "#d73027"
# The median heuristic for the RBF width looks at no more than this many training images.
_GAMMA_SAMPLE = 1000


@dataclass
class ModelInfluence:
    """One model's side of the comparison (see the module docstring for the three measures).

    ``scores`` ``(n_test, n_train)`` are ``I_up,loss`` (negative = helpful); ``top[i]`` is the
    :class:`whylens.influence.TopInfluence` of test image ``i``; ``spearman``, ``same_label`` and
    ``nearest_overlap`` are ``(n_test,)``; ``accuracy`` is over the whole test set given.
    """

    name: str
    solver: str
    params: list[str] | None
    l2: float
    scores: torch.Tensor
    top: list
    spearman: torch.Tensor
    same_label: torch.Tensor
    nearest_overlap: torch.Tensor
    accuracy: float
    seconds: float
    info: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """The model's row of :meth:`ComparisonResult.table`."""
        return {"model": self.name, "solver": self.solver,
                "params": "all" if self.params is None else ",".join(self.params), "l2": self.l2,
                "accuracy": self.accuracy,
                "spearman": float(self.spearman.nanmean()), "spearman_sd": float(_nanstd(self.spearman)),
                "same_label": float(self.same_label.mean()), "nearest_overlap": float(self.nearest_overlap.mean()),
                "n_test": int(self.scores.shape[0]), "seconds": self.seconds}


def _nanstd(x: torch.Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.std()) if x.numel() > 1 else float("nan")


@dataclass
class ComparisonResult:
    """:func:`compare_models`' answer: per-model :class:`ModelInfluence` and the shared test images.

    ``test`` holds the chosen test images (``test_indices`` into the test set given);
    ``similarity_values`` ``(n_test, n_train)`` are RBF kernel values ``exp(-gamma d^2)`` or
    negative Euclidean distances ``-d``, per ``similarity``.
    """

    models: dict[str, ModelInfluence]
    train: ImageSet
    test: ImageSet
    test_indices: list[int]
    k: int
    similarity: str
    gamma: float
    similarity_values: torch.Tensor

    def table(self) -> list[dict]:
        """One row per model: solver, params, accuracy and the means of the three measures."""
        return [m.summary() for m in self.models.values()]

    def to_dict(self) -> dict:
        """Everything as JSON-ready values: settings, the table, per-test numbers and top-k lists."""
        out = {"similarity": self.similarity, "gamma": self.gamma, "k": self.k,
               "spearman_on": "negative squared Euclidean distance (ranks like the RBF kernel value)",
               "sign": "scores are I_up,loss = -g_test^T H^-1 g_train: negative = helpful, positive = harmful",
               "test_indices": self.test_indices, "test_ids": list(self.test.ids),
               "test_labels": self.test.labels.tolist(), "classes": list(self.train.classes),
               "table": self.table(), "models": {}}
        for name, m in self.models.items():
            out["models"][name] = {
                **m.summary(), "info": m.info,
                "per_test": {"spearman": m.spearman.tolist(), "same_label": m.same_label.tolist(),
                             "nearest_overlap": m.nearest_overlap.tolist()},
                "top": [{"test_id": self.test.ids[i],
                         "helpful": {"ids": t.helpful.ids, "labels": t.helpful.labels, "scores": t.helpful.scores},
                         "harmful": {"ids": t.harmful.ids, "labels": t.harmful.labels, "scores": t.harmful.scores}}
                        for i, t in enumerate(m.top)]}
        return out


TABLE_COLUMNS = ["model", "solver", "params", "accuracy", "spearman", "spearman_sd", "same_label",
                 "nearest_overlap", "n_test"]


def format_table(rows: list[dict]) -> str:
    """The table as aligned text, one line per model (floats with 3 decimals)."""
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    cells = [TABLE_COLUMNS] + [[cell(r[c]) for c in TABLE_COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(TABLE_COLUMNS))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells)


def last_linear(model: nn.Module) -> str:
    """The dotted name of the last ``nn.Linear`` module of ``model`` (in ``named_modules`` order)."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name]
    check(bool(names), f"model: {type(model).__name__} has no nn.Linear layer; give params= for its influence")
    return names[-1]


def is_convex(model: nn.Module) -> bool:
    """Whether ``J`` is convex in all of ``model``'s parameters (``model.convex``, or logistic regression)."""
    from .models.logistic import LogisticRegression
    return bool(getattr(model, "convex", False)) or isinstance(model, LogisticRegression)


def influence_options(model: nn.Module, solver: str = "exact") -> dict:
    """Default :class:`~whylens.influence.Influence` options for ``model`` in a comparison.

    Convex models: ``solver`` on all parameters. Others: with ``solver="exact"`` the exact
    Hessian of the last linear layer only (``params=[last_linear(model)]``, see the module
    docstring for why); with any other solver all parameters.
    """
    if is_convex(model) or solver != "exact":
        return {"solver": solver, "params": None}
    return {"solver": solver, "params": [last_linear(model)]}


def pixel_gamma(models: dict, train: ImageSet) -> float:
    """The RBF width for ``similarity="rbf"``: the first SVM's ``gamma``, else the median heuristic.

    The heuristic is ``1 / median ||x_i - x_j||^2`` over pairs of (at most 1,000, evenly spaced)
    training images.
    """
    from .models.svm import RBFSVM, median_gamma
    for entry in models.values():
        model = entry[0]
        if isinstance(model, RBFSVM) and not isinstance(model.gamma, str):
            return float(model.gamma)
    idx = torch.linspace(0, len(train) - 1, min(len(train), _GAMMA_SAMPLE)).round().long().unique()
    return median_gamma(train.images[idx].flatten(1))


def pick_test_indices(n: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(n)`` (all of them if ``count >= n``)."""
    check(isinstance(count, int) and count >= 1, f"n_test: expected a positive integer, got {count!r}")
    if count >= n:
        return list(range(n))
    return torch.linspace(0, n - 1, count).round().long().unique().tolist()


def _unpack(name, entry):
    check(isinstance(entry, (tuple, list)) and len(entry) in (2, 3),
          f"models[{name!r}]: expected (model, l2) or (model, l2, influence options), got {type(entry).__name__}")
    model, l2 = entry[0], entry[1]
    check(isinstance(model, nn.Module),
          f"models[{name!r}]: expected a torch.nn.Module first, got {type(model).__name__}")
    check(isinstance(l2, (int, float)) and not isinstance(l2, bool) and l2 >= 0,
          f"models[{name!r}]: expected the l2 the model was trained with (a number >= 0), got {l2!r}")
    options = dict(entry[2]) if len(entry) == 3 else {}
    return model, float(l2), options


def compare_models(models: dict, train: ImageSet, test: ImageSet, *, k: int = 8, n_test: int = 30,
                   test_indices=None, solver="exact", similarity: str = "euclidean", gamma: float | None = None,
                   progress: bool = False) -> ComparisonResult:
    """Influence of the training images of ``train`` on test images, for each model, side by side.

    Args:
        models: ``{name: (model, l2)}`` or ``{name: (model, l2, options)}``; ``l2`` is the ``lambda``
            of the objective the model was trained on, ``options`` are keyword arguments of
            :class:`~whylens.influence.Influence` (``solver``, ``params``, ``damping``, ...) that
            override :func:`influence_options`.
        train: the training set all the models were trained on.
        test: the test set; ``test_indices`` picks images from it (default ``n_test`` spread
            evenly over it, :func:`pick_test_indices`).
        k: how many helpful and harmful training images to keep per test image.
        solver: one solver name for all models, or ``{name: solver}``.
        similarity: ``"euclidean"`` (``-||x_t - x_j||``) or ``"rbf"`` (``exp(-gamma ||x_t - x_j||^2)``,
            ``gamma`` default :func:`pixel_gamma`); both give the same Spearman correlation.
    Returns a :class:`ComparisonResult`. Scores are Koh & Liang's ``I_up,loss`` with the true test
    labels: negative = helpful, positive = harmful.
    """
    import time

    from .influence import Influence
    from .train import accuracy

    check(isinstance(models, dict) and len(models) >= 1, "models: expected a dict {name: (model, l2)}")
    check(isinstance(train, ImageSet), f"train: expected an ImageSet, got {type(train).__name__}")
    check(isinstance(test, ImageSet), f"test: expected an ImageSet, got {type(test).__name__}")
    check(len(test) > 0, "test: is empty; expected at least one test image")
    check(tuple(test.images.shape[1:]) == tuple(train.images.shape[1:]),
          f"test: expected images of shape {tuple(train.images.shape[1:])} like train, "
          f"got {tuple(test.images.shape[1:])}")
    check(isinstance(k, int) and 1 <= k <= len(train), f"k: expected an integer in [1, {len(train)}], got {k!r}")
    check(similarity in SIMILARITIES, f"similarity: expected one of {list(SIMILARITIES)}, got {similarity!r}")
    if test_indices is None:
        test_indices = pick_test_indices(len(test), n_test)
    test_indices = [int(i) for i in torch.as_tensor(test_indices).reshape(-1).tolist()]
    check(bool(test_indices) and all(0 <= i < len(test) for i in test_indices),
          f"test_indices: expected indices in [0, {len(test) - 1}]")
    entries = {name: _unpack(name, entry) for name, entry in models.items()}
    chosen = test[test_indices]

    d2 = torch.cdist(chosen.images.flatten(1).double(), train.images.flatten(1).double()).pow(2)
    g = float(gamma) if gamma is not None else pixel_gamma(models, train)
    check(g > 0, f"gamma: expected a number > 0, got {gamma!r}")
    values = torch.exp(-g * d2) if similarity == "rbf" else -d2.sqrt()
    nearest = d2.topk(k, dim=1, largest=False).indices

    out = {}
    for name, (model, l2, options) in entries.items():
        solver_name = solver.get(name, "exact") if isinstance(solver, dict) else solver
        opts = {**influence_options(model, solver_name), **options}
        t0 = time.perf_counter()
        inf = Influence(model, l2=l2, progress=progress, **opts).fit(train)
        top = inf.top(chosen, k=k)
        scores = inf.scores(chosen)
        helpful = torch.tensor([t.helpful.indices for t in top])
        out[name] = ModelInfluence(
            name=name, solver=opts["solver"], params=opts.get("params"), l2=l2, scores=scores, top=top,
            spearman=spearman_rows(scores.abs(), -d2),
            same_label=(train.labels[helpful] == chosen.labels[:, None]).double().mean(1),
            nearest_overlap=(helpful[:, :, None] == nearest[:, None, :]).any(2).double().mean(1),
            accuracy=accuracy(model, test), seconds=time.perf_counter() - t0, info=inf.info)
    return ComparisonResult(models=out, train=train, test=chosen, test_indices=test_indices, k=k,
                            similarity=similarity, gamma=g, similarity_values=values)


def default_rows(labels: torch.Tensor, count: int = 3) -> list[int]:
    """``count`` positions into ``labels``, taking the first unused item of each class in turn."""
    queues = [labels.eq(c).nonzero().flatten().tolist() for c in sorted(set(labels.tolist()))]
    rows: list[int] = []
    while len(rows) < min(count, len(labels)):
        for q in queues:
            if q and len(rows) < count:
                rows.append(q.pop(0))
    return sorted(rows)


def _cell(ax, image: torch.Tensor, title: str, colour: str | None) -> None:
    from .report.figures import to_display_image
    img = to_display_image(image)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=6)
    for spine in ax.spines.values():
        spine.set_visible(colour is not None)
        if colour is not None:
            spine.set_edgecolor(colour)
            spine.set_linewidth(2.5)


def comparison_figure(result: ComparisonResult, rows=None, k: int | None = None, cell: float = 0.8):
    """A figure: one row per test image, one block per model: the test image, then its ``k``
    most helpful training images (green frames) and ``k`` most harmful ones (red frames),
    each titled with its class and influence score (``I_up,loss``: negative = helpful).

    ``rows``: positions into ``result.test`` (default :func:`default_rows`: 3, taking the classes in
    turn); ``k`` at most ``result.k``.
    """
    rows = default_rows(result.test.labels) if rows is None else [int(r) for r in rows]
    check(bool(rows) and all(0 <= r < len(result.test) for r in rows),
          f"rows: expected positions in [0, {len(result.test) - 1}]")
    k = result.k if k is None else int(k)
    check(1 <= k <= result.k, f"k: expected an integer in [1, {result.k}], got {k}")
    names = list(result.models)
    block = 1 + 2 * k
    ratios = []
    for b in range(len(names)):
        ratios += ([0.35] if b else []) + [1.0] * block
    fig = plt.figure(figsize=(cell * sum(ratios), cell * 1.45 * len(rows) + 0.4))
    grid = fig.add_gridspec(len(rows), len(ratios), width_ratios=ratios, wspace=0.08, hspace=0.55)
    classes = result.train.classes
    for r, pos in enumerate(rows):
        label = int(result.test.labels[pos])
        for b, name in enumerate(names):
            m = result.models[name]
            start = b * (block + 1)
            top = m.top[pos]
            _cell(fig.add_subplot(grid[r, start]), result.test.images[pos],
                  f"{name}\ntest: {classes[label]}", None)
            for c, (j, s) in enumerate(zip(top.helpful.indices[:k], top.helpful.scores[:k])):
                _cell(fig.add_subplot(grid[r, start + 1 + c]), result.train.images[j],
                      f"{classes[int(result.train.labels[j])]}\n{s:+.2g}", HELPFUL_COLOUR)
            for c, (j, s) in enumerate(zip(top.harmful.indices[:k], top.harmful.scores[:k])):
                _cell(fig.add_subplot(grid[r, start + 1 + k + c]), result.train.images[j],
                      f"{classes[int(result.train.labels[j])]}\n{s:+.2g}", HARMFUL_COLOUR)
    fig.suptitle("most helpful (green) and harmful (red) training images; scores are I_up,loss "
                 "(negative = helpful)", fontsize=8)
    return fig


def save_comparison(result: ComparisonResult, directory, rows=None, k: int | None = None) -> dict:
    """Write ``comparison.png``, ``comparison.json`` and ``comparison.csv`` to ``directory`` (atomically).

    Returns ``{"png": path, "json": path, "csv": path}``.
    """
    from pathlib import Path

    from .files import write_csv, write_json
    from .report.figures import save_figure
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"png": out / "comparison.png", "json": out / "comparison.json", "csv": out / "comparison.csv"}
    save_figure(comparison_figure(result, rows=rows, k=k), paths["png"])
    write_json(paths["json"], result.to_dict())
    header = TABLE_COLUMNS + ["l2", "seconds"]
    write_csv(paths["csv"], header, [[row[c] for c in header] for row in result.table()])
    return paths
