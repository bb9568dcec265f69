"""Prices at the edges of every model's domain: removable singularities have their limits.

References are derived independently of the characteristic functions under test:

* Heston with ``xi -> 0`` is Black-Scholes with the integrated variance
  ``theta T + (v0 - theta)(1 - e^{-kappa T}) / kappa`` (``v0 T`` at ``kappa = 0``); the
  ``O(xi)`` correction bounds the distance.
* Heston's cumulants as ``kappa -> 0`` tend to those of the driftless variance, checked
  against a Cauchy integral of the characteristic function on a circle (a route that never
  differentiates ``d = sqrt(...)``).
* Monte Carlo (QE scheme) agrees with COS and Lewis within 4 standard errors plus the
  scheme's documented bias.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qmr_jax as qmr
from qmr_jax.models.heston import heston_log_cf

MARKET = qmr.Market(100.0, 0.02, 0.01)
STRIKES = np.array([60.0, 90.0, 100.0, 110.0, 160.0])
T = 0.7


def _both(model, t=T):
    cos = np.asarray(qmr.fourier_price(model, MARKET, STRIKES, t, True))
    lewis = np.asarray(qmr.fourier_price(model, MARKET, STRIKES, t, True, method="lewis"))
    return cos, lewis


def _black(total_var, t=T):
    vol = np.sqrt(total_var / t)
    return np.asarray(qmr.black_price(MARKET.forward(t), STRIKES, t, vol, True,
                                      MARKET.discount(t)))


def _cauchy_cumulants(params, t, radius=0.3, n=64):
    theta = 2 * np.pi * np.arange(n) / n
    s = radius * np.exp(1j * theta)
    k = np.asarray(heston_log_cf(*params, jnp.asarray(-1j * s), t))  # log E[e^{sX}]
    return [math.factorial(j) * np.real(np.mean(k * np.exp(-1j * j * theta))) / radius**j
            for j in (1, 2, 4)]


@pytest.mark.parametrize("kappa", [1e-2, 1e-5, 1e-8, 1e-12])
def test_heston_cumulants_at_small_kappa_match_a_cauchy_integral(kappa):
    params = (0.36, kappa, 0.36, 1.0, -0.25)
    got = [float(c) for c in qmr.cumulants(qmr.Heston(*params), 0.5)]
    want = _cauchy_cumulants(params, 0.5)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_heston_cumulants_series_and_jet_branches_meet():
    """Around ``kappa T = 0.3``, where the series hands over to Taylor-mode differentiation,
    both routes give the same cumulants at the same parameters (and so do the branches the
    public function picks on either side)."""
    from qmr_jax.models.base import jet_cumulants
    from qmr_jax.models.heston import _SERIES_KT, _series_cumulants

    for xi in (0.01, 0.5, 5.0, 20.0):
        for t in (1 / 365, 0.5, 2.0):
            for kt in (0.5 * _SERIES_KT, _SERIES_KT, 2.0 * _SERIES_KT):
                p = (0.04, kt / t, 0.25, xi, -0.7)
                ser = np.asarray(_series_cumulants(*p, jnp.asarray(t), 4))[[1, 2, 4]]
                jet = np.array([float(c) for c in jet_cumulants(
                    lambda u, tt, p=p: heston_log_cf(*p, u, tt), jnp.asarray(t), (1, 2, 4))])
                if kt == _SERIES_KT:  # both routes are exact here
                    np.testing.assert_allclose(ser, jet, rtol=1e-9, err_msg=str((xi, t)))
                got = [float(c) for c in qmr.cumulants(qmr.Heston(*p), t)]
                np.testing.assert_allclose(got, ser if kt <= _SERIES_KT else jet, rtol=1e-10)


def test_heston_prices_continuous_as_kappa_tends_to_zero():
    prices = {k: _both(qmr.Heston(0.36, k, 0.36, 1.0, -0.25)) for k in
              (1e-4, 1e-6, 1e-8, 1e-12)}
    ref = prices[1e-12][0]
    for k, (cos, lewis) in prices.items():
        assert np.all(np.isfinite(cos)) and np.all(np.isfinite(lewis))
        np.testing.assert_allclose(cos, lewis, atol=1e-9)
        # d price / d kappa is O(spot * T): the distance shrinks with kappa
        np.testing.assert_allclose(cos, ref, atol=100.0 * k + 1e-9)


@pytest.mark.parametrize("kappa", [2.0, 1e-9])
def test_heston_tends_to_black_scholes_as_xi_tends_to_zero(kappa):
    v0, theta = 0.09, 0.25
    var = theta * T + (v0 - theta) * (-math.expm1(-kappa * T)) / kappa
    ref = _black(var)
    for xi in (1e-3, 1e-6, 1e-9):
        cos, lewis = _both(qmr.Heston(v0, kappa, theta, xi, -0.5))
        # the first correction is O(xi) (rho != 0): about 1.6 xi here
        np.testing.assert_allclose(cos, ref, atol=3.0 * xi + 1e-10)
        np.testing.assert_allclose(lewis, ref, atol=3.0 * xi + 1e-10)


def test_bates_tends_to_heston_as_lam_tends_to_zero_and_merton_edges():
    heston, _ = _both(qmr.Heston(0.09, 2.0, 0.25, 1.0, -0.5))
    for lam in (1e-4, 1e-8, 0.0):
        cos, lewis = _both(qmr.Bates(0.09, 2.0, 0.25, 1.0, -0.5, lam, -0.1, 0.2))
        np.testing.assert_allclose(cos, heston, atol=10.0 * lam + 1e-10)
        np.testing.assert_allclose(lewis, heston, atol=10.0 * lam + 1e-10)
    for sigma_j in (0.0, 1e-8):
        m = qmr.Merton(0.3, 1.0, -0.1, sigma_j)
        ref = np.asarray(qmr.merton_series_price(m, MARKET, STRIKES, T, True))
        cos, lewis = _both(m)
        np.testing.assert_allclose(cos, ref, atol=1e-10)
        np.testing.assert_allclose(lewis, ref, atol=1e-10)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_kou_at_certain_jump_direction(p):
    cos, lewis = _both(qmr.Kou(0.3, 1.0, p, 3.0, 5.0))
    np.testing.assert_allclose(cos, lewis, atol=1e-9)


def test_kou_near_the_calibration_edge_of_eta1():
    # eta1 = 1.05: E[e^Y | up] = 21, a tail e^x f(x) ~ e^{-0.05 x} that the cumulant range
    # alone truncated (COS was 14 below Lewis on a unit-100 forward at T = 5)
    m = qmr.Kou(0.3, 1.0, 1.0, 1.05, 5.0)
    cos, lewis = _both(m, 5.0)
    np.testing.assert_allclose(cos, lewis, atol=1e-4)


def test_short_expiries_agree():
    m = qmr.Heston(0.09, 2.0, 0.25, 1.0, -0.5)
    for t in (1e-2, 1e-4, 1e-6):
        cos, lewis = _both(m, t)
        np.testing.assert_allclose(cos, lewis, atol=1e-12 * 100.0 + 1e-12)


def test_gradients_finite_at_the_edges():
    def price(kappa, xi):
        m = qmr.Heston(0.36, kappa, 0.36, xi, -0.25)
        return qmr.fourier_price(m, MARKET, 100.0, T, True, n_terms=256)

    g = jax.grad(price, argnums=(0, 1))
    for kappa, xi in [(1e-9, 1.0), (2.0, 1e-9), (1e-9, 1e-9)]:
        assert all(np.isfinite(float(x)) for x in g(kappa, xi))


def test_issue_example_kappa_1e_6_prices_and_vols():
    m = qmr.Heston(0.36, 1e-6, 0.36, 1.0, -0.25)
    market = qmr.Market(60000.0)
    k = np.array([50000.0, 64000.0, 65000.0])
    t = np.array([[14.0 / 365.0], [180.0 / 365.0]])
    prices = np.asarray(qmr.fourier_price(m, market, k, t, True))
    vols = np.asarray(qmr.implied_vol(prices, 60000.0, k, t, True))
    assert np.all(np.isfinite(prices))
    # a martingale variance at 60% vol: smile vols near 60%, never 600%
    assert np.all((vols > 0.5) & (vols < 0.7))


@pytest.mark.slow
def test_cos_lewis_and_monte_carlo_agree_at_small_kappa():
    m = qmr.Heston(0.36, 1e-5, 0.36, 1.0, -0.25)
    market = qmr.Market(60000.0)
    k = np.array([50000.0, 60000.0, 64000.0, 65000.0])
    cos = np.asarray(qmr.fourier_price(m, market, k, 0.5, True))
    lewis = np.asarray(qmr.fourier_price(m, market, k, 0.5, True, method="lewis"))
    np.testing.assert_allclose(cos, lewis, rtol=1e-10)
    r = qmr.mc_price(m, market, qmr.payoffs.european(k, 0.5), key=jax.random.key(7),
                     n_paths=100_000, n_steps=32, antithetic=True)
    # QE bias: below 1e-4 of spot (module docstring of qmr_jax.simulate)
    assert np.all(np.abs(r.value - cos) <= 4.0 * r.stderr + 1e-4 * 60000.0)


def test_qe_step_finite_at_tiny_xi_and_kappa():
    m = qmr.Heston(0.09, 1e-10, 0.09, 1e-12, -0.5)
    p = qmr.simulate(m, qmr.Market(100.0), [0.5], key=jax.random.key(0), n_paths=512,
                     n_steps=8)
    spot = np.asarray(p.spot)
    assert np.all(np.isfinite(spot))
    # deterministic variance 0.09: log-returns have sd 0.3 sqrt(0.5)
    assert abs(np.std(np.log(spot)) - 0.3 * np.sqrt(0.5)) < 0.03


def test_market_rates_bounded_and_forward_never_overflows():
    with pytest.raises(ValueError, match=r"Market.rate .*500% a year"):
        qmr.Market(60000.0, 100.0).validate()
    with pytest.raises(ValueError, match=r"Market.div"):
        qmr.Market(60000.0, 0.0, -6.0).validate()
    with pytest.raises(ValueError, match="forward"):
        qmr.fourier_price(qmr.GBM(0.5), qmr.Market(60000.0, 5.0), 60000.0, 200.0, True)
    # traced: an out-of-bounds market is NaN, never a finite number or inf
    f = jax.jit(lambda r: qmr.fourier_price(qmr.GBM(0.5), qmr.Market(60000.0, r), 60000.0,
                                            1.0, True))
    assert np.isnan(float(f(100.0)))
    assert np.isfinite(float(f(0.05)))
