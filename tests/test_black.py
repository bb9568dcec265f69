"""Black-76 prices and Greeks: published values, QuantLib, an independent quadrature oracle,
autodiff cross-checks and edge cases."""

from __future__ import annotations

import csv
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import QuantLib as ql
from scipy import integrate, special

from qmr_jax.pricing.black import BlackGreeks, black_greeks, black_price

EPS = np.finfo(np.float64).eps


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _random_options(rng, n, *, h_max=6.0):
    """Forward, strike, expiry, vol, is_call, discount with ln(F/K) within h_max std devs."""
    forward = np.exp(rng.uniform(np.log(0.05), np.log(2e5), n))
    expiries = np.exp(rng.uniform(np.log(1.0 / 8760.0), np.log(10.0), n))
    vols = np.exp(rng.uniform(np.log(0.01), np.log(5.0), n))
    s = vols * np.sqrt(expiries)
    strikes = forward * np.exp(rng.uniform(-h_max, h_max, n) * s)
    is_call = rng.random(n) < 0.5
    discount = np.exp(-rng.uniform(0.0, 0.1, n) * expiries)
    return forward, strikes, expiries, vols, is_call, discount


# ---------------------------------------------------------------------------------------------
# Published reference values
# ---------------------------------------------------------------------------------------------


def test_haug_black_scholes_table(reference_dir):
    rows = _read_csv(reference_dir / "haug1998_black_scholes_european.csv")
    assert len(rows) == 43
    col = {k: np.array([float(r[k]) for r in rows]) for k in
           ("strike", "spot", "q", "r", "T", "vol", "expected", "tol_abs")}
    is_call = np.array([r["type"] == "call" for r in rows])
    forward = col["spot"] * np.exp((col["r"] - col["q"]) * col["T"])
    discount = np.exp(-col["r"] * col["T"])
    got = np.asarray(black_price(forward, col["strike"], col["T"], col["vol"], is_call, discount))
    err = np.abs(got - col["expected"])
    assert np.all(err <= col["tol_abs"]), err


def test_levy_table_black_scholes_rows(reference_dir):
    rows = [r for r in _read_csv(reference_dir / "levy_jump_published.csv")
            if r["model"] == "BlackScholes"]
    assert rows, "no BlackScholes rows in levy_jump_published.csv"
    for r in rows:
        spot, strike, t = float(r["spot"]), float(r["strike"]), float(r["T"])
        rate, div = float(r["r"]), float(r["q"])
        vol = json.loads(r["params"])["sig"]
        got = float(black_price(spot * math.exp((rate - div) * t), strike, t, vol,
                                r["type"] == "call", math.exp(-rate * t)))
        assert abs(got - float(r["expected"])) <= float(r["tolerance"]), (r["case"], got)


# ---------------------------------------------------------------------------------------------
# Independent oracles
# ---------------------------------------------------------------------------------------------


def test_quantlib_black_formula_random(rng):
    n = 400
    forward, strikes, expiries, vols, is_call, discount = _random_options(rng, n)
    got = np.asarray(black_price(forward, strikes, expiries, vols, is_call, discount))
    std = vols * np.sqrt(expiries)
    want = np.array([
        ql.blackFormula(ql.Option.Call if c else ql.Option.Put, k, f, sd, d)
        for f, k, sd, c, d in zip(forward, strikes, std, is_call, discount, strict=True)
    ])
    # QuantLib forms F N(d1) - K N(d2): its absolute error is a few ulps of max(F, K).
    tol = 1e-12 * np.abs(want) + 1e-14 * discount * np.maximum(forward, strikes)
    assert np.all(np.abs(got - want) <= tol), np.max(np.abs(got - want) / tol)


def test_quantlib_short_total_vol_near_the_money(rng):
    """Total vol 0.01..0.45 within 3 standard deviations: the Taylor-series regime."""
    n = 400
    forward = np.exp(rng.uniform(np.log(0.05), np.log(2e5), n))
    s = np.exp(rng.uniform(np.log(0.01), np.log(0.45), n))
    strikes = forward * np.exp(rng.uniform(-3.0, 3.0, n) * s)
    is_call = rng.random(n) < 0.5
    got = np.asarray(black_price(forward, strikes, 1.0, s, is_call))
    want = np.array([
        ql.blackFormula(ql.Option.Call if c else ql.Option.Put, k, f, sd, 1.0)
        for f, k, sd, c in zip(forward, strikes, s, is_call, strict=True)
    ])
    tol = 1e-12 * np.abs(want) + 1e-14 * np.maximum(forward, strikes)
    assert np.all(np.abs(got - want) <= tol), np.max(np.abs(got - want) / tol)


