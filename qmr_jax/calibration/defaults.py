"""Data-driven starting points for calibration, and model names.

``initial_guess(model, chain)`` reads the chain's at-the-money implied vols and skew per expiry
(``atm_term_structure``) and sets every parameter of a ``Heston``, ``Bates``, ``Merton``,
``Kou`` or ``GBM`` to a sensible value for that surface:

* variance levels: ``v0`` from the shortest expiries' ATM variance, ``theta`` from the
  longest expiry's, undoing Heston's mean reversion of the expected variance (with ``kappa``);
  a constant ``sigma`` (GBM, Merton, Kou) from the median ATM variance; jump models give the
  jumps' share of the variance back (``lam E[J^2]``);
* ``kappa = 2``; ``xi`` twice the typical ATM vol, within ``[0.3, 1.5]`` (about 1 for crypto);
* ``rho`` from the slope of the smile between the 25-delta-like points
  ``x = +-0.674 sigma sqrt(T)``, inverted through Heston's first-order skew
  ``d sigma / dx = rho xi / (4 sigma) g(kappa T)``, ``g(z) = 2 (z - 1 + e^{-z}) / z^2``
  (median over the expiries whose quotes reach both points), within ``[-0.9, 0.9]``;
* jumps (Merton, Bates): rare and large, a crash every ten years on average: ``lam = 0.1``,
  ``mu_j = -0.3`` (``+0.3`` when the smile slopes up), ``sigma_j = 0.3``. On real BTC and ETH
  surfaces this start reaches the better of the minima found from frequent small jumps
  (``lam = 1``, ``mu_j = -0.05``, ``sigma_j = 0.1``), which can drift to the edge of the
  box, in fewer iterations (``benchmarks/bench_calibration.py``); Kou ``lam = 1``,
  ``p = 0.4``, ``eta1 = 10``, ``eta2 = 8``.

Every value is then moved inside its default calibration box (``DEFAULT_BOUNDS``), a little
away from the edges, so the guess is always a valid first start of ``calibrate``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..models import GBM, Bates, Heston, Kou, Merton
from .bijections import DEFAULT_BOUNDS, FieldMap
from .objective import check_chain

MODELS: dict[str, type] = {"heston": Heston, "bates": Bates, "merton": Merton, "kou": Kou,
                           "gbm": GBM}
"""Lower-case model name -> parameter container class (the calibratable models)."""

KAPPA = 2.0
LAM, MU_J, SIGMA_J = 0.1, -0.3, 0.3
KOU_LAM = 1.0
KOU_P, KOU_ETA1, KOU_ETA2 = 0.4, 10.0, 8.0
RHO_LIMIT = 0.9
_Z25 = 0.674  # |d1| of a 25-delta option, in standard deviations
_EDGE_U = 4.0  # guesses stay within sigmoid(+-4) of each box: 1.8% from either edge


def model_type(model) -> type:
    """The model class of a name (``"heston"``, case-insensitive), a class or an instance.

    Raises:
      ValueError: an unknown name or a type that cannot be calibrated.
    """
    if isinstance(model, str):
        cls = MODELS.get(model.strip().lower())
        if cls is None:
            raise ValueError(f"unknown model {model!r}; choose one of: {', '.join(MODELS)}")
        return cls
    cls = model if isinstance(model, type) else type(model)
    if cls not in MODELS.values():
        raise ValueError(f"cannot calibrate a {cls.__name__}; choose one of: "
                         f"{', '.join(MODELS)}")
    return cls


def atm_term_structure(chain: pd.DataFrame) -> pd.DataFrame:
    """Per expiry of ``chain``: ATM implied vol and the smile's slope near the money.

    The ATM vol is the mid IV interpolated linearly in log-moneyness ``log(K/F)`` at 0 (the
    nearest quote's when the quotes do not straddle the forward). The slope is ``(iv(+x25) -
    iv(-x25)) / (2 x25)`` with ``x25 = 0.674 atm sqrt(T)`` (roughly the 25-delta call and
    put), NaN when the quotes do not reach both points.

    Returns:
      A DataFrame sorted by expiry: ``expiry_years``, ``atm_iv``, ``slope`` (vol per unit
      log-moneyness, decimals), ``n_quotes``.
    """
    check_chain(chain)
    t = chain["expiry_years"].to_numpy(np.float64)
    x = np.log(chain["strike"].to_numpy(np.float64) / chain["forward"].to_numpy(np.float64))
    iv = chain["mid_iv"].to_numpy(np.float64)
    frame = pd.DataFrame({"t": t, "x": x, "iv": iv})
    rows = []
    for texp, grp in frame.groupby("t", sort=True):
        smile = grp.groupby("x", sort=True)["iv"].mean()  # a put and a call at one strike
        xs, vs = smile.index.to_numpy(np.float64), smile.to_numpy(np.float64)
        atm = float(np.interp(0.0, xs, vs))
        x25 = _Z25 * atm * math.sqrt(texp)
        slope = math.nan
        if len(xs) >= 3 and xs[0] <= -x25 and xs[-1] >= x25 and x25 > 0:
            slope = float((np.interp(x25, xs, vs) - np.interp(-x25, xs, vs)) / (2.0 * x25))
        rows.append({"expiry_years": float(texp), "atm_iv": atm, "slope": slope,
                     "n_quotes": len(grp)})
    return pd.DataFrame(rows)


def _skew_factor(z: np.ndarray) -> np.ndarray:
    """``g(z) = 2 (z - 1 + e^{-z}) / z^2``: 1 at ``z = 0``, ``~2 / z`` for large ``z``."""
    z = np.maximum(np.asarray(z, np.float64), 1e-8)
    return 2.0 * (z + np.expm1(-z)) / (z * z)


def _heston_rho(ts: pd.DataFrame, xi: float, kappa: float) -> float:
    ok = ts["slope"].notna().to_numpy()
    if not ok.any():
        return 0.0
    t = ts["expiry_years"].to_numpy()[ok]
    rho = (ts["slope"].to_numpy()[ok] * 4.0 * ts["atm_iv"].to_numpy()[ok]
           / (xi * _skew_factor(kappa * t)))
    return float(np.clip(np.median(rho), -RHO_LIMIT, RHO_LIMIT))


def _inside(model_cls: type, values: dict[str, float]) -> dict[str, float]:
    """Move each value inside its default box, at least ``sigmoid(-4)`` from the edges."""
    out = {}
    for name, x in values.items():
        m: FieldMap = DEFAULT_BOUNDS[model_cls][name]
        if m.log:
            a, b = math.log(m.lo), math.log(m.hi)
            s = (math.log(max(x, m.lo)) - a) / (b - a)
        else:
            s = (x - m.lo) / (m.hi - m.lo)
        lim = 1.0 / (1.0 + math.exp(_EDGE_U))
        if lim <= s <= 1.0 - lim:
            out[name] = float(x)
            continue
        s = min(max(s, lim), 1.0 - lim)
        out[name] = math.exp(a + (b - a) * s) if m.log else m.lo + (m.hi - m.lo) * s
    return out


def initial_guess(model, chain: pd.DataFrame):
    """A data-driven first start for calibrating ``model`` to ``chain``.

    Args:
      model: ``"heston"``, ``"bates"``, ``"merton"``, ``"kou"`` or ``"gbm"`` (any case), the
        class, or an instance (only its type is used).
      chain: an option-chain table (``qmr.data.load_deribit``, ``qmr.data.synthetic_chain``).

    Returns:
      A model of that type with float parameters, valid and strictly inside the default
      calibration box of every field (see the module docstring for the rules).

    Raises:
      ValueError: an unknown model name, or a chain that cannot be calibrated to.

    Examples:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> import qmr_jax as qmr
      >>> from qmr_jax.calibration import initial_guess
      >>> from qmr_jax.data.synthetic import synthetic_chain
      >>> chain = synthetic_chain(qmr.Heston(v0=0.25, kappa=2.0, theta=0.3, xi=1.0, rho=-0.3))
      >>> guess = initial_guess("heston", chain)   # then qmr.calibrate(guess, chain)
    """
    cls = model_type(model)
    ts = atm_term_structure(chain)
    var = ts["atm_iv"].to_numpy() ** 2
    t = ts["expiry_years"].to_numpy()
    level = float(np.median(var))
    slope = ts["slope"].dropna()
    mu_j = -MU_J if len(slope) and float(np.median(slope)) > 0 else MU_J
    xi = float(np.clip(2.0 * math.sqrt(level), 0.3, 1.5))

    if cls in (Heston, Bates):
        n_end = min(2, len(var))
        short = float(np.mean(var[:n_end]))
        w_long, t_long = float(var[-1]), float(t[-1])
        if cls is Bates:
            jump_var = LAM * (mu_j**2 + SIGMA_J**2)
            short = max(short - jump_var, 0.25 * short)
            w_long = max(w_long - jump_var, 0.25 * w_long)
        # mean ATM variance to T: theta + (v0 - theta) f, f = (1 - e^{-kappa T}) / (kappa T)
        f = float(-np.expm1(-KAPPA * t_long) / (KAPPA * t_long))
        theta = w_long if f > 0.9 else (w_long - short * f) / (1.0 - f)
        theta = float(np.clip(theta, 0.25 * w_long, 4.0 * w_long))
        values = {"v0": short, "kappa": KAPPA, "theta": theta, "xi": xi,
                  "rho": _heston_rho(ts, xi, KAPPA)}
        if cls is Bates:
            values.update(lam=LAM, mu_j=mu_j, sigma_j=SIGMA_J)
    elif cls is Merton:
        jump_var = LAM * (mu_j**2 + SIGMA_J**2)
        values = {"sigma": math.sqrt(max(level - jump_var, 0.25 * level)), "lam": LAM,
                  "mu_j": mu_j, "sigma_j": SIGMA_J}
    elif cls is Kou:
        jump_var = KOU_LAM * (2.0 * KOU_P / KOU_ETA1**2 + 2.0 * (1.0 - KOU_P) / KOU_ETA2**2)
        values = {"sigma": math.sqrt(max(level - jump_var, 0.25 * level)), "lam": KOU_LAM,
                  "p": KOU_P, "eta1": KOU_ETA1, "eta2": KOU_ETA2}
    else:
        values = {"sigma": math.sqrt(level)}
    guess = cls(**_inside(cls, values))
    guess.validate()
    return guess


__all__ = ["MODELS", "initial_guess", "model_type", "atm_term_structure"]
