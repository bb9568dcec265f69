"""Independent pricers used as oracles by tests and benchmarks (QuantLib)."""

from __future__ import annotations

import QuantLib as ql

_DAY0 = ql.Date(2, 1, 2025)


def _setup(spot, rate, div):
    ql.Settings.instance().evaluationDate = _DAY0
    dc = ql.Actual365Fixed()
    r = ql.YieldTermStructureHandle(ql.FlatForward(_DAY0, rate, dc))
    q = ql.YieldTermStructureHandle(ql.FlatForward(_DAY0, div, dc))
    s = ql.QuoteHandle(ql.SimpleQuote(spot))
    return r, q, s


def _option(strike, days, is_call):
    kind = ql.Option.Call if is_call else ql.Option.Put
    payoff = ql.PlainVanillaPayoff(kind, float(strike))
    return ql.VanillaOption(payoff, ql.EuropeanExercise(_DAY0 + int(days)))


def heston_engine(spot, rate, div, v0, kappa, theta, xi, rho, rel_tol=1e-13):
    r, q, s = _setup(spot, rate, div)
    proc = ql.HestonProcess(r, q, s, v0, kappa, theta, xi, rho)
    return ql.AnalyticHestonEngine(ql.HestonModel(proc), rel_tol, 1_000_000)


def bates_engine(spot, rate, div, v0, kappa, theta, xi, rho, lam, mu_j, sigma_j, rel_tol=1e-13):
    r, q, s = _setup(spot, rate, div)
    proc = ql.BatesProcess(r, q, s, v0, kappa, theta, xi, rho, lam, mu_j, sigma_j)
    return ql.BatesEngine(ql.BatesModel(proc), rel_tol, 1_000_000)


def price(engine, strike, days, is_call) -> float:
    """Price one European option (expiry ``days`` ACT/365 after the evaluation date)."""
    opt = _option(strike, days, is_call)
    opt.setPricingEngine(engine)
    return opt.NPV()
