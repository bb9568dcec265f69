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
then the market (``spot``, ``rate``, ``basis``). The shocked parameters are then clamped into
the model's shock domain (``shock_domain``: per field ``(lo, hi)``, e.g. ``kappa >= 1e-3``,
``rho`` inside ``[-0.99, 0.99]``, widened to include the base value) in this one place, which
``StressEngine.revalue``, ``stress`` and ``sweep`` all go through, so the same shock gives the
same number everywhere and extreme sweeps never produce NaN; ``domain_notes`` says which
fields were clamped (the ``notes`` of a stress row, the ``clamped`` column of a sweep).
``check_shock`` rejects the impossible or physically meaningless inputs (``spot <= -1``,
negative scales, ``horizon < 0``, a real-world drift moving spot by more than ``e^5`` over
the horizon, ...) with the field named.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._validation import _concrete
from ..models import Bates, Heston, Market

SV_MODELS = (Heston, Bates)
RHO_CLIP = 0.99
MAX_LOG_DRIFT = 5.0  # |drift x horizon|: real-world spot factor within [e^-5, e^5]

SHOCK_DOMAIN: dict[str, tuple[float, float]] = {
    "v0": (0.0, 25.0),  # variances: vols up to 500%
    "theta": (1e-10, 25.0),
    "kappa": (1e-3, 1e3),  # below 1e-3 the Fourier prices lose accuracy (COS != Lewis)
    "xi": (1e-3, 20.0),
    "rho": (-RHO_CLIP, RHO_CLIP),
    "sigma": (1e-8, 5.0),
    "lam": (0.0, 1e3),
    "mu_j": (-5.0, 5.0),
    "sigma_j": (1e-8, 2.0),
    "p": (0.0, 1.0),
    "eta1": (1.05, 1e3),  # eta1 -> 1: the expected up-jump factor diverges
    "eta2": (0.05, 1e3),
}
"""The shock domain of every model field, keyed by field name: ``(lo, hi)``. A model class
may override it with a ``shock_domain`` attribute (a mapping, or a callable returning one)
naming its own fields."""


def shock_domain(model) -> dict[str, tuple[float, float]]:
    """``{field: (lo, hi)}`` of ``model``'s fields (instance or class): the model's own
    ``shock_domain`` where it has one, else ``SHOCK_DOMAIN``; unbounded for fields in
    neither."""
    cls = model if isinstance(model, type) else type(model)
    own = getattr(cls, "shock_domain", None)
    own = dict(own() if callable(own) else own) if own is not None else {}
    inf = float("inf")
    return {f: tuple(map(float, own.get(f, SHOCK_DOMAIN.get(f, (-inf, inf)))))
            for f in cls._fields}


def is_stochastic_vol(model) -> bool:
    """Whether ``model`` has a variance process (``v0``, ``theta``, ``rho``): the models that
    take ``term`` and ``skew`` shocks."""
    return {"v0", "theta", "rho"} <= set(model_fields(model))


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
    "spot": (lambda x: (x > -1.0) & (x <= 10.0),
             "a relative move > -1 (a price cannot fall below zero) and <= 10 (+1000%)"),
    "vol": (lambda x: np.abs(x) <= 5.0, "an absolute vol shift in [-5, 5]"),
    "term": (lambda x: np.abs(x) <= 5.0, "an absolute vol shift in [-5, 5]"),
    "skew": (lambda x: (x >= -2.0) & (x <= 2.0), "a correlation shift in [-2, 2]"),
    "rate": (lambda x: (x > -1.0) & (x < 1.0), "a rate shift in (-1, 1)"),
    "basis": (lambda x: (x > -5.0) & (x < 5.0), "an annual basis shift in (-5, 5)"),
    "horizon": (lambda x: (x >= 0) & (x <= 5.0), "years in [0, 5]"),
    "drift": (lambda x: (x > -20.0) & (x < 20.0), "an annual drift in (-20, 20)"),
    "spread": (lambda x: (x >= 0) & (x <= 1000.0), "a multiplier in [0, 1000]"),
    "impact_bps": (lambda x: (x >= 0) & (x <= 10_000.0),
                   "basis points in [0, 10000] (100% of the notional)"),
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
    _check_log_drift(where, shock)
    if model is not None:
        fields = model_fields(model)
        cls = model if isinstance(model, type) else type(model)
        for kind in ("scale", "shift"):
            unknown = sorted(set(getattr(shock, kind)) - set(fields))
            if unknown:
                raise NotApplicable(f"{where}: {kind} names {', '.join(unknown)}, not a "
                                    f"parameter of {cls.__name__} ({', '.join(fields)})")
        if not is_stochastic_vol(cls):
            for name in ("term", "skew"):
                val = _concrete(getattr(shock, name))
                if val is not None and np.any(val != 0):
                    raise NotApplicable(f"{where}: a {name} shock needs a stochastic-"
                                        f"volatility model (Heston, Bates); the model is "
                                        f"{cls.__name__}")
    return shock


