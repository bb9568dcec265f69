"""Bates (1996): Heston stochastic volatility plus Merton log-normal jumps."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._validation import check_fields, valid_mask
from .heston import HESTON_RULES, Heston, heston_cumulants, heston_log_cf
from .merton import JUMP_RULES, lognormal_jump_log_cf

BATES_RULES = HESTON_RULES + JUMP_RULES
"""Validation rules: ``validate()`` raises on them, ``valid()`` is their traced mask."""


class Bates(NamedTuple):
    """Bates model: Heston variance dynamics plus compensated log-normal jumps.

    Attributes are Heston's (``v0, kappa, theta, xi, rho``) followed by Merton's jump part
    (``lam``, log-jump mean ``mu_j`` and std ``sigma_j``).
    """

    v0: jax.Array | float
    kappa: jax.Array | float
    theta: jax.Array | float
    xi: jax.Array | float
    rho: jax.Array | float
    lam: jax.Array | float
    mu_j: jax.Array | float
    sigma_j: jax.Array | float

    def heston(self) -> Heston:
        return Heston(self.v0, self.kappa, self.theta, self.xi, self.rho)

    def jump_compensator(self):
        return jnp.expm1(self.mu_j + 0.5 * self.sigma_j**2)

    def log_cf(self, u, t):
        u = jnp.asarray(u)
        return heston_log_cf(
            self.v0, self.kappa, self.theta, self.xi, self.rho, u, t
        ) + lognormal_jump_log_cf(self.lam, self.mu_j, self.sigma_j, u, t)

    def cumulants(self, t, orders=(1, 2, 4), exact=True):
        """Heston's cumulants (regular as ``kappa -> 0``; see ``heston_cumulants`` for
        ``exact``) plus those of the jumps."""
        from .base import jet_cumulants

        t = jnp.asarray(t)
        orders = tuple(orders)
        sv = heston_cumulants(self.v0, self.kappa, self.theta, self.xi, self.rho, t, orders,
                              exact)
        jumps = jet_cumulants(
            lambda u, tt: lognormal_jump_log_cf(self.lam, self.mu_j, self.sigma_j, u, tt),
            t, orders,
        )
        return tuple(a + b for a, b in zip(sv, jumps, strict=True))

    def feller_ratio(self):
        return 2.0 * self.kappa * self.theta / self.xi**2

    @staticmethod
    def validity_rules():
        return BATES_RULES

    def valid(self):
        """Traced validity mask (bool array over the batch) of ``BATES_RULES``."""
        return valid_mask(self, BATES_RULES)

    def validate(self) -> Bates:
        check_fields(self, BATES_RULES)
        return self
