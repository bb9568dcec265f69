"""Heston (1993) stochastic volatility."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._validation import check_fields, nonnegative, open_unit_corr, positive


def heston_log_cf(v0, kappa, theta, xi, rho, u, t):
    """Log characteristic function of ``log(S_t/F_t)`` in the "little trap" form.

    Albrecher, Mayer, Schoutens and Tistaert (2007), "The little Heston trap": with
    ``d`` on the principal branch, ``g = (b - d)/(b + d)`` keeps ``|g e^{-dt}| < 1`` and the
    complex logarithm continuous in ``u``, so no branch tracking is needed for any maturity.
    """
    iu = 1j * u
    b = kappa - rho * xi * iu
    d = jnp.sqrt(b * b + xi**2 * (iu + u * u))
    bmd = b - d
    g = bmd / (b + d)
    edt = jnp.exp(-d * t)
    one_m_gedt = 1.0 - g * edt
    c = kappa * theta / xi**2 * (bmd * t - 2.0 * jnp.log(one_m_gedt / (1.0 - g)))
    dd = bmd / xi**2 * (-jnp.expm1(-d * t)) / one_m_gedt
    return c + dd * v0


class Heston(NamedTuple):
    """Heston model: ``dv = kappa (theta - v) dt + xi sqrt(v) dW_v``, ``d<W, W_v> = rho dt``.

    Attributes:
      v0: initial variance (e.g. 0.36 for 60% vol).
      kappa: mean-reversion speed.
      theta: long-run variance.
      xi: volatility of variance.
      rho: spot/variance correlation, ``-1 < rho < 1``.
    """

    v0: jax.Array | float
    kappa: jax.Array | float
    theta: jax.Array | float
    xi: jax.Array | float
    rho: jax.Array | float

    def log_cf(self, u, t):
        return heston_log_cf(
            self.v0, self.kappa, self.theta, self.xi, self.rho, jnp.asarray(u), t
        )

    def feller_ratio(self):
        """``2 kappa theta / xi^2``; below 1 the variance process can reach zero."""
        return 2.0 * self.kappa * self.theta / self.xi**2

    def validate(self) -> Heston:
        check_fields(self, HESTON_RULES)
        return self


HESTON_RULES = [
    ("v0", nonnegative, "a finite non-negative variance"),
    ("kappa", positive, "a finite positive mean-reversion speed"),
    ("theta", positive, "a finite positive long-run variance"),
    ("xi", positive, "a finite positive vol of variance"),
    ("rho", open_unit_corr, "a correlation strictly inside (-1, 1)"),
]
