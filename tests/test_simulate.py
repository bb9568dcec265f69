"""Path simulation: grids, martingale property, exact jump laws, QE moments, chunking,
antithetics, dtypes, vmap and input validation.

Shapes are shared between tests (N paths, STEPS steps, TIMES) so each model/scheme compiles
once per process.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import qmr_jax as qmr
from qmr_jax.simulate import (
    BLOCK_SIZE,
    Paths,
    PathSummary,
    _qe_variance,
    compound_poisson_step,
    simulate,
    simulate_blocks,
    time_grid,
)

from .cases import CASES, MODELS

MARKET = qmr.Market(100.0, 0.03, 0.01)
TIMES = [0.25, 0.5]
STEPS = 16
N = 20_000



def _run(name, scheme, **kw):
    kw.setdefault("key", jax.random.key(11))
    kw.setdefault("n_paths", N)
    kw.setdefault("n_steps", STEPS)
    return simulate(MODELS[name], MARKET, TIMES, scheme=scheme, **kw)


# ---------------------------------------------------------------------------------------------
# grid


def test_time_grid_distributes_steps():
    g = time_grid([0.25, 1.0], n_steps=8)
    assert g.n_steps == 8
    np.testing.assert_allclose(g.dts, [0.125, 0.125] + [0.125] * 6)
    assert g.step_times[-1] == 1.0 and g.step_times[1] == 0.25
    np.testing.assert_array_equal(g.obs_slot, [-1, 0, -1, -1, -1, -1, -1, 1])
    g = time_grid([0.1, 0.15, 1.0], max_dt=0.1)
    assert g.n_steps == 1 + 1 + 9
    assert np.all(g.dts <= 0.1 + 1e-15)
    np.testing.assert_allclose(np.cumsum(g.dts), g.step_times, atol=1e-15)
    g = time_grid([0.01, 1.0], n_steps=3)  # every interval gets at least one step
    assert list(np.flatnonzero(g.obs_slot >= 0)) == [0, 2]
    assert time_grid(0.5).n_steps == 1


@pytest.mark.parametrize(
    "times, kw, match",
    [
        ([0.5, 0.25], {}, "strictly increasing"),
        ([0.0, 0.5], {}, "> 0"),
        ([-1.0], {}, "> 0"),
        ([0.5, np.nan], {}, "finite"),
        ([], {}, "non-empty"),
        ([0.5, 1.0], {"n_steps": 1}, "n_steps"),
        ([0.5], {"n_steps": 2.5}, "n_steps"),
        ([0.5], {"max_dt": 0.0}, "max_dt"),
        ([0.5], {"n_steps": 4, "max_dt": 0.1}, "at most one"),
    ],
)
def test_time_grid_errors(times, kw, match):
    with pytest.raises(ValueError, match=match):
        time_grid(times, **kw)


# ---------------------------------------------------------------------------------------------
# martingale property and shapes


@pytest.mark.parametrize("name, scheme", CASES)
def test_martingale_every_model_and_scheme(name, scheme):
    """E[S_t] = F(t) at both observation times (every scheme is an exact martingale)."""
    paths = _run(name, scheme)
    assert isinstance(paths, Paths)
    assert paths.spot.shape == (N, 2)
    sv = name in ("heston", "bates")
    assert (paths.variance is not None) == sv
    if sv:
        assert paths.variance.shape == (N, 2)
        assert float(jnp.min(paths.variance)) >= 0.0
    spot = np.asarray(paths.spot)
    assert np.all(np.isfinite(spot)) and np.all(spot > 0)
    fwd = np.asarray(MARKET.forward(np.asarray(TIMES)))
    mean = spot.mean(axis=0)
    se = spot.std(axis=0, ddof=1) / np.sqrt(N)
    assert np.all(np.abs(mean - fwd) < 4 * se), (mean, fwd, se)


def test_martingale_catches_a_wrong_drift():
    """Sanity check that the martingale test has power: drop the jump compensator."""
    m = MODELS["merton"]
    paths = simulate(m, MARKET, TIMES, key=jax.random.key(11), n_paths=N, n_steps=STEPS)
    spot = np.asarray(paths.spot)[:, -1]
    wrong = spot * np.exp(m.lam * float(m.jump_compensator()) * 0.5)  # uncompensated
    se = spot.std(ddof=1) / np.sqrt(N)
    assert abs(wrong.mean() - float(MARKET.forward(0.5))) > 4 * se


def test_summary_matches_full_paths():
    """PathSummary: max/min include S0 and every step date, average excludes S0."""
    m = MODELS["heston"]
    key = jax.random.key(3)
    grid_times = 0.5 * np.arange(1, 9) / 8
    full = simulate(m, MARKET, grid_times, key=key, n_paths=1000, n_steps=8)
    summ = simulate(m, MARKET, 0.5, key=key, n_paths=1000, n_steps=8, record="summary")
    assert isinstance(summ, PathSummary)
    s = np.asarray(full.spot)
    s0 = float(MARKET.spot)
    np.testing.assert_allclose(summ.final, s[:, -1], rtol=1e-12)
    np.testing.assert_allclose(summ.maximum, np.maximum(s.max(axis=1), s0), rtol=1e-12)
    np.testing.assert_allclose(summ.minimum, np.minimum(s.min(axis=1), s0), rtol=1e-12)
    np.testing.assert_allclose(summ.average, s.mean(axis=1), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# exact laws of the jump parts


def _keys(n_blocks, n_keys, seed=0):
    base = jax.random.split(jax.random.key(seed), n_blocks * n_keys)
    return base.reshape(n_blocks, n_keys)


def test_merton_jump_counts_and_sizes():
    m = qmr.Merton(0.5, 5.0, -0.1, 0.3)
    dt = 0.5
    counts, jump = compound_poisson_step(m, _keys(100, 2), jnp.asarray(dt), BLOCK_SIZE)
    counts = np.asarray(counts).ravel()
    jump = np.asarray(jump).ravel()
    rate = m.lam * dt
    # chi-square of the counts against Poisson(lam dt), last bin the tail
    k = np.arange(8)
    observed = np.array([np.sum(counts == i) for i in k[:-1]] + [np.sum(counts >= 7)])
    probs = np.append(stats.poisson.pmf(k[:-1], rate), stats.poisson.sf(6, rate))
    assert stats.chisquare(observed, probs * counts.size).pvalue > 1e-3
    assert np.all(jump[counts == 0] == 0.0)
    # conditional on N = n > 0 the sum is exactly N(n mu_j, n sigma_j^2)
    for n in (1, 2, 3, 4):
        sel = jump[counts == n]
        z = (sel - n * m.mu_j) / (m.sigma_j * np.sqrt(n))
        assert stats.kstest(z, "norm").pvalue > 1e-3, n
    # a Bernoulli approximation of the count would fail: P(N >= 2) is large here
    assert np.mean(counts >= 2) > 0.5


@pytest.mark.parametrize("rate", [0.0, 0.01, 40.0, 900.0])
def test_poisson_counts_small_and_large_rates(rate):
    """The inversion sampler works where exp(-rate) underflows and at rate 0."""
    m = qmr.Merton(0.5, rate, -0.1, 0.3)
    counts, _ = compound_poisson_step(m, _keys(100, 2, 7), jnp.asarray(1.0), BLOCK_SIZE)
    counts = np.asarray(counts).ravel()
    if rate == 0.0:
        assert np.all(counts == 0)
        return
    lo, hi = stats.poisson.ppf([0.001, 0.999], rate)
    edges = np.unique(np.linspace(lo, hi, 12).round())
    observed = np.histogram(counts, np.concatenate([[-1], edges, [np.inf]]) + 0.5)[0]
    cdf = stats.poisson.cdf(np.concatenate([[-1], edges]), rate)
    probs = np.diff(np.append(cdf, 1.0))
    keep = probs * counts.size > 5
    observed, expected = observed[keep], probs[keep] * counts.size
    assert stats.chisquare(observed, expected * observed.sum() / expected.sum()).pvalue > 1e-3
    z = (counts.mean() - rate) / np.sqrt(rate / counts.size)
    assert abs(z) < 4


def test_merton_terminal_law_ks():
    """log(S_T/F_T) after 16 steps follows the exact Poisson mixture of normals."""
    m = MODELS["merton"]
    paths = simulate(m, MARKET, TIMES, key=jax.random.key(5), n_paths=N, n_steps=STEPS)
    t = TIMES[-1]
    y = np.log(np.asarray(paths.spot)[:, -1] / float(MARKET.forward(t)))
    k = float(m.jump_compensator())
    n = np.arange(40)
    w = stats.poisson.pmf(n, m.lam * t)
    mean_n = -0.5 * m.sigma**2 * t - m.lam * k * t + n * m.mu_j
    sd_n = np.sqrt(m.sigma**2 * t + n * m.sigma_j**2)
    cdf = lambda x: np.sum(w * stats.norm.cdf((np.asarray(x)[..., None] - mean_n) / sd_n), -1)
    assert stats.kstest(y, cdf).pvalue > 1e-3
    # power: the same test rejects a law with the jump part switched off
    cdf0 = lambda x: stats.norm.cdf(
        (np.asarray(x) + 0.5 * m.sigma**2 * t) / (m.sigma * np.sqrt(t))
    )
    assert stats.kstest(y, cdf0).pvalue < 1e-6


def test_kou_jump_counts_and_sizes():
    m = qmr.Kou(0.5, 6.0, 0.4, 8.0, 5.0)
    dt = 0.5
    (n_up, n_dn), jump = compound_poisson_step(m, _keys(100, 4, 1), jnp.asarray(dt), BLOCK_SIZE)
    n_up, n_dn, jump = (np.asarray(a).ravel() for a in (n_up, n_dn, jump))
    for counts, rate in ((n_up, m.lam * m.p * dt), (n_dn, m.lam * (1 - m.p) * dt)):
        k = np.arange(7)
        observed = np.array([np.sum(counts == i) for i in k[:-1]] + [np.sum(counts >= 6)])
        probs = np.append(stats.poisson.pmf(k[:-1], rate), stats.poisson.sf(5, rate))
        assert stats.chisquare(observed, probs * counts.size).pvalue > 1e-3
    # thinning: up and down counts independent
    assert abs(stats.pearsonr(n_up, n_dn)[0]) < 4 / np.sqrt(n_up.size)
    assert np.all(jump[(n_up == 0) & (n_dn == 0)] == 0.0)
    # conditional sums: Gamma(n, 1/eta1) up, -Gamma(n, 1/eta2) down
    for n in (1, 2, 3):
        up = jump[(n_up == n) & (n_dn == 0)]
        assert stats.kstest(up, stats.gamma(n, scale=1 / m.eta1).cdf).pvalue > 1e-3, n
        dn = -jump[(n_dn == n) & (n_up == 0)]
        assert stats.kstest(dn, stats.gamma(n, scale=1 / m.eta2).cdf).pvalue > 1e-3, n
    # mixed steps: the sum of independent up and down parts (mean check)
    mixed = jump[(n_up == 1) & (n_dn == 1)]
    se = mixed.std() / np.sqrt(mixed.size)
    assert abs(mixed.mean() - (1 / m.eta1 - 1 / m.eta2)) < 4 * se


# ---------------------------------------------------------------------------------------------
# Heston QE variance moments


@pytest.mark.parametrize("name", ["heston", "bates"])
def test_qe_variance_first_two_moments(name):
    """QE matches the conditional mean and variance of CIR exactly, hence E[v_t], E[v_t^2]."""
    m = MODELS[name]
    v = np.asarray(_run(name, "qe").variance)
    t = np.asarray(TIMES)
    e = np.exp(-m.kappa * t)
    mean = m.theta + (m.v0 - m.theta) * e
    var = m.v0 * m.xi**2 * e * (1 - e) / m.kappa + m.theta * m.xi**2 * (1 - e) ** 2 / (
        2 * m.kappa
    )
    se1 = v.std(axis=0, ddof=1) / np.sqrt(N)
    assert np.all(np.abs(v.mean(axis=0) - mean) < 4 * se1)
    v2 = v**2
    se2 = v2.std(axis=0, ddof=1) / np.sqrt(N)
    assert np.all(np.abs(v2.mean(axis=0) - (var + mean**2)) < 4 * se2)


def test_euler_variance_is_biased_upwards():
    """Full truncation overstates E[v_t] at this dt (the reason QE is the default)."""
    m = MODELS["heston"]
    v = np.asarray(_run("heston", "euler").variance)[:, -1]
    mean = m.theta + (m.v0 - m.theta) * np.exp(-m.kappa * TIMES[-1])
    assert v.mean() > mean  # the truncation max(v, 0) only adds variance


# ---------------------------------------------------------------------------------------------
# chunking, antithetics, jit, vmap, dtypes


@pytest.mark.parametrize("name, scheme", [("heston", "qe"), ("kou", "exact"), ("bates", "qe")])
def test_chunk_size_does_not_change_results(name, scheme):
    """N = 20000 paths are 40 blocks, the last one partial: one chunk of 40 blocks, two of
    20, and (for a prefix of 39 blocks) two of 20 with one padding block."""
    key = jax.random.key(21)
    a = _run(name, scheme, key=key)
    b = _run(name, scheme, key=key, chunk_size=20 * BLOCK_SIZE)
    np.testing.assert_array_equal(a.spot, b.spot)
    if a.variance is not None:
        np.testing.assert_array_equal(a.variance, b.variance)
    n = 39 * BLOCK_SIZE - 100
    c = _run(name, scheme, key=key, n_paths=n, chunk_size=20 * BLOCK_SIZE + 7)
    np.testing.assert_array_equal(a.spot[:n], c.spot)
    # another key gives other paths
    d = _run(name, scheme, key=jax.random.key(22))
    assert not np.any(np.asarray(a.spot) == np.asarray(d.spot))


def test_antithetic_pairs_are_mirrored():
    # GBM: y_a + y_b = -sigma^2 T exactly
    m = qmr.GBM(0.6)
    p = simulate(m, MARKET, TIMES, key=jax.random.key(1), n_paths=1000, n_steps=4,
                 antithetic=True)
    y = np.log(np.asarray(p.spot) / np.asarray(MARKET.forward(np.asarray(TIMES))))
    np.testing.assert_allclose(y[0::2] + y[1::2], np.broadcast_to(
        -(m.sigma**2) * np.asarray(TIMES), (500, 2)), atol=1e-12)
    assert np.all(y[0::2] != y[1::2])
    # Heston Euler, one step: the variance and log-spot increments are mirrored
    h = MODELS["heston"]
    dt = 0.01
    p = simulate(h, MARKET, dt, key=jax.random.key(2), n_paths=1000, scheme="euler",
                 antithetic=True, n_steps=1)
    v = np.asarray(p.variance)[:, 0]
    np.testing.assert_allclose(v[0::2] + v[1::2], 2 * (h.v0 + h.kappa * (h.theta - h.v0) * dt),
                               rtol=1e-12)
    y = np.log(np.asarray(p.spot)[:, 0] / float(MARKET.forward(dt)))
    np.testing.assert_allclose(y[0::2] + y[1::2], -h.v0 * dt, atol=1e-14)
    # Heston QE, one step, quadratic branch (psi ~ 0.04): v = a (b + Z)^2 and a (b - Z)^2
    # with |Z| < b, so sqrt(v_a) + sqrt(v_b) = 2 sqrt(a) b is the same for every pair
    p = simulate(h, MARKET, dt, key=jax.random.key(2), n_paths=1000, antithetic=True,
                 n_steps=1)
    r = np.sqrt(np.asarray(p.variance)[:, 0])
    pair = r[0::2] + r[1::2]
    np.testing.assert_allclose(pair, pair[0], rtol=1e-12)
    assert np.std(r) > 0.01
    with pytest.raises(ValueError, match="even"):
        simulate(m, MARKET, TIMES, key=jax.random.key(1), n_paths=999, antithetic=True)


def test_antithetic_jumps_share_counts_and_mirror_sizes():
    """Antithetic pairs share the Poisson counts and mirror the normal jump-size draw, so the
    pair sum of the jump parts is exactly 2 N mu_j."""
    m = qmr.Merton(0.4, 3.0, -0.2, 0.0)
    keys = _keys(4, 2, 3)
    counts, jump = compound_poisson_step(m, keys, jnp.asarray(0.5), BLOCK_SIZE // 2, True)
    counts, jump = np.asarray(counts), np.asarray(jump)
    np.testing.assert_array_equal(counts[:, 0::2], counts[:, 1::2])
    np.testing.assert_allclose(jump[:, 0::2] + jump[:, 1::2], 2 * counts[:, 0::2] * m.mu_j)
    m = qmr.Merton(0.4, 3.0, -0.2, 0.3)
    counts, jump = compound_poisson_step(m, keys, jnp.asarray(0.5), BLOCK_SIZE // 2, True)
    np.testing.assert_allclose(
        np.asarray(jump)[:, 0::2] + np.asarray(jump)[:, 1::2],
        2 * np.asarray(counts)[:, 0::2] * m.mu_j, atol=1e-12,
    )


def test_single_chunk_core_under_jit():
    """The jitted single-chunk core run on block 1 alone reproduces block 1 of a full run."""
    m = MODELS["heston"]
    g = time_grid(0.5, n_steps=8)
    args = (jnp.asarray(g.dts), jnp.asarray(g.step_times), jnp.asarray(g.obs_slot))
    kw = dict(scheme="qe", n_blocks=1, antithetic=False, record="summary", n_obs=1)
    key = jax.random.key(3)
    model = jax.tree_util.tree_map(jnp.asarray, m)
    market = jax.tree_util.tree_map(jnp.asarray, MARKET)
    f = jax.jit(lambda mm, b: simulate_blocks(mm, market, key, b, *args, **kw).final)
    block1 = f(model, 1)
    assert block1.shape == (BLOCK_SIZE,)
    whole = simulate(m, MARKET, 0.5, key=key, n_paths=1000, n_steps=8, record="summary")
    np.testing.assert_allclose(block1[: 1000 - BLOCK_SIZE], whole.final[BLOCK_SIZE:],
                               rtol=1e-13)


def test_vmap_over_heston_parameters_equals_separate_runs():
    params = [
        qmr.Heston(0.36, 2.0, 0.36, 1.2, -0.6),
        qmr.Heston(0.25, 1.0, 0.5, 0.8, -0.3),
        qmr.Heston(0.5, 3.0, 0.3, 1.5, 0.2),
    ]
    batch = jax.tree_util.tree_map(lambda *x: jnp.asarray(x), *params)
    kw = dict(key=jax.random.key(8), n_paths=N, n_steps=STEPS)
    batched = jax.vmap(lambda m: simulate(m, MARKET, TIMES, **kw).spot)(batch)
    assert batched.shape == (3, N, 2)
    for i, m in enumerate(params):
        np.testing.assert_allclose(batched[i], simulate(m, MARKET, TIMES, **kw).spot,
                                   rtol=1e-12)
    with pytest.raises(ValueError, match="vmap"):
        simulate(batch, MARKET, TIMES, **kw)


def test_float32_simulation():
    m32 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), MODELS["heston"])
    p = simulate(m32, MARKET, TIMES, key=jax.random.key(11), n_paths=N, n_steps=STEPS)
    assert p.spot.dtype == jnp.float32 and p.variance.dtype == jnp.float32
    spot = np.asarray(p.spot, np.float64)
    fwd = np.asarray(MARKET.forward(np.asarray(TIMES)))
    se = spot.std(axis=0) / np.sqrt(N)
    assert np.all(np.abs(spot.mean(axis=0) - fwd) < 4 * se)
    q = simulate(MODELS["heston"], MARKET, TIMES, key=jax.random.key(11), n_paths=N,
                 n_steps=STEPS, dtype=jnp.float32)
    assert q.spot.dtype == jnp.float32
    np.testing.assert_array_equal(p.spot, q.spot)


def test_qe_step_float32_agrees_with_float64():
    """The same inputs through the QE step in both precisions agree to float32 precision,
    across both branches (psi from ~0 to >> psi_c) and extreme normals."""
    m = MODELS["heston"]
    v = np.geomspace(1e-6, 2.0, 64)[:, None]
    z = np.linspace(-7.0, 7.0, 57)[None, :]
    out = {}
    for dt_ in (np.float32, np.float64):
        mm = jax.tree_util.tree_map(lambda x, d=dt_: jnp.asarray(x, d), m)
        vn, drift, k2, k3 = _qe_variance(mm, jnp.asarray(v, dt_), jnp.asarray(0.05, dt_),
                                         jnp.asarray(z, dt_))
        out[dt_] = np.asarray(vn, np.float64), np.asarray(drift, np.float64)
    v32, d32 = out[np.float32]
    v64, d64 = out[np.float64]
    assert np.all(np.isfinite(v32)) and np.all(v32 >= 0)
    np.testing.assert_allclose(v32, v64, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(d32, d64, rtol=2e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    "model, kw, exc, match",
    [
        (qmr.GBM(0.6), {"scheme": "euler"}, ValueError, "not available for GBM"),
        (qmr.Heston(0.36, 2.0, 0.36, 1.2, -0.6), {"scheme": "milstein"}, ValueError, "qe"),
        (qmr.Heston(0.36, 2.0, 0.36, 1.2, 1.0), {}, ValueError, "rho"),
        (qmr.GBM(-0.1), {}, ValueError, "sigma"),
        (qmr.GBM(0.6), {"n_paths": 0}, ValueError, "n_paths"),
        (qmr.GBM(0.6), {"n_paths": 10.5}, ValueError, "n_paths"),
        (qmr.GBM(0.6), {"record": "paths"}, ValueError, "record"),
        (qmr.GBM(0.6), {"chunk_size": 0}, ValueError, "chunk_size"),
        (qmr.GBM(0.6), {"market": qmr.Market(-1.0)}, ValueError, "spot"),
        (qmr.GBM(0.6), {"times": [0.5, 0.5]}, ValueError, "increasing"),
        ("not a model", {}, TypeError, "cannot simulate"),
    ],
)
def test_bad_inputs(model, kw, exc, match):
    args = dict(key=jax.random.key(0), n_paths=10, market=MARKET, times=TIMES)
    args.update(kw)
    market, times = args.pop("market"), args.pop("times")
    with pytest.raises(exc, match=match):
        simulate(model, market, times, **args)


_MULTI_DEVICE_SCRIPT = r"""
import sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import qmr_jax as qmr
m = qmr.Bates(0.36, 2.0, 0.4, 1.0, -0.4, 1.0, -0.1, 0.2)
p = qmr.simulate(m, qmr.Market(100.0), [0.25, 0.5], key=jax.random.key(11), n_paths=5000,
                 n_steps=8, chunk_size=1024)
np.save(sys.argv[1], np.asarray(p.spot))
print(jax.local_device_count())
"""


def test_results_do_not_depend_on_device_count(tmp_path):
    """Chunks spread over two host devices give bit-identical paths to one device."""
    import os
    import subprocess
    import sys

    outs = {}
    for n_dev in (1, 2):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n_dev}",
                   JAX_PLATFORMS="cpu")
        target = tmp_path / f"spot{n_dev}.npy"
        done = subprocess.run([sys.executable, "-c", _MULTI_DEVICE_SCRIPT, str(target)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().endswith(str(n_dev))
        outs[n_dev] = np.load(target)
    np.testing.assert_array_equal(outs[1], outs[2])
