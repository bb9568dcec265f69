"""Calibration on synthetic surfaces: parameter recovery without and with bid/ask noise, the
solver's honesty about convergence, batches, bad chains, and quote-level sensitivities
(implicit-function theorem) against finite differences of recalibrations.

One Heston problem shape is shared by most tests so the compiled solver is reused.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import qmr_jax as qmr
from qmr_jax.calibration import Bijection, calibrate, calibrate_batch
from qmr_jax.calibration.bijections import DEFAULT_BOUNDS
from qmr_jax.calibration.objective import plan_geometry
from qmr_jax.calibration.quote_sensitivity import _ift_fn, quote_sensitivities
from qmr_jax.data.synthetic import synthetic_chain

jax.config.update("jax_enable_x64", True)

TRUTH = qmr.Heston(v0=0.30, kappa=3.0, theta=0.36, xi=1.6, rho=-0.25)
START = qmr.Heston(v0=0.2, kappa=1.5, theta=0.25, xi=1.0, rho=0.0)
NOISE = 0.003  # 0.3 vol points
EXPIRIES = [7 / 365, 21 / 365, 49 / 365, 0.25, 0.5, 0.75]
N_TERMS = 256  # one compiled size for every Heston problem here


@pytest.fixture(scope="module")
def clean_chain():
    return synthetic_chain(TRUTH, expiries=EXPIRIES, strikes_per_expiry=15)


@pytest.fixture(scope="module")
def noisy_chain():
    return synthetic_chain(TRUTH, expiries=EXPIRIES, strikes_per_expiry=15, noise_iv=NOISE,
                           key=jax.random.key(7))


@pytest.fixture(scope="module")
def clean_fit(clean_chain):
    return calibrate(START, clean_chain, n_terms=N_TERMS)


@pytest.fixture(scope="module")
def noisy_fit(noisy_chain):
    return calibrate(START, noisy_chain, n_terms=N_TERMS)


def test_bijections_round_trip_and_stay_inside_boxes():
    rng = np.random.default_rng(0)
    for model_type, maps in DEFAULT_BOUNDS.items():
        bij = Bijection(model_type)
        for name, m in maps.items():
            x = (np.exp(rng.uniform(np.log(m.lo), np.log(m.hi), 50)) if m.log
                 else rng.uniform(m.lo, m.hi, 50))
            back = np.asarray(m.forward(jnp.asarray(m.inverse(x))))
            np.testing.assert_allclose(back, x, rtol=1e-10, err_msg=f"{model_type.__name__}.{name}")
            extreme = np.asarray(m.forward(jnp.asarray([-40.0, 40.0])))
            assert m.lo <= extreme[0] and extreme[1] <= m.hi
        del bij
    with pytest.raises(ValueError, match="outside the calibration box"):
        Bijection(qmr.Heston).check_inside(TRUTH._replace(kappa=80.0))
    with pytest.raises(ValueError, match="no field 'sigma'"):
        Bijection(qmr.Heston, bounds={"sigma": (0.1, 1.0)})


def test_noise_free_heston_recovery(clean_fit):
    """An exact surface gives back the parameters that made it (to 1e-4 relative)."""
    fit = clean_fit
    assert fit.converged, fit.reason
    for f in TRUTH._fields:
        got, want = getattr(fit.params, f), getattr(TRUTH, f)
        assert abs(got - want) <= 1e-4 * abs(want), (f, got, want)
    assert fit.rmse_iv < 1e-4  # vol points
    assert fit.inside_band == 1.0
    assert isinstance(fit.params, qmr.Heston)
    print("\n" + fit.summary())


def test_noisy_heston_recovery_within_its_standard_errors(noisy_fit, noisy_chain):
    """With iid mid-IV noise of std s, the fitted parameters are within 5 standard errors of
    the truth, the standard errors from the implicit-function theorem (sum of squared
    responses to each quote, times s); the RMSE is the noise level (n - p degrees of
    freedom) within sampling error."""
    fit = noisy_fit
    assert fit.converged, fit.reason
    qs = quote_sensitivities(fit)
    n, p = fit.n_quotes, len(TRUTH)
    se = NOISE * 100.0 * np.sqrt((qs.params**2).sum())
    for f in TRUTH._fields:
        err = abs(getattr(fit.params, f) - getattr(TRUTH, f))
        assert err <= 5 * se[f], (f, err, se[f])
    expect = 100 * NOISE * np.sqrt((n - p) / n)
    assert abs(fit.rmse_iv - expect) <= 4 * expect / np.sqrt(2 * n), (fit.rmse_iv, expect)
    print(f"\nnoisy fit: RMSE {fit.rmse_iv:.3f} vol pts (noise {100 * NOISE}), errors/SE: "
          + ", ".join(f"{f} {abs(getattr(fit.params, f) - getattr(TRUTH, f)) / se[f]:.2f}"
                      for f in TRUTH._fields))


def test_result_tables_are_consistent(noisy_fit, noisy_chain):
    fit = noisy_fit
    res = fit.residuals
    assert list(res.index) == list(noisy_chain.index)
    np.testing.assert_allclose(res["residual_iv"], 100 * (res["model_iv"] - res["mid_iv"]))
    assert fit.rmse_iv == pytest.approx(np.sqrt(np.mean(res["residual_iv"] ** 2)))
    band = (res["model_iv"] >= res["bid_iv"]) & (res["model_iv"] <= res["ask_iv"])
    assert fit.inside_band == pytest.approx(band.mean())
    by = fit.by_expiry
    assert len(by) == len(EXPIRIES) and by["n_quotes"].sum() == fit.n_quotes
    for _, row in by.iterrows():
        r = res[res["expiry_years"] == row.expiry_years]["residual_iv"]
        assert row.rmse_iv == pytest.approx(np.sqrt(np.mean(r**2)))
    # the model IVs are the calibrated model's own: reprice independently (COS, default tol)
    forward = noisy_chain["forward"].to_numpy()
    prices = qmr.fourier_price(fit.params, qmr.Market(1.0), noisy_chain["strike"] / forward,
                               noisy_chain["expiry_years"].to_numpy(),
                               noisy_chain["is_call"].to_numpy(), method="cos")
    ivs = qmr.implied_vol(prices, 1.0, noisy_chain["strike"] / forward,
                          noisy_chain["expiry_years"].to_numpy(), noisy_chain["is_call"].to_numpy())
    np.testing.assert_allclose(res["model_iv"], np.asarray(ivs), atol=1e-8)
    d = fit.to_dict()
    assert d["params"]["rho"] == fit.params.rho and d["converged"] is True
    assert len(d["history"]) == fit.iterations


def test_non_convergence_is_reported(noisy_chain):
    fit = calibrate(START, noisy_chain, n_terms=N_TERMS, max_iter=2)
    assert not fit.converged
    assert fit.iterations == 2 and "iteration limit" in fit.reason
    assert "NOT CONVERGED" in fit.summary()
    with pytest.raises(ValueError, match="converged"):
        quote_sensitivities(fit)


def test_batch_matches_single_fits(noisy_chain, clean_chain, noisy_fit, clean_fit):
    """One vmapped call over two snapshots (padded to a common grid) gives each one's own
    calibration."""
    fits = calibrate_batch(START, [clean_chain, noisy_chain], n_terms=N_TERMS)
    for batch, single in zip(fits, [clean_fit, noisy_fit], strict=True):
        assert batch.converged
        for f in TRUTH._fields:
            assert getattr(batch.params, f) == pytest.approx(getattr(single.params, f),
                                                             rel=1e-6, abs=1e-9)
        assert batch.rmse_iv == pytest.approx(single.rmse_iv, rel=1e-6, abs=1e-9)


def test_bad_chains_raise_clear_errors(clean_chain):
    with pytest.raises(ValueError, match="missing column.*mid_iv"):
        calibrate(START, clean_chain.drop(columns=["mid_iv"]))
    bad = clean_chain.copy()
    bad.loc[bad.index[3], "mid_iv"] = np.nan
    with pytest.raises(ValueError, match=r"row .*field 'mid_iv'"):
        calibrate(START, bad)
    crossed = clean_chain.copy()
    crossed.loc[crossed.index[2], "bid_iv"] = crossed.loc[crossed.index[2], "ask_iv"] + 0.01
    with pytest.raises(ValueError, match="crossed"):
        calibrate(START, crossed)
    with pytest.raises(ValueError, match="no quotes"):
        calibrate(START, clean_chain.iloc[:0])
    with pytest.raises(TypeError, match="DataFrame"):
        calibrate(START, clean_chain.to_numpy())
    with pytest.raises(ValueError, match="kappa"):
        calibrate(START._replace(kappa=-1.0), clean_chain)
    with pytest.raises(ValueError, match="method"):
        calibrate(START, clean_chain, method="newton")
    with pytest.raises(ValueError, match="feller_penalty applies"):
        calibrate(qmr.Merton(0.5, 1.0, -0.1, 0.1), clean_chain, feller_penalty=1.0)
    with pytest.raises(ValueError, match="weights"):
        calibrate(START, clean_chain, weights=np.ones(3))


def _newton_polish(fit, chain, steps=4):
    """Parameters at the exact optimum: a few Newton steps with the exact Hessian."""
    pb = fit.problem
    q = jax.tree_util.tree_map(jnp.asarray, pb.quotes)
    base = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), pb.base)
    tr, lt = jnp.asarray(pb.truncation), jnp.asarray(pb.log_tol)
    geo, _ = plan_geometry(fit.params, q, tr, lt)
    f = _ift_fn(pb.bij, pb.loss, pb.n_terms, pb.feller)
    u = jnp.asarray(pb.bij.to_unconstrained(fit.params))
    for _ in range(steps):
        hess, _, grad, _ = f(u, base, q, jnp.asarray(0.0), tr, lt, geo)
        u = u - jnp.linalg.solve(hess, grad)
    return pb.bij.to_model(u, base), float(jnp.max(jnp.abs(grad)))


def test_quote_sensitivities_match_recalibration(noisy_fit, noisy_chain):
    """d params / d quote and d value / d quote by the implicit-function theorem equal central
    differences of full recalibrations (each polished to the exact optimum) with one mid IV
    moved by +-0.01 vol points."""
    option = qmr.fourier_pricer(noisy_fit.params, qmr.Market(60000.0), 55000.0, 0.3, False)
    qs = quote_sensitivities(noisy_fit, option, qmr.Market(60000.0))
    assert qs.gradient_norm < 1e-9 and np.all(qs.hessian_eigenvalues > 0)
    h = 1e-4
    rng = np.random.default_rng(3)
    for i in rng.choice(len(noisy_chain), 2, replace=False):
        idx = noisy_chain.index[i]
        moved = []
        for sign in (1, -1):
            c = noisy_chain.copy()
            c.loc[idx, "mid_iv"] += sign * h
            fit = calibrate(noisy_fit.params, c, n_terms=N_TERMS)
            params, gnorm = _newton_polish(fit, c)
            assert gnorm < 1e-12
            moved.append(params)
        for f in TRUTH._fields:
            fd = (float(getattr(moved[0], f)) - float(getattr(moved[1], f))) / (2 * h) / 100
            ift = qs.params.loc[idx, f]
            assert ift == pytest.approx(fd, rel=2e-3, abs=1e-9), (i, f, ift, fd)
        fd_v = (float(option(moved[0])) - float(option(moved[1]))) / (2 * h) / 100
        assert qs.value.loc[idx] == pytest.approx(fd_v, rel=2e-3, abs=1e-9)


def test_weights_and_price_losses_agree_on_exact_surface(clean_chain):
    """On an exact surface every loss has the truth as its minimum."""
    for loss in ("price_vega", "price_spread"):
        fit = calibrate(START, clean_chain, loss=loss, weights="spread", n_terms=N_TERMS)
        assert fit.converged, (loss, fit.reason)
        for f in TRUTH._fields:
            assert getattr(fit.params, f) == pytest.approx(getattr(TRUTH, f), rel=1e-4), (loss, f)


def test_fixed_fields_and_multistart(noisy_chain):
    fit = calibrate(START._replace(kappa=3.0), noisy_chain, fixed=("kappa",), starts=3,
                    n_terms=N_TERMS, seed=1)
    assert fit.params.kappa == 3.0
    assert len(fit.starts) == 3 and fit.starts["best"].sum() == 1
    assert fit.loss == pytest.approx(fit.starts["final_loss"].min())
    assert list(fit.problem.bij.free) == ["v0", "theta", "xi", "rho"]
    assert isinstance(fit.starts, pd.DataFrame)


def test_fit_ending_on_a_bound_is_reported(clean_fit, tmp_path):
    """A converged fit whose parameter is held by its box says so: in the result, its
    dictionary and its summary (the terminal); an interior fit names nothing."""
    truth = qmr.GBM(sigma=0.6)
    chain = synthetic_chain(truth, expiries=[0.1, 0.3], strikes_per_expiry=7)
    fit = calibrate(qmr.GBM(sigma=0.2), chain, bounds={"sigma": (0.05, 0.4)})
    assert fit.params.sigma == pytest.approx(0.4, rel=1e-6)
    assert fit.at_bounds == {"sigma": "upper"} and fit.saturated
    assert fit.to_dict()["at_bounds"] == {"sigma": "upper"}
    assert "sigma=0.4 on its upper bound" in fit.summary()
    from qmr_jax.report.calibration import calibration_report

    html = calibration_report(fit, chain, tmp_path)["report.html"].read_text()
    assert "ended on the edge of the calibration box" in html and "upper box edge" in html
    low = calibrate(qmr.GBM(sigma=1.0), chain, bounds={"sigma": (0.8, 2.0)})
    assert low.at_bounds == {"sigma": "lower"}
    assert clean_fit.at_bounds == {} and not clean_fit.saturated
    assert clean_fit.bounds_warning() is None and "WARNING" not in clean_fit.summary()


def test_edge_rule_on_each_scale():
    log_map, lin_map = DEFAULT_BOUNDS[qmr.Heston]["kappa"], DEFAULT_BOUNDS[qmr.Heston]["rho"]
    assert log_map.edge(50.0) == "upper" and log_map.edge(1e-3) == "lower"
    assert log_map.edge(45.0) is None and log_map.edge(2.0) is None
    assert lin_map.edge(0.999) == "upper" and lin_map.edge(-0.9985) == "lower"
    assert lin_map.edge(0.99) is None
