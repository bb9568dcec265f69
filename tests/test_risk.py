"""VaR/ES estimators: closed forms for normal P&L, standard errors against the spread of
independent replications, exact values on hand-computed samples, batching, Euler
contributions, historical simulation, and errors for bad input."""

from __future__ import annotations

from statistics import NormalDist

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from qmr_jax.stress import risk as R

LEVELS = (0.95, 0.99, 0.999)
ND = NormalDist()


def _normal_pnl(key, shape, mu=0.0, sigma=1.0):
    return mu + sigma * jax.random.normal(key, shape, dtype=jnp.float64)


# ------------------------------------------------------------------------------------------
# closed forms


def test_normal_closed_forms_reference_values():
    r = R.normal_var_es(0.0, 1.0, LEVELS)
    # z_a and phi(z_a) / (1 - a), standard normal (tabulated values)
    np.testing.assert_allclose(r.var, [1.6448536269514722, 2.3263478740408408,
                                       3.090232306167813], rtol=1e-12)
    np.testing.assert_allclose(r.es, [2.0627128075074257, 2.665214220345806,
                                      3.3670900770404], rtol=1e-10)
    # location-scale and broadcasting: [2, 1] x levels
    r2 = R.normal_var_es(jnp.array([[0.5], [-1.0]]), 2.0, (0.99,))
    assert r2.var.shape == (2, 1, 1)
    np.testing.assert_allclose(r2.var[:, 0, 0], [-0.5 + 2 * 2.3263478740408408,
                                                 1.0 + 2 * 2.3263478740408408], rtol=1e-12)
    with pytest.raises(ValueError, match="sigma"):
        R.normal_var_es(0.0, -1.0)


def test_large_normal_sample_matches_closed_form_within_4_stderr():
    mu, sigma = 0.1, 2.0
    pnl = _normal_pnl(jax.random.key(20261124), (1_000_000,), mu, sigma)
    r = R.var_es(pnl, LEVELS)
    cf = R.normal_var_es(mu, sigma, LEVELS)
    assert np.all(np.abs(r.var - cf.var) <= 4 * r.var_stderr), (r.var, cf.var, r.var_stderr)
    assert np.all(np.abs(r.es - cf.es) <= 4 * r.es_stderr), (r.es, cf.es, r.es_stderr)
    assert np.all(r.es >= r.var)
    # the standard errors are those of the asymptotic formulas at the true values
    a = np.asarray(LEVELS)
    z = np.array([ND.inv_cdf(x) for x in LEVELS])
    f = np.array([ND.pdf(x) for x in z]) / sigma
    se_var = np.sqrt(a * (1 - a) / pnl.size) / f
    es_var_true = np.asarray(cf.es)
    var_true = np.asarray(cf.var)
    lam = np.array([ND.pdf(x) for x in z]) / (1 - a)
    tail_var = sigma**2 * (1 + z * lam - lam**2)  # Var(L | L >= VaR), normal
    se_es = np.sqrt((tail_var + a * (es_var_true - var_true) ** 2) / (pnl.size * (1 - a)))
    np.testing.assert_allclose(r.var_stderr, se_var, rtol=0.25)
    np.testing.assert_allclose(r.es_stderr, se_es, rtol=0.1)
    assert float(r.mean) == pytest.approx(mu, abs=4 * sigma / 1e3)
    assert float(r.std) == pytest.approx(sigma, rel=4 / np.sqrt(2e6))
    assert int(r.n) == pnl.size and float(r.n_eff) == pnl.size


def test_reported_stderr_matches_spread_of_replications():
    # 200 x 20,000 keeps the test fast on CPU (XLA's sort is the cost); 20 tail samples at
    # 0.999 are enough for the asymptotics here
    reps, n = 200, 20_000
    keys = jax.random.split(jax.random.key(7), reps)
    pnl = jax.vmap(lambda k: _normal_pnl(k, (n,)))(keys)  # [reps, n], independent samples
    r = R.var_es(pnl, LEVELS)
    assert r.var.shape == (reps, 3) and r.mean.shape == (reps,)
    ratio_var = np.asarray(r.var_stderr.mean(0) / r.var.std(0, ddof=1))
    ratio_es = np.asarray(r.es_stderr.mean(0) / r.es.std(0, ddof=1))
    # the spread itself is known to ~5% (200 replications)
    assert np.all(np.abs(ratio_var - 1) < 0.2), ratio_var
    assert np.all(np.abs(ratio_es - 1) < 0.2), ratio_es
    # and the estimators are centred on the truth (mean of 200 within 4 standard errors)
    cf = R.normal_var_es(0.0, 1.0, LEVELS)
    assert np.all(np.abs(r.var.mean(0) - cf.var) < 4 * r.var.std(0) / np.sqrt(reps))
    assert np.all(np.abs(r.es.mean(0) - cf.es) < 4 * r.es.std(0) / np.sqrt(reps))


