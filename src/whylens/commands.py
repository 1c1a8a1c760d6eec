"""What each ``whylens`` command does, given its parsed arguments (see :mod:`whylens.cli`)."""

from __future__ import annotations

import torch

from .errors import check
from .files import write_json


def _progress(args) -> bool:
    return not getattr(args, "no_progress", False)


def load_data(args, input_shape: tuple[int, int, int] | None = None) -> dict:
    """The splits of ``--data``; with ``input_shape`` (a model's ``(C,H,W)``) images are brought to it."""
    from .data.sources import load_source
    size, channels = args.image_size, args.channels
    if input_shape is not None:
        channels = channels or input_shape[0]
        size = size or input_shape[1]
    return load_source(args.data, image_size=size, channels=channels, skip_bad=args.skip_bad, seed=args.seed)


def split_accuracies(model, splits: dict) -> dict:
    """Accuracy per split and per class of each split."""
    from .outputs import predicted_class
    from .train import predict
    out = {}
    for name, ds in splits.items():
        if len(ds) == 0:
            continue
        pred = predicted_class(predict(model, ds.images))
        per_class = {ds.classes[c]: float((pred[ds.labels == c] == c).float().mean())
                     for c in range(ds.num_classes) if bool((ds.labels == c).any())}
        out[name] = {"accuracy": float((pred == ds.labels).float().mean()), "n": len(ds), "per_class": per_class}
    return out


def train_reference(name: str, train, *, l2=None, epochs=None, lr=1e-2, batch_size=64, seed=0,
                    progress=True, **model_kwargs):
    """Build reference model ``name`` for ``train`` and train it with its recipe; return ``(model, info)``."""
    from .models import RECIPES, build_for
    from .train import train as fit
    recipe = dict(RECIPES.get(name, {}))
    l2 = recipe.get("l2", 1e-3) if l2 is None else l2
    torch.manual_seed(seed)
    model = build_for(name, tuple(train.images.shape[1:]), train.num_classes, **model_kwargs)
    if hasattr(model, "prepare"):
        model.prepare(train)
    result = fit(model, train, l2=l2, method=recipe.get("method", "auto"),
                 epochs=epochs or recipe.get("epochs", 30), lr=lr, batch_size=batch_size, seed=seed,
                 progress=progress)
    loss = "mean smoothed hinge" if hasattr(model, "per_sample_loss") else "mean cross-entropy"
    info = {"l2": l2, "loss": f"{loss} + (l2/2)||theta||^2", "method": result.method,
            "epochs": epochs or recipe.get("epochs"), "seed": seed, "objective": result.objective,
            "grad_norm": result.grad_norm, "seconds": result.seconds}
    return model, info


def cmd_train(args) -> None:
    from .cli import out_dir
    from .models import save_model
    splits = load_data(args)
    train = splits["train"]
    kwargs = {}
    if args.model == "cnn":
        kwargs["activation"] = args.activation
    if args.single_logit:
        check(train.num_classes == 2, f"--single-logit: needs two classes, the data has {train.num_classes}")
        kwargs["single_logit"] = True
    model, info = train_reference(args.model, train, l2=args.l2, epochs=args.epochs, lr=args.lr,
                                  batch_size=args.batch_size, seed=args.seed, progress=_progress(args), **kwargs)
    metrics = split_accuracies(model, splits)
    out = out_dir(args.out)
    save_model(model, out, classes=train.classes, input_shape=tuple(train.images.shape[1:]), training=info,
               extra={"data": args.data})
    write_json(out / "metrics.json", {"data": args.data, "model": args.model, "training": info, "splits": metrics})
    params = sum(p.numel() for p in model.parameters())
    print(f"trained {args.model} ({params:,} parameters) on {len(train)} images of {args.data} "
          f"in {info['seconds']:.1f} s")
    for name, m in metrics.items():
        print(f"  {name:>16}: accuracy {m['accuracy']:.3f} (n={m['n']})")
    print(f"saved to {out}/")


def _parse_target(target: str | None, classes: list[str]):
    if target is None:
        return None
    if target in classes:
        return classes.index(target)
    check(target.lstrip("-").isdigit(), f"--target: expected a class index or one of {classes}, got {target!r}")
    return int(target)


