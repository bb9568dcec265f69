"""Validation of parameter pytrees at the public boundary.

Checks run only on concrete values: inside ``jit``/``vmap``/``grad`` tracing the leaves are
tracers and the checks are skipped (the caller validated before tracing). Errors name the
container, the field, the rule and the offending value (and its index for batched leaves).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import numpy as np

Rule = tuple[str, Callable[[np.ndarray], np.ndarray], str]


def _concrete(x):
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def check_fields(obj, rules: list[Rule]) -> None:
    """Raise ``ValueError`` for the first leaf breaking a rule.

    Args:
      obj: a NamedTuple of (possibly batched) numeric leaves.
      rules: ``(field, predicate, description)``; predicate maps a float64 array to a bool
        array of the same shape.
    """
    name = type(obj).__name__
    for field, pred, desc in rules:
        raw = getattr(obj, field)
        if type(raw) in (float, int) and math.isfinite(raw) and pred(raw):
            continue  # the common scalar case, without array conversions
        val = _concrete(raw)
        if val is None:
            continue
        if val.ndim == 0 and math.isfinite(f := float(val)) and pred(f):
            continue
        bad = ~np.isfinite(val) | ~pred(val)
        if np.any(bad):
            idx = np.argwhere(bad)[0] if val.ndim else ()
            where = f" at index {tuple(int(i) for i in idx)}" if val.ndim else ""
            shown = val[tuple(idx)] if val.ndim else val
            raise ValueError(f"{name}.{field} must be {desc}; got {float(shown)!r}{where}")


def positive(x):
    return x > 0


def nonnegative(x):
    return x >= 0


def finite(x):
    return np.isfinite(x)


def open_unit_corr(x):
    return (x > -1) & (x < 1)


def probability(x):
    return (x >= 0) & (x <= 1)
