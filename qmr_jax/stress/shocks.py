"""Shocks: what a scenario does to the model and the market, as a pure, vmappable function.

A ``Shock`` is a NamedTuple of numbers (scalars, or arrays with a leading scenario axis in a
sweep), so ``apply_shock`` runs under ``jit`` and ``vmap`` and autodiff goes through it.

Fields (all default to "no change"):

* ``spot``: relative spot move, ``S -> S (1 + spot)`` (``-0.3`` is a 30% fall; ``> -1``).
* ``vol``: parallel shift of the volatility level, absolute (``0.10`` = +10 vol points):
  Heston/Bates ``sqrt(v0)`` and ``sqrt(theta)`` move by ``vol``, so at-the-money implied
  vols of every expiry move by about ``vol``; GBM, Merton, Kou ``sigma`` moves by ``vol``.
* ``term``: extra shift of the short end only, absolute vol: ``sqrt(v0)`` moves by
  ``vol + term`` while ``sqrt(theta)`` moves by ``vol``; a positive ``term`` inverts the term
  structure (short-dated vols up more, as in a crash). Heston and Bates only.
* ``skew``: additive shift of the spot/variance correlation ``rho`` (negative steepens the
  put skew), clipped to ``[-0.99, 0.99]``. Heston and Bates only.
* ``rate``: additive shift of the continuous USD rate.
* ``basis``: additive shift of the annualised basis ``rate - div`` (the forward curve's carry,
  e.g. perpetual funding or dated-futures premium): ``div -> div - basis``.
* ``horizon``: time elapsed before revaluation, years (theta decay; paths are simulated over
  it in path scenarios).
* ``drift``: annualised real-world drift of horizon paths on top of the risk-neutral one
  (``S_T -> S_T exp(drift * horizon)``); 0 keeps paths risk-neutral.
* ``scale``, ``shift``: per-field multipliers and additive shifts of the model's own
  parameters (``{"lam": 5.0}``, ``{"mu_j": -0.1}``), applied first: ``p -> p * scale + shift``.
* liquidity: ``spread`` multiplies the base half-spreads, ``impact_bps`` adds a market-impact
  cost in basis points of each position's underlying notional, and ``exit_fraction`` is the
  share of the book that is closed out at those costs (0: no liquidity cost). See
  ``liquidity_cost``.

Order of application: ``scale``/``shift`` of the parameters, then ``vol``/``term``/``skew``,
then the market (``spot``, ``rate``, ``basis``). Results are clamped to the model's domain
(variances and vols at 0 or above, correlations inside ``[-0.99, 0.99]``, jump intensities at
0 or above) so that extreme sweeps never produce NaN; ``check_shock`` rejects the impossible
inputs (``spot <= -1``, negative scales, ``horizon < 0``, ...) with the field named.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._validation import _concrete
from ..models import Bates, Heston, Kou, Market, Merton

SV_MODELS = (Heston, Bates)
RHO_CLIP = 0.99

# fields of each model that must stay >= 0 (or > 0 for a floor) after scale/shift
_NONNEG = {"v0", "theta", "sigma", "lam", "sigma_j", "xi", "kappa"}
_FLOOR = {"kappa": 1e-6, "xi": 1e-6, "theta": 1e-10, "sigma": 1e-8, "sigma_j": 1e-8,
          "eta1": 1.0 + 1e-6, "eta2": 1e-6}


class Shock(NamedTuple):
    """One scenario's shock (see the module docstring for each field)."""

    spot: Any = 0.0
    vol: Any = 0.0
    term: Any = 0.0
    skew: Any = 0.0
    rate: Any = 0.0
    basis: Any = 0.0
    horizon: Any = 0.0
    drift: Any = 0.0
    spread: Any = 1.0
    impact_bps: Any = 0.0
    exit_fraction: Any = 0.0
    scale: Mapping[str, Any] = {}
    shift: Mapping[str, Any] = {}


NUMERIC_FIELDS = tuple(f for f in Shock._fields if f not in ("scale", "shift"))
SHOCK_DOCS = {
    "spot": "relative spot move (-0.3 = -30%)",
    "vol": "parallel vol shift, absolute (0.1 = +10 vol pts)",
    "term": "extra short-end vol shift, absolute (Heston/Bates)",
    "skew": "shift of rho (Heston/Bates)",
    "rate": "shift of the USD rate",
    "basis": "shift of the annualised basis rate - div",
    "horizon": "years elapsed before revaluation",
    "drift": "annualised real-world drift of horizon paths",
    "spread": "multiplier of the base half-spreads",
    "impact_bps": "market impact, bps of underlying notional",
    "exit_fraction": "share of the book closed out at those costs",
}
_RULES = {
    "spot": (lambda x: x > -1.0, "a relative move > -1 (a price cannot fall below zero)"),
    "vol": (lambda x: True, "finite"),
    "term": (lambda x: True, "finite"),
    "skew": (lambda x: (x >= -2.0) & (x <= 2.0), "a correlation shift in [-2, 2]"),
    "rate": (lambda x: (x > -1.0) & (x < 1.0), "a rate shift in (-1, 1)"),
    "basis": (lambda x: (x > -5.0) & (x < 5.0), "an annual basis shift in (-5, 5)"),
    "horizon": (lambda x: (x >= 0) & (x <= 5.0), "years in [0, 5]"),
    "drift": (lambda x: (x > -20.0) & (x < 20.0), "an annual drift in (-20, 20)"),
    "spread": (lambda x: x >= 0, "a non-negative multiplier"),
    "impact_bps": (lambda x: x >= 0, "non-negative basis points"),
    "exit_fraction": (lambda x: (x >= 0) & (x <= 1), "a fraction in [0, 1]"),
}


