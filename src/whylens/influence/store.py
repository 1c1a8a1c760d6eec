"""Fingerprints and the on-disk form of a fitted :class:`~whylens.Influence`.

A saved influence directory holds ``state.safetensors`` (the solver's curvature tensors,
the training gradients, the parameters at which they were taken, the training labels) and
``influence.json`` (options, solver facts, the selected parameter names, training ids and
two fingerprints: of the model and of the training data). It is written into a hidden
temporary directory next to the target and renamed into place only when complete, so an
interrupted save leaves nothing that :func:`read` accepts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..errors import WhylensError, check

FORMAT = "whylens-influence"
META = "influence.json"
TENSORS = "state.safetensors"


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of the architecture string ``repr(model)`` and every state tensor (name, dtype, shape, bytes)."""
    h = hashlib.sha256(repr(model).encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def data_fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """sha256 of ``n``, the images (as float32 bytes) and the labels (as int64 bytes)."""
    h = hashlib.sha256(f"n={images.shape[0]}|shape={tuple(images.shape)}".encode())
    h.update(images.detach().cpu().to(torch.float32).contiguous().numpy().tobytes())
    h.update(labels.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


def _write_json(path: Path, meta: dict) -> None:
    path.write_text(json.dumps(meta, indent=1))


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def _is_influence_dir(path: Path) -> bool:
    try:
        return json.loads((path / META).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def write(directory, meta: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``meta`` and ``tensors`` to ``directory`` atomically (temporary directory + rename)."""
    out = Path(directory)
    check(not out.exists() or out.is_dir(), f"dir {out}: exists and is not a directory")
    if out.exists():
        check(_is_influence_dir(out) or not any(out.iterdir()),
              f"dir {out}: exists and is not a whylens influence directory; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old = None
    try:
        _write_tensors(tmp / TENSORS, tensors)
        _write_json(tmp / META, {**meta, "format": FORMAT, "version": 1, "tensors": sorted(tensors)})
        if out.exists():
            old = out.parent / f".{out.name}.{os.getpid()}.old"
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not out.exists():
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def read(directory) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read and check a directory written by :func:`write`; return ``(meta, tensors)``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(directory)
    check(path.is_dir(), f"dir {path}: not found; expected a directory written by Influence.save")
    meta_path = path / META
    check(meta_path.is_file(), f"dir {path}: has no {META}; not a (complete) Influence.save directory")
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise WhylensError(f"{meta_path}: not valid JSON ({exc})") from None
    check(isinstance(meta, dict) and meta.get("format") == FORMAT,
          f"{meta_path}: expected a whylens influence file (format {FORMAT!r})")
    try:
        tensors = load_file(str(path / TENSORS))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WhylensError(f"{path / TENSORS}: missing or unreadable ({msg})") from None
    # Fresh allocations: BLAS results depend on alignment, and scores after load must be
    # bit-identical to scores before save.
    tensors = {k: v.clone() for k, v in tensors.items()}
    missing = sorted(set(meta.get("tensors", [])) - set(tensors))
    check(not missing, f"{path / TENSORS}: incomplete; missing tensors {missing[:5]}")
    return meta, tensors
