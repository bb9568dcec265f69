"""QuantLib side of the Heston / Bates calibration benchmark.

The benchmark compares our JAX calibration with QuantLib's Levenberg-Marquardt calibration
(``HestonModelHelper`` + ``HestonModel`` / ``BatesModel``) on the same cleaned Deribit quotes
from the same start. This module sets up and runs the QuantLib side and prices any parameter
set with QuantLib, so both fits can be scored by the same implied-vol RMSE.

Conventions (Deribit's): Black-76 on each expiry's forward with zero rate; time ACT/365.

* **Whole days.** QuantLib dates have whole-day resolution, so ``snap_to_days`` moves every
  expiry to ``round(expiry_years * 365) / 365`` (at least one day) and keeps the quoted
  implied vols: the quotes are reread as those vols at the snapped expiry. Both calibrations
  of the benchmark use the same snapped chain, so they solve the same problem. Everything
  here requires a snapped chain (``ValueError`` otherwise).
* **Forward curve.** Spot is a reference forward (the shortest expiry's), the risk-free curve
  is flat at 0 and the dividend curve is a ``ZeroCurve`` (continuous zero rates, linear in
  time, ACT/365) through ``q(T) = -ln(F_T / S) / T`` at each expiry date, so
  ``S e^{-q(T) T}`` reproduces every expiry's forward exactly (to rounding) and the discount
  factor is 1, as in Deribit's undiscounted Black-76.
* **Parameters.** Ours -> QuantLib: ``v0 -> v0``, ``kappa -> kappa``, ``theta -> theta``,
  ``xi -> sigma``, ``rho -> rho``; Bates also ``lam -> lambda``, ``mu_j -> nu``,
  ``sigma_j -> delta``. QuantLib's Bates jumps are ours exactly (log-jump ``N(nu, delta^2)``
  at intensity ``lambda``, drift compensated by ``lambda (e^{nu + delta^2/2} - 1)``):
  checked by pricing both at the same parameters (``tests/test_quantlib_calibration_harness``).
* **Integration.** One fixed setting for every price of a run (``integration``). The default
  ``("laguerre", 192)`` is QuantLib's usual Gauss-Laguerre quadrature (the engines' default
  order is 144; 192 is the highest QuantLib has), which both ``AnalyticHestonEngine`` and
  ``BatesEngine`` take. Measured against ``qmr_jax.fourier_price`` (accurate to ~1e-14 of
  the forward) on the snapped last BTC chain (expiries 2 to 298 days) at random parameters
  (``v0`` 0.02-0.8): implied vols agree to 1e-9 or better for both models, and pricing the
  367 quotes one by one from Python takes ~35 ms (Heston) / ~50 ms (Bates); order 144 is
  ~25% faster. The adaptive Gauss-Lobatto
  (``("lobatto", rel_tol, max_evaluations)``) is 2-4 times slower and, for Bates, less
  accurate at a given tolerance (rel_tol 1e-8 or 1e-10: 1e-5 in vol). Gauss-Laguerre loses
  accuracy when the total vol ``sqrt(v0 T)`` is small: at a 2-day expiry with ``v0 = 0.05``
  Bates vols are off by 1e-5 at order 192 (2e-4 at 144); at 1 day with ``v0 <= 0.04`` it
  fails outright, where only Lobatto at rel_tol ~1e-12 stays accurate. So compare
  ``ql_model_ivs`` with our pricer's vols at the fitted parameters (the benchmark does).
* **Error types.** ``error_type`` picks the residual of each quote:

  - ``"implied_vol"`` (default): QuantLib's ``ImpliedVolError``, model implied vol minus
    ``mid_iv``, found by a Brent solve per quote and evaluation. The same residual as an
    IV-space loss, hence the fair comparison with our IV-space calibration.
  - ``"vega_price"``: ``PriceError`` weighted by ``1 / vega^2`` (Black vega at ``mid_iv``),
    the first-order IV residual without the Brent solves.
  - ``"relative_price"``: ``RelativePriceError`` (QuantLib's default for the helper),
    ``(market - model) / market``: weighs the cheap wings far more than IV space does.
  - ``"price"``: ``PriceError``, the USD price difference.

Needs QuantLib (``import QuantLib``) and float64 JAX (``jax_enable_x64``) for
``qmr_jax.implied_vol``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import jax
import numpy as np
import pandas as pd
import QuantLib as ql

import qmr_jax as qmr

HESTON_PARAMS = ("v0", "kappa", "theta", "xi", "rho")
BATES_PARAMS = HESTON_PARAMS + ("lam", "mu_j", "sigma_j")
MODEL_PARAMS = {"heston": HESTON_PARAMS, "bates": BATES_PARAMS}
"""Our parameter names per model, in our order."""

ERROR_TYPES = ("implied_vol", "vega_price", "relative_price", "price")
DEFAULT_ERROR_TYPE = "implied_vol"

INTEGRATIONS = ("lobatto", "laguerre")
DEFAULT_INTEGRATION = ("laguerre", 192)
"""Fourier integration of the QuantLib engines: ``("laguerre", order)`` (Gauss-Laguerre,
order <= 192) or ``("lobatto", rel_tol, max_evaluations)`` (adaptive Gauss-Lobatto); both
engines take either (see the module docstring for their accuracy)."""

DAYS_PER_YEAR = 365.0
_EVAL_DATE = ql.Date(2, 1, 2025)  # any date: only day counts from it matter (ACT/365)


def snap_to_days(chain: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``chain`` with expiries snapped to whole days, quoted vols unchanged.

    ``expiry_years`` becomes ``max(round(expiry_years * 365), 1) / 365`` and a column
    ``expiry_days`` (int) is added. QuantLib dates have whole-day resolution; both
    calibrations of the benchmark use this same chain, so the problems are identical.

    One forward per expiry: ``forward`` becomes the median of the expiry's quoted forwards
    (``log_moneyness`` follows). Deribit's forward of one expiry moves by ~1e-6 relative
    between the quotes of a snapshot (collected over seconds), and a QuantLib model has one
    forward curve. ``mid_iv``, ``bid_iv``, ``ask_iv`` and the other columns are unchanged:
    the quotes are read as the same Black-76 vols at the snapped expiry and forward (so the
    USD prices and ``vega`` no longer match them exactly; the calibrations work in vols).
    """
    out = chain.copy()
    days = np.maximum(np.floor(out["expiry_years"].to_numpy(float) * DAYS_PER_YEAR + 0.5), 1)
    out["expiry_days"] = days.astype(np.int64)
    out["expiry_years"] = days / DAYS_PER_YEAR
    out["forward"] = out.groupby("expiry_days")["forward"].transform("median")
    if "log_moneyness" in out:
        out["log_moneyness"] = np.log(out["strike"] / out["forward"])
    return out


