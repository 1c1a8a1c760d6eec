"""Save and load a trained model as ``model.safetensors`` + ``config.json``.

The weights are stored with safetensors (no pickle, nothing to trust); the JSON
config says which reference model to build and with which arguments, the class
names, the input shape and the training objective (influence needs ``l2``).
Loading checks that the weight file holds exactly the tensors the config's
model expects, with the same shapes, and says which ones differ if not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn

from ..errors import WhylensError, check
from ..files import atomic_write as _atomic_write
from .registry import build_model

CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def save_model(model: nn.Module, directory: str | os.PathLike, *, classes: list[str],
               input_shape: tuple[int, int, int], training: dict | None = None,
               extra: dict | None = None) -> Path:
    """Write ``directory/model.safetensors`` and ``directory/config.json``.

    ``model`` must come from :func:`whylens.build_model` (it carries ``whylens_config``).
    ``input_shape`` is ``(C, H, W)``; ``training`` records the objective (e.g.
    ``{"l2": 1e-3, "loss": "mean cross-entropy"}``). Each file is written to a
    temporary name and renamed, so an interrupted save leaves no partial file.
    """
    from safetensors.torch import save_file

    cfg = getattr(model, "whylens_config", None)
    check(cfg is not None, "model: expected a model built by whylens.build_model (it has no whylens_config)")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config = {
        "format": "whylens-model", "version": 1,
        "model": cfg["model"], "kwargs": cfg["kwargs"],
        "classes": list(classes), "input_shape": list(input_shape),
        "training": training or {}, **(extra or {}),
    }
    _atomic_write(out / WEIGHTS, lambda tmp: save_file(state, tmp))
    _atomic_write(out / CONFIG, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2)))
    return out


def read_config(directory: str | os.PathLike) -> dict:
    """Read and check ``directory/config.json``."""
    path = Path(directory) / CONFIG
    check(Path(directory).is_dir(), f"--model {directory}: expected a directory written by 'whylens train'")
    check(path.is_file(), f"{path}: missing; expected the model's config.json next to {WEIGHTS}")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WhylensError(f"{path}: not valid JSON ({exc})") from None
    check(isinstance(config, dict) and config.get("format") == "whylens-model",
          f"{path}: expected a whylens model config (format 'whylens-model')")
    for key in ("model", "kwargs", "classes", "input_shape"):
        check(key in config, f"{path}: missing the key {key!r}")
    return config


def load_model(directory: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild the model from ``config.json``, load its weights, return ``(model, config)``.

    The model comes back in eval mode. Raises a one-line :class:`WhylensError` if
    the weights file is missing, unreadable, or does not match the config
    (missing, unexpected or differently shaped tensors).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = read_config(directory)
    weights = Path(directory) / WEIGHTS
    check(weights.is_file(), f"{weights}: missing; expected the weights saved by 'whylens train'")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WhylensError(f"{weights}: not a readable safetensors file ({str(exc).splitlines()[0]})") from None
    model = build_model(config["model"], **config["kwargs"])
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    check(not missing and not unexpected,
          f"{weights}: does not match the {config['model']!r} model of {CONFIG}: "
          f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    for key, value in expected.items():
        check(tuple(state[key].shape) == tuple(value.shape),
              f"{weights}: tensor {key!r} has shape {tuple(state[key].shape)} but the "
              f"{config['model']!r} model of {CONFIG} expects {tuple(value.shape)}")
    model.load_state_dict(state)
    model.eval()
    return model, config
