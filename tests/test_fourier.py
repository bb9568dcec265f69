"""Fourier pricers against published references, QuantLib, series and each other."""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import qmr_jax as qmr
from qmr_jax.pricing.fourier import fourier_price, merton_series_price

from . import oracles

METHODS = ["cos", "lewis"]


def _tolerance(text: str) -> tuple[float, bool]:
    """Parse '1e-12 rel', '5e-7 (6dp)', '1e-8' into (value, relative?)."""
    value = float(re.match(r"\s*([0-9.eE+-]+)", str(text)).group(1))
    return value, "rel" in str(text)


def _half_ulp(text) -> float:
    """Rounding error of a printed decimal: half a unit in its last printed place."""
    text = str(text).lower()
    mantissa, _, exp = text.partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (-decimals + (int(exp) if exp else 0))


def _batched(cls, **cols):
    return cls(**{k: np.asarray(v, float) for k, v in cols.items()})


@pytest.fixture(scope="module")
def heston_refs(reference_dir):
    df = pd.read_csv(reference_dir / "heston_published_benchmarks.csv")
    raw = pd.read_csv(reference_dir / "heston_published_benchmarks.csv", dtype=str)
    df["check_round"] = raw.computed_check_lewis_integral.map(_half_ulp)
    return df


@pytest.mark.parametrize("method", METHODS)
def test_heston_published_references(heston_refs, method):
    df = heston_refs
    model = _batched(qmr.Heston, v0=df.v0, kappa=df.kappa, theta=df.theta,
                     xi=df.sigma_volofvol, rho=df.rho)
    market = qmr.Market(df.spot.to_numpy(), df.r.to_numpy(), df.q.to_numpy())
    got = np.asarray(fourier_price(model, market, df.strike.to_numpy(), df["T"].to_numpy(),
                                   (df.type == "call").to_numpy(), method=method))
    for (_, row), value in zip(df.iterrows(), got, strict=True):
        tol, rel = _tolerance(row.tolerance)
        bound = tol * abs(row.expected) if rel else tol
        assert abs(value - row.expected) <= bound, (row.case, row.strike, value, row.expected)
        # The independent high-precision Lewis integral in the table: 1e-10 relative.
        check = row.computed_check_lewis_integral
        bound = 1e-10 * abs(check) + row.check_round
        assert abs(value - check) <= bound, (row.case, value)


def test_cos_and_lewis_agree_on_hard_heston_cases(heston_refs):
    """Long maturity, Feller-violating cases: the two methods agree to 1e-10 relative."""
    df = heston_refs
    model = _batched(qmr.Heston, v0=df.v0, kappa=df.kappa, theta=df.theta,
                     xi=df.sigma_volofvol, rho=df.rho)
    market = qmr.Market(df.spot.to_numpy(), df.r.to_numpy(), df.q.to_numpy())
    args = (df.strike.to_numpy(), df["T"].to_numpy(), (df.type == "call").to_numpy())
    cos = np.asarray(fourier_price(model, market, *args, method="cos"))
    lew = np.asarray(fourier_price(model, market, *args, method="lewis"))
    np.testing.assert_allclose(cos, lew, rtol=1e-10, atol=1e-13 * df.spot.max())


@pytest.fixture(scope="module")
def levy_refs(reference_dir):
    df = pd.read_csv(reference_dir / "levy_jump_published.csv")
    df["p"] = df.params.map(json.loads)
    raw = pd.read_csv(reference_dir / "levy_jump_published.csv", dtype=str)
    df["check_round"] = raw.computed_check.map(_half_ulp)
    return df


def _levy_model(row):
    p = row.p
    if row.model == "BlackScholes":
        return qmr.GBM(p["sig"])
    if row.model == "Merton76":
        return qmr.Merton(p["sig"], p["lam"], p["muJ"], p["delJ"])
    if row.model == "Kou2002":
        return qmr.Kou(p["sig"], p["lam"], p["p"], p["eta1"], p["eta2"])
    return None


@pytest.mark.parametrize("method", METHODS)
def test_levy_published_references(levy_refs, method):
    checked = 0
    for _, row in levy_refs.iterrows():
        model = _levy_model(row)
        if model is None:  # VG / CGMY are not models of this library (yet)
            continue
        market = qmr.Market(float(row.spot), float(row.r), float(row.q))
        value = float(fourier_price(model, market, float(row.strike), float(row["T"]),
                                    row.type == "call", method=method))
        assert abs(value - row.expected) <= float(row.tolerance), (row.case, value, row.expected)
        bound = 1e-10 * abs(row.computed_check) + row.check_round
        assert abs(value - row.computed_check) <= bound, (row.case, value)
        checked += 1
    assert checked == 10