def cmd_explain(args) -> None:
    from .cli import out_dir
    from .models import load_model
    from .report.explanations import write_explanations
    model, config = load_model(args.model)
    classes = config["classes"]
    shape = tuple(config["input_shape"])
    if args.images:
        from .data.folder import load_image_files
        images = load_image_files(args.images, image_size=tuple(shape[1:]), channels=shape[0])
        names = [str(p) for p in args.images]
    else:
        check(args.data is not None, "explain: give --images PATH... or --data SOURCE")
        splits = load_data(args, shape)
        check(args.split in splits, f"--split: expected one of {sorted(splits)}, got {args.split!r}")
        ds = splits[args.split]
        idx = [int(i) for i in args.indices.split(",")] if args.indices else list(range(min(4, len(ds))))
        for i in idx:
            check(0 <= i < len(ds), f"--indices: {i} is out of range for the {len(ds)} items of split {args.split!r}")
        images, names = ds.images[idx], [ds.ids[i] for i in idx]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    check(methods, "--methods: expected at least one method name")
    from .report.explanations import CAM_METHODS
    from .report.pipeline import has_conv
    cams = [m for m in methods if m.lower() in CAM_METHODS]
    check(not cams or args.layer or has_conv(model),
          f"--methods: {', '.join(cams)} need a conv layer and this {config['model']} model has none; use "
          "saliency, gradient_x_input, integrated_gradients, smoothgrad or occlusion")
    target = _parse_target(args.target, classes)
    out = out_dir(args.out)
    options = {"steps": args.steps, "layer": args.layer}
    summary = write_explanations(model, images, names, classes, methods, out, target=target, options=options,
                                 progress=_progress(args))
    for row in summary["images"]:
        print(f"  {row['name']}: predicted {row['predicted']} ({row['probability']:.3f})")
    print(f"wrote {out / 'explanations.png'} and {len(summary['images']) * len(methods)} overlays to {out}/")


def cmd_demo(args) -> None:
    from .demo import run_demo
    run_demo(args.out, quick=args.quick, seed=args.seed, progress=_progress(args))


# -- influence ----------------------------------------------------------------------------

def auto_solver(model, solver: str = "auto") -> tuple[str, dict]:
    """``(solver, options)``: ``"auto"`` is exact for small convex models, CG for larger ones, EK-FAC for networks.

    A network's Hessian at a non-converged minimum is indefinite, and EK-FAC's curvature
    is positive semi-definite by construction; a convex model's exact Hessian is cheap.
    """
    if solver != "auto":
        return solver, {"damping": "auto"} if solver == "exact" else {}
    convex = getattr(model, "convex", False) or type(model).__name__ == "LogisticRegression"
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if convex and n_params <= 3_000:
        return "exact", {"damping": 0.0}
    if convex:  # the dense eigendecomposition grows as p^3: conjugate gradient solves the same system
        return "cg", {"damping": 0.0}
    return "ekfac", {"damping": 1e-3}


def fit_influence(model, train, l2: float, solver: str = "auto", progress: bool = True):
    """An :class:`~whylens.Influence` fitted on ``train`` with the solver ``auto_solver`` picks."""
    from .influence import Influence
    name, opts = auto_solver(model, solver)
    damping = opts.pop("damping", 0.0)
    return Influence(model, solver=name, damping=damping, l2=l2, progress=progress, **opts).fit(train)


def _indices(spec: str | None, n: int, argument: str, default: int = 4) -> list[int]:
    if not spec:
        return list(range(min(default, n)))
    try:
        idx = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        from .errors import WhylensError
        raise WhylensError(f"{argument}: expected comma-separated indices, got {spec!r}") from None
    for i in idx:
        check(0 <= i < n, f"{argument}: index {i} is out of range for {n} items")
    return idx


def _caption(label: str, score: float) -> str:
    return f"{label}\n{score:+.3g}"


def gallery_rows(inf, top, images, titles, train) -> list[dict]:
    """Rows for :func:`whylens.report.influence_figures.influence_gallery` from ``Influence.top``."""
    rows = []
    for t, r in enumerate(top):
        rows.append({
            "image": images[t], "title": titles[t],
            "helpful": [(train.images[j], _caption(train.classes[train.labels[j]], s))
                        for j, s in zip(r.helpful.indices, r.helpful.scores)],
            "harmful": [(train.images[j], _caption(train.classes[train.labels[j]], s))
                        for j, s in zip(r.harmful.indices, r.harmful.scores)],
        })
    return rows