def test_at_the_money_closed_form(rng):
    """At F = K the Black price is D F erf(vol sqrt(T) / sqrt 8), for every total vol."""
    s = np.exp(np.linspace(np.log(1e-5), np.log(12.0), 2000))
    forward = np.exp(rng.uniform(np.log(1e-3), np.log(1e5), s.size))
    discount = rng.uniform(0.5, 1.0, s.size)
    for is_call in (True, False):
        got = np.asarray(black_price(forward, forward, 4.0, s / 2.0, is_call, discount))
        want = discount * forward * special.erf(s / np.sqrt(8.0))
        np.testing.assert_allclose(got, want, rtol=16 * EPS, atol=0)


def test_quantlib_black_calculator_greeks(rng):
    n = 100
    forward, strikes, expiries, vols, is_call, discount = _random_options(rng, n, h_max=3.0)
    g = black_greeks(forward, strikes, expiries, vols, is_call, discount)
    for i in range(n):
        payoff = ql.PlainVanillaPayoff(ql.Option.Call if is_call[i] else ql.Option.Put,
                                       strikes[i])
        calc = ql.BlackCalculator(payoff, forward[i], vols[i] * math.sqrt(expiries[i]),
                                  discount[i])
        scale = discount[i] * forward[i]
        assert float(g.price[i]) == pytest.approx(calc.value(), rel=1e-11, abs=1e-13 * scale)
        assert float(g.delta[i]) == pytest.approx(calc.deltaForward(), rel=1e-10, abs=1e-13)
        assert float(g.gamma[i]) == pytest.approx(calc.gammaForward(), rel=1e-10,
                                                  abs=1e-13 / forward[i])
        assert float(g.vega[i]) == pytest.approx(calc.vega(expiries[i]), rel=1e-10,
                                                 abs=1e-13 * scale)


def _otm_call_by_quadrature(x, s):
    """Normalised out-of-the-money call ``E[(e^{x/2} e^{sZ - s^2/2} - e^{-x/2})^+]``, x < 0.

    Exercise above ``z0 = -x/s + s/2``; with ``Z = z0 + u`` the payoff is
    ``e^{-x/2} (e^{su} - 1)`` and ``phi(z0 + u) = phi(z0) e^{-z0 u - u^2/2}``, so
    ``ln b = -x/2 - z0^2/2 - ln sqrt(2 pi) + ln int_0^inf expm1(su) e^{-z0 u - u^2/2} du``.
    Returns ``ln b``.
    """
    z0 = -x / s + 0.5 * s
    scale = 1.0 / (z0 + s)  # width of the integrand's mass

    def integrand(u):
        return math.expm1(s * u) * math.exp(-z0 * u - 0.5 * u * u)

    edges = scale * np.array([0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0])
    total = 0.0
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        val, _ = integrate.quad(integrand, a, b, epsabs=0.0, epsrel=1e-13, limit=200)
        total += val
    return -0.5 * x - 0.5 * z0 * z0 - 0.5 * math.log(2 * math.pi) + math.log(total)


def test_deep_out_of_the_money_relative_precision(rng):
    """Tiny prices keep their relative precision (QuantLib's F N(d1) - K N(d2) cannot)."""
    n = 40
    s = np.exp(rng.uniform(np.log(1e-3), np.log(3.0), n))
    h = -rng.uniform(3.0, 30.0, n)
    forward = 1000.0
    strikes = forward * np.exp(-h * s)
    expiries = np.full(n, 0.5)
    vols = s / np.sqrt(expiries)
    got = np.asarray(black_price(forward, strikes, expiries, vols, True))
    x = -np.log1p((strikes - forward) / forward)  # ln(F/K) to full relative precision
    ln_ref = np.array([_otm_call_by_quadrature(xi, si) for xi, si in zip(x, s, strict=True)])
    ln_ref += 0.5 * (np.log(forward) + np.log(strikes))
    assert np.all(got > 0)
    rel = np.abs(np.log(got) - ln_ref)
    # A relative error of eps in h = x/s moves the price by h^2 eps: that is the floor; and
    # logarithms near -600 are only resolved to ulp(600) ~ 1e-13.
    tol = 2e-14 + 8 * EPS * (h * h + s * s) + 4 * EPS * np.abs(ln_ref)
    assert np.all(rel <= tol), np.max(rel / tol)


# ---------------------------------------------------------------------------------------------
# Identities and edge cases
# ---------------------------------------------------------------------------------------------


def test_put_call_parity_and_bounds(rng):
    n = 2000
    forward, strikes, expiries, vols, _, discount = _random_options(rng, n, h_max=12.0)
    call = np.asarray(black_price(forward, strikes, expiries, vols, True, discount))
    put = np.asarray(black_price(forward, strikes, expiries, vols, False, discount))
    scale = discount * np.maximum(forward, strikes)
    assert np.all(np.abs(call - put - discount * (forward - strikes)) <= 4 * EPS * scale)
    assert np.all(call >= discount * np.maximum(forward - strikes, 0.0))
    assert np.all(put >= discount * np.maximum(strikes - forward, 0.0))
    assert np.all(call <= discount * forward)
    assert np.all(put <= discount * strikes)


