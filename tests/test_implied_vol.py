"""Implied volatility: round trips over a wide domain, status codes, derivatives, dtypes.

Accuracy condition used throughout. A float64 price is known to within its rounding (half
an ulp) plus the evaluation error of ``black_price`` (a few ulps), so it determines the
volatility only to ``|d vol| ~ eps * price / vega`` to first order. We require

    |vol_implied - vol| <= max(1e-12 * vol, 4 * eps * price / vega)

wherever that first-order bound is meaningful: the entry is solvable (``IV_OK``), the
bound ``4 eps price / vega`` is below ``1e-3 * vol`` (otherwise the price barely moves with
the vol and the linearisation fails), and the normalised out-of-the-money price
``(price - D*intrinsic) / (D sqrt(F K))`` is above ``1e-250`` (far from underflow). Where the
price does not determine the vol we require instead that the implied vol reprices to within
a few ulps.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import QuantLib as ql
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qmr_jax.pricing.black import (
    IV_ABOVE_MAX,
    IV_BAD_INPUT,
    IV_BELOW_INTRINSIC,
    IV_OK,
    black_greeks,
    black_price,
    implied_vol,
)

EPS = np.finfo(np.float64).eps
EPS32 = float(np.finfo(np.float32).eps)
BATCH = 32  # one array shape for most tests: each distinct shape costs a compilation


def _bounds(forward, strikes, is_call, discount):
    sign = np.where(is_call, 1.0, -1.0)
    intrinsic = np.maximum(sign * (forward - strikes), 0.0)
    return discount * intrinsic, discount * np.where(is_call, forward, strikes)


def check_round_trip(forward, strikes, expiries, vols, is_call, discount):
    """Price with black_price, invert, and check status, accuracy and repricing."""
    prices = np.asarray(black_price(forward, strikes, expiries, vols, is_call, discount))
    iv, status = implied_vol(prices, forward, strikes, expiries, is_call, discount,
                             return_status=True)
    iv, status = np.asarray(iv), np.asarray(status)
    assert status.dtype == np.int32
    assert not np.any(np.isnan(iv))
    lower, upper = _bounds(forward, strikes, is_call, discount)

    # Status: on the upper bound (to rounding) -> IV_ABOVE_MAX, clearly inside -> IV_OK.
    gap = upper - prices
    at_upper = gap <= 3 * EPS * upper
    inside = gap >= 5 * EPS * upper
    assert np.all(status[at_upper] == IV_ABOVE_MAX)
    assert np.all(status[inside] == IV_OK)
    assert np.all(np.isin(status, [IV_OK, IV_ABOVE_MAX]))
    assert np.all(np.isinf(iv[status == IV_ABOVE_MAX]))

    ok = status == IV_OK
    vega = np.asarray(black_greeks(forward, strikes, expiries, vols, is_call, discount).vega)
    info = 4 * EPS * prices / np.maximum(vega, np.finfo(np.float64).tiny)
    otm_norm = (prices - lower) / (discount * np.sqrt(forward) * np.sqrt(strikes))
    determined = ok & (info <= 1e-3 * vols) & (otm_norm >= 1e-250)
    tol = np.maximum(1e-12 * vols, info)
    err = np.abs(iv - vols)
    assert np.all(err[determined] <= tol[determined]), np.max((err / tol)[determined])

    reprice = np.asarray(black_price(forward, strikes, expiries, np.where(ok, iv, 0.0),
                                     is_call, discount))
    loose = ok & ~determined
    assert np.all(np.abs(reprice - prices)[loose] <= 8 * EPS * prices[loose])
    return determined


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------

_unit = hnp.arrays(np.float64, BATCH, elements=st.floats(0.0, 1.0))


@settings(max_examples=200, deadline=None)
@given(
    u_vol=_unit, u_t=_unit, u_z=_unit, u_f=_unit, u_r=_unit,
    is_call=hnp.arrays(np.bool_, BATCH),
)
def test_round_trip_hypothesis(u_vol, u_t, u_z, u_f, u_r, is_call):
    """vol 0.01..5, T 1 hour..10 years, ln(K/F) within +-6 standard deviations."""
    vols = np.exp(np.log(0.01) + u_vol * np.log(500.0))
    expiries = np.exp(np.log(1.0 / 8760.0) + u_t * np.log(87600.0))
    forward = np.exp(np.log(1e-2) + u_f * np.log(2e7))
    strikes = forward * np.exp((12.0 * u_z - 6.0) * vols * np.sqrt(expiries))
    discount = np.exp(-0.1 * u_r * expiries)
    check_round_trip(forward, strikes, expiries, vols, is_call, discount)


@pytest.mark.parametrize("is_call", [True, False])
def test_round_trip_dense_grid(is_call):
    """Total vol 1e-4..16 and |ln(F/K)| up to 30 standard deviations on a grid."""
    s = np.exp(np.linspace(np.log(1e-4), np.log(16.0), 81))
    h = np.linspace(-30.0, 30.0, 121)
    s, h = (a.ravel() for a in np.meshgrid(s, h))
    expiries = np.where(s < 0.05, 1.0 / 8760.0, 1.0)
    vols = s / np.sqrt(expiries)
    forward = np.full_like(s, 40000.0)
    strikes = forward * np.exp(-h * s)
    determined = check_round_trip(forward, strikes, expiries, vols, np.full(s.shape, is_call),
                                  np.full(s.shape, 0.98))
    # The accuracy check must have covered the bulk of the grid, wings included.
    assert determined.mean() > 0.6
    assert np.any(determined & (np.abs(h) > 20))


def test_at_the_money_and_short_expiries():
    vols = np.array([0.01, 0.3, 1.0, 5.0])
    expiries = np.array([1.0 / 8760.0, 1.0 / 365.0, 1.0 / 52.0, 0.1, 0.25, 1.0, 3.0, 10.0])
    v, t = (a.ravel() for a in np.meshgrid(vols, expiries))
    for is_call in (True, False):
        check_round_trip(np.full_like(v, 3000.0), np.full_like(v, 3000.0), t, v,
                         np.full(v.shape, is_call), np.ones_like(v))


def test_agrees_with_quantlib_implied_std_dev(rng):
    n = BATCH
    forward = np.exp(rng.uniform(np.log(10.0), np.log(1e5), n))
    expiries = np.exp(rng.uniform(np.log(1.0 / 365.0), np.log(3.0), n))
    vols = rng.uniform(0.1, 2.0, n)
    strikes = forward * np.exp(rng.uniform(-2.0, 2.0, n) * vols * np.sqrt(expiries))
    is_call = rng.random(n) < 0.5
    discount = np.exp(-0.03 * expiries)
    prices = np.array([
        ql.blackFormula(ql.Option.Call if c else ql.Option.Put, k, f, v * math.sqrt(t), d)
        for f, k, t, v, c, d in zip(forward, strikes, expiries, vols, is_call, discount,
                                    strict=True)
    ])
    ql_std = np.array([
        ql.blackFormulaImpliedStdDev(ql.Option.Call if c else ql.Option.Put, k, f, p, d, 0.0,
                                     0.5, 1e-15, 200)
        for f, k, p, c, d in zip(forward, strikes, prices, is_call, discount, strict=True)
    ])
    ours = np.asarray(implied_vol(prices, forward, strikes, expiries, is_call, discount))
    np.testing.assert_allclose(ours * np.sqrt(expiries), ql_std, rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# Status codes and bad inputs
# ---------------------------------------------------------------------------------------------


def test_status_codes_are_distinct_ints():
    assert (IV_OK, IV_BELOW_INTRINSIC, IV_ABOVE_MAX, IV_BAD_INPUT) == (0, 1, 2, 3)


def _bad_cases():
    # (price, forward, strike, expiry, is_call, discount, expected status, expected vol)
    nan, inf = float("nan"), float("inf")
    return [
        (5.0, 100.0, 90.0, 1.0, True, 1.0, IV_BELOW_INTRINSIC, nan),  # call below F - K
        (5.0, 100.0, 110.0, 1.0, False, 0.9, IV_BELOW_INTRINSIC, nan),  # put below D(K - F)
        (-1.0, 100.0, 110.0, 1.0, True, 1.0, IV_BELOW_INTRINSIC, nan),  # negative price
        (100.0, 100.0, 110.0, 1.0, True, 1.0, IV_ABOVE_MAX, inf),  # call at F
        (120.0, 100.0, 110.0, 1.0, True, 1.0, IV_ABOVE_MAX, inf),  # call above F
        (100.0, 100.0, 110.0, 1.0, False, 0.9, IV_ABOVE_MAX, inf),  # put above D K
        (inf, 100.0, 110.0, 1.0, True, 1.0, IV_BAD_INPUT, nan),
        (nan, 100.0, 110.0, 1.0, True, 1.0, IV_BAD_INPUT, nan),
        (5.0, nan, 110.0, 1.0, True, 1.0, IV_BAD_INPUT, nan),
        (5.0, 0.0, 110.0, 1.0, True, 1.0, IV_BAD_INPUT, nan),
        (5.0, -100.0, 110.0, 1.0, True, 1.0, IV_BAD_INPUT, nan),
        (5.0, 100.0, 0.0, 1.0, True, 1.0, IV_BAD_INPUT, nan),
        (5.0, 100.0, -110.0, 1.0, False, 1.0, IV_BAD_INPUT, nan),
        (5.0, 100.0, 110.0, 0.0, True, 1.0, IV_BAD_INPUT, nan),
        (5.0, 100.0, 110.0, -1.0, True, 1.0, IV_BAD_INPUT, nan),
        (5.0, 100.0, 110.0, nan, True, 1.0, IV_BAD_INPUT, nan),
        (5.0, 100.0, 110.0, 1.0, True, 0.0, IV_BAD_INPUT, nan),
        (5.0, 100.0, 110.0, 1.0, True, nan, IV_BAD_INPUT, nan),
        (10.0, 100.0, 90.0, 1.0, True, 1.0, IV_OK, 0.0),  # exactly intrinsic
        (0.0, 100.0, 110.0, 1.0, True, 1.0, IV_OK, 0.0),  # worthless OTM option
    ]


def test_bad_inputs_status_values_and_zero_gradients():
    cases = _bad_cases()
    cases = (cases * 2)[:BATCH]
    cols = list(zip(*cases, strict=True))
    price, forward, strike, expiry = (jnp.asarray(c, jnp.float64) for c in cols[:4])
    is_call = np.array(cols[4])
    discount = jnp.asarray(cols[5], jnp.float64)
    want_status = np.array(cols[6])
    want_vol = np.array(cols[7])

    vols, status = implied_vol(price, forward, strike, expiry, is_call, discount,
                               return_status=True)
    np.testing.assert_array_equal(np.asarray(status), want_status)
    np.testing.assert_array_equal(np.asarray(vols), want_vol)  # NaN where want_vol is NaN
    no_vol = np.isin(want_status, (IV_BELOW_INTRINSIC, IV_BAD_INPUT))
    assert np.all(np.isnan(np.asarray(vols)) == no_vol)
    # without a status the same: a NaN or invalid input never gives a finite volatility
    plain = np.asarray(implied_vol(price, forward, strike, expiry, is_call, discount))
    np.testing.assert_array_equal(plain, want_vol)

    def loss(p, f, k, t, d):
        return jnp.sum(implied_vol(p, f, k, t, is_call, d))

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4)))(price, forward, strike, expiry,
                                                             discount)
    for g in grads:
        np.testing.assert_array_equal(np.asarray(g), 0.0)


def test_prices_a_few_ulps_below_intrinsic_count_as_intrinsic():
    forward, strike = 100.0, 1e-3
    intrinsic = 0.97 * (forward - strike)
    ulps = np.resize([0.0, 1.0, 3.0, 100.0], BATCH)
    prices = intrinsic * (1.0 - ulps * EPS)
    vols, status = implied_vol(prices, forward, strike, 1.0, True, 0.97, return_status=True)
    np.testing.assert_array_equal(np.asarray(status),
                                  np.where(ulps < 4, IV_OK, IV_BELOW_INTRINSIC))
    np.testing.assert_array_equal(np.asarray(vols), np.where(ulps < 4, 0.0, np.nan))


@settings(max_examples=200, deadline=None)
@given(values=hnp.arrays(np.float64, (5, BATCH), elements=st.floats(allow_subnormal=False)),
       is_call=hnp.arrays(np.bool_, BATCH))
def test_arbitrary_inputs_give_nan_exactly_without_a_volatility(values, is_call):
    """Any floats at all (NaN, inf, signs, huge and tiny; subnormals flush to zero on CPU):
    NaN exactly where the status says no volatility exists, else a volatility >= 0."""
    price, forward, strike, expiry, discount = values
    vols, status = implied_vol(price, forward, strike, expiry, is_call, discount,
                               return_status=True)
    vols, status = np.asarray(vols), np.asarray(status)
    np.testing.assert_array_equal(np.isnan(vols),
                                  np.isin(status, [IV_BELOW_INTRINSIC, IV_BAD_INPUT]))
    assert np.all(vols[~np.isnan(vols)] >= 0)
    assert np.all(np.isin(status, [IV_OK, IV_BELOW_INTRINSIC, IV_ABOVE_MAX, IV_BAD_INPUT]))
    finite = np.all(np.isfinite(values[:5]), axis=0)
    positive = (forward > 0) & (strike > 0) & (expiry > 0) & (discount > 0)
    np.testing.assert_array_equal(status == IV_BAD_INPUT, ~(finite & positive))
    assert np.all(vols[status == IV_OK] < np.inf)


# ---------------------------------------------------------------------------------------------
# Derivatives
# ---------------------------------------------------------------------------------------------


def _moderate(rng, n):
    forward = np.exp(rng.uniform(np.log(100.0), np.log(1e5), n))
    expiries = np.exp(rng.uniform(np.log(1.0 / 52.0), np.log(2.0), n))
    vols = rng.uniform(0.2, 1.5, n)
    strikes = forward * np.exp(rng.uniform(-1.5, 1.5, n) * vols * np.sqrt(expiries))
    is_call = rng.random(n) < 0.5
    discount = np.exp(-0.05 * expiries)
    return forward, strikes, expiries, vols, is_call, discount


def test_gradients_match_implicit_function_theorem_and_finite_differences(rng):
    forward, strikes, expiries, vols, is_call, discount = _moderate(rng, BATCH)
    prices = np.asarray(black_price(forward, strikes, expiries, vols, is_call, discount))
    args = [jnp.asarray(a) for a in (prices, forward, strikes, expiries, discount)]

    def iv(p, f, k, t, d):
        return implied_vol(p, f, k, t, is_call, d)

    grads = jax.jit(jax.grad(lambda *a: jnp.sum(iv(*a)), argnums=(0, 1, 2, 3, 4)))(*args)
    grads = [np.asarray(g) for g in grads]

    # Analytically: d vol = (d price - dV|vol) / vega.
    g = black_greeks(forward, strikes, expiries, vols, is_call, discount)
    vega = np.asarray(g.vega)
    np.testing.assert_allclose(grads[0], 1.0 / vega, rtol=1e-10)
    np.testing.assert_allclose(grads[1], -np.asarray(g.delta) / vega, rtol=1e-9, atol=1e-15)

    # Central differences of implied_vol itself, on each input's natural scale.
    steps = [1e-5 * vega * vols, 1e-5 * forward * vols * np.sqrt(expiries),
             1e-5 * strikes * vols * np.sqrt(expiries), 1e-5 * expiries, 1e-6 * discount]
    for i, step in enumerate(steps):
        up = [a if j != i else a + step for j, a in enumerate(args)]
        dn = [a if j != i else a - step for j, a in enumerate(args)]
        fd = (np.asarray(iv(*up)) - np.asarray(iv(*dn))) / (2 * step)
        scale = np.maximum(np.abs(grads[i]), vols / np.asarray(args[i]))
        assert np.all(np.abs(fd - grads[i]) <= 1e-6 * scale), i


def test_second_derivative_in_price(rng):
    forward, strikes, expiries, vols, is_call, discount = _moderate(rng, BATCH)
    prices = jnp.asarray(black_price(forward, strikes, expiries, vols, is_call, discount))

    @jax.jit
    def first(p):
        return jax.grad(lambda q: jnp.sum(implied_vol(q, forward, strikes, expiries, is_call,
                                                      discount)))(p)

    second = np.asarray(jax.jit(jax.grad(lambda p: jnp.sum(first(p))))(prices))
    vega = np.asarray(black_greeks(forward, strikes, expiries, vols, is_call, discount).vega)
    step = 1e-4 * vega * vols
    fd = (np.asarray(first(prices + step)) - np.asarray(first(prices - step))) / (2 * step)
    # Natural scale of d2 vol / d price2: (d vol / d price)^2 / vol.
    scale = np.maximum(np.abs(fd), 1.0 / (vega * vega * vols))
    assert np.all(np.abs(second - fd) <= 1e-5 * scale)


def test_calibration_style_gradient_under_jit(rng):
    forward, strikes, expiries, vols, is_call, discount = _moderate(rng, BATCH)
    market_iv = jnp.asarray(vols)

    @jax.jit
    def loss(level):
        prices = black_price(forward, strikes, expiries, level * jnp.ones(BATCH), is_call,
                             discount)
        return jnp.mean((implied_vol(prices, forward, strikes, expiries, is_call, discount)
                         - market_iv) ** 2)

    level = 0.7
    g = float(jax.grad(loss)(level))
    # The round trip is the identity: d/dlevel mean((level - v)^2) = 2 mean(level - v).
    assert g == pytest.approx(2.0 * float(jnp.mean(level - market_iv)), rel=1e-9)


# ---------------------------------------------------------------------------------------------
# Interfaces and dtypes
# ---------------------------------------------------------------------------------------------


def test_scalars_broadcasting_jit_and_vmap(rng):
    p = float(black_price(100.0, 120.0, 0.5, 0.8, True))
    assert float(implied_vol(p, 100.0, 120.0, 0.5, True)) == pytest.approx(0.8, rel=1e-14)
    strikes = np.linspace(50.0, 200.0, BATCH)
    prices = black_price(100.0, strikes, 0.3, 0.6, False)
    out = implied_vol(prices, 100.0, strikes, 0.3, False)  # scalars broadcast to (BATCH,)
    assert out.shape == (BATCH,)
    np.testing.assert_allclose(np.asarray(out), 0.6, rtol=1e-13)

    forward, strikes, expiries, vols, is_call, discount = _moderate(rng, BATCH)
    prices = black_price(forward, strikes, expiries, vols, is_call, discount)
    args = [jnp.asarray(a) for a in (prices, forward, strikes, expiries, is_call, discount)]
    eager = np.asarray(implied_vol(*args))
    np.testing.assert_allclose(eager, vols, rtol=1e-13)
    np.testing.assert_array_equal(np.asarray(jax.jit(implied_vol)(*args)), eager)
    np.testing.assert_allclose(np.asarray(jax.vmap(implied_vol)(*args)), eager, rtol=1e-15)
    vols_s, status = implied_vol(*args, return_status=True)
    np.testing.assert_array_equal(np.asarray(vols_s), eager)
    assert np.all(np.asarray(status) == IV_OK)


@settings(max_examples=100, deadline=None)
@given(
    u_vol=_unit, u_t=_unit, u_z=_unit, u_f=_unit,
    is_call=hnp.arrays(np.bool_, BATCH),
)
def test_float32_round_trip(u_vol, u_t, u_z, u_f, is_call):
    """Float32 in, float32 out. Every float32 input and intermediate carries a relative
    rounding of eps32, which the inversion turns into vol errors of order eps32 * vol (through
    ln(F/K)) and eps32 * price/vega (through the price): we allow 16 times their sum."""
    vols = np.exp(np.log(0.01) + u_vol * np.log(500.0)).astype(np.float32)
    expiries = np.exp(np.log(1.0 / 8760.0) + u_t * np.log(87600.0)).astype(np.float32)
    forward = np.exp(np.log(1e-2) + u_f * np.log(1e7)).astype(np.float32)
    s = vols.astype(np.float64) * np.sqrt(expiries.astype(np.float64))
    strikes = (forward * np.exp((8.0 * u_z - 4.0) * s)).astype(np.float32)  # within float32
    args64 = [a.astype(np.float64) for a in (forward, strikes, expiries, vols)]
    prices64 = np.asarray(black_price(*args64, is_call))
    prices = prices64.astype(np.float32)

    iv, status = implied_vol(prices, forward, strikes, expiries, is_call, return_status=True)
    assert iv.dtype == jnp.float32
    iv, status = np.asarray(iv, np.float64), np.asarray(status)
    assert not np.any(np.isnan(iv))
    vega = np.asarray(black_greeks(*args64, is_call).vega)
    spread = prices64 / np.maximum(vega, 1e-300)  # d vol per unit relative price error
    lower, _ = _bounds(args64[0], args64[1], is_call, 1.0)
    otm_norm = (prices64 - lower) / np.sqrt(args64[0] * args64[1])
    determined = (status == IV_OK) & (16 * EPS32 * spread <= 1e-3 * vols) & (otm_norm >= 1e-30)
    err = np.abs(iv - vols)
    tol = 16 * EPS32 * (vols + spread)
    assert np.all(err[determined] <= tol[determined]), np.max((err / tol)[determined])


def test_implied_vol_of_nan_is_nan_without_status():
    assert np.isnan(float(implied_vol(float("nan"), 100.0, 100.0, 1.0, True)))
    assert np.isnan(float(implied_vol(5.0, 100.0, 100.0, float("nan"), True)))
    vol, status = implied_vol(float("nan"), 100.0, 100.0, 1.0, True, return_status=True)
    assert np.isnan(float(vol)) and int(status) == IV_BAD_INPUT