def _days(chain: pd.DataFrame) -> np.ndarray:
    t = chain["expiry_years"].to_numpy(float)
    days = np.rint(t * DAYS_PER_YEAR)
    if np.any(days < 1) or np.any(np.abs(days / DAYS_PER_YEAR - t) > 1e-12):
        raise ValueError("chain expiries are not whole days: pass the chain through "
                         "snap_to_days first")
    return days.astype(np.int64)


def _check_x64() -> None:
    if not jax.config.read("jax_enable_x64"):
        raise RuntimeError("float64 JAX is needed: jax.config.update('jax_enable_x64', True)")


# ------------------------------------------------------------------------------------------
# market: spot, flat zero rate, dividend curve reproducing each expiry's forward


class _Market:
    """QuantLib market objects for a snapped chain (sets the global evaluation date)."""

    def __init__(self, chain: pd.DataFrame):
        if len(chain) == 0:
            raise ValueError("empty chain")
        self.days = _days(chain)
        fwd = chain["forward"].to_numpy(float)
        by_day: dict[int, float] = {}
        for d, f in zip(self.days.tolist(), fwd.tolist(), strict=True):
            if d in by_day and abs(by_day[d] - f) > 1e-12 * f:
                raise ValueError(f"two forwards ({by_day[d]}, {f}) for the expiry of {d} days: "
                                 "pass the chain through snap_to_days first")
            by_day.setdefault(d, f)
        exp_days = sorted(by_day)
        self.spot = by_day[exp_days[0]]
        self.today = _EVAL_DATE
        ql.Settings.instance().evaluationDate = self.today
        self.dc = ql.Actual365Fixed()
        self.calendar = ql.NullCalendar()
        q = [-math.log(by_day[d] / self.spot) / (d / DAYS_PER_YEAR) for d in exp_days]
        dates = [self.today] + [self.today + int(d) for d in exp_days]
        self.div = ql.YieldTermStructureHandle(
            ql.ZeroCurve(dates, [q[0]] + q, self.dc, self.calendar, ql.Linear(),
                         ql.Continuous, ql.Annual))
        self.rate = ql.YieldTermStructureHandle(ql.FlatForward(self.today, 0.0, self.dc))
        self.spot_handle = ql.QuoteHandle(ql.SimpleQuote(self.spot))
        self.forwards = by_day

    def forward(self, days: int) -> float:
        """The curve's forward at an expiry ``days`` ahead (for checks)."""
        t = days / DAYS_PER_YEAR
        return self.spot * self.rate.discount(t) ** -1 * self.div.discount(t)


