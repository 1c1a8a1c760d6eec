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
    info = {"l2": l2, "loss": "mean cross-entropy + (l2/2)||theta||^2", "method": result.method,
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
