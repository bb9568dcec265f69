"""Geometric Brownian motion (Black-Scholes)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._validation import check_fields, positive, valid_mask


def diffusion_log_cf(sigma, u, t):
    """log E[exp(iu X)] of the Gaussian part ``X = -sigma^2 t/2 + sigma W_t``."""
    iu = 1j * u
    return -0.5 * sigma**2 * t * (iu + u * u)


GBM_RULES = [("sigma", positive, "a finite positive volatility")]
"""Validation rules: ``validate()`` raises on them, ``valid()`` is their traced mask."""


class GBM(NamedTuple):
    """Geometric Brownian motion: ``dS/S = (r - q) dt + sigma dW``.

    Attributes:
      sigma: volatility (decimal, e.g. 0.6 for 60%).
    """

    sigma: jax.Array | float

    def log_cf(self, u, t):
        """Log characteristic function of ``log(S_t/F_t)``."""
        return diffusion_log_cf(self.sigma, jnp.asarray(u), t)

    @staticmethod
    def validity_rules():
        return GBM_RULES

    def valid(self):
        """Traced validity mask (bool array over the batch) of ``GBM_RULES``."""
        return valid_mask(self, GBM_RULES)

    def validate(self) -> GBM:
        check_fields(self, GBM_RULES)
        return self
