"""Differentiable Monte Carlo (``mc_value``) and pathwise Greeks with standard errors
(``mc_greeks``): same paths as ``mc_price``, derivatives against finite differences on the
same random numbers and against ``jax.grad`` of the Fourier price, smoothing of digitals,
refusal to differentiate through unsmoothed indicators, checkpointing, honest standard
errors, and the trader's Greeks through ``qmr_jax.sensitivities.greeks``.

Scheme bias of the Greeks (QE, T = 0.5 in 16 steps, the models of ``tests/cases.py``,
spot 100, r = 3 %, q = 1 %, K = 100 and 80), measured once with 2**20 antithetic paths
against ``jax.grad`` of the Fourier price: every derivative of Heston and Bates (spot, rate,
div, v0, kappa, theta, xi, rho, lam, mu_j, sigma_j, elapsed) within 1.3 standard errors,
i.e. no bias detectable at a relative precision of 0.05 % (delta) to 5 % (rho); the largest
relative differences, 0.5 % (xi) and 1 % (Bates lam), are within noise. The tolerances
below are 4 standard errors plus ``QE_BIAS = 0.5 %`` of the Greek for QE (0 for the exact
schemes). ``test_heavy_*`` (slow) re-check the figures with more paths.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

import qmr_jax as qmr
from qmr_jax.pricing import payoffs
from qmr_jax.pricing.mc_greeks import (
    DEFAULT_SMOOTHING,
    ELAPSED,
    MCGreeks,
    NonDifferentiablePayoffError,
    mc_greeks,
    mc_value,
)
from qmr_jax.pricing.montecarlo import mc_price
from qmr_jax.sensitivities import input_names
from qmr_jax.simulate import BLOCK_SIZE, simulate_blocks

from .cases import MODELS

MARKET = qmr.Market(100.0, 0.03, 0.01)
T = 0.5
# one configuration shared by the tests of a model, so each compiles once
CFG = dict(n_paths=2**14, n_steps=16, chunk_size=2**13)  # 32 blocks in 2 chunks
QE_BIAS = 0.005  # relative allowance for the QE scheme bias of a Greek (module docstring)
SCHEME_BIAS = {"gbm": 0.0, "merton": 0.0, "kou": 0.0, "heston": QE_BIAS, "bates": QE_BIAS}


def _point(model, market=MARKET, elapsed=0.0):
    return np.array([*market, *model, elapsed], dtype=np.float64)


def _value_at(model, x, payoff, **kw):
    """``mc_value`` at the flat input vector ``x = (spot, rate, div, *model, elapsed)``."""
    m = type(model)(*x[3:-1])
    return float(mc_value(m, qmr.Market(*x[:3]), payoff, x[-1], **kw))


@functools.cache
def _greeks(name, key=0, strike=100.0):
    return mc_greeks(MODELS[name], MARKET, payoffs.european(strike, T),
                     key=jax.random.key(key), **CFG)


@functools.cache
def _fourier(name, strike=100.0, is_call=True):
    """Fourier value and its gradient in ``mc_greeks``' input order (``jax.grad`` through
    the planned pricer, theta from its ``elapsed`` argument)."""
    model = MODELS[name]
    # Lewis with a fixed node count (the planner asks 32-112 nodes for 1e-13 here)
    pricer = qmr.fourier_pricer(model, MARKET, strike, T, is_call, n_terms=160)
    value, (g_mk, g_m, g_e) = jax.value_and_grad(
        lambda mk, m, e: pricer(m, mk, e), argnums=(0, 1, 2))(MARKET, model, 0.0)
    return float(value), np.array([*g_mk, *g_m, g_e], dtype=np.float64)


def black_scholes_digital(spot, strike, t, vol, rate, div):
    """Discounted cash-or-nothing call and its delta (closed form)."""
    fwd = spot * np.exp((rate - div) * t)
    sd = vol * np.sqrt(t)
    d2 = (np.log(fwd / strike) - 0.5 * sd * sd) / sd
    disc = np.exp(-rate * t)
    return disc * stats.norm.cdf(d2), disc * stats.norm.pdf(d2) / (spot * sd)


def smoothed_digital_delta(spot, strike, t, vol, rate, div, width):
    """Delta of the discounted ``E[sigmoid((S_T - K) / width)]`` under Black-Scholes, by
    quadrature: the exact expectation of the smoothed payoff (its bias is this minus the
    exact delta)."""
    sd = vol * np.sqrt(t)
    mu = (rate - div - 0.5 * vol * vol) * t

    def integrand(z):
        growth = np.exp(mu + sd * z)
        s = 0.5 * (1.0 + np.tanh((spot * growth - strike) / width / 2.0))
        return s * (1.0 - s) / width * growth * stats.norm.pdf(z)

    kink = (np.log(strike / spot) - mu) / sd
    val, _ = integrate.quad(integrand, -12.0, 12.0, points=[kink], limit=400, epsabs=1e-15)
    return np.exp(-rate * t) * val


# ---------------------------------------------------------------------------------------------
# the value: same paths as mc_price


def test_value_is_mc_price_on_the_same_paths():
    payoff = payoffs.european([85.0, 100.0, 115.0], T, [False, True, True])
    kw = dict(key=jax.random.key(1), n_paths=3000, n_steps=8)  # a partial last block
    v = mc_value(MODELS["gbm"], MARKET, payoff, chunk_size=1024, **kw)
    ref = mc_price(MODELS["gbm"], MARKET, payoff, antithetic=True, **kw)
    assert v.shape == (3,) and v.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(v), ref.plain_value, rtol=1e-12)
    # chunking does not change the value
    v2 = mc_value(MODELS["gbm"], MARKET, payoff, chunk_size=2048, **kw)
    np.testing.assert_allclose(np.asarray(v2), np.asarray(v), rtol=1e-13)


@pytest.mark.parametrize("name", ["heston", pytest.param("bates", marks=pytest.mark.slow)])
def test_value_is_mc_price_stochastic_volatility(name):
    payoff = payoffs.european(100.0, T)
    kw = dict(key=jax.random.key(0), n_paths=CFG["n_paths"], n_steps=CFG["n_steps"])
    v = mc_value(MODELS[name], MARKET, payoff, chunk_size=CFG["chunk_size"], **kw)
    ref = mc_price(MODELS[name], MARKET, payoff, antithetic=True, **kw)
    np.testing.assert_allclose(float(v), ref.plain_value, rtol=1e-12)
    # mc_greeks' value (from its reverse pass) is the same number
    np.testing.assert_allclose(_greeks(name).value, ref.plain_value, rtol=1e-12)


def test_simulate_blocks_options_keep_the_numbers():
    """The options used here (carried fields, checkpointed step) leave the simulated
    numbers bit for bit as they are, the jump counts to the last bit or two (fusion); the
    counts are the jumps of each path."""
    model = MODELS["merton"]
    dts = jnp.full(4, T / 4)
    args = (model, MARKET, jax.random.key(6), 1, dts, jnp.cumsum(dts), jnp.zeros(4, jnp.int32))
    kw = dict(scheme="exact", n_blocks=2, antithetic=True, record="summary", n_obs=1)
    ref = simulate_blocks(*args, **kw)
    got = simulate_blocks(*args, fields=("maximum", "average"), checkpoint=True, **kw)
    for f in ("final", "maximum", "average"):
        np.testing.assert_array_equal(np.asarray(getattr(got, f)), np.asarray(getattr(ref, f)))
    assert got.minimum is None
    got, counts = simulate_blocks(*args, fields=("maximum", "average"), jump_counts=True,
                                  checkpoint=True, **kw)
    for f in ("final", "maximum", "average"):
        np.testing.assert_allclose(np.asarray(getattr(got, f)), np.asarray(getattr(ref, f)),
                                   rtol=4 * np.finfo(np.float64).eps)
    n = np.asarray(counts)
    assert n.dtype == np.int32 and n.shape == (2 * BLOCK_SIZE,)
    np.testing.assert_array_equal(n[0::2], n[1::2])  # antithetic pairs share their jumps
    lam_t = float(model.lam) * T
    assert abs(n.mean() - lam_t) < 4 * np.sqrt(lam_t / BLOCK_SIZE)


def test_inputs_are_validated():
    m, pay = MODELS["gbm"], payoffs.european(100.0, T)
    kw = dict(key=jax.random.key(0), n_paths=1024, n_steps=4)
    with pytest.raises(ValueError, match="elapsed"):
        mc_value(m, MARKET, pay, 0.6, **kw)
    with pytest.raises(ValueError, match="n_steps"):
        mc_value(m, MARKET, pay, **{**kw, "n_steps": 0})
    with pytest.raises(ValueError, match="GBM.sigma"):
        mc_value(qmr.GBM(-0.2), MARKET, pay, **kw)
    with pytest.raises(ValueError, match="smoothing"):
        mc_value(m, MARKET, pay, smoothing=-0.01, **kw)
    with pytest.raises(TypeError, match="payoff"):
        mc_value(m, MARKET, object(), **kw)
    with pytest.raises(ValueError, match="2 blocks"):
        mc_greeks(m, MARKET, pay, **{**kw, "n_paths": BLOCK_SIZE})


# ---------------------------------------------------------------------------------------------
# autodiff against finite differences on the same random numbers


def _fd_check(name):
    """Every pathwise derivative against central differences of ``mc_value`` on the same key.

    The jump counts are a step function of ``lam``, ``p`` and the horizon (Poisson by
    inversion), so finite differences in those are not derivatives of the estimator; they
    are checked against the Fourier Greeks instead (``test_greeks_match_fourier``). The call
    payoff has a kink: a path whose terminal spot crosses the strike within the step makes
    the difference quotient differ from the derivative by up to ``1 / n_paths``, so the step
    is small (1e-7 relative: the chance that one of 2**14 paths crosses is ~0.3 %).
    """
    model = MODELS[name]
    g = _greeks(name)
    x0 = _point(model)
    payoff = payoffs.european(100.0, T)
    kw = dict(key=jax.random.key(0), **CFG)
    value = _value_at(model, x0, payoff, **kw)
    np.testing.assert_allclose(g.value, value, rtol=1e-12)
    count_inputs = {"lam", "p", ELAPSED} if name in ("merton", "kou", "bates") else set()
    checked = []
    for i, n in enumerate(g.names):
        if n in count_inputs:
            continue
        h = 1e-7 * max(abs(x0[i]), 1.0)
        up, dn = x0.copy(), x0.copy()
        up[i] += h
        dn[i] -= h
        fd = (_value_at(model, up, payoff, **kw) - _value_at(model, dn, payoff, **kw)) / (2 * h)
        # central differences: truncation O(h^2) (negligible) and rounding ~ eps |V| / h
        tol = 1e-6 * abs(g.gradient[i]) + 100 * np.finfo(np.float64).eps * abs(value) / h
        assert abs(g.gradient[i] - fd) <= tol, (n, g.gradient[i], fd, tol)
        checked.append(n)
    return checked


def test_gradient_matches_finite_differences_heston_qe():
    checked = _fd_check("heston")
    assert checked == list(input_names(MODELS["heston"])) + [ELAPSED]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bates", "kou"])
def test_gradient_matches_finite_differences_jump_models(name):
    checked = _fd_check(name)
    assert "sigma_j" in checked or "eta1" in checked


# ---------------------------------------------------------------------------------------------
# against jax.grad of the Fourier price


def _check_against_fourier(g: MCGreeks, name, strike=100.0):
    value, ref = _fourier(name, strike)
    bias = SCHEME_BIAS[name]
    assert abs(g.value - value) <= 4 * g.value_stderr + bias * abs(value) + (
        0.01 if bias else 0.0)
    err = np.abs(g.gradient - ref)
    tol = 4 * g.gradient_stderr + bias * np.abs(ref)
    assert np.all(err <= tol), dict(zip(g.names, zip(g.gradient, ref, tol, strict=True),
                                        strict=True))
    assert np.all(g.gradient_stderr > 0)
    return ref


@pytest.mark.parametrize("name", [pytest.param("gbm", marks=pytest.mark.slow), "merton",
                                  "heston"])
def test_greeks_match_fourier(name):
    """Delta, rho, theta and every model sensitivity (lam with its likelihood-ratio term)
    within 4 standard errors (plus the QE allowance) of the Fourier Greeks."""
    g = _greeks(name)
    assert g.names == input_names(MODELS[name]) + (ELAPSED,)
    assert g.gradient.shape == g.gradient_stderr.shape == (len(g.names),)
    assert g.n_blocks == CFG["n_paths"] // BLOCK_SIZE and g.hessian is None
    ref = _check_against_fourier(g, name)
    # and the test has power: a 5 % error in delta is far outside the tolerance
    assert abs(1.05 * ref[0] - g.gradient[0]) > 4 * g.gradient_stderr[0]


def test_jump_count_gradient_needs_the_likelihood_ratio_term():
    """Without the score term the pathwise lam-derivative is far off (it misses the change
    in the number of jumps); with it, it matches the Fourier derivative."""
    g = _greeks("merton")
    i = g.names.index("lam")
    _, ref = _fourier("merton")
    assert abs(g.gradient[i] - ref[i]) <= 4 * g.gradient_stderr[i]
    # pathwise only: lam enters only through the compensated drift, -lam k S dC/dS T
    model = MODELS["merton"]
    drift_only = -float(model.jump_compensator()) * T * MARKET.spot * g.gradient[0]
    assert abs(drift_only - ref[i]) > 10 * g.gradient_stderr[i]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bates", "kou"])
def test_greeks_match_fourier_jump_models(name):
    _check_against_fourier(_greeks(name), name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["heston", "bates", "merton", "kou"])
@pytest.mark.parametrize("strike", [80.0, 100.0])
def test_heavy_greeks_match_fourier(name, strike):
    g = mc_greeks(MODELS[name], MARKET, payoffs.european(strike, T),
                  key=jax.random.key(5), n_paths=2**19, n_steps=16)
    _check_against_fourier(g, name, strike)


# ---------------------------------------------------------------------------------------------
# discontinuous payoffs


def test_digital_delta_with_default_smoothing_matches_black_scholes():
    strikes = np.array([80.0, 100.0, 120.0])
    g = mc_greeks(MODELS["gbm"], MARKET, payoffs.digital(strikes, T), key=jax.random.key(3),
                  n_paths=2**16, n_steps=1)
    assert g.smoothing == DEFAULT_SMOOTHING
    price, delta = black_scholes_digital(100.0, strikes, T, 0.6, 0.03, 0.01)
    smoothed = np.array([smoothed_digital_delta(100.0, k, T, 0.6, 0.03, 0.01,
                                                DEFAULT_SMOOTHING * k) for k in strikes])
    bias = smoothed - delta
    assert np.all(np.abs(bias) < 2e-5)  # the figure in the module docstring
    se = g.gradient_stderr[:, 0]
    assert np.all(np.abs(g.gradient[:, 0] - delta) <= 4 * se + np.abs(bias)), (
        g.gradient[:, 0], delta, se)
    assert np.all(se < 0.03 * delta)  # a real, informative estimate (not a silent zero)
    assert np.all(np.abs(g.value - price) <= 4 * g.value_stderr + 1e-3)


@pytest.mark.parametrize("smoothing", [0, 0.0])
def test_unsmoothed_indicators_refuse_to_be_differentiated(smoothing):
    kw = dict(key=jax.random.key(0), n_paths=1024, n_steps=2)
    m = MODELS["gbm"]
    for pay in (payoffs.digital(100.0, T), payoffs.barrier(100.0, T, 130.0, "up-and-out")):
        f = lambda s, p=pay: mc_value(m, MARKET._replace(spot=s), p, smoothing=smoothing,
                                      **kw)
        if isinstance(pay, payoffs.Digital):
            assert np.isfinite(float(f(100.0)))  # the exact value is available
        with pytest.raises(NonDifferentiablePayoffError, match="smoothing"):
            jax.grad(f)(100.0)
        with pytest.raises(ValueError, match="smoothing"):
            mc_greeks(m, MARKET, pay, smoothing=smoothing, **kw)
    # the kink of a call: first derivatives exact, a second derivative refuses
    call = payoffs.european(100.0, T)
    f = lambda s: mc_value(m, MARKET._replace(spot=s), call, **kw)
    assert float(jax.grad(f)(100.0)) > 0
    with pytest.raises(NonDifferentiablePayoffError):
        jax.grad(jax.grad(f))(100.0)


@pytest.mark.slow
def test_heston_digital_delta_matches_fourier():
    """Digital = -dC/dK and its delta = -d2C/(dK dS), by jax.grad of the Fourier price."""
    model = MODELS["heston"]
    strikes = np.array([80.0, 100.0, 120.0])

    def call(spot, k):
        return jnp.sum(qmr.fourier_price(model, MARKET._replace(spot=spot), k, T, True))

    digital = lambda spot, k: -jax.grad(call, argnums=1)(spot, k)
    price = np.asarray(digital(100.0, jnp.asarray(strikes)))
    delta = np.asarray(jax.jacfwd(digital)(100.0, jnp.asarray(strikes)))
    g = mc_greeks(model, MARKET, payoffs.digital(strikes, T), key=jax.random.key(5),
                  n_paths=2**18, n_steps=16)
    bias = 2e-5  # smoothing bias of the delta at 1 % (module docstring), and QE below it
    assert np.all(np.abs(g.gradient[:, 0] - delta) <= 4 * g.gradient_stderr[:, 0] + bias)
    assert np.all(np.abs(g.value - price) <= 4 * g.value_stderr + 1e-3)


# ---------------------------------------------------------------------------------------------
# checkpointing, standard errors, second order


@pytest.mark.parametrize("name", ["gbm", pytest.param("bates", marks=pytest.mark.slow)])
def test_checkpoint_gives_identical_gradients(name):
    model = MODELS[name]
    x0 = jnp.asarray(_point(model))
    payoff = payoffs.european(100.0, T)

    def f(x, checkpoint):
        return mc_value(type(model)(*x[3:-1]), qmr.Market(*x[:3]), payoff, x[-1],
                        key=jax.random.key(2), n_paths=2048, n_steps=8, chunk_size=1024,
                        checkpoint=checkpoint)

    g1 = jax.grad(f)(x0, True)
    g2 = jax.grad(f)(x0, False)
    assert np.all(np.isfinite(np.asarray(g1)))
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", ["gbm", "heston"])
def test_standard_errors_match_the_spread_over_keys(name):
    """Batch-means standard errors against the spread of the estimates over independent
    keys: ``var(estimates) / mean(se^2)`` is ``chi2(k - 1) / (k - 1)``-like, within
    [0.2, 3] at k = 12 for an honest standard error (a 0.1 % two-sided bound)."""
    runs = [_greeks(name, key=100 + i) for i in range(12)]
    est = np.array([r.gradient for r in runs])
    se2 = np.array([r.gradient_stderr for r in runs]) ** 2
    ratio = est.var(axis=0, ddof=1) / se2.mean(axis=0)
    assert np.all((ratio > 0.2) & (ratio < 3.0)), dict(zip(runs[0].names, ratio,
                                                           strict=True))
    vals = np.array([r.value for r in runs])
    v_ratio = vals.var(ddof=1) / np.mean([r.value_stderr ** 2 for r in runs])
    assert 0.2 < v_ratio < 3.0


def test_trader_greeks_through_sensitivities_match_mc_greeks():
    """``qmr.greeks(partial(mc_value, ...))`` (forward over forward mode) and
    ``mc_greeks(second_order=True)`` (forward over reverse, per block) agree on the same
    paths, and their gamma is within its standard error of Black-Scholes."""
    model = MODELS["gbm"]
    payoff = payoffs.european([90.0, 110.0], T)
    kw = dict(key=jax.random.key(4), n_paths=2**14, n_steps=2, smoothing=DEFAULT_SMOOTHING)
    gr = qmr.greeks(functools.partial(mc_value, payoff=payoff, **kw), model, MARKET)
    g = mc_greeks(model, MARKET, payoff, second_order=True, **kw)
    i = {n: j for j, n in enumerate(g.names)}
    np.testing.assert_allclose(np.asarray(gr.value), g.value, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(gr.delta), g.gradient[:, i["spot"]], rtol=1e-9)
    np.testing.assert_allclose(np.asarray(gr.vega), g.gradient[:, i["sigma"]], rtol=1e-9)
    np.testing.assert_allclose(np.asarray(gr.rho), g.gradient[:, i["rate"]], rtol=1e-9)
    np.testing.assert_allclose(np.asarray(gr.theta), g.gradient[:, i[ELAPSED]], rtol=1e-9)
    np.testing.assert_allclose(np.asarray(gr.gamma), g.hessian[:, 0, 0], rtol=1e-9)
    np.testing.assert_allclose(np.asarray(gr.vanna), g.hessian[:, 0, i["sigma"]],
                               rtol=1e-9)
    np.testing.assert_allclose(np.asarray(gr.volga), g.hessian[:, i["sigma"], i["sigma"]],
                               rtol=1e-9)
    np.testing.assert_allclose(g.hessian, np.swapaxes(g.hessian, -1, -2), rtol=1e-9,
                               atol=1e-12)
    exact = qmr.greeks(qmr.sensitivities.black_value_fn([90.0, 110.0], T, True), model,
                       MARKET)
    first = {"delta": "spot", "vega": "sigma", "theta": ELAPSED, "rho": "rate"}
    second = {"gamma": ("spot", "spot"), "vanna": ("spot", "sigma"),
              "volga": ("sigma", "sigma")}
    for name, ref in exact._asdict().items():
        if name in first:
            mc, se = g.gradient[:, i[first[name]]], g.gradient_stderr[:, i[first[name]]]
        elif name in second:
            a, b = (i[n] for n in second[name])
            mc, se = g.hessian[:, a, b], g.hessian_stderr[:, a, b]
        else:
            continue
        ref = np.asarray(ref)
        # smoothing bias O(w^2): far below the standard error at this size
        assert np.all(np.abs(mc - ref) <= 4 * se + 1e-3 * np.abs(ref)), (name, mc, ref, se)
        if name in ("delta", "gamma", "vega", "theta", "rho"):  # away from zero here
            assert np.all(se < 0.1 * np.abs(ref)), name


@pytest.mark.slow
def test_heavy_heston_second_order_matches_fourier():
    model = MODELS["heston"]
    g = mc_greeks(model, MARKET, payoffs.european(100.0, T), key=jax.random.key(8),
                  n_paths=2**17, n_steps=16, second_order=True)
    pricer = qmr.fourier_pricer(model, MARKET, 100.0, T, True, tol=1e-13)

    def f(x):
        return pricer(qmr.Heston(*x[3:-1]), qmr.Market(*x[:3]), x[-1])

    hess = np.asarray(jax.hessian(f)(jnp.asarray(_point(model))))
    sub = [0, 3, 5]  # spot, v0, theta: gamma, vanna-type and volga-type entries
    err = np.abs(g.hessian[np.ix_(sub, sub)] - hess[np.ix_(sub, sub)])
    tol = 4 * g.hessian_stderr[np.ix_(sub, sub)] + 0.01 * np.abs(hess[np.ix_(sub, sub)])
    assert np.all(err <= tol), (g.hessian[np.ix_(sub, sub)], hess[np.ix_(sub, sub)], tol)