def _params(model: str, params: Mapping[str, float]) -> dict[str, float]:
    if model not in MODEL_PARAMS:
        raise ValueError(f"model must be one of {tuple(MODEL_PARAMS)}; got {model!r}")
    names = MODEL_PARAMS[model]
    missing = [n for n in names if n not in params]
    extra = [n for n in params if n not in names]
    if missing or extra:
        raise ValueError(f"{model} parameters are {names}; missing {missing}, unknown {extra}")
    return {n: float(params[n]) for n in names}


def _ql_model(model: str, market: _Market, params: Mapping[str, float]):
    p = _params(model, params)
    heston = (p["v0"], p["kappa"], p["theta"], p["xi"], p["rho"])
    if model == "heston":
        proc = ql.HestonProcess(market.rate, market.div, market.spot_handle, *heston)
        return ql.HestonModel(proc)
    proc = ql.BatesProcess(market.rate, market.div, market.spot_handle, *heston,
                           p["lam"], p["mu_j"], p["sigma_j"])
    return ql.BatesModel(proc)


def _engine(model: str, ql_model, integration):
    kind, *args = integration
    if kind not in INTEGRATIONS:
        raise ValueError(f"integration must start with one of {INTEGRATIONS}; got {kind!r}")
    cls = ql.AnalyticHestonEngine if model == "heston" else ql.BatesEngine
    if kind == "lobatto":
        rel_tol, max_evaluations = args
        return cls(ql_model, float(rel_tol), int(max_evaluations))
    (order,) = args
    return cls(ql_model, int(order))


def _our_params(model: str, ql_model) -> dict[str, float]:
    out = {"v0": ql_model.v0(), "kappa": ql_model.kappa(), "theta": ql_model.theta(),
           "xi": ql_model.sigma(), "rho": ql_model.rho()}
    if model == "bates":
        out.update(lam=ql_model.lambda_parameter(), mu_j=ql_model.nu(),
                   sigma_j=ql_model.delta())
    return {k: float(v) for k, v in out.items()}


_END_CRITERIA = {getattr(ql.EndCriteria, n): n for n in (
    "MaxIterations", "StationaryPoint", "StationaryFunctionValue", "StationaryFunctionAccuracy",
    "ZeroGradientNorm", "FunctionEpsilonTooSmall", "Unknown")}
_END_CRITERIA.setdefault(0, "None")

