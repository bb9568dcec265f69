"""Shared pieces of the model containers: the market, and the generic cumulants."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._validation import check_fields, finite, positive


class Market(NamedTuple):
    """Spot and continuously compounded rates.

    ``forward(T) = spot * exp((rate - div) * T)``, ``discount(T) = exp(-rate * T)``. For a
    crypto book ``div`` plays the role of the coin's own funding/borrow rate, so a Deribit
    forward curve maps to ``rate - div``.
    """

    spot: jax.Array | float
    rate: jax.Array | float = 0.0
    div: jax.Array | float = 0.0

    def forward(self, t):
        return self.spot * jnp.exp((self.rate - self.div) * t)

    def discount(self, t):
        return jnp.exp(-self.rate * t)

    def validate(self) -> Market:
        check_fields(
            self,
            [
                ("spot", positive, "a finite positive price"),
                ("rate", finite, "finite"),
                ("div", finite, "finite"),
            ],
        )
        return self


def cumulants(model, t, orders=(1, 2, 4)):
    """Cumulants of ``X_t = log(S_t / F_t)`` by exact automatic differentiation of ``log_cf``.

    ``c_n = (-i)^n d^n/du^n log phi(u) |_{u=0}``. Works for any model exposing
    ``log_cf(u, t)``; used by the COS truncation rule and by tests.

    Returns:
      A tuple of arrays shaped like ``t``, one per requested order.
    """
    t = jnp.asarray(t)
    dtype = jnp.result_type(t, float)
    f = lambda u: model.log_cf(u, t)
    derivs = {}
    g = f
    for n in range(1, max(orders) + 1):
        g = jax.jacfwd(g)
        if n in orders:
            derivs[n] = g
    u0 = jnp.zeros((), dtype)
    out = []
    for n in orders:
        val = derivs[n](u0)
        out.append(jnp.real(val * (-1j) ** n).astype(dtype))
    return tuple(out)
