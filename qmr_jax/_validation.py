"""Validation of parameter pytrees at the public boundary.

Checks run only on concrete values: inside ``jit``/``vmap``/``grad`` tracing the leaves are
tracers and the checks are skipped (the caller validated before tracing). Errors name the
container, the field, the rule and the offending value (and its index for batched leaves).

The same rule tables also give traced predicates (``valid_mask``, ``field_masks``): each rule's
predicate is written with array operators only, so it evaluates on NumPy arrays, JAX arrays
and tracers alike. The pricers mask their outputs with ``valid_mask`` so that an invalid
parameter set inside traced code gives NaN, never a finite number.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
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


def field_masks(obj, rules: list[Rule]) -> dict:
    """``{field: bool array}``: where each field is finite and satisfies its rule.

    Traceable (``jit``/``vmap``): the masks are JAX arrays shaped like each leaf.
    """
    out = {}
    for field, pred, _ in rules:
        x = jnp.asarray(getattr(obj, field))
        out[field] = jnp.isfinite(x) & pred(x)
    return out


def valid_mask(obj, rules: list[Rule]):
    """Traced validity of a (possibly batched) parameter set: a bool array broadcast over
    the leaves, ``True`` where every field passes the rules ``check_fields`` enforces."""
    ok = jnp.asarray(True)
    for mask in field_masks(obj, rules).values():
        ok = ok & mask
    return ok


def positive(x):
    return x > 0


def nonnegative(x):
    return x >= 0


def finite(x):
    return x - x == 0  # False for inf and NaN; array operators only (works when traced)


def open_unit_corr(x):
    return (x > -1) & (x < 1)


def probability(x):
    return (x >= 0) & (x <= 1)