# ------------------------------------------------------------------------------------------
# exact values


def test_hand_computed_sample_1_to_100():
    # P&L -49.5, -48.5, ..., 49.5 (shuffled): n = 100
    pnl = np.random.default_rng(1).permutation(np.arange(1.0, 101.0) - 50.5)
    r = R.var_es(pnl, (0.9, 0.95, 0.975), min_tail=1)
    # a = 0.90: m = 10: VaR = -x_(10) (the 11th worst) = 39.5; ES = mean of 10 worst = 45
    # a = 0.95: m = 5: VaR = 44.5; ES = 47.5
    # a = 0.975: m = 2.5, k = 2: VaR = -x_(2) = 47.5; ES = (49.5 + 48.5 + 0.5 * 47.5) / 2.5
    np.testing.assert_allclose(r.var, [39.5, 44.5, 47.5], rtol=1e-14)
    np.testing.assert_allclose(r.es, [45.0, 47.5, 121.75 / 2.5], rtol=1e-14)
    # ES stderr at a = 0.9: tail -49.5..-40.5 has variance (10^2 - 1) / 12 = 8.25,
    # ES - VaR = 5.5: sqrt((8.25 + 0.9 * 5.5^2) / (100 * 0.1))
    assert float(r.es_stderr[0]) == pytest.approx(np.sqrt((8.25 + 0.9 * 5.5**2) / 10), rel=1e-12)
    # VaR stderr: unit spacing is a density of 1/n per unit: sqrt(a (1 - a) / n) * n
    a = np.array([0.9, 0.95, 0.975])
    np.testing.assert_allclose(r.var_stderr, np.sqrt(a * (1 - a) / 100) * 100, rtol=1e-12)
    assert float(r.mean) == 0.0
    assert float(r.std) == pytest.approx(np.std(pnl, ddof=1), rel=1e-14)


def test_acerbi_tasche_matches_definition_on_random_samples(rng):
    x = rng.standard_t(3, size=1234)
    r = R.var_es(x, (0.95, 0.99))
    xs = np.sort(x)
    for i, a in enumerate((0.95, 0.99)):
        m = 1234 * (1 - a)
        k = int(np.floor(m))
        assert float(r.var[i]) == pytest.approx(-xs[k], rel=1e-14)
        es = -(xs[:k].sum() + (m - k) * xs[k]) / m
        assert float(r.es[i]) == pytest.approx(es, rel=1e-12)
        # VaR is the loss quantile: P(L < VaR) <= a <= P(L <= VaR)
        loss = -x
        assert np.mean(loss < r.var[i]) <= a <= np.mean(loss <= r.var[i])
    assert np.all(r.es >= r.var)


def test_weights_integer_multiplicities_equal_repeated_samples(rng):
    x = rng.normal(size=5000)
    mult = rng.integers(0, 4, size=5000)
    rw = R.var_es(x, (0.95, 0.99), weights=mult.astype(float))
    rr = R.var_es(np.repeat(x, mult), (0.95, 0.99))
    np.testing.assert_allclose(rw.var, rr.var, rtol=1e-14)
    np.testing.assert_allclose(rw.es, rr.es, rtol=1e-12)
    np.testing.assert_allclose(rw.mean, rr.mean, rtol=1e-12)
    # Kish's effective sample size
    assert float(rw.n_eff) == pytest.approx(mult.sum() ** 2 / (mult**2).sum(), rel=1e-12)
    # unit weights reproduce the unweighted estimator, standard errors included
    r1 = R.var_es(x, (0.95, 0.99), weights=np.ones(5000))
    r0 = R.var_es(x, (0.95, 0.99))
    for field in ("var", "es", "var_stderr", "es_stderr", "mean", "std"):
        np.testing.assert_allclose(getattr(r1, field), getattr(r0, field), rtol=1e-12,
                                   err_msg=field)


# ------------------------------------------------------------------------------------------
# batching and tracing