def model_fields(model) -> tuple[str, ...]:
    cls = model if isinstance(model, type) else type(model)
    return tuple(cls._fields)


class NotApplicable(ValueError):
    """A valid shock that the model cannot express: a ``scale``/``shift`` of a parameter the
    model does not have (jump intensity under Heston), a term or skew tilt without stochastic
    volatility. ``stress`` records such scenarios as not applicable rather than failed."""


def canonical_shock(shock: Shock, model) -> Shock:
    """The same shock with ``scale`` and ``shift`` naming every parameter of ``model`` (1 and
    0 where unset): identical shocked models, and one compiled program for every scenario
    of a model whatever fields they move."""
    fields = model_fields(model)
    return shock._replace(scale={f: shock.scale.get(f, 1.0) for f in fields},
                          shift={f: shock.shift.get(f, 0.0) for f in fields})


def check_shock(shock: Shock, model=None, *, where: str = "shock") -> Shock:
    """Validate concrete shock values (any leading batch shape); returns the shock.

    Raises ``ValueError`` naming ``where``, the field and the first bad value (with its index
    in a batch), and for a ``model`` (instance or class) the fields it does not have and the
    shocks it does not support (``term``/``skew`` need Heston or Bates).
    """
    if not isinstance(shock, Shock):
        raise TypeError(f"{where}: expected a Shock; got {type(shock).__name__}")
    for name in NUMERIC_FIELDS:
        _check_values(where, name, getattr(shock, name), *_RULES[name])
    for kind in ("scale", "shift"):
        table = getattr(shock, kind)
        if not isinstance(table, Mapping):
            raise ValueError(f"{where}: {kind} must be a table of model fields; got "
                             f"{type(table).__name__}")
        for f, v in table.items():
            if kind == "scale":
                _check_values(where, f"scale.{f}", v, lambda x: x >= 0,
                              "a non-negative multiplier")
            else:
                _check_values(where, f"shift.{f}", v, lambda x: True, "finite")
    if model is not None:
        fields = model_fields(model)
        cls = model if isinstance(model, type) else type(model)
        for kind in ("scale", "shift"):
            unknown = sorted(set(getattr(shock, kind)) - set(fields))
            if unknown:
                raise NotApplicable(f"{where}: {kind} names {', '.join(unknown)}, not a "
                                    f"parameter of {cls.__name__} ({', '.join(fields)})")
        if not issubclass(cls, SV_MODELS):
            for name in ("term", "skew"):
                val = _concrete(getattr(shock, name))
                if val is not None and np.any(val != 0):
                    raise NotApplicable(f"{where}: a {name} shock needs a stochastic-"
                                        f"volatility model (Heston, Bates); the model is "
                                        f"{cls.__name__}")
    return shock


def _check_values(where, name, value, rule, desc):
    val = _concrete(value)
    if val is None:
        if isinstance(value, jax.core.Tracer):
            return
        raise ValueError(f"{where}: {name} must be a number; got {value!r}")
    bad = ~np.isfinite(val) | ~np.asarray(rule(val), bool)
    if np.any(bad):
        idx = np.argwhere(bad)[0] if val.ndim else ()
        at = f" (scenario {tuple(int(i) for i in idx)})" if val.ndim else ""
        shown = val[tuple(idx)] if val.ndim else val
        raise ValueError(f"{where}: {name} must be {desc}; got {float(shown)!r}{at}")


def _shift_vol(var, dv):
    """Variance whose square root moved by ``dv`` (floored at 0); exactly ``var`` for
    ``dv = 0``: ``(s + dv)^2 = var + dv (2 s + dv)``."""
    var = jnp.maximum(var, 0.0)
    s = jnp.sqrt(var)
    return jnp.where(s + dv > 0, var + dv * (2.0 * s + dv), 0.0)