_QL_ERROR = {
    "implied_vol": ql.BlackCalibrationHelper.ImpliedVolError,
    "vega_price": ql.BlackCalibrationHelper.PriceError,
    "relative_price": ql.BlackCalibrationHelper.RelativePriceError,
    "price": ql.BlackCalibrationHelper.PriceError,
}


def _black_vega(forward, strike, t, vol):
    """Undiscounted Black-76 vega, USD per unit vol."""
    s = vol * np.sqrt(t)
    d1 = np.log(forward / strike) / s + 0.5 * s
    return forward * np.sqrt(t) * np.exp(-0.5 * d1 * d1) / math.sqrt(2.0 * math.pi)


def ql_calibrate(chain: pd.DataFrame, model: str, start: Mapping[str, float], *,
                 error_type: str = DEFAULT_ERROR_TYPE, max_iterations: int = 500,
                 integration=DEFAULT_INTEGRATION, tol: float = 1e-8) -> dict:
    """Calibrate QuantLib's Heston or Bates model to a snapped chain's ``mid_iv``.

    One ``HestonModelHelper`` per quote (maturity ``Period(days, Days)``, the quote's strike,
    ``mid_iv`` as its vol, the error type), all priced by one ``AnalyticHestonEngine`` /
    ``BatesEngine`` with ``integration``; ``model.calibrate(helpers, LevenbergMarquardt(
    1e-8, tol, tol), EndCriteria(max_iterations, max_iterations - 1, tol, tol, tol))``. The helper
    prices the out-of-the-money option of each strike (call iff ``K >= F``).

    Args:
      chain: option chain after ``snap_to_days`` (``expiry_years``, ``strike``, ``forward``,
        ``mid_iv``).
      model: ``"heston"`` or ``"bates"``.
      start: starting parameters, our names (``MODEL_PARAMS[model]``).
      error_type: one of ``ERROR_TYPES`` (see the module docstring).
      max_iterations: Levenberg-Marquardt iterations (QuantLib passes MINPACK at most
        ``max_iterations * (n_params + 1)`` function evaluations).
      integration: engine setting (``DEFAULT_INTEGRATION``).
      tol: MINPACK ``ftol``, ``xtol`` and ``gtol`` (the finite-difference step ``epsfcn``
        stays at QuantLib's 1e-8).

    Returns:
      dict with ``params`` (our names: floats), ``wall_time`` (seconds in ``calibrate`` only),
      ``setup_time`` (seconds to build curves, helpers, model and engine),
      ``end_criteria`` (QuantLib's ``EndCriteria`` name), ``end_criteria_code``,
      ``function_evaluations`` (cost-function evaluations, each pricing every quote,
      finite-difference Jacobian columns included), ``n_quotes``, ``model``, ``error_type``,
      ``integration``, ``start``.
    """
    if error_type not in ERROR_TYPES:
        raise ValueError(f"error_type must be one of {ERROR_TYPES}; got {error_type!r}")
    if int(max_iterations) < 3:
        raise ValueError(f"max_iterations must be at least 3; got {max_iterations}")
    start = _params(model, start)
    t0 = time.perf_counter()
    market = _Market(chain)
    strikes = chain["strike"].to_numpy(float)
    vols = chain["mid_iv"].to_numpy(float)
    if not np.all(np.isfinite(vols) & (vols > 0)):
        raise ValueError("mid_iv must be finite and positive for every quote")
    ql_model = _ql_model(model, market, start)
    engine = _engine(model, ql_model, integration)
    err = _QL_ERROR[error_type]
    helpers = []
    for d, k, v in zip(market.days.tolist(), strikes.tolist(), vols.tolist(), strict=True):
        h = ql.HestonModelHelper(ql.Period(int(d), ql.Days), market.calendar, market.spot,
                                 k, ql.QuoteHandle(ql.SimpleQuote(v)), market.rate,
                                 market.div, err)
        h.setPricingEngine(engine)
        h.marketValue()  # lazy set-up (option, market price) done here, not in the timing
        helpers.append(h)
    weights = []
    if error_type == "vega_price":
        t = market.days / DAYS_PER_YEAR
        fwd = np.array([market.forwards[int(d)] for d in market.days])
        weights = (1.0 / _black_vega(fwd, strikes, t, vols) ** 2).tolist()
    method = ql.LevenbergMarquardt(1e-8, tol, tol)
    # QuantLib wants 1 < maxStationaryStateIterations < maxIterations; LM does not use it
    end = ql.EndCriteria(int(max_iterations), int(max_iterations) - 1, tol, tol, tol)
    setup_time = time.perf_counter() - t0

    t1 = time.perf_counter()
    if weights:
        ql_model.calibrate(helpers, method, end, ql.NoConstraint(), weights)
    else:
        ql_model.calibrate(helpers, method, end)
    wall_time = time.perf_counter() - t1

    code = int(ql_model.endCriteria())
    return {
        "params": _our_params(model, ql_model),
        "wall_time": wall_time,
        "setup_time": setup_time,
        "end_criteria": _END_CRITERIA.get(code, str(code)),
        "end_criteria_code": code,
        "function_evaluations": int(ql_model.functionEvaluation()),
        "n_quotes": len(helpers),
        "model": model,
        "error_type": error_type,
        "integration": tuple(integration),
        "start": dict(start),
    }


