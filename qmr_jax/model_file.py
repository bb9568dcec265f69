"""Writing model files: the TOML that ``load_model``, ``--model`` and ``--initial`` read.

``qmr calibrate`` writes its fit as ``model.toml`` with :func:`save_model`, so the output of
one command is the input of the next::

    qmr calibrate --model heston --out out/calibration
    qmr sensitivities --book scenarios/books/btc_example.toml --model out/calibration/model.toml

The layout is the one ``qmr_jax.book.load_model`` documents: ``name``, ``description``,
``source``, a free-form ``[meta]`` table, ``[model]`` (``type`` and every parameter) and
``[market]`` (``spot``, ``rate``, ``div``). Numbers are written with ``repr`` (17 significant
digits), so reading the file back gives the same floats bit for bit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _toml_value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} cannot be written to a model file")
        return repr(value)
    if isinstance(value, str):
        escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                   .replace("\t", "\\t"))
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v, where) for v in value) + "]"
    if hasattr(value, "item"):  # NumPy / JAX scalar
        return _toml_value(value.item(), where)
    raise ValueError(f"{where}: cannot write {type(value).__name__} to a model file")


def model_toml(model, market, *, name: str | None = None, description: str | None = None,
               source: str | None = None, meta: Mapping[str, Any] | None = None) -> str:
    """The text of a model file for ``model`` (a model pytree, unbatched) and ``market``.

    ``meta`` holds scalars, strings or lists of them (``None`` values are left out). Raises
    ``ValueError`` for a batched model or a non-finite number.
    """
    lines: list[str] = []
    for key, value in (("name", name), ("description", description), ("source", source)):
        if value is not None:
            lines.append(f"{key} = {_toml_value(str(value), key)}")
    if meta:
        lines += ["", "[meta]"]
        for key, value in meta.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value, f'meta.{key}')}")
    lines += ["", "[model]", f'type = "{type(model).__name__.lower()}"']
    for field, value in model._asdict().items():
        v = _scalar(value, f"model.{field}")
        lines.append(f"{field} = {_toml_value(v, f'model.{field}')}")
    lines += ["", "[market]"]
    for field in ("spot", "rate", "div"):
        v = _scalar(getattr(market, field), f"market.{field}")
        lines.append(f"{field} = {_toml_value(v, f'market.{field}')}")
    return "\n".join(lines).lstrip("\n") + "\n"


def _scalar(value, where: str) -> float:
    import numpy as np

    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 0:
        raise ValueError(f"{where}: a model file holds one model; got shape {arr.shape}")
    return float(arr)


def save_model(path, model, market, **kwargs) -> Path:
    """Write ``model_toml(model, market, **kwargs)`` to ``path`` atomically (a temporary file
    renamed over it) and check that ``load_model`` reads back the same parameters.

    Returns the path.
    """
    from .book import load_model

    path = Path(path)
    text = model_toml(model, market, **kwargs)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    spec = load_model(path)
    for field, value in model._asdict().items():
        if float(getattr(spec.model, field)) != _scalar(value, field):
            raise ValueError(f"{path}: {field} did not survive the round trip")
    return path