def test_merton_series_on_published_references(levy_refs):
    rows = levy_refs[levy_refs.model == "Merton76"]
    for _, row in rows.iterrows():
        model = _levy_model(row)
        market = qmr.Market(float(row.spot), float(row.r), float(row.q))
        value = float(merton_series_price(model, market, float(row.strike), float(row["T"]),
                                          row.type == "call"))
        assert abs(value - row.expected) <= float(row.tolerance), (row.case, value)


def test_haug_merton76_table(reference_dir):
    df = pd.read_csv(reference_dir / "haug1998_merton76_calls.csv")
    model = _batched(qmr.Merton, sigma=df.diffusion_vol, lam=df.jump_intensity,
                     mu_j=df.mean_log_jump, sigma_j=df.jump_vol_log)
    market = qmr.Market(df.spot.to_numpy(), df.r.to_numpy(), df.q.to_numpy())
    args = (df.strike.to_numpy(), df["T"].to_numpy(), (df.type == "call").to_numpy())
    series = np.asarray(merton_series_price(model, market, *args))
    cos = np.asarray(fourier_price(model, market, *args))
    assert np.all(np.abs(series - df.expected) <= df.tol_abs)
    assert np.all(np.abs(cos - df.expected) <= df.tol_abs)
    np.testing.assert_allclose(cos, series, rtol=1e-10, atol=1e-12)


def test_haug_black_scholes_table_through_gbm_cf(reference_dir):
    df = pd.read_csv(reference_dir / "haug1998_black_scholes_european.csv")
    model = qmr.GBM(df.vol.to_numpy())
    market = qmr.Market(df.spot.to_numpy(), df.r.to_numpy(), df.q.to_numpy())
    got = np.asarray(fourier_price(model, market, df.strike.to_numpy(), df["T"].to_numpy(),
                                   (df.type == "call").to_numpy()))
    assert np.all(np.abs(got - df.expected) <= df.tol_abs)


def _random_sv(rng, n, jumps):
    vols = rng.uniform(0.2, 1.5, size=(2, n))
    out = dict(v0=vols[0] ** 2, kappa=rng.uniform(0.5, 10.0, n), theta=vols[1] ** 2,
               xi=rng.uniform(0.1, 3.0, n), rho=rng.uniform(-0.95, 0.5, n))
    if jumps:
        out.update(lam=rng.uniform(0.0, 5.0, n), mu_j=rng.uniform(-0.3, 0.2, n),
                   sigma_j=rng.uniform(0.01, 0.4, n))
    days = rng.integers(7, 730, n)
    sd = np.sqrt(out["theta"] * days / 365.0)
    strikes = 100.0 * np.exp(rng.uniform(-1.5, 1.5, n) * sd)
    is_call = rng.random(n) < 0.5
    rate, div = rng.uniform(0.0, 0.08, n), rng.uniform(0.0, 0.05, n)
    return out, days, strikes, is_call, rate, div


@pytest.mark.parametrize("jumps", [False, True], ids=["heston", "bates"])
def test_quantlib_oracle_random_parameters(jumps):
    rng = np.random.default_rng(7 + jumps)
    n = 40
    params, days, strikes, is_call, rate, div = _random_sv(rng, n, jumps)
    cls = qmr.Bates if jumps else qmr.Heston
    model = cls(**params)
    market = qmr.Market(np.full(n, 100.0), rate, div)
    ours = {m: np.asarray(fourier_price(model, market, strikes, days / 365.0, is_call, method=m))
            for m in METHODS}
    ql_prices = []
    for i in range(n):
        p = [params[k][i] for k in cls._fields]
        make = oracles.bates_engine if jumps else oracles.heston_engine
        engine = make(100.0, rate[i], div[i], *p)
        ql_prices.append(oracles.price(engine, strikes[i], days[i], is_call[i]))
    ql_prices = np.array(ql_prices)
    for method, got in ours.items():
        err = np.abs(got - ql_prices)
        ok = (err <= 1e-8 * np.abs(ql_prices)) | (err <= 1e-10)
        assert ok.all(), (method, np.flatnonzero(~ok), got[~ok], ql_prices[~ok])


