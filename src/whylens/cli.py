"""The ``whylens`` command. Thin: it parses arguments and calls the library.

Every command takes ``--data SOURCE`` with the same meaning (see ``whylens --help``).
Bad input ends with one line ``whylens: error: ...`` and exit status 2, never a
traceback; outputs are written atomically, so an interrupted run leaves no
half-written file.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

DATA_HELP = ("where the images come from: 'digits' (scikit-learn's 8x8 digits, 10 classes), "
             "'digits:1,7' (a subset of classes), 'synthetic-xrays' (generated chest-X-ray-like "
             "images with a shortcut marker; options as 'synthetic-xrays:shortcut=0.5,n=400'), a folder "
             "with one subfolder per class (or train/ and test/ folders of those), or a MedMNIST-style "
             ".npz file (train_images, train_labels, val_*, test_*)")


def _add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--data", required=required, metavar="SOURCE", help=DATA_HELP)
    p.add_argument("--image-size", type=int, default=None, metavar="N",
                   help="resize images to N x N (default: a folder's images go to 64x64; bundled sets keep "
                        "their size; with --model, the model's input size)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="convert images to 1 (grey) or 3 (RGB) channels (default: keep the source's)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip unreadable image files with a warning that lists them, instead of stopping")
    p.add_argument("--seed", type=int, default=0, help="seed for splits, shuffling and initialisation")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whylens",
        description="Explain a PyTorch image classifier: where did it look (pixel attribution), "
                    "and which training images made it decide so (influence functions).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a reference model on a data source and save it",
                       description="Train a reference model deterministically on mean cross-entropy + "
                                   "(l2/2)||theta||^2 and save weights + config.json to --out.")
    _add_data_args(p)
    p.add_argument("--model", default="cnn", help="logistic | cnn | resnet | svm (default: cnn)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for model.safetensors, "
                   "config.json and metrics.json")
    p.add_argument("--epochs", type=int, default=None, help="epochs of Adam for networks (default: per model)")
    p.add_argument("--l2", type=float, default=None,
                   help="the L2 coefficient lambda of the objective (default: 1e-3 nets, 1e-2 linear)")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default 0.01)")
    p.add_argument("--batch-size", type=int, default=64, help="minibatch size for Adam (default 64)")
    p.add_argument("--activation", default="relu", help="CNN activation: relu | tanh | softplus")
    p.add_argument("--single-logit", action="store_true",
                   help="for two classes, output one logit (sigmoid) instead of two (softmax)")
    _add_common(p)

    p = sub.add_parser("explain", help="heatmaps: where did the model look?",
                       description="Compute pixel attributions for images and write a grid PNG (one row "
                                   "per image, one column per method), one overlay PNG per image and "
                                   "method, the raw maps (maps.npz) and predictions.json.")
    p.add_argument("--model", required=True, metavar="DIR", help="a directory written by 'whylens train'")
    p.add_argument("--images", nargs="+", metavar="PATH", help="image files to explain")
    _add_data_args(p, required=False)
    p.add_argument("--split", default="test", help="with --data: which split to take images from")
    p.add_argument("--indices", default=None, help="with --data: comma-separated item indices (default: first 4)")
    p.add_argument("--methods", default="gradcam,integrated_gradients,gradient_x_input",
                   help="comma-separated: saliency, gradient_x_input (gxi), integrated_gradients (ig), "
                        "smoothgrad, gradcam, gradcam++, hirescam, occlusion")
    p.add_argument("--target", default=None,
                   help="class to explain (index or name) for every image (default: the predicted class)")
    p.add_argument("--layer", default=None, help="CAM layer as a dotted module path (default: the last conv)")
    p.add_argument("--steps", type=int, default=50, help="Integrated Gradients steps (default 50)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    _add_common(p)

    solver_help = ("influence solver: auto (exact for convex models, ekfac for networks), exact, cg, lissa, "
                   "arnoldi, ekfac, tracin, grad_dot, grad_cos")
    p = sub.add_parser("influence", help="which training images made the model decide so?",
                       description="Influence functions (Koh & Liang 2017): for each test image, the most "
                                   "helpful and most harmful training images. Scores are I_up,loss = "
                                   "-g_test^T H^-1 g_train: negative = helpful, positive = harmful; removing a "
                                   "training image changes the test loss by about -score/n. Writes "
                                   "influence.png, scores.csv and influence.json.")
    p.add_argument("--model", required=True, metavar="DIR", help="a directory written by 'whylens train'")
    _add_data_args(p)
    p.add_argument("--test", default=None, metavar="I,J,...",
                   help="indices of test items in --split (default: the first 4)")
    p.add_argument("--test-images", nargs="+", metavar="PATH",
                   help="image files to explain instead (their predicted class is used as the label)")
    p.add_argument("--split", default="test", help="split the --test indices refer to (default: test)")
    p.add_argument("--top", type=int, default=8, help="how many helpful and harmful images to show (default 8)")
    p.add_argument("--solver", default="auto", help=solver_help)
    p.add_argument("--l2", type=float, default=None, help="override the l2 recorded in the model's config")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    _add_common(p)

    p = sub.add_parser("mislabels", help="training images whose labels look wrong (self-influence)",
                       description="Rank training images by self-influence I_up,loss(z, z) (most negative "
                                   "first): the ones the model can fit only by bending around them. Writes "
                                   "mislabels.png, mislabels.csv and mislabels.json; with --flip, also flips "
                                   "that fraction of labels, retrains and plots how many are found.")
    p.add_argument("--model", required=True, metavar="DIR", help="a directory written by 'whylens train'")
    _add_data_args(p)
    p.add_argument("--top", type=int, default=50, help="how many suspects to show (default 50)")
    p.add_argument("--solver", default="auto", help=solver_help)
    p.add_argument("--flip", type=float, default=None, metavar="FRACTION",
                   help="also run the detection experiment: flip this fraction of labels (seeded), retrain, "
                        "and compare self-influence with the training-loss and random rankings")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    _add_common(p)

    p = sub.add_parser("report", help="one self-contained HTML audit report",
                       description="Everything in one shareable HTML file (images embedded, no network, no "
                                   "scripts): model and data, heatmaps and helpful/harmful training images "
                                   "for chosen test images, suspected mislabels, a second model side by side, "
                                   "and how far each explanation can be trusted.")
    p.add_argument("--model", required=True, metavar="DIR", help="a directory written by 'whylens train'")
    _add_data_args(p)
    p.add_argument("--out", required=True, metavar="FILE.html", help="the report file to write")
    p.add_argument("--compare", default=None, metavar="DIR",
                   help="a second trained model to compare with (default: a logistic regression trained now)")
    p.add_argument("--examples", type=int, default=4, help="test images shown in detail (default 4)")
    p.add_argument("--top", type=int, default=6, help="helpful/harmful images per example (default 6)")
    p.add_argument("--methods", default="gradcam,integrated_gradients,gradient_x_input,saliency",
                   help="attribution methods shown per example")
    p.add_argument("--solver", default="auto", help=solver_help)
    p.add_argument("--check-images", type=int, default=32, help="test images used by the attribution checks")
    p.add_argument("--loo", type=int, default=10, help="training items retrained for leave-one-out agreement")
    p.add_argument("--lds-subsets", type=int, default=16, help="random 50%% subsets for the LDS check")
    p.add_argument("--flip", type=float, default=0.1, help="fraction of labels flipped for the mislabel check")
    _add_common(p)

    p = sub.add_parser("demo", help="the end-to-end story on the bundled synthetic X-rays",
                       description="Build synthetic chest X-rays with a shortcut marker, train a CNN, show "
                                   "confounded vs clean accuracy, and explain its predictions.")
    p.add_argument("--out", default="out", metavar="DIR", help="output directory (default: out)")
    p.add_argument("--quick", action="store_true", help="smaller sizes (used under CI=true)")
    p.add_argument("--seed", type=int, default=0)
    _add_common(p)

    # -- compare (additive block: the model comparison of whylens.compare) --
    p = sub.add_parser("compare", help="what do two models learn from? influence side by side",
                       description="Koh & Liang (2017) section 5.1: for the same test images, the most helpful "
                                   "and harmful training images of each model, the Spearman correlation of "
                                   "|influence| with pixel-space similarity, and the fraction of helpful images "
                                   "sharing the test label. Writes comparison.png, comparison.json and "
                                   "comparison.csv, and prints the table.")
    p.add_argument("--models", nargs="+", required=True, metavar="DIR",
                   help="directories written by 'whylens train' (same --data), e.g. an svm and a cnn")
    _add_data_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--k", type=int, default=8, help="helpful and harmful images per test image (default 8)")
    p.add_argument("--test-count", type=int, default=30, metavar="N",
                   help="test images the numbers average over, spread evenly over the test split (default 30)")
    p.add_argument("--show", type=int, default=3, metavar="N", help="test images drawn in the figure (default 3)")
    p.add_argument("--solver", default="exact",
                   help="influence solver for every model (default exact: all parameters of convex models, "
                        "the last linear layer of networks); ekfac, cg, arnoldi, ... use all parameters")
    p.add_argument("--similarity", choices=("euclidean", "rbf"), default="euclidean",
                   help="pixel similarity stored in the JSON (both rank the same, so the Spearman is the same)")
    _add_common(p)

    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import WhylensError

    parser = build_parser()
    args = parser.parse_args(argv)
    _set_threads()
    if not args.command:
        parser.print_help()
        return 0
    try:
        from . import commands
        handler = getattr(commands, "cmd_" + args.command.replace("-", "_"))
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            handler(args)
    except WhylensError as exc:
        print(f"whylens: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("whylens: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"whylens: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


def _set_threads() -> None:
    """Use ``WHYLENS_NUM_THREADS`` intra-op threads (default 1).

    whylens's workloads are many small forward/backward passes of small models; on a busy
    2-core machine one thread ran them 5-20x faster than two. Raise it for large models.
    """
    import os

    import torch
    n = os.environ.get("WHYLENS_NUM_THREADS", "1")
    if n.isdigit() and int(n) > 0:
        torch.set_num_threads(int(n))


def out_dir(path: str) -> Path:
    """Create the output directory (and parents)."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
