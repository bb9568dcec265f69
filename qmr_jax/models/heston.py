"""Heston (1993) stochastic volatility."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._validation import check_fields, nonnegative, open_unit_corr, positive, valid_mask


def _log1p_ratio(x):
    """``log(1 + x) / x``, 1 at ``x = 0``: its series for ``|x| < 1e-3`` (exact to rounding,
    with exact derivatives up to order 6, so Taylor-mode cumulants stay exact), else the
    ratio with a safe argument (finite derivatives everywhere)."""
    small = jnp.real(x) ** 2 + jnp.imag(x) ** 2 < 1e-6
    safe = jnp.where(small, 1.0, x)
    series = 0.0
    for n in range(7, 0, -1):
        series = series * x + (-1.0) ** (n - 1) / n
    return jnp.where(small, series, jnp.log1p(safe) / safe)


def heston_log_cf(v0, kappa, theta, xi, rho, u, t):
    """Log characteristic function of ``log(S_t/F_t)`` in the "little trap" form.

    Albrecher, Mayer, Schoutens and Tistaert (2007), "The little Heston trap": with
    ``d`` on the principal branch, ``g = (b - d)/(b + d)`` keeps ``|g e^{-dt}| < 1`` and the
    complex logarithm continuous in ``u``, so no branch tracking is needed for any maturity.

    Written without removable singularities: ``b - d = -xi^2 w / (b + d)`` with
    ``w = iu + u^2`` (``b^2 - d^2 = -xi^2 w`` exactly), so neither the difference ``b - d``
    nor the division by ``xi^2`` cancels as ``xi -> 0`` or ``kappa -> 0``; the logarithm is
    ``log1p`` scaled by its argument (``log(1 + x) / x -> 1``). ``b + d`` vanishes only at
    ``u = 0`` with ``kappa = 0``, outside the model's domain (``kappa > 0``), where ``w = 0``.
    """
    iu = 1j * u
    w = iu + u * u
    b = kappa - rho * xi * iu
    d = jnp.sqrt(b * b + xi**2 * w)
    bpd = b + d
    at_zero = bpd == 0
    bpd = jnp.where(at_zero, 1.0, bpd)
    bmd_x = -w / bpd  # (b - d) / xi^2
    g_x = bmd_x / bpd  # g / xi^2
    g = g_x * xi**2
    one_m_edt = -jnp.expm1(-d * t)
    one_m_gedt = 1.0 - g * (1.0 - one_m_edt)
    # log((1 - g e^{-dt}) / (1 - g)) = log1p(x), x = g (1 - e^{-dt}) / (1 - g)
    y = g_x * one_m_edt / (1.0 - g)  # x / xi^2
    log_term_x = y * _log1p_ratio(y * xi**2)
    c = kappa * theta * (bmd_x * t - 2.0 * log_term_x)
    dd = bmd_x * one_m_edt / one_m_gedt
    return c + dd * v0


# Taylor terms of the series cumulants, which serve ``kappa t <= _SERIES_KT``: there 20 terms
# are exact to rounding (1e-13 relative against 8 substeps of 40 terms, over xi up to 20 and
# T up to 5 years), and beyond it Taylor-mode differentiation of the characteristic function
# is (1e-10 relative at kappa t = 0.3, 1e-13 at 1).
_SERIES_TERMS = 20
_SERIES_KT = 0.3


def _series_cumulants(v0, kappa, theta, xi, rho, t, top):
    """Cumulants 0..top of ``log(S_t/F_t)`` from the Riccati equations in power series.

    ``K(s, t) = log E[e^{s X_t}] = A + B v0`` with ``B_t = (s^2 - s)/2 + (rho xi s - kappa) B
    + xi^2 B^2 / 2`` and ``A_t = kappa theta B`` (``A = B = 0`` at ``t = 0``). Truncated at
    ``s^top``, the coefficients ``B = sum_n beta_n s^n`` obey a triangular system, solved by
    its Taylor series in time (``_SERIES_TERMS`` terms, exact to rounding for
    ``kappa t <= _SERIES_KT``), unrolled into elementwise arithmetic; no division by
    ``kappa`` or ``xi``, so the limits ``kappa -> 0`` and ``xi -> 0`` are regular (at
    ``kappa = 0`` the series is a polynomial). ``c_n = n! (alpha_n + beta_n v0)``.

    Returns:
      An array of shape ``broadcast + (top + 1,)`` (index ``n`` holds ``c_n``; ``c_0 = 0``).
    """
    dtype = jnp.result_type(v0, kappa, theta, xi, rho, t)
    kk, rr, qq = kappa * t, rho * xi * t, 0.5 * xi**2 * t
    ktt = kappa * theta * t
    zero = jnp.zeros(jnp.broadcast_shapes(*(jnp.shape(x) for x in (v0, kappa, theta, xi, rho,
                                                                     t))), dtype)
    orders = range(1, top + 1)
    # b[m][n]: coefficient of (tau^m s^n) of B(s, tau t), tau in [0, 1]; b[0] = 0, b[1] is
    # the forcing; a[m][n] likewise for A.
    b = [{n: zero for n in orders}]
    b.append({n: zero + (-0.5 * t if n == 1 else 0.5 * t if n == 2 else 0.0) for n in orders})
    a = [{n: zero for n in orders}, {n: zero for n in orders}]
    for m in range(1, _SERIES_TERMS):
        nxt, anx = {}, {}
        for n in orders:
            square = 0.0
            for j in range(1, n):
                for i in range(1, m):  # b[0] = 0
                    square = square + b[i][j] * b[m - i][n - j]
            lower = b[m][n - 1] if n > 1 else 0.0
            nxt[n] = (rr * lower - kk * b[m][n] + qq * square) / (m + 1)
            anx[n] = ktt * b[m][n] / (m + 1)
        b.append(nxt)
        a.append(anx)
    v0 = jnp.asarray(v0, dtype)
    cols = [zero]
    for n in orders:
        beta = sum(b[m][n] for m in range(len(b)))
        alpha = sum(a[m][n] for m in range(len(a)))
        cols.append(math.factorial(n) * (alpha + beta * v0))
    return jnp.stack(cols, axis=-1)


def heston_cumulants(v0, kappa, theta, xi, rho, t, orders, exact=True):
    """Cumulants of ``log(S_t/F_t)`` at the given orders (a tuple of arrays).

    ``exact=True``: for ``kappa t <= 0.3`` (``_SERIES_KT``) from the Riccati equations in
    power series (``_series_cumulants``, regular as ``kappa -> 0`` and ``xi -> 0``); beyond,
    by Taylor-mode differentiation of the characteristic function, which is exact there
    (1e-10 relative at ``kappa t = 0.3``) but cancels catastrophically as ``kappa t -> 0``.
    Both branches are evaluated with safe parameters (double ``where``), so values and
    derivatives are finite everywhere in the domain.

    ``exact=False`` (the Fourier pricers' ranges and control variates): differentiation alone,
    with ``kappa`` raised to ``0.3 / t`` where ``kappa t`` is smaller. Those cumulants are
    continuous in ``kappa`` and change by a few percent between ``kappa t = 0.3`` and 0, far
    inside the 16 standard deviations of a range, whose tails the Chernoff bounds of the
    actual model check anyway; the pricers then compile and run as fast as before (the series
    is a large program).
    """
    from .base import jet_cumulants

    t = jnp.asarray(t)
    kt = kappa * t
    series_side = kt <= _SERIES_KT
    # the jet branch sees a kappa t inside its own range, the series one inside its own
    k_jet = jnp.where(series_side, _SERIES_KT / jnp.where(t > 0, t, 1.0), kappa)
    jet_c = jet_cumulants(
        lambda u, tt: heston_log_cf(v0, k_jet, theta, xi, rho, u, tt), t, orders
    )
    if not exact:
        return tuple(jet_c)
    k_ser = jnp.where(series_side, kappa, 0.0)
    ser = _series_cumulants(v0, k_ser, theta, xi, rho, t, max(orders))
    return tuple(jnp.where(series_side, ser[..., n], cj) for n, cj in zip(orders, jet_c,
                                                                         strict=True))


HESTON_RULES = [
    ("v0", nonnegative, "a finite non-negative variance"),
    ("kappa", positive, "a finite positive mean-reversion speed"),
    ("theta", positive, "a finite positive long-run variance"),
    ("xi", positive, "a finite positive vol of variance"),
    ("rho", open_unit_corr, "a correlation strictly inside (-1, 1)"),
]
"""Validation rules of the Heston fields: ``validate()`` raises on them, ``valid()`` is
their traced mask (the same table serves both)."""


class Heston(NamedTuple):
    """Heston model: ``dv = kappa (theta - v) dt + xi sqrt(v) dW_v``, ``d<W, W_v> = rho dt``.

    Attributes:
      v0: initial variance (e.g. 0.36 for 60% vol).
      kappa: mean-reversion speed.
      theta: long-run variance.
      xi: volatility of variance.
      rho: spot/variance correlation, ``-1 < rho < 1``.

    The characteristic function and the cumulants are regular at the domain's edges
    ``kappa -> 0`` (the variance a martingale), ``xi -> 0`` (deterministic variance) and
    ``t -> 0``.
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

    def cumulants(self, t, orders=(1, 2, 4), exact=True):
        """Cumulants of ``log(S_t/F_t)`` (see ``heston_cumulants``)."""
        return heston_cumulants(self.v0, self.kappa, self.theta, self.xi, self.rho,
                                jnp.asarray(t), tuple(orders), exact)

    def feller_ratio(self):
        """``2 kappa theta / xi^2``; below 1 the variance process can reach zero."""
        return 2.0 * self.kappa * self.theta / self.xi**2

    @staticmethod
    def validity_rules():
        return HESTON_RULES

    def valid(self):
        """Traced validity mask (bool array over the batch) of ``HESTON_RULES``."""
        return valid_mask(self, HESTON_RULES)

    def validate(self) -> Heston:
        check_fields(self, HESTON_RULES)
        return self
