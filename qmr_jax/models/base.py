"""Shared pieces of the model containers: the market, and the generic cumulants."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import jet

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
    """Cumulants of ``X_t = log(S_t / F_t)`` by exact Taylor-mode differentiation of ``log_cf``.

    ``c_n = (-i)^n d^n/du^n log phi(u) |_{u=0}``, all orders from one ``jax.experimental.jet``
    pass. Works for any model exposing ``log_cf(u, t)``; used by the COS truncation rule.

    Returns:
      A tuple of arrays shaped like ``t`` (broadcast with the model's leaves), one per order.
    """
    return _cumulants(model, jnp.asarray(t), tuple(orders))


@functools.partial(jax.jit, static_argnums=2)
def _cumulants(model, t, orders):
    dtype = jnp.result_type(t, float)
    f = lambda u: model.log_cf(u, t)
    shape = jnp.shape(f(jnp.zeros((), dtype)))
    u0 = jnp.zeros(shape, dtype)
    top = max(orders)
    terms = [jnp.ones(shape, dtype)] + [jnp.zeros(shape, dtype)] * (top - 1)
    _, series = jet.jet(f, (u0,), (terms,))
    return tuple(jnp.real(series[n - 1] * (-1j) ** n).astype(dtype) for n in orders)