def cmd_influence(args) -> None:
    from .cli import out_dir
    from .files import write_csv
    from .models import load_model
    from .outputs import predicted_class, probabilities
    from .report.figures import save_figure
    from .report.influence_figures import influence_gallery
    from .train import predict
    model, config = load_model(args.model)
    shape = tuple(config["input_shape"])
    splits = load_data(args, shape)
    train = splits["train"]
    l2 = float(config.get("training", {}).get("l2", 0.0)) if args.l2 is None else args.l2
    if args.test_images:
        from .data.folder import load_image_files
        images = load_image_files(args.test_images, image_size=tuple(shape[1:]), channels=shape[0])
        names = [str(p) for p in args.test_images]
        labels = predicted_class(predict(model, images))  # no labels for loose files: explain the prediction
    else:
        check(args.split in splits, f"--split: expected one of {sorted(splits)}, got {args.split!r}")
        ds = splits[args.split]
        idx = _indices(args.test, len(ds), "--test")
        images, labels, names = ds.images[idx], ds.labels[idx], [ds.ids[i] for i in idx]
    inf = fit_influence(model, train, l2, args.solver, progress=_progress(args))
    top = inf.top(images, labels, k=args.top)
    scores = inf.scores(images, labels)
    logits = predict(model, images)
    pred, prob = predicted_class(logits), probabilities(logits)
    classes = train.classes
    titles = [f"{n.split('/')[-1][:22]}\ntrue {classes[int(y)]} pred {classes[int(p)]} ({float(prob[i, p]):.2f})"
              for i, (n, y, p) in enumerate(zip(names, labels, pred))]
    out = out_dir(args.out)
    save_figure(influence_gallery(gallery_rows(inf, top, images, titles, train)), out / "influence.png")
    rows = []
    for t, name in enumerate(names):
        order = scores[t].argsort()
        for rank, j in enumerate(order.tolist()):
            rows.append([name, rank, train.ids[j], classes[int(train.labels[j])], f"{float(scores[t, j]):.6e}"])
    write_csv(out / "scores.csv", ["test", "rank", "train_id", "train_label", "score"], rows)
    summary = {
        "convention": "score = I_up,loss = -g_test^T H^-1 g_train: negative = helpful, positive = harmful; "
                      "removing a training image changes the test loss by about -score / n",
        "solver": inf.solver_name, "solver_info": inf.info, "l2": l2, "n_train": len(train),
        "tests": [{"name": names[t], "label": classes[int(labels[t])], "predicted": classes[int(pred[t])],
                   "helpful": [{"id": i, "label": classes[lab], "score": s}
                               for i, lab, s in zip(r.helpful.ids, r.helpful.labels, r.helpful.scores)],
                   "harmful": [{"id": i, "label": classes[lab], "score": s}
                               for i, lab, s in zip(r.harmful.ids, r.harmful.labels, r.harmful.scores)]}
                  for t, r in enumerate(top)],
    }
    write_json(out / "influence.json", summary)
    for t, r in enumerate(top):
        print(f"  {names[t]}: most helpful {r.helpful.ids[0]} ({r.helpful.scores[0]:+.3g}), "
              f"most harmful {r.harmful.ids[0]} ({r.harmful.scores[0]:+.3g})")
    print(f"solver {inf.solver_name}; wrote {out / 'influence.png'}, scores.csv and influence.json")


def cmd_mislabels(args) -> None:
    from .cli import out_dir
    from .files import write_csv
    from .models import load_model
    from .outputs import predicted_class
    from .report.figures import save_figure
    from .report.influence_figures import image_grid, mislabel_curves
    from .train import predict
    model, config = load_model(args.model)
    splits = load_data(args, tuple(config["input_shape"]))
    train = splits["train"]
    l2 = float(config.get("training", {}).get("l2", 0.0))
    out = out_dir(args.out)
    inf = fit_influence(model, train, l2, args.solver, progress=_progress(args))
    self_inf = inf.self_influence()
    order = self_inf.argsort()  # most negative first = largest magnitude = most suspect
    pred = predicted_class(predict(model, train.images))
    k = min(args.top, len(train))
    sus = order[:k].tolist()
    write_csv(out / "mislabels.csv", ["rank", "train_id", "given_label", "predicted", "self_influence"],
              [[r, train.ids[j], train.classes[int(train.labels[j])], train.classes[int(pred[j])],
                f"{float(self_inf[j]):.6e}"] for r, j in enumerate(order.tolist())])
    items = [(train.images[j], f"{train.ids[j].split('/')[-1][:14]}\ngiven {train.classes[int(train.labels[j])]}"
                               f" pred {train.classes[int(pred[j])]}") for j in sus]
    save_figure(image_grid(items, title="suspected mislabels: largest self-influence first"), out / "mislabels.png")
    summary = {"ranking": "by self-influence I_up,loss(z, z) = -g^T H^-1 g, most negative (largest) first",
               "solver": inf.solver_name, "top": [{"id": train.ids[j], "given": train.classes[int(train.labels[j])],
                                                   "predicted": train.classes[int(pred[j])],
                                                   "self_influence": float(self_inf[j])} for j in sus]}
    if args.flip:
        from .influence.mislabel import mislabel_experiment
        from .report.pipeline import warm_or_fresh
        name, opts = auto_solver(model, args.solver)
        res = mislabel_experiment(warm_or_fresh(model, config, args.seed), train, fraction=args.flip, l2=l2,
                                  solver=name, seed=args.seed, train_kwargs=retrain_kwargs(config),
                                  influence_kwargs=opts, progress=_progress(args))
        save_figure(mislabel_curves({k: (c[0].numpy(), c[1].numpy()) for k, c in res.curves.items()},
                                    f"{args.flip:.0%} of labels flipped"), out / "mislabel_curves.png")
        summary["flip_experiment"] = res.summary
        for rank, m in res.summary.items():
            print(f"  {rank:>15}: " + ", ".join(f"{k} {v:.2f}" for k, v in m.items()))
    write_json(out / "mislabels.json", summary)
    print(f"top {k} suspects by self-influence written to {out}/mislabels.png, mislabels.csv, mislabels.json")