def test_monotone_in_vol_and_strike():
    vols = np.linspace(0.01, 5.0, 500)
    p = np.asarray(black_price(100.0, 130.0, 0.25, vols, True))
    assert np.all(np.diff(p) > 0)
    strikes = np.linspace(50.0, 200.0, 500)
    c = np.asarray(black_price(100.0, strikes, 0.25, 0.8, True))
    assert np.all(np.diff(c) < 0)


@pytest.mark.parametrize("is_call", [True, False])
def test_zero_vol_or_expiry_is_intrinsic_with_finite_gradients(is_call):
    forward = jnp.array([100.0, 100.0, 100.0, 100.0, 100.0, 100.0])
    strikes = jnp.array([90.0, 100.0, 110.0, 90.0, 100.0, 110.0])
    expiries = jnp.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    vols = jnp.array([0.5, 0.5, 0.5, 0.0, 0.0, 0.0])
    discount = 0.97
    price = black_price(forward, strikes, expiries, vols, is_call, discount)
    sign = 1.0 if is_call else -1.0
    intrinsic = discount * np.maximum(sign * (np.asarray(forward) - np.asarray(strikes)), 0.0)
    np.testing.assert_array_equal(np.asarray(price), intrinsic)

    def total(f, k, t, v, d):
        return jnp.sum(black_price(f, k, t, v, is_call, d))

    grads = jax.grad(total, argnums=(0, 1, 2, 3, 4))(forward, strikes, expiries, vols, discount)
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))
    moneyness = sign * (np.asarray(forward) - np.asarray(strikes))
    step = np.where(moneyness > 0, 1.0, np.where(moneyness == 0, 0.5, 0.0))
    np.testing.assert_allclose(np.asarray(grads[0]), sign * discount * step)
    np.testing.assert_allclose(np.asarray(grads[1]), -sign * discount * step)
    hess = jax.hessian(lambda f: total(f, strikes, expiries, vols, discount))(forward)
    assert np.all(np.isfinite(np.asarray(hess)))


def test_extreme_inputs_give_finite_bounded_prices():
    forward = 100.0
    strikes = np.array([1e-8, 1e-3, 1.0, 99.999999, 100.0, 100.000001, 1e3, 1e6, 1e12])
    for t, v in [(1e-12, 0.01), (1.0 / 8760, 0.05), (1.0, 1.0), (10.0, 5.0), (10.0, 40.0)]:
        for is_call in (True, False):
            p = np.asarray(black_price(forward, strikes, t, v, is_call))
            assert np.all(np.isfinite(p))
            upper = forward if is_call else strikes
            lower = np.maximum((forward - strikes) if is_call else (strikes - forward), 0.0)
            assert np.all(p <= upper) and np.all(p >= lower)


# ---------------------------------------------------------------------------------------------
# Greeks against automatic differentiation of the price
# ---------------------------------------------------------------------------------------------


def _autodiff_greeks(forward, strikes, expiries, vols, is_call, discount):
    """Greeks by jax.grad/jax.hessian of black_price under the documented conventions."""
    rate = -jnp.log(discount) / expiries

    def value(f, t, v, r):
        return black_price(f, strikes, t, v, is_call, jnp.exp(-r * t))

    d1 = jax.grad(value, argnums=(0, 1, 2, 3))
    hess = jax.hessian(value, argnums=(0, 2))
    price = value(forward, expiries, vols, rate)
    delta, d_t, vega, rho = d1(forward, expiries, vols, rate)
    (gamma, vanna), (_, volga) = hess(forward, expiries, vols, rate)
    return BlackGreeks(price, delta, gamma, vega, -d_t, rho, vanna, volga)


def test_greeks_match_autodiff(rng):
    n = 300
    forward, strikes, expiries, vols, is_call, discount = _random_options(rng, n, h_max=5.0)
    got = black_greeks(forward, strikes, expiries, vols, is_call, discount)
    want = jax.jit(jax.vmap(_autodiff_greeks))(
        *(jnp.asarray(a) for a in (forward, strikes, expiries, vols, is_call, discount))
    )
    # Scales: each Greek relative to its natural size, so that tiny values compare absolutely.
    s = vols * np.sqrt(expiries)
    money = discount * forward
    scales = {
        "price": money, "delta": discount, "gamma": discount / (forward * s),
        "vega": money * np.sqrt(expiries), "theta": money * (1 + s / expiries),
        "rho": money * expiries, "vanna": discount * np.sqrt(expiries) / s,
        "volga": money * expiries / s,
    }
    for name in BlackGreeks._fields:
        a = np.asarray(getattr(got, name))
        b = np.asarray(getattr(want, name))
        assert a.dtype == np.float64
        err = np.abs(a - b) / np.maximum(np.abs(b), 1e-5 * scales[name])
        assert np.all(err <= 1e-10), (name, np.max(err))


