"""Autodiff Greeks and parameter sensitivities against closed forms, QuantLib and finite
differences.

* Black-Scholes (GBM): autodiff Greeks of ``black_value_fn`` against the analytic Black-76
  Greeks converted to spot Greeks, to 1e-10 relative.
* Heston: ``greeks`` of a Fourier pricer against central differences of QuantLib's analytic
  Heston engine (which exposes no Greeks of its own), bumping its ``SimpleQuote`` spot, its
  rate quote, the model's vols and the expiry.
* ``parameter_sensitivities`` (Heston, Bates, Kou, Merton): gradients against central
  differences of the same pricer (same ``n_terms``), Hessians against central differences of
  the autodiff gradient; forward, reverse and automatic modes agree.
* Identities: digital = -dC/dK (Black-Scholes and a Gil-Pelaez inversion of the Heston
  characteristic function), put-call parity of every Greek, the Black-Scholes PDE.

Finite-difference tolerances come from the step: a central difference with step ``h`` has
truncation error ``c h^2`` (``h^2 f''' / 6`` for a first derivative), estimated from the same
difference with step ``2h`` (``D_2h - D_h = 3 c h^2``), and rounding error at most
``noise / h`` (``4 noise / h^2`` for a second difference), ``noise`` being the stated accuracy
of one evaluation. ``|autodiff - D_h| <= |D_h - D_2h| + 2 * rounding`` then holds with a
threefold margin on the truncation error, and each check also asserts that this tolerance is
small against the derivative itself, so no check passes vacuously.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import QuantLib as ql
from scipy import integrate, special

import qmr_jax as qmr
from qmr_jax.sensitivities import (
    Greeks,
    Sensitivities,
    black_value_fn,
    greeks,
    input_names,
    parameter_sensitivities,
    shift_vol,
    vol_inputs,
)

SEED = 20260519
EPS = float(np.finfo(np.float64).eps)
PRICER_TOL = 1e-14  # accuracy the Fourier pricers are planned to, per unit of discounted forward
QL_REL_TOL = 1e-13  # relative tolerance of QuantLib's Heston integration (see _QLHeston)
GREEK_NAMES = ("delta", "gamma", "vega", "vanna", "volga", "theta", "rho")


def _stack_models(models):
    """One model container with a leading batch axis from a list of scalar models."""
    return jax.tree_util.tree_map(lambda *v: np.asarray(v, np.float64), *models)


def _take(tree, i):
    return jax.tree_util.tree_map(lambda v: v[i], tree)


# ------------------------------------------------------------------------------------------
# 1. Black-Scholes: autodiff Greeks against the analytic Black-76 Greeks


class _GBMCase(NamedTuple):
    sigma: np.ndarray  # [sets, 1]
    spot: np.ndarray
    rate: np.ndarray
    div: np.ndarray
    strikes: np.ndarray  # [sets, 2n]: n calls, then puts on the same strikes and expiries
    expiries: np.ndarray
    is_call: np.ndarray
    greeks: Greeks


@pytest.fixture(scope="module")
def gbm_case() -> _GBMCase:
    rng = np.random.default_rng(SEED)
    n_sets, n = 6, 8
    sigma = rng.uniform(0.2, 1.5, (n_sets, 1))
    spot = 10.0 ** rng.uniform(2.0, 5.0, (n_sets, 1))
    rate = rng.uniform(-0.01, 0.1, (n_sets, 1))
    div = rng.uniform(-0.05, 0.1, (n_sets, 1))
    expiries = np.exp(rng.uniform(np.log(0.01), np.log(3.0), (n_sets, n)))
    forward = spot * np.exp((rate - div) * expiries)
    strikes = forward * np.exp(rng.uniform(-2.5, 2.5, (n_sets, n)) * sigma * np.sqrt(expiries))
    strikes, expiries = np.tile(strikes, 2), np.tile(expiries, 2)
    is_call = np.broadcast_to(np.arange(2 * n) < n, strikes.shape)

    def one(s, S, r, q, K, T, c):
        return greeks(black_value_fn(K, T, c), qmr.GBM(s[0]), qmr.Market(S[0], r[0], q[0]))

    g = jax.jit(jax.vmap(one))(sigma, spot, rate, div, strikes, expiries, is_call)
    return _GBMCase(sigma, spot, rate, div, strikes, expiries, is_call,
                    Greeks(*(np.asarray(x) for x in g)))


def _bs_spot_greeks(c: _GBMCase):
    """Spot Greeks from ``black_greeks`` (forward Greeks) by the chain rule.

    ``F = S e^{(r-q)T}``, ``D = e^{-rT}``: ``dF/dS = F/S``; rho moves ``F`` and ``D`` together
    (``dF/dr = T F``, Black's rho holds ``F``); theta is ``dV/d(elapsed) = -dV/dT`` with spot
    held, so ``F`` moves too (``dF/dT = (r-q) F``, Black's theta holds ``F``).
    """
    T = c.expiries
    F = c.spot * np.exp((c.rate - c.div) * T)
    D = np.exp(-c.rate * T)
    b = qmr.black_greeks(F, c.strikes, T, c.sigma, c.is_call, D)
    b = type(b)(*(np.asarray(x) for x in b))
    dfds = F / c.spot
    return dict(
        value=b.price,
        delta=b.delta * dfds,
        gamma=b.gamma * dfds**2,
        vega=b.vega,
        vanna=b.vanna * dfds,
        volga=b.volga,
        theta=b.theta - (c.rate - c.div) * F * b.delta,
        rho=b.rho + T * F * b.delta,
    )


def _bs_scales(c: _GBMCase):
    """Natural size of each Greek (the size of its largest term), for a relative floor where
    a Greek crosses zero (vanna at d2 = 0, volga at d1 d2 = 0, theta, rho of puts)."""
    T, S, s = c.expiries, c.spot, c.sigma
    sq = np.exp(-c.div * T) * S
    kd = c.strikes * np.exp(-c.rate * T)
    return dict(
        value=sq + kd,
        delta=np.exp(-c.div * T) + 0 * T,
        gamma=np.exp(-c.div * T) / (S * s * np.sqrt(T)),
        vega=sq * np.sqrt(T),
        vanna=np.exp(-c.div * T) / s + 0 * T,
        volga=sq * np.sqrt(T) / s,
        theta=sq * s / np.sqrt(T) + np.abs(c.rate) * kd + np.abs(c.div) * sq,
        rho=T * (kd + sq),
    )


def test_black_greeks_match_analytic(gbm_case):
    """All eight values to 1e-10 relative (floored at 1e-3 of the Greek's natural size)."""
    want = _bs_spot_greeks(gbm_case)
    scale = _bs_scales(gbm_case)
    g = gbm_case.greeks._asdict()
    for name, w in want.items():
        err = np.abs(g[name] - w)
        bound = 1e-10 * np.maximum(np.abs(w), 1e-3 * scale[name])
        worst = np.unravel_index(np.argmax(err / bound), err.shape)
        assert np.all(err <= bound), (name, g[name][worst], w[worst], err[worst] / bound[worst])


def test_black_theta_satisfies_pde(gbm_case):
    """``theta + (r-q) S delta + sigma^2 S^2 gamma / 2 - r V = 0`` with theta the calendar
    derivative at fixed spot: the Black-Scholes PDE, from the autodiff Greeks alone."""
    c, g = gbm_case, gbm_case.greeks
    terms = [g.theta, (c.rate - c.div) * c.spot * g.delta,
             0.5 * c.sigma**2 * c.spot**2 * g.gamma, -c.rate * g.value]
    residual = sum(terms)
    # rounding: a few ulps of the largest term
    assert np.all(np.abs(residual) <= 64 * EPS * sum(np.abs(t) for t in terms)), residual


def _parity_checks(g: Greeks, spot, rate, div, strikes, expiries):
    """Call minus put of each Greek, and its model-free value (same strike and expiry)."""
    sq = spot * np.exp(-div * expiries)
    kd = strikes * np.exp(-rate * expiries)
    zero = np.zeros_like(strikes)
    return dict(
        value=sq - kd,
        delta=np.exp(-div * expiries) + zero,
        gamma=zero, vega=zero, vanna=zero, volga=zero,
        theta=div * sq - rate * kd,  # d/d(elapsed) of S e^{-q(T-t)} - K e^{-r(T-t)}
        rho=expiries * kd,
    )


def _assert_parity(g: Greeks, spot, rate, div, strikes, expiries, n, rel):
    calls = Greeks(*(np.asarray(x)[..., :n] for x in g))
    puts = Greeks(*(np.asarray(x)[..., n:] for x in g))
    want = _parity_checks(g, spot, rate, div, strikes[..., :n], expiries[..., :n])
    for name, w in want.items():
        c, p = getattr(calls, name), getattr(puts, name)
        err = np.abs(c - p - w)
        bound = rel * (np.abs(c) + np.abs(p) + np.abs(w))
        assert np.all(err <= bound), (name, c - p, w)


def test_black_greeks_put_call_parity(gbm_case):
    c = gbm_case
    # each leg accurate to 1e-10 relative (test above) at most
    _assert_parity(c.greeks, c.spot, c.rate, c.div, c.strikes, c.expiries,
                   c.strikes.shape[1] // 2, 1e-10)


# ------------------------------------------------------------------------------------------
# Heston Greeks of the Fourier pricer


S0 = 50_000.0
DAYS = np.array([[30], [240]])  # expiries (ACT/365 days), a column against the strikes
N_STRIKES = 3
# strikes: per expiry, log-moneyness -0.35, 0, 0.3 times sqrt(T); calls, then puts
_LOGM = np.array([-0.35, 0.0, 0.3]) * np.sqrt(DAYS / 365.0)
STRIKES = np.tile(np.round(S0 * np.exp(_LOGM)), 2)
IS_CALL = np.arange(2 * N_STRIKES) < N_STRIKES
EXPIRIES = DAYS / 365.0


def _strata(rng, n, lo, hi):
    """``n`` uniform draws on ``[lo, hi]``, one in each of ``n`` equal strata (shuffled), so
    that a few sets cover the whole range of each parameter."""
    return lo + (rng.permutation(n) + rng.random(n)) / n * (hi - lo)


def _random_heston(rng, n):
    """Crypto-like Heston parameters: vols 20-150%, vol of variance up to 3, rho -0.95-0.5."""
    cols = dict(v0=_strata(rng, n, 0.2, 1.5) ** 2, kappa=_strata(rng, n, 0.5, 5.0),
                theta=_strata(rng, n, 0.2, 1.5) ** 2, xi=_strata(rng, n, 0.2, 3.0),
                rho=_strata(rng, n, -0.95, 0.5))
    return [qmr.Heston(**{k: float(v[i]) for k, v in cols.items()}) for i in range(n)]


def _random_markets(rng, n):
    return [qmr.Market(S0, float(r), float(q))
            for r, q in zip(rng.uniform(0.0, 0.08, n), rng.uniform(-0.02, 0.05, n), strict=True)]


def _shared_pricer(models, markets, n_terms=None):
    """One Lewis pricer of the option grid for all the parameter sets, so one compiled
    function serves them all. By default with the largest ``n_terms`` the planner picks for
    the sets (meeting PRICER_TOL at each)."""
    if n_terms is None:
        n_terms = max(qmr.fourier_pricer(m, mk, STRIKES, EXPIRIES, IS_CALL).n_terms
                      for m, mk in zip(models, markets, strict=True))
    return qmr.fourier_pricer(models[0], markets[0], STRIKES, EXPIRIES, IS_CALL,
                              n_terms=n_terms)


class _FourierCase(NamedTuple):
    """Parameter sets of one model type, a shared pricer, and compiled derivatives."""

    names: tuple  # parameter_sensitivities inputs: spot, rate, div, model fields
    models: list
    markets: list
    points: np.ndarray  # [sets, inputs]
    pricer: qmr.FourierPricer
    first: object  # points -> (price, value, gradient): the pricer's own price, and
    #                parameter_sensitivities in reverse mode; jit(vmap) over the sets
    second: object  # points -> (value, gradient, hessian): mode "auto", or None
    noise: np.ndarray  # [sets, *options]: accuracy of one price (PRICER_TOL S e^{-qT})


def _fourier_case(models, markets, *, second_order, n_terms=None) -> _FourierCase:
    model_type = type(models[0])
    pricer = _shared_pricer(models, markets, n_terms)
    points = np.array([[mk.spot, mk.rate, mk.div, *m]
                       for m, mk in zip(models, markets, strict=True)])

    def unpack(x):
        return model_type(*x[3:]), qmr.Market(x[0], x[1], x[2])

    def first(x):
        s = parameter_sensitivities(pricer, *unpack(x), second_order=False, mode="reverse")
        return pricer(*unpack(x)), s.value, s.gradient

    def second(x):
        s = parameter_sensitivities(pricer, *unpack(x))
        return s.value, s.gradient, s.hessian

    noise = PRICER_TOL * np.array([mk.spot * np.exp(-mk.div * EXPIRIES) for mk in markets])
    return _FourierCase(input_names(models[0]), models, markets, points, pricer,
                        jax.jit(jax.vmap(first)),
                        jax.jit(jax.vmap(second)) if second_order else None, noise)


@pytest.fixture(scope="module")
def heston_case() -> _FourierCase:
    rng = np.random.default_rng(SEED + 2)
    models, markets = _random_heston(rng, 3), _random_markets(rng, 3)
    return _fourier_case(models, markets, second_order=True)


@pytest.fixture(scope="module")
def heston_greeks(heston_case) -> Greeks:
    """``greeks`` of the Heston pricer at each parameter set: ``[sets, expiries, options]``."""
    c = heston_case
    g = jax.jit(jax.vmap(lambda m, mk: greeks(c.pricer, m, mk)))(
        _stack_models(c.models), _stack_models(c.markets))
    return Greeks(*(np.asarray(x) for x in g))


class _QLHeston:
    """QuantLib's analytic Heston engine on the test's option grid, for bump-and-reprice."""

    def __init__(self, model: qmr.Heston, market: qmr.Market):
        self.model, self.market = model, market
        self.day0 = ql.Date(2, 1, 2025)
        ql.Settings.instance().evaluationDate = self.day0
        self.dc = ql.Actual365Fixed()
        self.spot = ql.SimpleQuote(float(market.spot))
        self.rate = ql.SimpleQuote(float(market.rate))
        self.r_ts = ql.YieldTermStructureHandle(
            ql.FlatForward(self.day0, ql.QuoteHandle(self.rate), self.dc))
        self.q_ts = ql.YieldTermStructureHandle(
            ql.FlatForward(self.day0, float(market.div), self.dc))

    def prices(self, dspot=0.0, dvol=0.0, drate=0.0, ddays=0):
        """Prices on the grid with spot, vol (sqrt(v0), sqrt(theta)) and rate bumped and
        every expiry shortened by ``ddays`` (calendar time passed, spot and rates held)."""
        m = self.model
        self.spot.setValue(float(self.market.spot) + dspot)
        self.rate.setValue(float(self.market.rate) + drate)
        process = ql.HestonProcess(self.r_ts, self.q_ts, ql.QuoteHandle(self.spot),
                                   (math.sqrt(m.v0) + dvol) ** 2, m.kappa,
                                   (math.sqrt(m.theta) + dvol) ** 2, m.xi, m.rho)
        engine = ql.AnalyticHestonEngine(ql.HestonModel(process), QL_REL_TOL, 1_000_000)
        out = np.empty(np.broadcast_shapes(STRIKES.shape, DAYS.shape))
        for i, j in np.ndindex(out.shape):
            kind = ql.Option.Call if IS_CALL[j] else ql.Option.Put
            option = ql.VanillaOption(
                ql.PlainVanillaPayoff(kind, float(STRIKES[i, j])),
                ql.EuropeanExercise(self.day0 + int(DAYS[i, 0]) - ddays))
            option.setPricingEngine(engine)
            out[i, j] = option.NPV()
        return out


def _ql_fd_greeks(oracle: _QLHeston, h_spot, h_vol, h_rate, h_days):
    """Central differences with steps h and 2h for each Greek, and their rounding bounds.

    Returns ``{greek: (D_h, D_2h, rounding of D_h)}``; ``noise`` is the accuracy of one
    QuantLib price, its integration tolerance relative to the spot (prices are below it).
    """
    noise = QL_REL_TOL * oracle.market.spot
    p0 = oracle.prices()
    out = {name: [] for name in GREEK_NAMES}
    for k in (1, 2):
        hs, hv, hr, hd = k * h_spot, k * h_vol, k * h_rate, k * h_days
        ps = {s: oracle.prices(dspot=s * hs) for s in (1, -1)}
        pv = {s: oracle.prices(dvol=s * hv) for s in (1, -1)}
        psv = {(a, b): oracle.prices(dspot=a * hs, dvol=b * hv) for a in (1, -1)
               for b in (1, -1)}
        pr = {s: oracle.prices(drate=s * hr) for s in (1, -1)}
        pt = {s: oracle.prices(ddays=s * hd) for s in (1, -1)}
        ht = hd / 365.0
        out["delta"].append(((ps[1] - ps[-1]) / (2 * hs), noise / hs))
        out["gamma"].append(((ps[1] - 2 * p0 + ps[-1]) / hs**2, 4 * noise / hs**2))
        out["vega"].append(((pv[1] - pv[-1]) / (2 * hv), noise / hv))
        out["volga"].append(((pv[1] - 2 * p0 + pv[-1]) / hv**2, 4 * noise / hv**2))
        out["vanna"].append(((psv[1, 1] - psv[1, -1] - psv[-1, 1] + psv[-1, -1])
                             / (4 * hs * hv), noise / (hs * hv)))
        out["rho"].append(((pr[1] - pr[-1]) / (2 * hr), noise / hr))
        out["theta"].append(((pt[1] - pt[-1]) / (2 * ht), noise / ht))
    return {n: (v[0][0], v[1][0], v[0][1]) for n, v in out.items()}, p0


def _assert_fd(name, got, d_h, d_2h, rounding, tight):
    """``|got - D_h| <= |D_h - D_2h| + 2 rounding``, and that bound below ``tight`` times the
    size of the derivative (the check has teeth)."""
    got, d_h, d_2h = (np.asarray(x, np.float64) for x in (got, d_h, d_2h))
    tol = np.abs(d_h - d_2h) + 2.0 * rounding
    err = np.abs(got - d_h)
    size = np.max(np.abs(d_h), axis=-1, keepdims=True)  # per row, options of one expiry
    worst = np.unravel_index(np.argmax(err - tol), err.shape)
    assert np.all(err <= tol), (name, worst, got[worst], d_h[worst], tol[worst])
    assert np.all(tol <= tight * size), (name, np.max(tol / size))


def test_heston_greeks_match_quantlib_differences(heston_case, heston_greeks):
    """Delta, gamma, vega, vanna, volga, theta and rho of the Fourier pricer by autodiff
    against central differences of QuantLib's analytic Heston prices (random crypto-like
    parameters; QuantLib's AnalyticHestonEngine provides no Greeks, only NPV)."""
    for i, (model, market) in enumerate(zip(heston_case.models, heston_case.markets,
                                            strict=True)):
        oracle = _QLHeston(model, market)
        fd, p0 = _ql_fd_greeks(oracle, h_spot=1e-3 * S0, h_vol=1e-3, h_rate=1e-4, h_days=1)
        g = _take(heston_greeks, i)
        # the two pricers agree to the accuracy both are run at
        np.testing.assert_allclose(g.value, p0, rtol=0, atol=4 * QL_REL_TOL * S0)
        for name in GREEK_NAMES:
            d_h, d_2h, rounding = fd[name]
            # theta's step is a whole day (QuantLib dates): its truncation error dominates
            _assert_fd(name, getattr(g, name), d_h, d_2h, rounding, tight=1e-3)


def test_heston_greeks_put_call_parity(heston_case, heston_greeks):
    """Call minus put: ``e^{-qT}`` for delta, 0 for gamma, vega, vanna and volga, the
    model-free theta and rho. Calls and puts share the Fourier sum and differ by their
    Black-Scholes control variates, so parity holds to rounding."""
    for i, market in enumerate(heston_case.markets):
        g = _take(heston_greeks, i)
        _assert_parity(g, market.spot, market.rate, market.div, STRIKES, EXPIRIES, N_STRIKES,
                       1e-12)


def test_heston_vega_is_parallel_shift_of_vols(heston_case, heston_greeks):
    """Vega and volga are derivatives in ``sqrt(v0)`` and ``sqrt(theta)`` moved together:
    central differences of the pricer with the variances rebuilt by hand at each step."""
    c = heston_case
    i_v0, i_theta = c.names.index("v0"), c.names.index("theta")

    def priced(dv, columns=(i_v0, i_theta)):
        x = c.points.copy()
        x[:, columns] = (np.sqrt(x[:, columns]) + dv) ** 2
        return np.asarray(c.first(x)[0])

    g = heston_greeks
    # steps: rounding noise / h against truncation ~ (h / vol)^2, vols from 20%
    h = 2e-4
    p = {k: priced(k * h) for k in (-2, -1, 1, 2)}
    _assert_fd("vega", g.vega, (p[1] - p[-1]) / (2 * h), (p[2] - p[-2]) / (4 * h),
               c.noise / h, tight=TIGHT)
    h = 1e-3
    p = {k: priced(k * h) for k in (-2, -1, 0, 1, 2)}
    _assert_fd("volga", g.volga, (p[1] - 2 * p[0] + p[-1]) / h**2,
               (p[2] - 2 * p[0] + p[-2]) / (4 * h * h), 4 * c.noise / h**2, tight=TIGHT)
    # not the derivative in sqrt(v0) alone, nor in sqrt(theta) alone
    for col in (i_v0, i_theta):
        one = (priced(h, (col,)) - priced(-h, (col,))) / (2 * h)
        assert np.all(np.abs(one - g.vega) > 1e-3 * np.abs(g.vega))


# ------------------------------------------------------------------------------------------
# 3. parameter sensitivities against finite differences of the same pricer


def _step_scale(name, value):
    """Natural scale of an input: its size, or the unit of rates, correlations and jump
    means (which sit near zero)."""
    if name in ("rate", "div", "rho", "mu_j", "p"):
        return 1.0
    return abs(value)


def _random_bates(rng, n):
    jumps = zip(_strata(rng, n, 0.2, 3.0), _strata(rng, n, -0.15, 0.05),
                _strata(rng, n, 0.05, 0.3), strict=True)
    return [qmr.Bates(*h, *map(float, j)) for h, j in zip(_random_heston(rng, n), jumps,
                                                          strict=True)]


def _random_merton(rng, n):
    cols = zip(_strata(rng, n, 0.2, 1.5), _strata(rng, n, 0.2, 3.0),
               _strata(rng, n, -0.15, 0.05), _strata(rng, n, 0.05, 0.3), strict=True)
    return [qmr.Merton(*map(float, c)) for c in cols]


def _random_kou(rng, n):
    cols = zip(_strata(rng, n, 0.2, 1.5), _strata(rng, n, 0.2, 3.0), _strata(rng, n, 0.2, 0.8),
               _strata(rng, n, 5.0, 30.0), _strata(rng, n, 3.0, 30.0), strict=True)
    return [qmr.Kou(*map(float, c)) for c in cols]


_MAKERS = {"heston": _random_heston, "bates": _random_bates, "merton": _random_merton,
           "kou": _random_kou}


@pytest.fixture(scope="module", params=list(_MAKERS))
def sens_case(request) -> _FourierCase:
    """Random parameter sets of each model; Heston's are shared with the Greeks tests."""
    if request.param == "heston":
        return request.getfixturevalue("heston_case")
    rng = np.random.default_rng([SEED, list(_MAKERS).index(request.param)])
    models, markets = _MAKERS[request.param](rng, 2), _random_markets(rng, 2)
    # Fixed n_terms, without planning (each model's planner costs a compilation): 512 is the
    # library's choice under tracing, and above what the planner picks for these sets
    # (Bates 432, Kou 96, Merton 32), so the prices still meet PRICER_TOL.
    return _fourier_case(models, markets, second_order=False, n_terms=512)


ETA = 1e-4  # relative step of the gradient check: rounding PRICER_TOL / ETA, truncation ETA^2
ETA_HESSIAN = 3e-4  # the gradient is noisier than the price (see the Hessian check)
TIGHT = 1e-4  # the derived tolerances stay below this fraction of the derivatives' size


def _scales(case):
    """``[sets, inputs]`` natural scale of each input."""
    return np.array([[_step_scale(n, v) for n, v in zip(case.names, row, strict=True)]
                     for row in case.points])


def _central(fn, points, steps, j):
    """``D_h``, ``D_2h`` of ``fn`` along input ``j`` for every parameter set, and ``h``."""
    e = np.zeros_like(points)
    e[:, j] = steps[:, j]
    f = {k: np.asarray(fn(points + k * e)) for k in (-2, -1, 1, 2)}
    h = steps[:, j].reshape((-1,) + (1,) * (f[1].ndim - 1))
    return (f[1] - f[-1]) / (2 * h), (f[2] - f[-2]) / (4 * h), h


def test_parameter_gradient_matches_differences(sens_case):
    """First derivatives in every market input and model parameter (reverse mode) against
    central differences of the same pricer (same n_terms)."""
    c = sens_case
    price, value, gradient = (np.asarray(x) for x in c.first(c.points))
    np.testing.assert_allclose(value, price, rtol=1e-14)
    steps = ETA * _scales(c)
    for j, name in enumerate(c.names):
        d_h, d_2h, h = _central(lambda x: c.first(x)[0], c.points, steps, j)
        _assert_fd(name, gradient[..., j], d_h, d_2h, c.noise / h, tight=TIGHT)


def test_parameter_hessian_matches_differences_of_gradient(heston_case):
    """Second derivatives (forward over forward, mode "auto" for a surface) against central
    differences of the reverse-mode gradient; the two modes' gradients agree (forward and
    reverse mode on a vector output). Heston only: each compiled Hessian of a Fourier pricer
    costs seconds."""
    c = heston_case
    value, gradient, hessian = (np.asarray(x) for x in c.second(c.points))
    price, _, g_rev = (np.asarray(x) for x in c.first(c.points))
    np.testing.assert_allclose(value, price, rtol=1e-14)
    size = np.abs(gradient).max(axis=(1, 2), keepdims=True)  # per set and input
    assert np.all(np.abs(g_rev - gradient) <= 1e-12 * size), np.max(np.abs(g_rev - gradient)
                                                                      / size)
    # The gradient in input i carries the pricer's error over the scale of input i. The
    # evaluation geometry (Lewis period) follows the parameters without gradient, so that
    # error moves between nearby points: a larger step keeps it below the truncation error.
    scales = _scales(c)
    grad_noise = c.noise[..., None] / scales[:, None, None, :]
    steps = ETA_HESSIAN * scales
    for j, name in enumerate(c.names):
        d_h, d_2h, h = _central(lambda x: c.first(x)[2], c.points, steps, j)
        _assert_fd(f"d/d{name} of the gradient", hessian[..., j], d_h, d_2h, grad_noise / h,
                   tight=TIGHT)
    np.testing.assert_allclose(hessian, np.swapaxes(hessian, -1, -2), rtol=0,
                               atol=1e-12 * np.abs(hessian).max())


def test_modes_agree_on_closed_form():
    """Forward, reverse and automatic mode against the exact Jacobian and Hessian of a
    closed-form value function, vector (auto: forward) and scalar (auto: reverse) output."""
    w = np.array([1.0, -2.0, 0.5, 3.0, 0.25, -1.5])

    def vector(m, mk, e):
        # f = S^2 sigma w + exp(r w) q + sigma^3 S r w e
        return mk.spot**2 * m.sigma * w + jnp.exp(mk.rate * w) * mk.div \
            + m.sigma**3 * mk.spot * mk.rate * w * e

    def scalar(m, mk, e):
        return jnp.sum(vector(m, mk, e))

    S, r, q, s, e = 3.0, 0.2, 0.7, 0.4, 0.3
    grad = np.stack([2 * S * s * w + s**3 * r * w * e,
                     w * np.exp(r * w) * q + s**3 * S * w * e,
                     np.exp(r * w),
                     S**2 * w + 3 * s**2 * S * r * w * e], axis=-1)
    hess = np.zeros((6, 4, 4))
    hess[:, 0, 0] = 2 * s * w
    hess[:, 0, 1] = hess[:, 1, 0] = s**3 * w * e
    hess[:, 0, 3] = hess[:, 3, 0] = 2 * S * w + 3 * s**2 * r * w * e
    hess[:, 1, 1] = w**2 * np.exp(r * w) * q
    hess[:, 1, 2] = hess[:, 2, 1] = w * np.exp(r * w)
    hess[:, 1, 3] = hess[:, 3, 1] = 3 * s**2 * S * w * e
    hess[:, 3, 3] = 6 * s * S * r * w * e
    modes = ("forward", "reverse", "auto")

    @jax.jit
    def everything(x):
        model, market = qmr.GBM(x[3]), qmr.Market(x[0], x[1], x[2])
        return {(fn.__name__, mode, order): parameter_sensitivities(
                    fn, model, market, elapsed=x[4], mode=mode, second_order=order == 2)[1:]
                for fn in (vector, scalar) for mode in modes for order in (1, 2)}

    out = everything(np.array([S, r, q, s, e]))
    for fn, g_want, h_want in [(vector, grad, hess), (scalar, grad.sum(0), hess.sum(0))]:
        for mode in modes:
            point, value, gradient, hessian = out[fn.__name__, mode, 2]
            np.testing.assert_allclose(point, [S, r, q, s], rtol=0)
            np.testing.assert_allclose(value, fn(qmr.GBM(s), qmr.Market(S, r, q), e),
                                       rtol=4 * EPS)
            np.testing.assert_allclose(gradient, g_want, rtol=4 * EPS, atol=4 * EPS)
            np.testing.assert_allclose(hessian, h_want, rtol=4 * EPS, atol=4 * EPS)
            first = Sensitivities(input_names(qmr.GBM(s)), *out[fn.__name__, mode, 1])
            assert first.hessian is None
            np.testing.assert_allclose(first.gradient, g_want, rtol=4 * EPS, atol=4 * EPS)
            np.testing.assert_array_equal(first.as_dict()["rate"], first.gradient[..., 1])


# ------------------------------------------------------------------------------------------
# 5. digital = -dC/dK


def _heston_cf(u, t, v0, kappa, theta, xi, rho):
    """Characteristic function of ``log(S_t/F_t)`` (Gatheral 2006, eqs. 2.6-2.8)."""
    alpha = -0.5 * u * u - 0.5j * u
    beta = kappa - rho * xi * 1j * u
    gamma = 0.5 * xi * xi
    d = np.sqrt(beta * beta - 4.0 * alpha * gamma)
    r_minus, r_plus = (beta - d) / (xi * xi), (beta + d) / (xi * xi)
    g = r_minus / r_plus
    e = np.exp(-d * t)
    D = r_minus * (1.0 - e) / (1.0 - g * e)
    C = kappa * (r_minus * t - 2.0 / (xi * xi) * np.log((1.0 - g * e) / (1.0 - g)))
    return np.exp(C * theta + D * v0)


def _gil_pelaez_itm(log_k, t, params):
    """``P(log(S_t/F_t) > log_k) = 1/2 + 1/pi int_0^inf Im[e^{-iuk} phi(u)] / u du`` and the
    quadrature's error estimate."""
    def integrand(u):
        return np.imag(np.exp(-1j * u * log_k) * _heston_cf(u, t, *params)) / u

    # beyond U the integrand's envelope |phi(u)| / u is below 1e-18
    upper = 1.0
    while abs(_heston_cf(upper, t, *params)) / upper > 1e-18:
        upper *= 1.5
    value, err = integrate.quad(integrand, 1e-12, upper, limit=2000, epsabs=1e-14,
                                epsrel=1e-13)
    return 0.5 + value / np.pi, err / np.pi + 1e-18 * upper


def test_digital_is_minus_strike_derivative(heston_case):
    """``-dC/dK`` (and ``dP/dK``) of Fourier prices, by autodiff in the strikes, against
    independent digital prices: ``e^{-rT} N(d2)`` under GBM, and under Heston (random
    parameters) a Gil-Pelaez inversion of the characteristic function by scipy quadrature."""
    c = heston_case
    model, market = c.models[0], c.markets[0]
    forward = market.spot * np.exp((market.rate - market.div) * EXPIRIES)
    disc = np.exp(-market.rate * EXPIRIES)
    log_k = np.log(STRIKES / forward)
    gbm = qmr.GBM(math.sqrt(model.v0))

    @jax.jit
    def strike_derivatives(heston, gbm):
        def total(k, m, n_terms):
            return jnp.sum(qmr.fourier_price(m, market, k, EXPIRIES, IS_CALL, method="lewis",
                                             n_terms=n_terms))

        # the Black-Scholes control variate is exact under GBM: any n_terms
        return (jax.grad(total)(jnp.asarray(STRIKES), heston, c.pricer.n_terms),
                jax.grad(total)(jnp.asarray(STRIKES), gbm, 64))

    dk_heston, dk_gbm = (np.asarray(x) for x in strike_derivatives(model, gbm))
    sign = np.where(IS_CALL, -1.0, 1.0)  # -dC/dK = D P(S_T > K), dP/dK = D P(S_T < K)

    s = gbm.sigma * np.sqrt(EXPIRIES)
    itm = special.ndtr(-log_k / s - 0.5 * s)
    want = disc * np.where(IS_CALL, itm, 1.0 - itm)
    np.testing.assert_allclose(sign * dk_gbm, want, rtol=1e-13)

    itm, quad_err = np.vectorize(lambda k, t: _gil_pelaez_itm(k, t, tuple(model)))(
        log_k, EXPIRIES)
    want = disc * np.where(IS_CALL, itm, 1.0 - itm)
    # The price is accurate to PRICER_TOL per unit forward; its strike derivative to about
    # PRICER_TOL times the highest frequency of the Lewis rule (n_terms 2 pi / period, below
    # 1e3 for these expiries), plus the quadrature's error.
    tol = disc * (quad_err + 1e3 * PRICER_TOL)
    assert np.all(np.abs(sign * dk_heston - want) <= tol), (sign * dk_heston, want, tol)


# ------------------------------------------------------------------------------------------
# 6. vol coordinate, 7. bad input


def test_vol_inputs_and_shift_vol():
    assert vol_inputs(qmr.GBM(0.5)) == ("sigma",)
    assert vol_inputs(qmr.Merton(0.5, 1.0, -0.1, 0.2)) == ("sigma",)
    assert vol_inputs(qmr.Kou(0.5, 1.0, 0.4, 10.0, 5.0)) == ("sigma",)
    assert vol_inputs(qmr.Heston(0.25, 2.0, 0.36, 1.0, -0.5)) == ("v0", "theta")
    assert vol_inputs(qmr.Bates(0.25, 2.0, 0.36, 1.0, -0.5, 1.0, -0.1, 0.2)) == ("v0", "theta")

    h = qmr.Heston(0.25, 2.0, 0.36, 1.0, -0.5)
    shifted = shift_vol(h, 0.1)
    assert type(shifted) is qmr.Heston
    np.testing.assert_allclose([shifted.v0, shifted.theta], [0.6**2, 0.7**2], rtol=1e-15)
    assert (shifted.kappa, shifted.xi, shifted.rho) == (h.kappa, h.xi, h.rho)
    np.testing.assert_allclose(shift_vol(h, 0.0), h, rtol=1e-15)
    m = shift_vol(qmr.Merton(0.5, 1.0, -0.1, 0.2), -0.05)
    np.testing.assert_allclose(m, (0.45, 1.0, -0.1, 0.2), rtol=1e-15)
    assert type(m) is qmr.Merton

    # any container with a 'sigma' field has a vol coordinate
    class Custom(NamedTuple):
        sigma: float
        nu: float

    assert vol_inputs(Custom(0.3, 2.0)) == ("sigma",)
    assert shift_vol(Custom(0.3, 2.0), 0.1).sigma == pytest.approx(0.4, rel=1e-15)

    class NoVol(NamedTuple):
        alpha: float

    with pytest.raises(TypeError, match="no vol coordinate is known for NoVol"):
        vol_inputs(NoVol(1.0))
    with pytest.raises(TypeError, match="NoVol"):
        greeks(lambda m, mk, e: mk.spot * m.alpha, NoVol(1.0), qmr.Market(1.0))


def test_in_market_units_and_total(gbm_case):
    g = Greeks(*(x[0] for x in gbm_case.greeks))
    u = g.in_market_units()
    np.testing.assert_allclose(u.vega, g.vega / 100)
    np.testing.assert_allclose(u.volga, g.volga / 1e4)
    np.testing.assert_allclose(u.theta, g.theta / 365)
    np.testing.assert_allclose(u.rho, g.rho / 100)
    np.testing.assert_allclose(g.total().delta, np.sum(g.delta))


def test_bad_input_raises():
    fn = black_value_fn(100.0, 1.0, True)
    market = qmr.Market(100.0, 0.01)
    with pytest.raises(ValueError, match=r"sigma has shape \(2,\)"):
        parameter_sensitivities(fn, qmr.GBM(np.array([0.5, 0.6])), market)
    with pytest.raises(ValueError, match=r"spot has shape \(2,\)"):
        parameter_sensitivities(fn, qmr.GBM(0.5), qmr.Market(np.array([100.0, 101.0])))
    heston = qmr.Heston(0.25, 2.0, 0.36, np.array([[1.0], [1.1]]), -0.5)
    with pytest.raises(ValueError, match=r"xi has shape \(2, 1\)"):
        parameter_sensitivities(fn, heston, market)
    with pytest.raises(ValueError, match=r"spot has shape \(2,\)"):
        greeks(fn, qmr.GBM(0.5), qmr.Market(np.array([100.0, 101.0])))
    with pytest.raises(ValueError, match=r"elapsed has shape \(3,\)"):
        greeks(fn, qmr.GBM(0.5), market, elapsed=np.zeros(3))
    with pytest.raises(ValueError, match="mode must be 'auto', 'forward' or 'reverse'; got 'fwd'"):
        parameter_sensitivities(fn, qmr.GBM(0.5), market, mode="fwd")
    with pytest.raises(TypeError, match="GBM only; got Merton"):
        greeks(fn, qmr.Merton(0.5, 1.0, -0.1, 0.2), market)