def retrain_kwargs(config: dict) -> dict:
    """The optimiser arguments a saved model was trained with, to retrain it the same way."""
    t = config.get("training", {})
    kw = {"method": t.get("method", "auto")}
    if t.get("epochs"):
        kw["epochs"] = t["epochs"]
    return kw


def cmd_report(args) -> None:
    from .models import load_model
    from .report.html import write_report
    from .report.pipeline import build_context
    check(str(args.out).lower().endswith((".html", ".htm")), f"--out: expected a file name ending in .html, "
                                                             f"got {args.out!r}")
    model, config = load_model(args.model)
    config = dict(config, data_source=args.data)
    splits = load_data(args, tuple(config["input_shape"]))
    compare = None
    if args.compare:
        other, other_cfg = load_model(args.compare)
        check(tuple(other_cfg["input_shape"]) == tuple(config["input_shape"]),
              f"--compare: model {args.compare} takes inputs {other_cfg['input_shape']}, but --model takes "
              f"{config['input_shape']}")
        compare = (other, other_cfg)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    context = build_context(model, config, splits, compare=compare, examples=args.examples, top=args.top,
                            methods=methods, solver=args.solver, check_images=args.check_images, loo=args.loo,
                            lds_subsets=args.lds_subsets, flip=args.flip or None, seed=args.seed,
                            progress=_progress(args))
    path = write_report(context, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


# -- compare (additive block: the model comparison of whylens.compare) -------------------

def cmd_compare(args) -> None:
    from pathlib import Path

    from .compare import compare_models, default_rows, format_table, save_comparison
    from .models import load_model
    check(len(args.models) >= 1, "--models: expected at least one model directory")
    loaded = [load_model(d) for d in args.models]
    shape = tuple(loaded[0][1]["input_shape"])
    for d, (_, cfg) in zip(args.models, loaded):
        check(tuple(cfg["input_shape"]) == shape,
              f"--models: {d} takes inputs {cfg['input_shape']}, but {args.models[0]} takes {list(shape)}")
        trained_on = cfg.get("data")
        check(trained_on is None or trained_on == args.data,
              f"--models: {d} was trained on --data {trained_on!r}, not {args.data!r}; influence needs the "
              "training data the model saw")
        seed = cfg.get("training", {}).get("seed")
        check(seed is None or seed == args.seed,
              f"--seed: {d} was trained with --seed {seed} (it picks the split); got {args.seed}")
    splits = load_data(args, shape)
    check("test" in splits, f"--data {args.data!r}: has no test split to compare on")
    names = [cfg["model"] for _, cfg in loaded]
    names = [n if names.count(n) == 1 else f"{n}:{Path(d).name}" for n, d in zip(names, args.models)]
    check(len(set(names)) == len(names), f"--models: give distinct directories, got {args.models}")
    models = {n: (m, float(cfg.get("training", {}).get("l2", 0.0))) for n, (m, cfg) in zip(names, loaded)}
    result = compare_models(models, splits["train"], splits["test"], k=args.k, n_test=args.test_count,
                            solver=args.solver, similarity=args.similarity, progress=_progress(args))
    paths = save_comparison(result, args.out, rows=default_rows(result.test.labels, args.show))
    print(format_table(result.table()))
    print(f"wrote {paths['png']}, {paths['json'].name} and {paths['csv'].name}")