def test_batch_vmap_jit_equal_a_loop():
    pnl = _normal_pnl(jax.random.key(3), (5, 20_000), 0.0, 1.5)
    batched = R.var_es(pnl, LEVELS)
    mapped = jax.jit(jax.vmap(lambda x: R.var_es_core(x, LEVELS)))(pnl)
    for i in range(pnl.shape[0]):
        one = R.var_es(pnl[i], LEVELS)
        for field in R.RiskEstimate._fields:
            np.testing.assert_allclose(getattr(batched, field)[i], getattr(one, field),
                                       rtol=1e-13, err_msg=field)
            np.testing.assert_allclose(getattr(mapped, field)[i], getattr(one, field),
                                       rtol=1e-13, err_msg=field)
    # var_es itself is traceable (value checks skipped on tracers)
    es_jit = jax.jit(lambda x: R.var_es(x, (0.99,)).es)(pnl)
    np.testing.assert_allclose(es_jit[:, 0], batched.es[:, 1], rtol=1e-13)
    # float32 in, float32 out
    r32 = R.var_es(pnl[0].astype(jnp.float32), (0.99,))
    assert r32.var.dtype == jnp.float32 and r32.es_stderr.dtype == jnp.float32
    assert float(r32.es[0]) == pytest.approx(float(batched.es[0, 1]), rel=1e-5)


def test_es_is_differentiable_through_the_sort():
    pnl = _normal_pnl(jax.random.key(4), (20_000,))
    # d ES / d scale = ES / scale for a location-free sample
    g = jax.grad(lambda s: R.var_es_core(s * pnl, (0.99,)).es[0])(2.0)
    es = R.var_es(pnl, (0.99,)).es[0]
    assert float(g) == pytest.approx(float(es), rel=1e-12)


# ------------------------------------------------------------------------------------------
# errors


def test_too_few_samples_raise_with_the_needed_size():
    pnl = _normal_pnl(jax.random.key(5), (5_000,))
    with pytest.raises(ValueError, match=r"level 0\.999.*5000 give 5 .*at least 10 tail "
                                         r"samples, i\.e\. n >= 10000"):
        R.var_es(pnl, LEVELS)
    # the same static check holds under jit (the sample count is a static shape)
    with pytest.raises(ValueError, match="too few samples"):
        jax.jit(lambda x: R.var_es_core(x, LEVELS))(pnl)
    assert R.var_es(pnl, (0.95, 0.99)).var.shape == (2,)
    # weights concentrated on a few samples: too few effective samples
    w = np.zeros(5_000)
    w[:300] = 1.0
    with pytest.raises(ValueError, match="effective samples"):
        R.var_es(pnl, (0.99,), weights=w)
    core = R.var_es_core(pnl, (0.95, 0.99), weights=jnp.asarray(w))
    assert np.isnan(core.var[1]) and np.isfinite(core.var[0])  # NaN only where documented
    with pytest.raises(ValueError, match="too few samples"):
        R.es_contributions(np.ones((500, 2)), 0.99)


def test_nan_and_bad_input_raise():
    pnl = np.array(_normal_pnl(jax.random.key(6), (2, 5_000)))
    pnl[1, 17] = np.nan
    pnl[1, 40] = np.nan
    with pytest.raises(ValueError, match=r"pnl has 2 NaN value\(s\).*first at index \(1, 17\)"):
        R.var_es(pnl, (0.95, 0.99))
    # the traced core makes the whole row NaN (jnp.sort would hide NaNs past the tail)
    core = R.var_es_core(jnp.asarray(pnl), (0.95, 0.99))
    assert np.all(np.isfinite(core.var[0])) and np.all(np.isnan(core.var[1]))
    assert np.all(np.isnan(core.es_stderr[1])) and np.isnan(core.mean[1])
    with pytest.raises(ValueError, match="NaN"):
        R.es_contributions(pnl[..., None], 0.95)
    good = pnl[0]
    with pytest.raises(ValueError, match="infinite"):
        R.var_es(np.where(np.arange(5_000) == 3, -np.inf, good), (0.95,))
    for bad in (1.0, 0.0, -0.5, (0.9, 1.2)):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            R.var_es(good, bad)
    with pytest.raises(ValueError, match="weights must be >= 0"):
        R.var_es(good, (0.95,), weights=-np.ones(5_000))
    with pytest.raises(ValueError, match="do not broadcast"):
        R.var_es(good, (0.95,), weights=np.ones(7))
    with pytest.raises(ValueError, match="sample axis"):
        R.var_es(1.0)