def shock_model(model, shock: Shock):
    """The shocked model parameters (same type as ``model``); pure and vmappable."""
    vals = {f: getattr(model, f) for f in model._fields}
    for f, s in shock.scale.items():
        vals[f] = vals[f] * s
    for f, s in shock.shift.items():
        vals[f] = vals[f] + s
    for f in list(vals):
        if f in _FLOOR:
            vals[f] = jnp.maximum(vals[f], _FLOOR[f])
        elif f in _NONNEG:
            vals[f] = jnp.maximum(vals[f], 0.0)
    if isinstance(model, SV_MODELS):
        vals["v0"] = _shift_vol(vals["v0"], shock.vol + shock.term)
        vals["theta"] = jnp.maximum(_shift_vol(vals["theta"], shock.vol), _FLOOR["theta"])
        vals["rho"] = jnp.clip(vals["rho"] + shock.skew, -RHO_CLIP, RHO_CLIP)
    else:
        vals["sigma"] = jnp.maximum(vals["sigma"] + shock.vol, _FLOOR["sigma"])
    if isinstance(model, Bates | Merton | Kou):
        vals["lam"] = jnp.maximum(vals["lam"], 0.0)
    if isinstance(model, Kou):
        vals["p"] = jnp.clip(vals["p"], 0.0, 1.0)
    if "rho" in vals and not isinstance(model, SV_MODELS):  # pragma: no cover - no such model
        vals["rho"] = jnp.clip(vals["rho"], -RHO_CLIP, RHO_CLIP)
    return type(model)(**vals)


def shock_market(market: Market, shock: Shock) -> Market:
    """The shocked market: spot, rate and basis moved; pure and vmappable."""
    return Market(market.spot * (1.0 + shock.spot), market.rate + shock.rate,
                  market.div + shock.rate - shock.basis)


def apply_shock(model, market: Market, shock: Shock):
    """``(shocked model, shocked market)``. A rate shift moves the USD rate and keeps the
    basis (``rate - div``) unless ``basis`` says otherwise, so forwards move only with spot
    and basis."""
    return shock_model(model, shock), shock_market(market, shock)


def as_arrays(shock: Shock, dtype=np.float64) -> Shock:
    """Every leaf as a NumPy array of ``dtype`` (for stacking and vmapping)."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x, dtype), shock)


def stack_shocks(shocks) -> Shock:
    """One ``Shock`` with a leading axis from a list of shocks. Tables of parameter scales
    and shifts are aligned: a field missing from one shock gets 1 (scale) or 0 (shift)."""
    shocks = list(shocks)
    if not shocks:
        raise ValueError("no shocks to stack")
    scale_keys = sorted({k for s in shocks for k in s.scale})
    shift_keys = sorted({k for s in shocks for k in s.shift})
    out = {f: np.array([float(getattr(s, f)) for s in shocks]) for f in NUMERIC_FIELDS}
    out["scale"] = {k: np.array([float(s.scale.get(k, 1.0)) for s in shocks])
                    for k in scale_keys}
    out["shift"] = {k: np.array([float(s.shift.get(k, 0.0)) for s in shocks])
                    for k in shift_keys}
    return Shock(**out)


def index_shock(shock: Shock, i) -> Shock:
    """Scenario ``i`` of a stacked shock."""
    return jax.tree_util.tree_map(lambda x: x[i], shock)


def shock_size(shock: Shock) -> int:
    """Number of scenarios in a stacked shock (1 for scalars)."""
    shapes = [np.shape(x) for x in jax.tree_util.tree_leaves(shock)]
    n = {s[0] for s in shapes if len(s)}
    if len(n) > 1:
        raise ValueError(f"shock fields have different scenario counts: {sorted(n)}")
    return n.pop() if n else 1


def describe(shock: Shock) -> str:
    """A short human summary of the non-trivial parts of a scalar shock."""
    parts = []
    base = Shock()
    for f in NUMERIC_FIELDS:
        v = float(getattr(shock, f))
        if not math.isclose(v, float(getattr(base, f)), abs_tol=0.0):
            if f in ("spot",):
                parts.append(f"spot {v:+.0%}")
            elif f in ("vol", "term"):
                parts.append(f"{f} {100 * v:+.1f} vp")
            elif f == "horizon":
                parts.append(f"horizon {365 * v:.3g}d")
            else:
                parts.append(f"{f} {v:+.4g}")
    parts += [f"{k} x{float(v):.3g}" for k, v in shock.scale.items()]
    parts += [f"{k} {float(v):+.3g}" for k, v in shock.shift.items()]
    return ", ".join(parts) or "no shock"


__all__ = ["Shock", "NUMERIC_FIELDS", "SHOCK_DOCS", "apply_shock", "shock_model",
           "shock_market", "check_shock", "stack_shocks", "index_shock", "shock_size",
           "as_arrays", "describe", "model_fields", "SV_MODELS", "NotApplicable",
           "canonical_shock"]