# ------------------------------------------------------------------------------------------
# pricing any parameter set with QuantLib


def ql_model_prices(chain: pd.DataFrame, model_name: str, params: Mapping[str, float], *,
                    is_call=None, integration=DEFAULT_INTEGRATION) -> np.ndarray:
    """QuantLib engine prices (USD, undiscounted: rate 0) of a snapped chain's quotes.

    ``is_call`` defaults to the chain's ``is_call``; pass an array to price other types.
    """
    market = _Market(chain)
    ql_model = _ql_model(model_name, market, params)
    engine = _engine(model_name, ql_model, integration)
    calls = chain["is_call"].to_numpy(bool) if is_call is None else np.broadcast_to(
        np.asarray(is_call, bool), (len(chain),))
    out = np.empty(len(chain))
    strikes = chain["strike"].to_numpy(float)
    for i, (d, k, c) in enumerate(zip(market.days.tolist(), strikes.tolist(), calls.tolist(),
                                      strict=True)):
        payoff = ql.PlainVanillaPayoff(ql.Option.Call if c else ql.Option.Put, k)
        opt = ql.VanillaOption(payoff, ql.EuropeanExercise(market.today + int(d)))
        opt.setPricingEngine(engine)
        out[i] = opt.NPV()
    return out


def ql_model_ivs(chain: pd.DataFrame, model_name: str, params: Mapping[str, float], *,
                 integration=DEFAULT_INTEGRATION) -> np.ndarray:
    """Model implied vols (decimal) per quote of a snapped chain, from QuantLib prices.

    Each strike is priced as its out-of-the-money option (call iff ``K >= F``, as
    ``HestonModelHelper`` does) by the QuantLib engine at ``params`` (our names) and
    inverted by ``qmr_jax.implied_vol`` on the chain's forward, undiscounted. RMSE in vol
    points: ``100 * sqrt(mean((ivs - chain.mid_iv)^2))``.
    """
    _check_x64()
    fwd = chain["forward"].to_numpy(float)
    strikes = chain["strike"].to_numpy(float)
    otm_call = strikes >= fwd
    prices = ql_model_prices(chain, model_name, params, is_call=otm_call,
                             integration=integration)
    vols = qmr.implied_vol(prices, fwd, strikes, chain["expiry_years"].to_numpy(float),
                           otm_call)
    return np.asarray(vols, float)


def iv_rmse(chain: pd.DataFrame, ivs) -> float:
    """Implied-vol RMSE against ``mid_iv``, in vol points (100 x decimal)."""
    diff = np.asarray(ivs, float) - chain["mid_iv"].to_numpy(float)
    return float(100.0 * np.sqrt(np.mean(diff * diff)))