# ------------------------------------------------------------------------------------------
# Euler contributions


def _joint_normal(key, shape, mu, chol):
    z = jax.random.normal(key, shape + (chol.shape[0],), dtype=jnp.float64)
    return jnp.asarray(mu) + z @ jnp.asarray(chol).T


MU = np.array([0.05, -0.02, 0.01])
CHOL = np.array([[1.0, 0.0, 0.0], [0.5, 1.5, 0.0], [-0.8, 0.3, 0.7]])


def test_es_contributions_sum_to_es_and_match_normal_closed_form():
    x = _joint_normal(jax.random.key(11), (400_000,), MU, CHOL)
    cov = CHOL @ CHOL.T
    s = np.sqrt(cov.sum())
    for a in (0.95, 0.99):
        c, se = R.es_contributions(x, a, return_stderr=True)
        total = R.var_es(x.sum(-1), (a,))
        assert float(c.sum()) == pytest.approx(float(total.es[0]), rel=1e-12)
        # Euler allocation of normal ES: -mu_i + Cov(X_i, X) / sigma * phi(z_a) / (1 - a)
        z = ND.inv_cdf(a)
        closed = -MU + cov.sum(1) / s * ND.pdf(z) / (1 - a)
        assert np.all(np.abs(c - closed) <= 4 * se), (a, c, closed, se)
    # one position: its contribution is the ES, with about the same standard error
    one, se1 = R.es_contributions(x.sum(-1, keepdims=True), 0.99, return_stderr=True)
    r = R.var_es(x.sum(-1), (0.99,))
    assert float(one[0]) == pytest.approx(float(r.es[0]), rel=1e-12)
    assert float(se1[0]) == pytest.approx(float(r.es_stderr[0]), rel=0.05)


def test_es_contributions_batch_weights_and_stderr_spread():
    reps, n = 100, 20_000
    x = _joint_normal(jax.random.key(12), (reps, n), MU, CHOL)  # [scenarios, n, positions]
    c, se = R.es_contributions(x, 0.99, return_stderr=True)
    assert c.shape == (reps, 3) and se.shape == (reps, 3)
    for i in (0, 57):
        np.testing.assert_allclose(c[i], R.es_contributions(x[i], 0.99), rtol=1e-13)
    vm = jax.jit(jax.vmap(lambda y: R.es_contributions_core(y, 0.99)[0]))(x)
    np.testing.assert_allclose(vm, c, rtol=1e-13)
    np.testing.assert_allclose(R.es_contributions(x[:3], 0.99, weights=np.ones(n)), c[:3],
                               rtol=1e-12)
    ratio = np.asarray(se.mean(0) / c.std(0, ddof=1))
    assert np.all(np.abs(ratio - 1) < 0.25), ratio


# ------------------------------------------------------------------------------------------
# historical simulation


def _daily_returns(rng, n=1500, start="2020-01-01"):
    idx = pd.date_range(start, periods=n, freq="D", tz="UTC")
    return pd.Series(rng.standard_t(4, size=n) * 0.03, index=idx, name="log_return")


def test_historical_var_es_linear_book(rng):
    r = _daily_returns(rng)
    spot, coins = 50_000.0, 2.0
    pnl_fn = jax.jit(lambda x: coins * spot * jnp.expm1(x))
    res = R.historical_var_es(pnl_fn, r, (0.95, 0.99))
    expected = R.var_es(coins * spot * np.expm1(r.to_numpy()), (0.95, 0.99))
    np.testing.assert_allclose(res.var, expected.var, rtol=1e-12)
    np.testing.assert_allclose(res.es, expected.es, rtol=1e-12)
    assert res.n == 1500 and res.start == r.index[0] and res.end == r.index[-1]
    assert list(res.table().index) == [0.95, 0.99]
    # 5-day non-overlapping blocks aligned on the last day: 300 blocks
    res5 = R.historical_var_es(pnl_fn, r, (0.95,), horizon_days=5)
    blocks = r.to_numpy().reshape(300, 5).sum(1)
    np.testing.assert_allclose(res5.scenarios["log_return"], blocks, rtol=1e-12)
    assert res5.scenarios.index[-1] == r.index[-1] and res5.n == 300
    # overlapping: every rolling 5-day window
    ro = R.historical_var_es(pnl_fn, r, (0.95,), horizon_days=5, overlapping=True)
    assert ro.n == 1496
    np.testing.assert_allclose(ro.scenarios["log_return"].iloc[0], r.iloc[:5].sum(), rtol=1e-12)
    # windows: the last 1000 returns, or dates (inclusive)
    last = R.historical_var_es(pnl_fn, r, (0.95,), window=1000)
    assert last.n == 1000 and last.start == r.index[500]
    dated = R.historical_var_es(pnl_fn, r, (0.95,), window=("2021-01-01", "2021-12-31"))
    assert dated.n == 365 and dated.end == pd.Timestamp("2021-12-31", tz="UTC")