def _check_log_drift(where, shock: Shock) -> None:
    """``|drift x horizon| <= MAX_LOG_DRIFT``: the real-world drift moves spot by a factor
    ``exp(drift x horizon)``, bounded to ``[e^-5, e^5]`` (about 1/148 to 148x)."""
    d, h = _concrete(shock.drift), _concrete(shock.horizon)
    if d is None or h is None:
        return
    d, h = np.broadcast_arrays(d, h)
    bad = ~(np.abs(d * h) <= MAX_LOG_DRIFT)
    if np.any(bad):
        idx = tuple(np.argwhere(bad)[0]) if d.ndim else ()
        at = f" (scenario {tuple(int(i) for i in idx)})" if d.ndim else ""
        raise ValueError(f"{where}: drift x horizon must be within [-{MAX_LOG_DRIFT:g}, "
                         f"{MAX_LOG_DRIFT:g}] (a real-world spot factor between e^-5 and "
                         f"e^5); got {float(d[idx]):g} x {float(h[idx]):g} years = "
                         f"{float(d[idx] * h[idx]):g}{at}")


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


def _unclamped(model, shock: Shock) -> dict:
    """The shocked parameter values before the domain clamp."""
    vals = {f: getattr(model, f) for f in model._fields}
    for f, s in shock.scale.items():
        vals[f] = vals[f] * s
    for f, s in shock.shift.items():
        vals[f] = vals[f] + s
    if is_stochastic_vol(model):
        vals["v0"] = _shift_vol(vals["v0"], shock.vol + shock.term)
        vals["theta"] = _shift_vol(vals["theta"], shock.vol)
        vals["rho"] = vals["rho"] + shock.skew
    elif "sigma" in vals:
        vals["sigma"] = vals["sigma"] + shock.vol
    return vals


def _bounds(model, f, lo, hi):
    """The domain of field ``f`` widened to include the base value: a zero shock never
    moves a model."""
    base = getattr(model, f)
    return jnp.minimum(lo, base), jnp.maximum(hi, base)


def shock_model(model, shock: Shock):
    """The shocked model parameters (same type as ``model``), clamped into
    ``shock_domain(model)`` (widened to include the base values); pure and vmappable."""
    vals = _unclamped(model, shock)
    for f, (lo, hi) in shock_domain(model).items():
        lo_f, hi_f = _bounds(model, f, lo, hi)
        vals[f] = jnp.clip(vals[f], lo_f, hi_f)
    return type(model)(**vals)


def domain_notes(model, shock: Shock) -> np.ndarray:
    """For a concrete (possibly stacked) shock, what the domain clamp of ``shock_model`` did:
    a string per scenario (shape of the stack, ``""`` where nothing was clamped), e.g.
    ``"kappa 0 clamped to 0.001"``."""
    n = shock_size(shock)
    stacked = any(np.ndim(x) for x in jax.tree_util.tree_leaves(shock))
    out = [[] for _ in range(n)]
    raw = _unclamped(model, jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64),
                                                    shock))
    for f, (lo, hi) in shock_domain(model).items():
        v = np.broadcast_to(np.asarray(raw[f], np.float64), (n,))
        base = float(np.asarray(getattr(model, f)))
        lo_f, hi_f = min(lo, base), max(hi, base)
        for i in np.flatnonzero((v < lo_f) | (v > hi_f)):
            edge = lo_f if v[i] < lo_f else hi_f
            out[i].append(f"{f} {v[i]:.4g} clamped to {edge:.4g}")
    notes = np.array(["; ".join(x) for x in out], dtype=object)
    return notes if stacked else notes.reshape(())


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
           "canonical_shock", "shock_domain", "SHOCK_DOMAIN", "domain_notes", "is_stochastic_vol",
           "MAX_LOG_DRIFT"]
