"""Render the audit report: one self-contained HTML file from a context dict.

The page needs nothing but itself: pictures are ``data:image/png;base64`` URIs,
the CSS is inline, there is no JavaScript and no URL to fetch (a
Content-Security-Policy meta tag forbids any other source, as a second line of
defence). Every string in the context is treated as hostile (file names and
class names come from users) and is escaped by Jinja2's autoescaping.

Any key of the context may be missing; its section then says "not computed".
The schema is in :func:`render_report`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path, PurePosixPath

import jinja2

from ..errors import WhylensError, check
from ..files import write_text
from .images import data_uri, is_png

TEMPLATES = Path(__file__).parent / "templates"
STATUSES = ("ok", "warn", "info")
SECTIONS = (("model-data", "Model and data"), ("examples", "Examples"), ("mislabels", "Suspected mislabels"),
            ("comparison", "Comparison of two models"), ("trust", "How much to trust this"))
DEFAULT_INFLUENCE_NOTE = ("Influence scores follow Koh & Liang: negative = helpful (up-weighting that training image "
                          "lowers this test image's loss), positive = harmful.")


def format_score(x) -> str:
    """An influence score with 3 significant digits (``.3g``); scientific (``-1.23e-07``) when ``|x| < 1e-3``."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise WhylensError(f"score: expected a number, got {x!r}") from None
    if v == 0.0 or not math.isfinite(v):
        return f"{v:g}"
    return f"{v:.3g}" if abs(v) >= 1e-3 else f"{v:.2e}"


def format_percent(p) -> str:
    """A fraction in [0, 1] as a percentage with one decimal (``0.9364 -> "93.6 %"``)."""
    try:
        return f"{100.0 * float(p):.1f} %"
    except (TypeError, ValueError):
        raise WhylensError(f"probability/accuracy: expected a number in [0, 1], got {p!r}") from None


def format_value(v) -> str:
    """A training setting or summary value: floats with 4 significant digits, lists joined by commas."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(format_value(x) for x in v)
    return str(v)


def format_count(n) -> str:
    """An integer count with thousands separators (``5130 -> "5,130"``); other values as given."""
    return f"{n:,}" if isinstance(n, int) and not isinstance(n, bool) else str(n)


def file_name(item_id) -> str:
    """The last path component of an id (``"train/cat/001.png" -> "001.png"``), or the id itself."""
    s = str(item_id)
    return PurePosixPath(s.replace("\\", "/")).name or s


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(score=format_score, percent=format_percent, value=format_value, count=format_count,
                       file_name=file_name, png_uri=data_uri)
    return env


def _is_png_key(key) -> bool:
    return isinstance(key, str) and (key == "png" or key.endswith("_png"))


def _check_pngs(obj, where: str) -> int:
    """Reject any ``png``/``*_png`` value that is neither None nor PNG bytes; return how many PNGs there are."""
    n = 0
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            here = f"{where}.{k}"
            if _is_png_key(k):
                if v is None:
                    continue
                check(is_png(v), f"{here}: expected PNG bytes or None, got {type(v).__name__}")
                n += 1
            else:
                n += _check_pngs(v, here)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            n += _check_pngs(v, f"{where}[{i}]")
    return n


def _list(obj, key: str, where: str) -> list:
    v = obj.get(key) if isinstance(obj, Mapping) else None
    if v is None:
        return []
    check(isinstance(v, (list, tuple)), f"{where}.{key}: expected a list, got {type(v).__name__}")
    return list(v)


def _section(context: Mapping, key: str, kind: type):
    v = context.get(key)
    if v is None:
        return None
    check(isinstance(v, kind), f"context.{key}: expected a {kind.__name__}, got {type(v).__name__}")
    return v


def _confusion(conf) -> dict | None:
    """Rows = true class, columns = predicted; each cell carries its count and its share of the row."""
    if not conf:
        return None
    check(isinstance(conf, Mapping), "context.data.confusion: expected a dict with 'classes' and 'matrix'")
    classes = [str(c) for c in _list(conf, "classes", "context.data.confusion")]
    matrix = _list(conf, "matrix", "context.data.confusion")
    k = len(classes)
    check(len(matrix) == k and all(isinstance(r, (list, tuple)) and len(r) == k for r in matrix),
          f"context.data.confusion.matrix: expected a {k} x {k} list of counts to match 'classes'")
    rows = []
    for r, (name, row) in enumerate(zip(classes, matrix)):
        total = sum(row) or 1
        rows.append({"true": name, "cells": [{"n": c, "share": c / total, "diag": i == r} for i, c in enumerate(row)]})
    return {"split": conf.get("split"), "classes": classes, "rows": rows}


def _per_class(splits: Mapping, classes: list) -> dict | None:
    """A class x split table of per-class accuracies (None where a split lacks the class)."""
    names = [s for s, v in splits.items() if isinstance(v, Mapping) and v.get("per_class")]
    if not names:
        return None
    order = [str(c) for c in classes]
    for s in names:
        order += [str(c) for c in splits[s]["per_class"] if str(c) not in order]
    by_split = {s: {str(c): a for c, a in splits[s]["per_class"].items()} for s in names}
    return {"splits": names, "rows": [{"cls": c, "values": [by_split[s].get(c) for s in names]} for c in order]}


def _trust(items: list) -> list:
    out = []
    for i, t in enumerate(items):
        check(isinstance(t, Mapping), f"context.trust[{i}]: expected a dict with name, value, meaning, status")
        status = t.get("status") or "info"
        check(status in STATUSES, f"context.trust[{i}].status: expected one of {STATUSES}, got {status!r}")
        out.append({**t, "status": status})
    return out


def _view(context: Mapping) -> dict:
    """The template's variables: the context, validated, with defaults and derived tables."""
    model = _section(context, "model", Mapping)
    data = _section(context, "data", Mapping)
    mis = _section(context, "mislabels", Mapping)
    comp = _section(context, "comparison", Mapping)
    splits = data.get("splits") if data else None
    check(splits is None or isinstance(splits, Mapping), "context.data.splits: expected a dict of split name -> dict")
    return {
        "title": str(context.get("title") or "whylens report"),
        "generated": context.get("generated"),
        "model": model,
        "data": data,
        "splits": splits or {},
        "per_class": _per_class(splits or {}, _list(data, "classes", "context.data")),
        "confusion": _confusion(data.get("confusion") if data else None),
        "examples": _list(context, "examples", "context"),
        "influence_note": context.get("influence_note") or DEFAULT_INFLUENCE_NOTE,
        "mislabels": mis,
        "mislabel_items": _list(mis, "items", "context.mislabels"),
        "comparison": comp,
        "trust": _trust(_list(context, "trust", "context")),
        "notes": [str(n) for n in _list(context, "notes", "context")],
        "sections": SECTIONS,
    }


