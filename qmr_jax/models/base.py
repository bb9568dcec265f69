"""Shared pieces of the model containers: the market, the generic cumulants and the checks
of (batched) parameter sets."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import jet

from .._validation import check_fields, field_masks, positive, valid_mask

MAX_RATE = 5.0
"""Largest ``|rate|`` and ``|div|`` accepted (500% a year, continuously compounded)."""


def _bounded_rate(x):
    return (x >= -MAX_RATE) & (x <= MAX_RATE)


MARKET_RULES = [
    ("spot", positive, "a finite positive price"),
    ("rate", _bounded_rate,
     f"a finite continuously compounded rate with |rate| <= {MAX_RATE:g} (500% a year)"),
    ("div", _bounded_rate,
     f"a finite continuously compounded yield with |div| <= {MAX_RATE:g} (500% a year)"),
]


class Market(NamedTuple):
    """Spot and continuously compounded rates.

    ``forward(T) = spot * exp((rate - div) * T)``, ``discount(T) = exp(-rate * T)``. For a
    crypto book ``div`` plays the role of the coin's own funding/borrow rate, so a Deribit
    forward curve maps to ``rate - div``. ``|rate|`` and ``|div|`` are at most ``MAX_RATE``
    (5, i.e. 500% a year): beyond that a forward is physically meaningless.
    """

    spot: jax.Array | float
    rate: jax.Array | float = 0.0
    div: jax.Array | float = 0.0

    def forward(self, t):
        return self.spot * jnp.exp((self.rate - self.div) * t)

    def discount(self, t):
        return jnp.exp(-self.rate * t)

    @staticmethod
    def validity_rules():
        return MARKET_RULES

    def valid(self):
        """Traced validity mask of ``MARKET_RULES``."""
        return valid_mask(self, MARKET_RULES)

    def validate(self) -> Market:
        check_fields(self, MARKET_RULES)
        return self


def cumulants(model, t, orders=(1, 2, 4), *, exact=True):
    """Cumulants of ``X_t = log(S_t / F_t)``.

    ``c_n = (-i)^n d^n/du^n log phi(u) |_{u=0}``. A model may supply its own (Heston and
    Bates do, regular as ``kappa -> 0``); otherwise all orders come from one exact
    Taylor-mode differentiation (``jax.experimental.jet``) of ``log_cf``. Used by the COS
    truncation rule and the Lewis period, with ``exact=False``: a model may then return
    cheaper cumulants that are only close (see ``heston_cumulants``).

    Returns:
      A tuple of arrays shaped like ``t`` (broadcast with the model's leaves), one per order.
    """
    return _cumulants(model, jnp.asarray(t), tuple(orders), exact)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _cumulants(model, t, orders, exact=True):
    own = getattr(model, "cumulants", None)
    if own is not None:
        return tuple(own(t, orders, exact))
    return jet_cumulants(model.log_cf, t, orders)


def jet_cumulants(log_cf, t, orders):
    """Cumulants of ``log_cf(u, t)`` by one ``jet`` pass at ``u = 0``."""
    dtype = jnp.result_type(t, float)
    f = lambda u: log_cf(u, t)
    shape = jnp.shape(f(jnp.zeros((), dtype)))
    u0 = jnp.zeros(shape, dtype)
    top = max(orders)
    terms = [jnp.ones(shape, dtype)] + [jnp.zeros(shape, dtype)] * (top - 1)
    _, series = jet.jet(f, (u0,), (terms,))
    return tuple(jnp.real(series[n - 1] * (-1j) ** n).astype(dtype) for n in orders)


# ------------------------------------------------------------------------------------------
# checks of batched parameter sets


def model_valid(model, market=None):
    """Traced validity of ``model`` (and ``market``): a bool array over the batch.

    ``True`` where every field passes the rules of the model's ``validate()``. The pricers
    use it to mask their outputs (``jnp.where(valid, x, nan)``).
    """
    ok = model.valid()
    if market is not None:
        ok = ok & market.valid()
    return ok


def mask_invalid(x, valid):
    """``x`` where ``valid``, NaN elsewhere (``valid`` broadcasts against ``x``)."""
    return jnp.where(valid, x, jnp.asarray(jnp.nan, jnp.result_type(x)))


class ModelCheck(NamedTuple):
    """Which members of a batch of parameter sets are invalid, and why.

    Attributes:
      valid: bool array over the batch (the broadcast shape of the leaves).
      fields: ``{"Type.field": bool array}``, ``True`` where that field breaks its rule.
      rules: ``{"Type.field": description of what is expected}``.
    """

    valid: np.ndarray
    fields: dict
    rules: dict

    @property
    def ok(self) -> bool:
        return bool(np.all(self.valid))

    def report(self, limit: int = 20) -> str:
        """One line per invalid (batch member, field), at most ``limit`` lines."""
        if self.ok:
            return "all parameter sets are valid"
        lines = []
        for name, bad in self.fields.items():
            for idx in np.argwhere(np.atleast_1d(bad)):
                where = f"[{', '.join(str(int(i)) for i in idx)}]" if np.ndim(bad) else ""
                lines.append(f"member{where}: {name} must be {self.rules[name]}")
        n = len(lines)
        shown = lines[:limit] + ([f"... and {n - limit} more"] if n > limit else [])
        return f"{n} invalid field value(s):\n" + "\n".join(shown)

    def raise_if_invalid(self) -> None:
        if not self.ok:
            raise ValueError(self.report())


def check_models(model, market=None) -> ModelCheck:
    """Report which batch members (and which fields) of ``model`` / ``market`` are invalid.

    The checked path beside the traced one: inside ``jit``/``vmap`` an invalid member prices
    as NaN; this says which member and which field, from the same rule tables as
    ``validate()``. Concrete parameters only (call it outside ``jit``; inside, use
    ``field_status`` or ``checkify_models``).

    Examples:
      >>> import numpy as np, qmr_jax as qmr
      >>> m = qmr.Heston(np.array([0.04, -0.01]), 2.0, 0.04, 0.5, np.array([-0.5, 1.5]))
      >>> print(qmr.check_models(m).report())
      2 invalid field value(s):
      member[1]: Heston.v0 must be a finite non-negative variance
      member[1]: Heston.rho must be a correlation strictly inside (-1, 1)
    """
    status = field_status(model, market)
    fields = {k: ~np.asarray(v) for k, v in status.items()}
    shape = np.broadcast_shapes(*(np.shape(v) for v in fields.values()))
    valid = np.ones(shape, bool)
    for bad in fields.values():
        valid &= ~bad
    rules = {}
    for tree in (model, market):
        if tree is None:
            continue
        for field, _, desc in tree.validity_rules():
            rules[f"{type(tree).__name__}.{field}"] = desc
    return ModelCheck(valid, fields, rules)


def field_status(model, market=None) -> dict:
    """``{"Type.field": bool array}``: ``True`` where the field is valid. Traceable."""
    out = {}
    for tree in (model, market):
        if tree is None:
            continue
        name = type(tree).__name__
        for field, mask in field_masks(tree, tree.validity_rules()).items():
            out[f"{name}.{field}"] = mask
    return out


def checkify_models(model, market=None) -> None:
    """``jax.experimental.checkify`` checks of every field (inside ``checkify.checkify``).

    Each failing field reports its name and the flat index of the first invalid member.

    Examples:
      >>> import jax, numpy as np, qmr_jax as qmr
      >>> from jax.experimental import checkify
      >>> def price(m):
      ...     qmr.checkify_models(m)
      ...     return m.v0
      >>> err, _ = checkify.checkify(jax.jit(price))(qmr.Heston(np.array([0.04, -1.0]), 2.0,
      ...                                                     0.04, 0.5, -0.5))
      >>> err.get()
      'Heston.v0 is invalid (first at flat index 1)...
    """
    from jax.experimental import checkify

    for name, ok in field_status(model, market).items():
        ok = jnp.ravel(ok)
        first = jnp.argmin(ok)
        checkify.check(jnp.all(ok), f"{name} is invalid (first at flat index {{}})", first)
