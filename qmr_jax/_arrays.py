"""Small array helpers shared by the public entry points."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def float_dtype(*trees):
    """The floating dtype implied by all leaves.

    Typed arrays decide (float32 stays float32); Python scalars are weak-typed and follow them;
    all-Python input gives JAX's default float (float64 when x64 is enabled).
    """
    leaves = [x for t in trees for x in jax.tree_util.tree_leaves(t)]
    dt = jnp.result_type(*leaves, float)
    if not jnp.issubdtype(dt, jnp.floating):
        dt = jnp.result_type(float)
    return dt


def check_array(name: str, value, rule, desc: str) -> None:
    """Raise ``ValueError`` naming ``name`` and the index of the first entry breaking ``rule``.

    Skipped for tracers (checks belong at the public boundary, before tracing).
    """
    if isinstance(value, jax.core.Tracer):
        return
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric; got {value!r}") from None
    bad = ~np.isfinite(arr) | ~rule(arr)
    if np.any(bad):
        idx = np.argwhere(bad)[0] if arr.ndim else ()
        shown = float(arr[tuple(idx)]) if arr.ndim else float(arr)
        where = f" at index {tuple(int(i) for i in idx)}" if arr.ndim else ""
        raise ValueError(f"{name} must be {desc}; got {shown!r}{where}")
