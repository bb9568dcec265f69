"""Kou (2002) double-exponential jump-diffusion."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._validation import check_fields, nonnegative, positive, probability, valid_mask
from .gbm import diffusion_log_cf

KOU_RULES = [
    ("sigma", positive, "a finite positive volatility"),
    ("lam", nonnegative, "a finite non-negative jump intensity"),
    ("p", probability, "a probability in [0, 1]"),
    ("eta1", lambda x: x > 1, "> 1 (finite expected up-jump factor)"),
    ("eta2", positive, "a finite positive rate"),
]
"""Validation rules: ``validate()`` raises on them, ``valid()`` is their traced mask."""


class Kou(NamedTuple):
    """Kou jump-diffusion.

    Jumps arrive at rate ``lam``; a jump is up with probability ``p`` and then ``Exp(eta1)``
    in log-space, otherwise down by ``Exp(eta2)``. ``eta1 > 1`` keeps ``E[e^Y]`` finite.
    """

    sigma: jax.Array | float
    lam: jax.Array | float
    p: jax.Array | float
    eta1: jax.Array | float
    eta2: jax.Array | float

    def jump_compensator(self):
        """``E[e^Y] - 1`` for one jump ``Y``."""
        return (
            self.p * self.eta1 / (self.eta1 - 1.0)
            + (1.0 - self.p) * self.eta2 / (self.eta2 + 1.0)
            - 1.0
        )

    def moment_bounds(self):
        """``(lo, hi)``: ``E[e^{pX}]`` is finite exactly for ``lo < p < hi``, here
        ``(-eta2, eta1)`` (the exponential jump tails; the closed-form ``log_cf`` continues
        past these poles to finite but meaningless values)."""
        return -jnp.asarray(self.eta2), jnp.asarray(self.eta1)

    def log_cf(self, u, t):
        u = jnp.asarray(u)
        iu = 1j * u
        phi_j = self.p * self.eta1 / (self.eta1 - iu) + (1.0 - self.p) * self.eta2 / (
            self.eta2 + iu
        )
        jumps = self.lam * t * (phi_j - 1.0 - iu * self.jump_compensator())
        return diffusion_log_cf(self.sigma, u, t) + jumps

    @staticmethod
    def validity_rules():
        return KOU_RULES

    def valid(self):
        """Traced validity mask (bool array over the batch) of ``KOU_RULES``."""
        return valid_mask(self, KOU_RULES)

    def validate(self) -> Kou:
        check_fields(self, KOU_RULES)
        return self
