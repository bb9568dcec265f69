"""Bates (1996): Heston stochastic volatility plus Merton log-normal jumps."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._validation import check_fields, finite, nonnegative
from .heston import HESTON_RULES, Heston, heston_log_cf
from .merton import lognormal_jump_log_cf


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

    def feller_ratio(self):
        return 2.0 * self.kappa * self.theta / self.xi**2

    def validate(self) -> Bates:
        check_fields(
            self,
            HESTON_RULES
            + [
                ("lam", nonnegative, "a finite non-negative jump intensity"),
                ("mu_j", finite, "finite"),
                ("sigma_j", nonnegative, "a finite non-negative jump size volatility"),
            ],
        )
        return self