def test_historical_var_es_errors(rng):
    r = _daily_returns(rng, n=400)
    f = lambda x: 1e4 * x
    with pytest.raises(ValueError, match=r"historical window of 80 non-overlapping 5-day "
                                         r"returns.*too few scenarios for level 0.95"):
        R.historical_var_es(f, r, (0.95,), horizon_days=5)
    bad = r.copy()
    bad.iloc[10] = np.nan
    with pytest.raises(ValueError, match="1 NaN/infinite value.*2020-01-11"):
        R.historical_var_es(f, bad, (0.95,))
    weekly = r.iloc[::7]
    with pytest.raises(ValueError, match="must be daily"):
        R.historical_var_es(f, weekly, (0.95,))
    with pytest.raises(ValueError, match="pnl_fn must map"):
        R.historical_var_es(lambda x: x[:10], r, (0.95,))
    with pytest.raises(ValueError, match="no returns in window"):
        R.historical_var_es(f, r, (0.95,), window=("2030-01-01", None))
    with pytest.raises(ValueError, match="pandas Series"):
        R.historical_var_es(f, r.to_numpy(), (0.95,))


def test_historical_var_es_on_real_btc_history():
    from qmr_jax.data.spot import default_data_dir, load_spot_history, log_returns

    if not (default_data_dir() / "spot").is_dir():
        pytest.skip(f"spot data not found under {default_data_dir()} (set QMR_DATA_DIR)")
    r = log_returns(load_spot_history("BTC"))
    res = R.historical_var_es(lambda x: 100.0 * jnp.expm1(x), r, (0.95, 0.99),
                              window=("2020-01-01", "2022-12-31"))
    assert res.n == 1096 and res.start == pd.Timestamp("2020-01-01", tz="UTC")
    # 2020-2022 (COVID, LUNA, 3AC, FTX): a long coin's 99% one-day loss was 5% to 15%
    assert 5.0 < float(res.var[1]) < 15.0 and float(res.es[1]) > float(res.var[1])
    # the worst day in the window is 2020-03-12 (-39.5% on Binance)
    assert res.scenarios["pnl"].idxmin() == pd.Timestamp("2020-03-12", tz="UTC")


def test_one_sort_core_equals_separate_estimators_and_weighted_path(rng):
    # tail_risk_core sorts once; the equal-weight contribution SE sums the non-tail
    # influence in closed form. Both must agree with the general (weighted) code path.
    x = jnp.asarray(rng.standard_t(5, size=(3, 4000, 4)) * np.array([1.0, 2.0, 0.5, 3.0]))
    est, c, se = jax.jit(lambda y: R.tail_risk_core(y, (0.95, 0.99), 0.99))(x)
    ref = R.var_es_core(x.sum(-1), (0.95, 0.99))
    for f in ("var", "es", "var_stderr", "es_stderr", "mean", "std"):
        np.testing.assert_allclose(getattr(est, f), getattr(ref, f), rtol=1e-12, err_msg=f)
    cw, sew = R.es_contributions_core(x, 0.99, weights=jnp.ones(x.shape[:-1]))
    np.testing.assert_allclose(c, cw, rtol=1e-12)
    np.testing.assert_allclose(se, sew, rtol=1e-10)
    np.testing.assert_allclose(c.sum(-1), est.es[:, 1], rtol=1e-12)


def test_sort_last_matches_numpy_under_vmap_and_grad(rng):
    x = rng.normal(size=(5, 301))
    x[2, 7] = np.nan
    s, order = jax.jit(jax.vmap(R.sort_last))(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(s), np.sort(x, axis=-1))
    np.testing.assert_array_equal(np.take_along_axis(x, np.asarray(order), -1), np.sort(x, -1))
    g = jax.grad(lambda y: R.sort_last(y)[0][:10].sum())(jnp.asarray(x[0]))
    assert float(g.sum()) == 10.0 and set(np.flatnonzero(g)) == set(np.argsort(x[0])[:10])
