"""Monte Carlo pricer and payoffs: agreement with exact prices, same-path identities, honest
standard errors, control variates, antithetics, float32 with float64 statistics.

Discretisation bias of the Heston/Bates schemes at the step used here (T = 0.5, 16 steps,
dt = 1/32; v0 = theta = 0.36, kappa = 2, xi = 1.2, rho = -0.6, spot 100, r = 3 %, q = 1 %),
measured once against COS prices with antithetic runs (strikes 70, 85, 100, 115, 140):

* Heston QE, 3.2e7 paths: calls +0.0003 .. +0.0033, puts -0.0043 .. -0.0013 (standard errors
  0.002-0.003).
* Bates QE, 1.6e7 paths: calls +0.0011 .. +0.0029 (se ~0.006), puts -0.0077 .. -0.0059 (se
  0.003-0.004): at most ~2 se, so the QE bias is below 0.01.
* Heston Euler (full truncation), 8e6 paths: +0.013 (K=70) .. +0.060 (K=115) for calls and
  +0.006 .. +0.053 for puts (se ~0.005): a real upward bias of up to 0.06, about 0.2 vol
  points at the money.
* Bates Euler, 1.6e7 paths: +0.012 .. +0.052 (calls), +0.003 .. +0.043 (puts).
* Merton and Kou (exact), 4e6 paths: all errors within 1.4 se.

The tolerances below are 4 standard errors plus these biases (rounded up: 0.01 for QE, 0.07
for Euler, 0 for the exact schemes). ``test_heavy_discretisation_bias`` (slow) re-checks them
with 4e6 paths.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import qmr_jax as qmr
from qmr_jax.pricing import payoffs
from qmr_jax.pricing.fourier import fourier_price
from qmr_jax.pricing.montecarlo import MCResult, control_option, mc_price
from qmr_jax.simulate import simulate

from .cases import CASES, MODELS

MARKET = qmr.Market(100.0, 0.03, 0.01)
T = 0.5
STEPS = 16
N = 40_000
STRIKES = np.array([70.0, 85.0, 100.0, 115.0, 140.0])
FLAGS = np.array([True, False])

# known weak bias at dt = 1/32 (module docstring), absolute, spot 100
BIAS = {"exact": 0.0, "qe": 0.01, "euler": 0.07}


def black_scholes(spot, strike, t, vol, rate, div, is_call):
    """Independent closed form (Black-Scholes with continuous dividend yield)."""
    fwd = spot * np.exp((rate - div) * t)
    sd = vol * np.sqrt(t)
    d1 = (np.log(fwd / strike) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    call = np.exp(-rate * t) * (fwd * stats.norm.cdf(d1) - strike * stats.norm.cdf(d2))
    put = call - np.exp(-rate * t) * (fwd - strike)
    return np.where(is_call, call, put)


@functools.cache
def _exact(name):
    """COS prices on the STRIKES x (call, put) grid (one Fourier compile per model)."""
    return np.asarray(fourier_price(MODELS[name], MARKET, STRIKES[:, None], T, FLAGS))


def _price(name, payoff, **kw):
    kw.setdefault("key", jax.random.key(2024))
    kw.setdefault("n_paths", N)
    kw.setdefault("n_steps", STEPS)
    return mc_price(MODELS[name], MARKET, payoff, **kw)


# ---------------------------------------------------------------------------------------------
# agreement with exact prices


@pytest.mark.parametrize("name, scheme", CASES)
def test_mc_matches_fourier_calls_and_puts(name, scheme):
    payoff = payoffs.european(STRIKES[:, None], T, FLAGS)
    res = _price(name, payoff, scheme=scheme)
    assert isinstance(res, MCResult)
    assert res.value.shape == (5, 2) and res.stderr.shape == (5, 2)
    assert res.scheme == scheme and res.n_samples == N
    exact = _exact(name)
    err = np.abs(res.value - exact)
    assert np.all(err <= 4 * res.stderr + BIAS[scheme]), (err, res.stderr)
    assert np.all(res.stderr > 0) and np.all(res.stderr < 0.02 * exact + 0.05)


def test_gbm_matches_black_scholes_and_the_test_has_power():
    payoff = payoffs.european(STRIKES[:, None], T, FLAGS)
    res = _price("gbm", payoff, scheme="exact")
    exact = black_scholes(100.0, STRIKES[:, None], T, 0.6, 0.03, 0.01, FLAGS)
    assert np.all(np.abs(res.value - exact) <= 4 * res.stderr)
    # the same tolerance rejects a 3-vol-point error at the money
    wrong = black_scholes(100.0, 100.0, T, 0.63, 0.03, 0.01, True)
    assert abs(res.value[2, 0] - wrong) > 4 * res.stderr[2, 0]


def test_antithetic_and_float32_match_fourier():
    payoff = payoffs.european(STRIKES[:, None], T, FLAGS)
    exact = _exact("heston")
    anti = _price("heston", payoff, antithetic=True)
    assert anti.n_samples == N // 2
    assert np.all(np.abs(anti.value - exact) <= 4 * anti.stderr + BIAS["qe"])
    f32 = _price("heston", payoff, dtype=jnp.float32)
    assert np.all(np.abs(f32.value - exact) <= 4 * f32.stderr + BIAS["qe"])
    assert f32.value.dtype == np.float64


# ---------------------------------------------------------------------------------------------
# identities on the same paths


def test_put_call_parity_on_the_same_paths():
    """C - P = D (mean(S_T) - K) exactly: the same key gives the same paths."""
    m = MODELS["heston"]
    call = _price("heston", payoffs.european(STRIKES, T, True))
    put = _price("heston", payoffs.european(STRIKES, T, False))
    summ = simulate(m, MARKET, T, key=jax.random.key(2024), n_paths=N, n_steps=STEPS,
                    record="summary")
    disc = float(MARKET.discount(T))
    mean_s = np.mean(np.asarray(summ.final, np.float64))
    np.testing.assert_allclose(call.value - put.value, disc * (mean_s - STRIKES),
                               rtol=1e-12, atol=1e-11)
    # and the model-free parity against the forward holds within the MC error
    se = disc * np.std(np.asarray(summ.final)) / np.sqrt(N)
    fwd = float(MARKET.forward(T))
    assert np.all(np.abs(call.value - put.value - disc * (fwd - STRIKES)) < 4 * se)


@pytest.mark.parametrize("direction, level", [("up", 130.0), ("down", 80.0)])
def test_barrier_in_plus_out_is_vanilla(direction, level):
    k = STRIKES[:, None]
    vanilla = _price("heston", payoffs.european(k, T, FLAGS))
    out = _price("heston", payoffs.barrier(k, T, level, f"{direction}-and-out", FLAGS))
    inn = _price("heston", payoffs.barrier(k, T, level, f"{direction}-and-in", FLAGS))
    np.testing.assert_allclose(out.value + inn.value, vanilla.value, rtol=1e-12, atol=1e-12)
    assert np.all(out.value <= vanilla.value + 1e-12)
    assert np.all(inn.value > 0)  # the barrier is reached by some paths
    # with a rebate: in + out = vanilla + discounted rebate
    out_r = _price("heston", payoffs.barrier(k, T, level, f"{direction}-and-out", FLAGS,
                                             rebate=2.0))
    inn_r = _price("heston", payoffs.barrier(k, T, level, f"{direction}-and-in", FLAGS,
                                             rebate=2.0))
    np.testing.assert_allclose(out_r.value + inn_r.value,
                               vanilla.value + 2.0 * float(MARKET.discount(T)), rtol=1e-12)


def test_barrier_monitoring_includes_the_initial_spot():
    s = simulate(MODELS["gbm"], MARKET, T, key=jax.random.key(1), n_paths=100, n_steps=4,
                 record="summary")
    # a barrier below the initial spot for an "up" option is hit at t_0 by every path
    pay = payoffs.barrier(100.0, T, 99.0, "up-and-in", True)(s)
    np.testing.assert_allclose(pay, np.maximum(np.asarray(s.final) - 100.0, 0.0))
    pay = payoffs.barrier(100.0, T, 101.0, "down-and-out", True)(s)
    np.testing.assert_array_equal(pay, 0.0)


def test_asian_call_below_european_call():
    """With zero rates and dividends S is a martingale. Then for a call
    (A - K)+ <= (1/n) sum_i (S(t_i) - K)+ path by path (Jensen, the payoff is convex), and
    E[(S(t_i) - K)+] <= E[(S(T) - K)+] because (S_t - K)+ is a submartingale; so the Asian
    price is below the European one. (With r > q the Asian call can only be cheaper still,
    but with r < q the early dates have higher forwards and the comparison can fail.)"""
    market = qmr.Market(100.0)
    m = MODELS["gbm"]
    key = jax.random.key(3)
    kw = dict(key=key, n_paths=N, n_steps=STEPS)
    asian = mc_price(m, market, payoffs.asian(STRIKES, T), **kw)
    euro = mc_price(m, market, payoffs.european(STRIKES, T), **kw)
    exact = black_scholes(100.0, STRIKES, T, 0.6, 0.0, 0.0, True)
    assert np.all(np.abs(euro.value - exact) < 4 * euro.stderr)
    assert np.all(asian.value + 4 * asian.stderr < exact)
    assert np.all(asian.value < euro.value)
    # the pathwise Jensen step on the full grid
    grid = T * np.arange(1, STEPS + 1) / STEPS
    p = np.asarray(simulate(m, market, grid, key=key, n_paths=2000).spot)
    k = STRIKES[:, None, None]
    lhs = np.maximum(p.mean(axis=1) - k[..., 0], 0.0)
    rhs = np.maximum(p - k, 0.0).mean(axis=-1)
    assert np.all(lhs <= rhs + 1e-12)


def test_lookback_and_digital_bounds():
    s = simulate(MODELS["bates"], MARKET, T, key=jax.random.key(4), n_paths=N,
                 n_steps=STEPS, record="summary")
    call = payoffs.european(STRIKES, T, True)(s)
    put = payoffs.european(STRIKES, T, False)(s)
    fixed_c = payoffs.lookback(T, STRIKES, True)(s)
    fixed_p = payoffs.lookback(T, STRIKES, False)(s)
    assert fixed_c.shape == (N, 5)
    assert np.all(fixed_c >= call) and np.all(fixed_p >= put)
    floating = payoffs.lookback(T, None, FLAGS)(s)
    assert floating.shape == (N, 2) and np.all(floating >= 0)
    np.testing.assert_allclose(floating[:, 0], s.final - s.minimum)
    dig_c = payoffs.digital(STRIKES, T, True, cash=3.0)(s)
    dig_p = payoffs.digital(STRIKES, T, False, cash=3.0)(s)
    assert set(np.unique(dig_c)) <= {0.0, 3.0}
    ties = np.asarray(s.final)[:, None] == STRIKES
    np.testing.assert_array_equal(dig_c + dig_p, np.where(ties, 0.0, 3.0))
    asian = payoffs.asian(STRIKES, T, False)(s)
    np.testing.assert_allclose(asian, np.maximum(STRIKES - np.asarray(s.average)[:, None], 0))


# ---------------------------------------------------------------------------------------------
# honest standard errors, control variates, antithetics


def _coverage(name, payoff, exact, reps=200, **kw):
    hits = 0
    for i in range(reps):
        r = mc_price(MODELS[name], MARKET, payoff, key=jax.random.fold_in(jax.random.key(99), i),
                     **kw)
        hits += abs(r.value - exact) <= 1.96 * r.stderr
    return hits / reps


def test_stderr_coverage_plain():
    exact = float(black_scholes(100.0, 110.0, T, 0.6, 0.03, 0.01, True))
    cov = _coverage("gbm", payoffs.european(110.0, T), exact, n_paths=1024, n_steps=1)
    assert 0.90 <= cov <= 0.99, cov


def test_stderr_coverage_antithetic_and_control_variate():
    """Digital call under GBM (exact price D N(d2)), antithetic pairs plus the European
    control: the reported standard error still covers the truth ~95% of the time."""
    fwd = float(MARKET.forward(T))
    sd = 0.6 * np.sqrt(T)
    d2 = (np.log(fwd / 110.0) - 0.5 * sd * sd) / sd
    exact = float(MARKET.discount(T)) * stats.norm.cdf(d2)
    cov = _coverage("gbm", payoffs.digital(110.0, T), exact, n_paths=1024, n_steps=1,
                    antithetic=True, control_variate=True)
    assert 0.90 <= cov <= 0.99, cov


def test_control_variate_reduces_variance_and_stays_unbiased():
    payoff = payoffs.asian(STRIKES[:, None], T, FLAGS)
    plain = _price("heston", payoff)
    cv = _price("heston", payoff, control_variate=True)
    assert np.all(cv.variance_reduction > 1.5)
    np.testing.assert_allclose(cv.stderr, plain.stderr / np.sqrt(cv.variance_reduction),
                               rtol=1e-3)
    np.testing.assert_allclose(cv.plain_value, plain.value, rtol=1e-13)
    assert np.all(np.abs(cv.value - plain.value) < 4 * plain.stderr)
    np.testing.assert_allclose(cv.control_price, _exact("heston"), rtol=1e-12)
    assert np.all(cv.beta > 0.2) and np.all(cv.beta < 1.5)
    # a European is its own control: exact price, zero error
    euro = _price("heston", payoffs.european(STRIKES[:, None], T, FLAGS),
                  control_variate=True)
    np.testing.assert_allclose(euro.value, _exact("heston"), rtol=1e-12)
    assert np.all(euro.stderr < 1e-9)
    # floating lookback: the control is the European struck at the initial spot
    lookback = payoffs.lookback(T, None, FLAGS)
    assert float(control_option(lookback, MARKET).strike) == 100.0
    lb = _price("gbm", lookback, control_variate=True)
    assert np.all(lb.variance_reduction > 1.5)
    assert np.all(np.abs(lb.value - lb.plain_value) < 4 * lb.plain_stderr)


def test_antithetic_reduces_variance_for_a_monotone_payoff():
    payoff = payoffs.european(100.0, T)
    plain = _price("gbm", payoff, n_steps=1)
    anti = _price("gbm", payoff, n_steps=1, antithetic=True)
    # same number of paths, smaller error (the call payoff is monotone in the normal draw)
    assert anti.stderr < 0.9 * plain.stderr


def test_float32_statistics_are_accumulated_in_float64():
    """mc_price on float32 paths equals a float64 recomputation from the same float32 paths,
    and agrees with the float64 run within the Monte Carlo error."""
    m32 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), MODELS["heston"])
    payoff = payoffs.european(STRIKES, T, True)
    key = jax.random.key(2024)
    res = mc_price(m32, MARKET, payoff, key=key, n_paths=N, n_steps=STEPS)
    s = simulate(m32, MARKET, T, key=key, n_paths=N, n_steps=STEPS, record="summary")
    assert s.final.dtype == jnp.float32
    pay = np.asarray(payoff(s), np.float64) * float(MARKET.discount(T))
    np.testing.assert_allclose(res.value, pay.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(res.stderr, pay.std(axis=0, ddof=1) / np.sqrt(N), rtol=1e-5)
    res64 = _price("heston", payoff)
    assert np.all(np.abs(res.value - res64.value) < 4 * np.hypot(res.stderr, res64.stderr))


def test_chunk_size_does_not_change_the_price():
    """Several chunks merged on the host give the one-chunk moments (to rounding)."""
    payoff = payoffs.barrier(STRIKES, T, 125.0, "up-and-out")
    a = _price("gbm", payoff, n_paths=5000)
    b = _price("gbm", payoff, n_paths=5000, chunk_size=1024)
    np.testing.assert_allclose(a.value, b.value, rtol=1e-13)
    np.testing.assert_allclose(a.stderr, b.stderr, rtol=1e-10)
    seen = []
    _price("gbm", payoff, n_paths=5000, chunk_size=1024, progress=lambda d, n: seen.append(d))
    assert seen == [1024, 2048, 3072, 4096, 5000]


# ---------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: payoffs.european(-1.0, T), "strike"),
        (lambda: payoffs.european([100.0, -5.0], T), r"strike.*index \(1,\)"),
        (lambda: payoffs.european(100.0, 0.0), "expiry"),
        (lambda: payoffs.european(100.0, [0.5, 1.0]), "scalar"),
        (lambda: payoffs.asian(100.0, -1.0), "expiry"),
        (lambda: payoffs.barrier(100.0, T, 120.0, kind="up-and-away"), "kind"),
        (lambda: payoffs.barrier(100.0, T, -120.0), "barrier"),
        (lambda: payoffs.barrier(100.0, T, 120.0, rebate=-1.0), "rebate"),
        (lambda: payoffs.digital(100.0, T, cash=np.nan), "cash"),
        (lambda: payoffs.lookback(0.0), "expiry"),
        (lambda: payoffs.lookback(T, strike=-3.0), "strike"),
        (lambda: payoffs.european(100.0, T, is_call="yes"), "is_call"),
    ],
)
def test_bad_payoffs(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_mc_inputs():
    payoff = payoffs.european(100.0, T)
    kw = dict(key=jax.random.key(0), n_paths=100, n_steps=4)
    with pytest.raises(TypeError, match="payoff"):
        mc_price(MODELS["gbm"], MARKET, "call", **kw)
    with pytest.raises(ValueError, match="n_steps"):
        mc_price(MODELS["gbm"], MARKET, payoff, key=jax.random.key(0), n_paths=100, n_steps=0)
    with pytest.raises(ValueError, match="n_paths"):
        mc_price(MODELS["gbm"], MARKET, payoff, key=jax.random.key(0), n_paths=-5, n_steps=4)
    with pytest.raises(ValueError, match="even"):
        mc_price(MODELS["gbm"], MARKET, payoff, key=jax.random.key(0), n_paths=101, n_steps=4,
                 antithetic=True)
    with pytest.raises(ValueError, match="not available"):
        mc_price(MODELS["kou"], MARKET, payoff, scheme="qe", **kw)
    with pytest.raises(ValueError, match="xi"):
        mc_price(qmr.Heston(0.36, 2.0, 0.36, 0.0, -0.6), MARKET, payoff, **kw)


# ---------------------------------------------------------------------------------------------
# heavy checks (pytest -m slow)


@pytest.mark.slow
@pytest.mark.parametrize("name, scheme", [("heston", "qe"), ("bates", "qe"), ("heston", "euler")])
def test_heavy_discretisation_bias(name, scheme):
    """4e6 antithetic paths: QE within 4 se + 0.01 of COS; the Euler bias is real (more than
    4 se at K = 115) and within the documented 0.07."""
    payoff = payoffs.european(STRIKES[:, None], T, FLAGS)
    res = _price(name, payoff, scheme=scheme, n_paths=4_000_000, antithetic=True,
                 key=jax.random.key(77))
    err = res.value - _exact(name)
    assert np.all(np.abs(err) <= 4 * res.stderr + BIAS[scheme]), err
    if scheme == "euler":
        assert err[3, 0] > 4 * res.stderr[3, 0]


@pytest.mark.slow
def test_heavy_million_paths_252_steps():
    """1e6 paths x 252 steps of Heston in float32 with record="summary": O(chunk) memory,
    float64 statistics, agreement with COS."""
    from qmr_jax.simulate import bytes_per_path, plan_chunks

    m32 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), MODELS["heston"])
    plan = plan_chunks(1_000_000, bytes_per_path(m32, "summary", 1, 4))
    assert plan.chunk_paths * bytes_per_path(m32, "summary", 1, 4) <= 256 * 2**20
    payoff = payoffs.european(STRIKES[:, None], 1.0, FLAGS)
    res = mc_price(m32, MARKET, payoff, key=jax.random.key(5), n_paths=1_000_000, n_steps=252)
    exact = np.asarray(fourier_price(MODELS["heston"], MARKET, STRIKES[:, None], 1.0, FLAGS))
    assert np.all(np.abs(res.value - exact) <= 4 * res.stderr + BIAS["qe"])