def test_gradient_matches_finite_differences(rng):
    """The analytic derivative rule of black_price against central differences of its value."""
    n = 200
    forward, strikes, expiries, vols, is_call, discount = _random_options(rng, n, h_max=4.0)
    args = [jnp.asarray(a) for a in (forward, strikes, expiries, vols, discount)]

    def value(f, k, t, v, d):
        return black_price(f, k, t, v, is_call, d)

    # Elementwise function: the gradient of the sum holds every element's derivative.
    grads = jax.grad(lambda *a: jnp.sum(value(*a)), argnums=(0, 1, 2, 3, 4))(*args)
    base = np.asarray(value(*args))
    s = vols * np.sqrt(expiries)
    # Steps on each input's natural scale (F and K move the price on the scale F*s).
    steps = [1e-4 * s * forward, 1e-4 * s * strikes, 1e-4 * expiries, 1e-4 * vols,
             1e-4 * discount]
    for i, (arg, step) in enumerate(zip(args, steps, strict=True)):
        up = [a if j != i else a + step for j, a in enumerate(args)]
        dn = [a if j != i else a - step for j, a in enumerate(args)]
        fd = (np.asarray(value(*up)) - np.asarray(value(*dn))) / (2 * step)
        ad = np.asarray(grads[i])
        scale = np.maximum(np.abs(ad), np.abs(base) / np.asarray(arg))
        assert np.all(np.abs(fd - ad) <= 1e-6 * scale + 1e-9 * discount), i


def test_greeks_at_zero_vol_are_finite():
    g = black_greeks(100.0, np.array([90.0, 100.0, 110.0]), 1.0, 0.0, True, 0.9)
    for name in BlackGreeks._fields:
        assert np.all(np.isfinite(np.asarray(getattr(g, name)))), name
    np.testing.assert_allclose(np.asarray(g.delta), [0.9, 0.45, 0.0])


# ---------------------------------------------------------------------------------------------
# Interfaces, dtypes and validation
# ---------------------------------------------------------------------------------------------


def test_accepts_scalars_numpy_jax_and_broadcasts():
    strikes = np.array([80.0, 100.0, 120.0])
    expiries = jnp.array([[0.1], [1.0]])
    p = black_price(100.0, strikes, expiries, 0.6, np.array([True, False, True]))
    assert p.shape == (2, 3)
    one = black_price(100.0, 120.0, 1.0, 0.6, True)
    assert one.shape == ()
    assert float(p[1, 2]) == float(one)
    g = black_greeks(100, 120, 1, 0.6, True)
    assert float(g.price) == float(one)


def test_jit_and_vmap_agree_with_eager(rng):
    forward, strikes, expiries, vols, is_call, discount = _random_options(rng, 64)
    eager = black_price(forward, strikes, expiries, vols, is_call, discount)
    jitted = jax.jit(black_price)(forward, strikes, expiries, vols, is_call, discount)
    mapped = jax.vmap(black_price)(*(jnp.asarray(a) for a in
                                     (forward, strikes, expiries, vols, is_call, discount)))
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-15, atol=0)
    np.testing.assert_allclose(np.asarray(mapped), np.asarray(eager), rtol=1e-15, atol=0)


def test_float32_in_float32_out(rng):
    forward, strikes, expiries, vols, is_call, _ = _random_options(rng, 256, h_max=3.0)
    args32 = [np.asarray(a, np.float32) for a in (forward, strikes, expiries, vols)]
    p32 = black_price(*args32, is_call)
    assert p32.dtype == jnp.float32
    p64 = np.asarray(black_price(*(a.astype(np.float64) for a in args32), is_call))
    scale = np.maximum(np.asarray(args32[0]), np.asarray(args32[1])).astype(np.float64)
    assert np.all(np.abs(np.asarray(p32, np.float64) - p64) <= 2e-5 * p64 + 1e-6 * scale)
    g32 = black_greeks(*args32, is_call)
    assert all(getattr(g32, k).dtype == jnp.float32 for k in BlackGreeks._fields)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"vols": -0.1}, "vols"),
        ({"forward": 0.0}, "forward"),
        ({"strikes": np.array([100.0, np.nan])}, "strikes"),
        ({"expiries": -1.0}, "expiries"),
        ({"discount": 0.0}, "discount"),
    ],
)
def test_invalid_inputs_raise(kwargs, name):
    args = {"forward": 100.0, "strikes": 100.0, "expiries": 1.0, "vols": 0.5, "discount": 1.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        black_price(args["forward"], args["strikes"], args["expiries"], args["vols"], True,
                    args["discount"])