def render_report(context: Mapping) -> str:
    """Render the audit report to one self-contained HTML5 string.

    ``context`` (every key optional; strings are escaped; PNGs are raw bytes)::

        title, generated: str
        model: {name, architecture (multi-line), parameters: int, training: {setting: value}}
        data: {source, classes: [str], splits: {name: {n, accuracy, per_class: {class: acc}}},
               confusion: {split, classes, matrix: k x k counts, rows = true, columns = predicted}}
        examples: [{id, image_png, label, predicted, probability, heatmaps: [{method, png}],
                    helpful / harmful: [{png, label, score, id}]}]
        influence_note: str   # sign convention: score = I_up,loss, negative = helpful
        mislabels: {items: [{png, given, predicted, score, id}], curve_png, summary: [{name, value}]}
        comparison: {models: [a, b], figure_png, table: {header, rows},
                     examples: [{id, image_png, label, per_model: [{model, predicted, probability,
                                 heatmap_png, helpful, harmful}]}]}
        trust: [{name, value, meaning, status: "ok" | "warn" | "info", figure_png}]
        notes: [str]

    Each PNG is embedded exactly once as one ``<img>``. Sections have the ids
    ``model-data``, ``examples``, ``mislabels``, ``comparison``, ``trust`` (and
    ``notes`` when there are notes). Raises :class:`WhylensError` on a value
    that is not PNG bytes, a confusion matrix that does not match its classes,
    or an unknown trust status.
    """
    check(isinstance(context, Mapping), f"context: expected a dict, got {type(context).__name__}")
    _check_pngs(context, "context")
    return _environment().get_template("report.html").render(**_view(context))


def write_report(context: Mapping, path: str | os.PathLike) -> Path:
    """Render ``context`` and write it to ``path`` atomically; a failed render leaves ``path`` untouched."""
    html = render_report(context)
    return write_text(path, html)