def test_bates_limits():
    """Bates with lam = 0 is Heston; with a vanishing vol-of-variance it is Merton."""
    strikes = np.array([70.0, 95.0, 100.0, 130.0])
    market = qmr.Market(100.0, 0.1, 0.04)
    h = qmr.Heston(0.3, 2.0, 0.2, 0.9, -0.6)
    b0 = qmr.Bates(0.3, 2.0, 0.2, 0.9, -0.6, 0.0, -0.2, 0.2)
    np.testing.assert_allclose(fourier_price(b0, market, strikes, 0.7, False),
                               fourier_price(h, market, strikes, 0.7, False), rtol=1e-13)
    # QuantLib batesmodel.cpp: sigma -> 0, v0 = theta, Merton with vol sqrt(theta).
    v = 0.0433
    bates = qmr.Bates(v, 0.5, v, 1e-4, 0.0, 2.0, -0.2, 0.2)
    merton = qmr.Merton(np.sqrt(v), 2.0, -0.2, 0.2)
    for t in (1.0, 3.0, 5.0):
        got = fourier_price(bates, market, strikes, t, False)
        ref = merton_series_price(merton, market, strikes, t, False)
        np.testing.assert_allclose(got, ref, rtol=2e-8)


def test_put_call_parity_and_surface_broadcast():
    model = qmr.Kou(0.5, 3.0, 0.35, 12.0, 8.0)
    market = qmr.Market(60_000.0, 0.03, 0.0)
    strikes = np.linspace(30_000, 120_000, 20)[None, :]
    expiries = np.array([7, 14, 30, 60, 90, 180, 270, 365, 540, 730])[:, None] / 365.0
    for method in METHODS:
        c = np.asarray(fourier_price(model, market, strikes, expiries, True, method=method))
        p = np.asarray(fourier_price(model, market, strikes, expiries, False, method=method))
        assert c.shape == (10, 20)
        fwd, df = np.asarray(market.forward(expiries)), np.asarray(market.discount(expiries))
        np.testing.assert_allclose(c - p, df * (fwd - strikes), rtol=1e-12, atol=1e-9)
        # no-arbitrage: calls decrease and are convex in strike
        assert np.all(np.diff(c, axis=1) < 0)
        assert np.all(np.diff(c, 2, axis=1) > -1e-9)


def test_batched_models_match_single_and_vmap():
    models = qmr.Heston(np.array([0.2, 0.5]), np.array([1.0, 3.0]), np.array([0.3, 0.4]),
                        np.array([0.8, 1.5]), np.array([-0.5, -0.2]))
    market = qmr.Market(100.0)
    batch = np.asarray(fourier_price(models, market, np.array([90.0, 110.0]), 0.5, True,
                                     n_terms=512))
    singles = [float(fourier_price(qmr.Heston(*[f[i] for f in models]), market,
                                   [90.0, 110.0][i], 0.5, True, n_terms=512)) for i in range(2)]
    np.testing.assert_allclose(batch, singles, rtol=1e-14)
    vm = jax.vmap(lambda m: fourier_price(m, market, 100.0, 0.5, True, n_terms=512))(models)
    loop = [float(fourier_price(qmr.Heston(*[f[i] for f in models]), market, 100.0, 0.5, True,
                                n_terms=512)) for i in range(2)]
    np.testing.assert_allclose(vm, loop, rtol=1e-14)


def test_float32_keeps_dtype():
    model = qmr.Heston(*[np.float32(v) for v in (0.36, 2.0, 0.4, 1.0, -0.4)])
    market = qmr.Market(np.float32(100.0))
    k = np.linspace(60, 160, 11, dtype=np.float32)
    p32 = fourier_price(model, market, k, np.float32(0.5), True, n_terms=256)
    assert p32.dtype == jnp.float32
    p64 = fourier_price(qmr.Heston(0.36, 2.0, 0.4, 1.0, -0.4), qmr.Market(100.0),
                        k.astype(float), 0.5, True)
    np.testing.assert_allclose(p32, p64, rtol=0, atol=2e-4)


def test_cumulants_match_closed_form_heston_mean_and_variance():
    m = qmr.Heston(0.3, 1.7, 0.5, 0.9, -0.6)
    t = np.array([0.1, 1.0, 4.0])
    c1, c2, _ = qmr.cumulants(m, t)
    mean_var = m.theta * t + (m.v0 - m.theta) * (1 - np.exp(-m.kappa * t)) / m.kappa
    np.testing.assert_allclose(c1, -0.5 * mean_var, rtol=1e-13)
    merton = qmr.Merton(0.4, 2.0, -0.1, 0.25)
    c1, c2, c4 = qmr.cumulants(merton, 2.0)
    np.testing.assert_allclose(c2, 2.0 * (0.16 + 2.0 * (0.01 + 0.0625)), rtol=1e-13)
    np.testing.assert_allclose(c4, 2.0 * 2.0 * (0.1**4 + 6 * 0.01 * 0.0625 + 3 * 0.0625**2),
                               rtol=1e-12)


