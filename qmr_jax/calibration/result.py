"""The calibration result: parameters, fit quality per quote and per expiry, solver record."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .bijections import Bijection
from .objective import Quotes
from .solvers import CONVERGED, STATUS

VOL_POINTS = 100.0  # decimal vol -> vol points


@dataclasses.dataclass(frozen=True)
class Problem:
    """Everything needed to evaluate the calibration objective again (quote sensitivities,
    model IVs elsewhere); host arrays."""

    bij: Bijection
    base: Any
    quotes: Quotes
    positions: np.ndarray  # [n_quotes, 2] grid (expiry, strike) slot of each chain row
    loss: str
    n_terms: int
    truncation: float
    log_tol: float
    feller: bool
    feller_weight: float


@dataclasses.dataclass(frozen=True)
class CalibrationResult:
    """What a calibration did and how well it fits.

    Attributes:
      params: the calibrated model (same type as the initial parameters).
      converged: True when the solver met a tolerance (``reason`` says which); False when it
        hit the iteration limit, stalled, or met a non-finite loss; never silent.
      reason: why the solver stopped.
      rmse_iv: root-mean-square of model IV minus mid IV over the quotes, vol points.
      inside_band: share of quotes (with both sides) whose model IV is inside bid/ask IV.
      by_expiry: per expiry: quotes, RMSE and mean residual (vol points), share inside band.
      residuals: one row per quote (the chain's index): market bid/mid/ask IVs, the model IV,
        ``residual_iv`` (model - mid, vol points), ``inside_band``, ``weight``.
      loss: final objective, 0.5 x weighted mean squared residual (+ penalty).
      iterations, evaluations: solver iterations and residual/Jacobian evaluations (of the
        winning start, summed over polishing rounds).
      wall_time: seconds, including planning and (on a first call) compilation.
      history: objective after each iteration of the winning start.
      starts: per starting point: the start's parameters, final loss, iterations, reason.
      model, method, loss_kind, weights, seed, n_terms, fourier_tol, feller_penalty: settings.
      snapshot, currency: copied from the chain when it has those columns.
      at_bounds: ``{field: "lower" | "upper"}`` for every calibrated field that ended on an
        edge of its box (``bijections.EDGE_TOL``): the data push it further than the box
        allows, so its value is the box's, not the market's. A converged fit can be saturated;
        ``summary()``, ``to_dict()`` and the report say so.
      problem: the objective's arrays (for ``quote_sensitivities`` and ``model_iv_surface``).
    """

    params: Any
    converged: bool
    reason: str
    rmse_iv: float
    inside_band: float
    by_expiry: pd.DataFrame
    residuals: pd.DataFrame
    loss: float
    iterations: int
    evaluations: int
    wall_time: float
    history: np.ndarray
    starts: pd.DataFrame
    model: str
    method: str
    loss_kind: str
    weights: str
    seed: int
    n_terms: int
    fourier_tol: float
    feller_penalty: float
    snapshot: str | None
    currency: str | None
    n_quotes: int
    problem: Problem = dataclasses.field(repr=False)
    at_bounds: dict = dataclasses.field(default_factory=dict)

    @property
    def saturated(self) -> bool:
        """True when some calibrated field ended on an edge of its box."""
        return bool(self.at_bounds)

    def bounds_warning(self) -> str | None:
        """One line naming the saturated fields and their boxes, or ``None``."""
        if not self.at_bounds:
            return None
        maps = self.problem.bij.maps
        parts = [f"{f}={float(getattr(self.params, f)):.6g} on its {side} bound "
                 f"(box {maps[f].lo:g} to {maps[f].hi:g})" for f, side in self.at_bounds.items()]
        return ("WARNING: parameter(s) at the edge of the calibration box: " + "; ".join(parts)
                + ". The data push them further: widen the box (bounds=) or fix them, and treat "
                "their values with care.")

    @property
    def rmse_iv_by_expiry(self) -> pd.Series:
        """RMSE in vol points per expiry (index: expiry in years)."""
        return self.by_expiry.set_index("expiry_years")["rmse_iv"]

    def params_dict(self) -> dict[str, float]:
        return {f: float(getattr(self.params, f)) for f in self.params._fields}

    def feller_ratio(self) -> float | None:
        if hasattr(self.params, "feller_ratio"):
            return float(self.params.feller_ratio())
        return None

    def summary(self) -> str:
        """A readable multi-line summary."""
        state = "converged" if self.converged else "NOT CONVERGED"
        head = (f"{self.model} calibration to {self.n_quotes} quotes"
                + (f" ({self.currency} {self.snapshot})" if self.snapshot else "")
                + f": {state} ({self.reason}) after {self.iterations} iterations, "
                  f"{self.wall_time:.2f} s")
        fit = (f"  RMSE {self.rmse_iv:.3f} vol pts, {100 * self.inside_band:.1f}% of model IVs "
               f"inside bid/ask, loss {self.loss:.3e}, method {self.method}, loss {self.loss_kind}")
        params = "  " + ", ".join(f"{k}={v:.6g}" for k, v in self.params_dict().items())
        feller = self.feller_ratio()
        if feller is not None:
            params += f"  (Feller ratio {feller:.3f})"
        lines = [head, fit, params]
        if (warning := self.bounds_warning()) is not None:
            lines.append("  " + warning)
        lines += ["  per expiry (days: RMSE vol pts / inside band):"]
        for _, row in self.by_expiry.iterrows():
            lines.append(f"    {365 * row.expiry_years:7.2f} d: {row.rmse_iv:6.3f} / "
                         f"{100 * row.inside_band:5.1f}%  ({int(row.n_quotes)} quotes)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict:
        """JSON-safe dictionary of the result (without the per-quote table)."""
        return _jsonable({
            "model": self.model,
            "params": self.params_dict(),
            "converged": self.converged,
            "reason": self.reason,
            "at_bounds": dict(self.at_bounds),
            "rmse_iv": self.rmse_iv,
            "inside_band": self.inside_band,
            "loss": self.loss,
            "iterations": self.iterations,
            "evaluations": self.evaluations,
            "wall_time": self.wall_time,
            "n_quotes": self.n_quotes,
            "snapshot": self.snapshot,
            "currency": self.currency,
            "feller_ratio": self.feller_ratio(),
            "settings": {"method": self.method, "loss": self.loss_kind, "weights": self.weights,
                         "seed": self.seed, "n_terms": self.n_terms,
                         "fourier_tol": self.fourier_tol, "feller_penalty": self.feller_penalty,
                         "bounds": {f: list(self.problem.bij.maps[f][:2])
                                    for f in self.problem.bij.free},
                         "fixed": list(self.problem.bij.fixed)},
            "by_expiry": self.by_expiry.to_dict(orient="records"),
            "starts": self.starts.to_dict(orient="records"),
            "history": [float(x) for x in self.history],
        })

    def to_json(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path


def _jsonable(x):
    """JSON-safe copy: NumPy scalars and arrays to Python, non-finite floats to None,
    timestamps to ISO strings, anything else unknown to its string."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, pd.Timestamp):
        return x.isoformat()
    if x is None or isinstance(x, bool | int | float | str):
        return x
    return str(x)


def _first(chain, col):
    if col in chain.columns and len(chain):
        v = chain[col].iloc[0]
        return v.isoformat() if isinstance(v, pd.Timestamp) else str(v)
    return None


def build_result(*, chain, problem: Problem, rounds, best, ivs, u_starts, method, weights, seed,
                 wall_time, fourier_tol, replans, tol) -> CalibrationResult:
    bij = problem.bij
    last = rounds[-1]
    u = np.asarray(last.u)[best]
    params = bij.to_model_host(u, problem.base)
    status = int(np.asarray(last.status)[best])
    iterations = int(sum(np.asarray(s.iterations)[best] for s in rounds))
    evaluations = int(sum(np.asarray(s.evaluations)[best] for s in rounds))
    history = np.concatenate([np.asarray(s.history)[best][:int(np.asarray(s.iterations)[best])]
                              for s in rounds])
    reason = STATUS[status] + (f" (after {replans} polishing round(s) with more Fourier nodes)"
                               if replans else "")
    pos = problem.positions
    model_iv = np.asarray(ivs)[pos[:, 0], pos[:, 1]]
    bid = chain["bid_iv"].to_numpy(np.float64)
    ask = chain["ask_iv"].to_numpy(np.float64)
    mid = chain["mid_iv"].to_numpy(np.float64)
    res = pd.DataFrame(index=chain.index)
    for col in ("expiry_years", "strike", "is_call", "forward"):
        res[col] = chain[col].to_numpy()
    res["log_moneyness"] = np.log(res["strike"] / res["forward"])
    res["bid_iv"], res["mid_iv"], res["ask_iv"], res["model_iv"] = bid, mid, ask, model_iv
    res["residual_iv"] = VOL_POINTS * (model_iv - mid)
    has_band = np.isfinite(bid) & np.isfinite(ask)
    inside = has_band & (model_iv >= bid) & (model_iv <= ask)
    res["inside_band"] = np.where(has_band, inside, False)
    res["weight"] = np.asarray(problem.quotes.weight)[pos[:, 0], pos[:, 1]]
    groups = res.assign(_band=has_band).groupby("expiry_years", sort=True)
    by_exp = pd.DataFrame({
        "n_quotes": groups.size(),
        "rmse_iv": groups["residual_iv"].apply(lambda r: float(np.sqrt(np.mean(r * r)))),
        "mean_residual_iv": groups["residual_iv"].mean(),
        "inside_band": groups.apply(lambda g: float(g["inside_band"][g["_band"]].mean())
                                    if g["_band"].any() else float("nan"),
                                    include_groups=False),
    }).reset_index()
    if "expiry" in chain.columns:
        exp = chain.groupby("expiry_years")["expiry"].first()
        by_exp.insert(1, "expiry", by_exp["expiry_years"].map(exp))
    rows = []
    for s in range(u_starts.shape[0]):
        start = bij.to_model_host(u_starts[s], problem.base)
        row = {f"start_{f}": getattr(start, f) for f in start._fields}
        row.update(final_loss=float(np.asarray(rounds[0].loss)[s]),
                   iterations=int(np.asarray(rounds[0].iterations)[s]),
                   reason=STATUS[int(np.asarray(rounds[0].status)[s])], best=(s == best))
        rows.append(row)
    resid = res["residual_iv"].to_numpy()
    rmse = float(np.sqrt(np.mean(resid * resid)))
    if not np.isfinite(rmse):
        status = -1
        reason = "model implied vols not finite at the solution"
    return CalibrationResult(
        params=params, converged=status in CONVERGED, reason=reason, rmse_iv=rmse,
        inside_band=float(inside[has_band].mean()) if has_band.any() else float("nan"),
        by_expiry=by_exp, residuals=res, loss=float(np.asarray(last.loss)[best]),
        iterations=iterations, evaluations=evaluations, wall_time=float(wall_time),
        history=history, starts=pd.DataFrame(rows), model=type(params).__name__,
        method=method, loss_kind=problem.loss,
        weights=weights if isinstance(weights, str) else ("uniform" if weights is None
                                                          else "custom"),
        seed=int(seed), n_terms=int(problem.n_terms), fourier_tol=float(fourier_tol),
        feller_penalty=float(problem.feller_weight), snapshot=_first(chain, "snapshot"),
        currency=_first(chain, "currency"), n_quotes=len(chain), problem=problem,
        at_bounds=_at_bounds(bij, params))


def _at_bounds(bij: Bijection, params) -> dict[str, str]:
    """``{field: "lower" | "upper"}`` for the free fields on an edge of their box."""
    out = {}
    for f in bij.free:
        side = bij.maps[f].edge(getattr(params, f))
        if side is not None:
            out[f] = side
    return out
