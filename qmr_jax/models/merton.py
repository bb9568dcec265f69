"""Merton (1976) jump-diffusion: GBM plus compound-Poisson log-normal jumps."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._validation import check_fields, finite, nonnegative, positive, valid_mask
from .gbm import diffusion_log_cf


def lognormal_jump_log_cf(lam, mu_j, sigma_j, u, t):
    """Compensated compound-Poisson part with log-jumps ``N(mu_j, sigma_j^2)``."""
    iu = 1j * u
    k = jnp.expm1(mu_j + 0.5 * sigma_j**2)
    phi_j = jnp.exp(iu * mu_j - 0.5 * sigma_j**2 * u * u)
    return lam * t * (phi_j - 1.0 - iu * k)


JUMP_RULES = [
    ("lam", nonnegative, "a finite non-negative jump intensity"),
    ("mu_j", finite, "finite"),
    ("sigma_j", nonnegative, "a finite non-negative jump size volatility"),
]
"""Rules of the log-normal jump fields (shared with Bates)."""

MERTON_RULES = [("sigma", positive, "a finite positive volatility")] + JUMP_RULES
"""Validation rules: ``validate()`` raises on them, ``valid()`` is their traced mask."""


class Merton(NamedTuple):
    """Merton jump-diffusion.

    ``log S`` diffuses with volatility ``sigma`` and jumps at Poisson rate ``lam``; each
    log-jump is ``N(mu_j, sigma_j^2)``. The drift is compensated so the discounted spot is a
    martingale.
    """

    sigma: jax.Array | float
    lam: jax.Array | float
    mu_j: jax.Array | float
    sigma_j: jax.Array | float

    def jump_compensator(self):
        """``E[e^Y] - 1`` for one jump ``Y``."""
        return jnp.expm1(self.mu_j + 0.5 * self.sigma_j**2)

    def log_cf(self, u, t):
        u = jnp.asarray(u)
        return diffusion_log_cf(self.sigma, u, t) + lognormal_jump_log_cf(
            self.lam, self.mu_j, self.sigma_j, u, t
        )

    @staticmethod
    def validity_rules():
        return MERTON_RULES

    def valid(self):
        """Traced validity mask (bool array over the batch) of ``MERTON_RULES``."""
        return valid_mask(self, MERTON_RULES)

    def validate(self) -> Merton:
        check_fields(self, MERTON_RULES)
        return self