@pytest.mark.parametrize(
    "model, message",
    [
        (qmr.Heston(0.04, 1.0, 0.04, 0.5, -1.0), "Heston.rho must be a correlation"),
        (qmr.Heston(-0.04, 1.0, 0.04, 0.5, 0.0), "Heston.v0"),
        (qmr.Kou(0.3, 1.0, 0.5, 0.9, 3.0), "Kou.eta1"),
        (qmr.Merton(0.3, -1.0, 0.0, 0.1), "Merton.lam"),
        (qmr.GBM(float("nan")), "GBM.sigma"),
        (qmr.Bates(0.04, 1.0, 0.04, 0.5, 0.0, 1.0, 0.0, -0.1), "Bates.sigma_j"),
    ],
)
def test_bad_parameters_raise_clear_errors(model, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        fourier_price(model, qmr.Market(100.0), 100.0, 1.0, True)


def test_bad_option_inputs_raise_clear_errors():
    m = qmr.GBM(0.5)
    expected = r"strikes must be finite and positive; got -5.0 at index \(1,\)"
    with pytest.raises(ValueError, match=expected):
        fourier_price(m, qmr.Market(100.0), [100.0, -5.0], 1.0, True)
    with pytest.raises(ValueError, match="expiries"):
        fourier_price(m, qmr.Market(100.0), 100.0, 0.0, True)
    with pytest.raises(ValueError, match="Market.spot"):
        fourier_price(m, qmr.Market(0.0), 100.0, 1.0, True)
    with pytest.raises(ValueError, match="method must be one of"):
        fourier_price(m, qmr.Market(100.0), 100.0, 1.0, True, method="fft")


@pytest.mark.parametrize("method", METHODS)
def test_gradients_match_finite_differences(method):
    """jax.grad through the pricer (traced parameters) against central differences."""
    market = qmr.Market(100.0, 0.02, 0.01)
    strikes = np.array([70.0, 90.0, 100.0, 115.0, 140.0])
    expiries = np.array([0.1, 0.5, 1.0, 2.0, 3.0])
    weights = np.arange(1.0, 6.0)

    def total(p):
        prices = fourier_price(qmr.Heston(*p), market, strikes, expiries, strikes > 100.0,
                               method=method)
        return jnp.sum(prices * weights)

    p0 = np.array([0.09, 1.5, 0.16, 0.8, -0.6])
    grad = np.asarray(jax.grad(total)(jnp.asarray(p0)))
    f = jax.jit(total)
    fd = np.empty(5)
    for i in range(5):
        step = np.zeros(5)
        step[i] = 1e-5 * abs(p0[i])
        fd[i] = (float(f(p0 + step)) - float(f(p0 - step))) / (2.0 * step[i])
    np.testing.assert_allclose(grad, fd, rtol=1e-8)


def test_lewis_vmap_over_models_matches_loop():
    models = qmr.Heston(np.array([0.2, 0.5]), np.array([1.0, 3.0]), np.array([0.3, 0.4]),
                        np.array([0.8, 1.5]), np.array([-0.5, -0.2]))
    market = qmr.Market(100.0)
    k = np.array([80.0, 100.0, 125.0])
    vm = jax.vmap(lambda m: fourier_price(m, market, k, 0.5, True, method="lewis",
                                          n_terms=256))(models)
    loop = [np.asarray(fourier_price(qmr.Heston(*[f[i] for f in models]), market, k, 0.5, True,
                                     method="lewis", n_terms=256)) for i in range(2)]
    np.testing.assert_allclose(vm, loop, rtol=1e-13)


def test_automatic_settings_agree_on_a_crypto_surface():
    """BTC-like Heston surface, 1 week .. 2 years x +-2 sd: COS and Lewis with automatic
    settings agree with a generous fixed setting to ~1e-14 of the forward."""
    model = qmr.Heston(0.36, 2.0, 0.4, 1.0, -0.4)
    market = qmr.Market(60_000.0, 0.03, 0.0)
    t = np.array([7, 14, 30, 60, 91, 182, 273, 365, 548, 730])[:, None] / 365.0
    fwd = np.asarray(market.forward(t))
    strikes = fwd * np.exp(np.linspace(-2.0, 2.0, 20) * np.sqrt(0.36 * t))
    is_call = strikes >= fwd
    args = (model, market, strikes, t, is_call)
    cos = np.asarray(fourier_price(*args))
    lewis = np.asarray(fourier_price(*args, method="lewis"))
    ref = np.asarray(fourier_price(*args, method="lewis", n_terms=512))
    for got in (cos, lewis):
        np.testing.assert_allclose(got, ref, rtol=1e-11, atol=2e-14 * 60_000.0)


@pytest.mark.parametrize("coef_shape, theta_shape", [((3, 1), (3, 4)), ((1, 4), (3, 4)),
                                                   ((2, 1, 3), (4, 1))])
def test_phase_sums_match_direct_sums(coef_shape, theta_shape):
    from qmr_jax.pricing.fourier import _phase_sums

    rng = np.random.default_rng(3)
    n = 37
    coef = rng.normal(size=coef_shape + (n,)) + 1j * rng.normal(size=coef_shape + (n,))
    theta = rng.uniform(-40.0, 40.0, size=theta_shape)
    sums, total = jax.jit(_phase_sums)(jnp.asarray(coef), jnp.asarray(theta))
    direct = np.real(np.sum(coef * np.exp(1j * np.arange(n) * theta[..., None]), axis=-1))
    np.testing.assert_allclose(sums, direct, rtol=0, atol=1e-12)
    np.testing.assert_allclose(total, np.real(coef.sum(-1)), rtol=0, atol=1e-13)


def test_fourier_pricer_meets_its_tolerance_and_differentiates():
    """The planned pricer agrees with a generous fixed setting within the tolerance it was
    planned for, at the planning parameters and at moved ones, and its gradient matches
    central differences."""
    model = qmr.Bates(0.3, 2.0, 0.35, 1.2, -0.4, 1.5, -0.05, 0.15)
    market = qmr.Market(3000.0, 0.02, 0.0)
    t = np.array([10, 45, 120, 365])[:, None] / 365.0
    fwd = np.asarray(market.forward(t))
    strikes = fwd * np.exp(np.linspace(-1.5, 1.5, 9) * np.sqrt(0.3 * t))
    is_call = strikes >= fwd
    for tol in (1e-10, None):
        pricer = qmr.fourier_pricer(model, market, strikes, t, is_call, tol=tol)
        ref = np.asarray(fourier_price(model, market, strikes, t, is_call, method="lewis",
                                       n_terms=1024))
        bound = 10.0 * (tol or 1e-14) * fwd
        assert np.all(np.abs(np.asarray(pricer(model)) - ref) <= bound)
    moved = model._replace(v0=0.4, xi=1.0)
    ref = np.asarray(fourier_price(moved, market, strikes, t, is_call, method="lewis",
                                   n_terms=1024))
    np.testing.assert_allclose(pricer(moved), ref, rtol=1e-10, atol=1e-12 * 3000.0)
    np.testing.assert_allclose(pricer(moved, qmr.Market(3000.0, 0.02, 0.0)), ref, rtol=1e-12)

    weights = jnp.asarray(np.linspace(1.0, 2.0, strikes.size).reshape(strikes.shape))

    def total(x):
        return jnp.sum(weights * pricer(qmr.Bates(*x)))

    x0 = np.asarray(model, np.float64)
    grad = np.asarray(jax.grad(total)(jnp.asarray(x0)))
    f = jax.jit(total)
    for i in range(len(x0)):
        h = np.zeros_like(x0)
        h[i] = 1e-5 * abs(x0[i])
        fd = (float(f(x0 + h)) - float(f(x0 - h))) / (2.0 * h[i])
        assert abs(grad[i] - fd) <= 1e-6 * (abs(fd) + 1.0), (model._fields[i], grad[i], fd)


def test_fourier_pricer_rejects_bad_input():
    market = qmr.Market(100.0)
    model = qmr.Heston(0.04, 1.0, 0.04, 0.5, -0.5)
    pricer = qmr.fourier_pricer(model, market, [90.0, 110.0], 0.5, [False, True])
    with pytest.raises(ValueError, match="Heston.xi"):
        pricer(model._replace(xi=-1.0))
    with pytest.raises(ValueError, match="strikes"):
        qmr.fourier_pricer(model, market, [90.0, np.nan], 0.5, True)
    with pytest.raises(TypeError, match="concrete"):
        jax.jit(lambda v: qmr.fourier_pricer(model._replace(v0=v), market, 100.0, 0.5,
                                             True).n_terms)(0.04)
