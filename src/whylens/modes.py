"""Running a model in eval mode without disturbing the caller's train/eval flags."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with ``model.eval()``; restore each submodule's own flag afterwards, also on error.

    Flags are saved per module (``[m.training for m in model.modules()]``) because a
    caller may have frozen only some submodules (BatchNorm in eval, the rest in
    train, say), which ``model.train(was)`` alone would overwrite.
    """
    modules = list(model.modules())
    flags = [m.training for m in modules]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in zip(modules, flags):
            m.training = flag
