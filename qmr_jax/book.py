"""A book of option and linear positions on one coin, valued as one differentiable function.

A ``Book`` is a named list of ``Position``s on one underlying (``currency``: ``"BTC"``,
``"ETH"``, ...), quoted in USD against the model's spot:

* options: ``european`` (call/put, priced by Fourier), and the path-dependent ``digital``,
  ``asian``, ``barrier`` and ``lookback`` (priced by differentiable Monte Carlo,
  ``qmr_jax.pricing.mc_greeks.mc_value``) - the payoffs of ``qmr_jax.pricing.payoffs``;
* linear positions: ``spot`` (coins held), ``perpetual`` and ``future`` (USD-margined, with an
  entry price).

Units and conventions:

* ``quantity`` is in coins (one Deribit BTC or ETH option contract is one coin); negative is
  short. The book's ``multiplier`` (default 1) scales every position (coins per contract).
* Values are USD, discounted: ``Book.value`` returns one value per position, quantity and
  multiplier included.
* Linear positions: ``spot``: ``q S``; ``perpetual``: ``q (S - entry)`` (funding payments are
  not modelled); ``future`` expiring at ``T``: ``q (F(T) - entry) D(T)`` with
  ``F(T) = S exp((rate - div) T)`` and ``D(T) = exp(-rate T)`` (USD-margined, settled at
  ``T``).
* Settlement of options: ``"usd"`` (paid in USD) or ``"inverse"`` (Deribit style: settled in
  the coin, ``payoff_USD / S_T`` coins at expiry, so the premium is quoted in coin). An inverse
  option pays the USD payoff's worth of coin, so its USD value is the USD option's value and
  its premium in coin is ``value_USD / spot``; what changes is the currency of the P&L. A
  coin-margined account's delta of an inverse option is the premium-adjusted delta
  ``dV/dS - V/S`` coins (reported by the Greek tables).
* Expiries are years from the valuation date (ACT/365 when given as days, ``"30d"``). A book
  file may also give an absolute expiry (a date: 08:00 UTC, Deribit's expiry time; or a date
  and time) or a Deribit instrument name (``instrument = "BTC-26JUN26-70000-C"``); those are
  turned into ACT/365 years from the valuation time ``as_of`` (``[book] as_of`` or
  ``load_book(path, as_of=...)``), which ``Book.as_of`` keeps.
* Path-dependent options are monitored on ``steps`` equal simulation steps to expiry
  (default: daily, ``ceil(365 T)``), the grid of ``qmr_jax.pricing.payoffs``.

Valuation: ``book.bind(model, market)`` plans the pricing once and returns a ``BookValuer``,
a pure value function ``valuer(model, market, elapsed) -> [n_positions]`` usable under
``jax.jit``, ``jax.grad`` and the functions of ``qmr_jax.sensitivities``. All European options
are priced by one ``fourier_pricer`` (expiries as a column against a strike grid when that is
compact, else flat arrays); linear positions in closed form; each path-dependent position by
Monte Carlo with the key ``jax.random.fold_in(key, i)`` (``i`` its index in the book), so any
position can be revalued alone with the same numbers. ``Book.value(model, market, elapsed)``
is the same in one call.

Greeks: ``Book.greeks`` and ``Book.sensitivities`` give pandas tables per position (forward
mode), ``BookValuer.total_risk`` the book's gradient and Hessian in the risk coordinates (spot,
vol, rate, time) by reverse mode, ``BookValuer.position_risk`` the same per position by
forward mode.

Files: ``load_book(path)`` reads a TOML book (``[book]`` header and ``[[position]]`` entries,
see ``BOOK_FIELDS``); ``load_model(path)`` a TOML or JSON model file (``[model]`` with ``type``
and parameters, ``[market]`` with ``spot``, ``rate``, ``div``). Parsing is strict: an unknown,
missing or bad field raises ``ValueError`` naming the file, the line, the position (1-based
``#i`` and its ``name``) and the field; so do a file that is empty or not UTF-8 (with the line
of the first bad byte) and two positions with the same ``name`` (both lines: reports and
scenario tables are keyed by the positions' labels). Values outside physically meaningful
ranges are refused, in files and in ``Position``/``Book`` alike: ``|quantity|`` and
``|quantity| x multiplier`` at most ``MAX_QUANTITY`` coins, prices (strike, barrier, entry,
spot) in ``PRICE_RANGE``, ``cash`` and ``rebate`` at most ``MAX_CASH``, expiries in
``(0, MAX_EXPIRY_YEARS]``, ``multiplier`` in ``MULTIPLIER_RANGE``; so a book's totals are
always finite numbers. Optional fields left out take their documented defaults
(``rebate = 0``, ``cash = 1``, ``settlement = "usd"``). Unnamed positions whose generated
labels coincide are told apart by their index (``Book.labels``).

Example::

    import jax; jax.config.update("jax_enable_x64", True)
    import qmr_jax as qmr
    from qmr_jax.book import Book, Position

    book = Book("demo", "BTC", (
        Position.european(65_000.0, 30 / 365, True, -10.0, settlement="inverse"),
        Position.future(4.0, 90 / 365, 60_400.0),
        Position.spot(2.5),
    ))
    model = qmr.Heston(v0=0.36, kappa=2.0, theta=0.36, xi=1.0, rho=-0.25)
    market = qmr.Market(60_000.0, 0.04)
    valuer = book.bind(model, market)            # plans one Fourier pricer
    values = jax.jit(valuer)(model, market)      # [3] USD
    book.greeks(model, market)                   # DataFrame: delta (coin, USD), vega, ...
    valuer.total_risk(model, market).gradient    # d total / d(spot, vol, rate, time)
"""

from __future__ import annotations

import datetime
import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .models import MODELS, Market
from .pricing import payoffs as _payoffs
from .sensitivities import (
    Greeks,
    Sensitivities,
    greeks,
    input_names,
    parameter_sensitivities,
    shift_vol,
)

OPTION_TYPES = ("european", "digital", "asian", "barrier", "lookback")
MC_TYPES = ("digital", "asian", "barrier", "lookback")
LINEAR_TYPES = ("spot", "perpetual", "future")
POSITION_TYPES = OPTION_TYPES + LINEAR_TYPES
SETTLEMENTS = ("usd", "inverse")
DAYS_PER_YEAR = 365.0
DEFAULT_MC_PATHS = 20_000
RISK_COORDINATES = ("spot", "vol", "rate", "time")

# Physically meaningful ranges: anything outside is a typing error, and would overflow the
# book's totals (a quantity of 1e308 coins is worth inf USD).
MAX_QUANTITY = 1e9
"""Largest ``|quantity|`` of a position, and ``|quantity| x multiplier``, in coins."""
PRICE_RANGE = (1e-8, 1e9)
"""USD range of strikes, barriers, entry prices and the market's spot."""
MAX_CASH = 1e9
"""Largest USD ``cash`` of a digital and ``rebate`` of a barrier."""
MULTIPLIER_RANGE = (1e-9, 1e9)
"""Range of a book's ``multiplier`` (coins per unit of quantity)."""
MAX_EXPIRY_YEARS = 10.0
"""Longest expiry of a position, years."""
MAX_STEPS = 100_000
"""Most simulation steps of a Monte Carlo position."""


class PositionError(ValueError):
    """A bad value in one field of a position (``field`` names it)."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"field '{field_name}': {message}")
        self.field = field_name
        self.detail = message


# ------------------------------------------------------------------------------------------
# positions


@dataclass(frozen=True)
class Position:
    """One position of a book (build with the classmethods ``european``, ``digital``, ...).

    Attributes:
      type: one of ``POSITION_TYPES``.
      quantity: coins (negative: short).
      name: optional label.
      is_call: call or put (options).
      strike: USD strike (options; optional for a lookback: floating strike when absent).
      expiry: years (options and futures).
      settlement: ``"usd"`` or ``"inverse"`` (options; linear positions are ``"usd"``).
      cash: USD paid by a digital.
      barrier, barrier_kind, rebate: barrier level (USD), one of
        ``payoffs.BARRIER_KINDS``, and the USD rebate.
      entry: entry price of a perpetual or future (USD).
      steps: simulation steps to expiry of a Monte Carlo position (its monitoring grid);
        default daily.
      instrument: the Deribit instrument name the position was given by (options; a label:
        ``strike``, ``expiry`` and ``is_call`` are what is valued).
    """

    type: str
    quantity: float
    name: str | None = None
    is_call: bool | None = None
    strike: float | None = None
    expiry: float | None = None
    settlement: str = "usd"
    cash: float | None = None
    barrier: float | None = None
    barrier_kind: str | None = None
    rebate: float | None = None
    entry: float | None = None
    steps: int | None = None
    instrument: str | None = None

    def __post_init__(self):
        for f, default in _DEFAULT_VALUES.get(self.type, {}).items():
            if getattr(self, f) is None:
                object.__setattr__(self, f, default)
        _check_position(self)
        for f in ("quantity", "strike", "expiry", "cash", "barrier", "rebate", "entry"):
            v = getattr(self, f)
            if v is not None:
                object.__setattr__(self, f, float(v))
        if self.is_call is not None:
            object.__setattr__(self, "is_call", bool(self.is_call))

    # constructors -----------------------------------------------------------------------
    @classmethod
    def european(cls, strike, expiry, is_call=True, quantity=1.0, *, settlement="usd",
                 name=None) -> Position:
        """European call/put (priced by Fourier)."""
        return cls("european", quantity, name, is_call, strike, expiry, settlement)

    @classmethod
    def digital(cls, strike, expiry, is_call=True, quantity=1.0, *, cash=1.0,
                settlement="usd", steps=None, name=None) -> Position:
        """Cash-or-nothing digital paying ``cash`` USD (Monte Carlo)."""
        return cls("digital", quantity, name, is_call, strike, expiry, settlement, cash=cash,
                   steps=steps)

    @classmethod
    def asian(cls, strike, expiry, is_call=True, quantity=1.0, *, settlement="usd",
              steps=None, name=None) -> Position:
        """Arithmetic-average Asian over the ``steps`` simulation dates (Monte Carlo)."""
        return cls("asian", quantity, name, is_call, strike, expiry, settlement, steps=steps)

    @classmethod
    def barrier_option(cls, strike, expiry, barrier, barrier_kind="up-and-out", is_call=True,
                       quantity=1.0, *, rebate=0.0, settlement="usd", steps=None,
                       name=None) -> Position:
        """Knock-in/knock-out vanilla monitored on ``steps`` dates (Monte Carlo)."""
        return cls("barrier", quantity, name, is_call, strike, expiry, settlement,
                   barrier=barrier, barrier_kind=barrier_kind, rebate=rebate, steps=steps)

    @classmethod
    def lookback(cls, expiry, strike=None, is_call=True, quantity=1.0, *, settlement="usd",
                 steps=None, name=None) -> Position:
        """Lookback, floating strike without ``strike`` (Monte Carlo)."""
        return cls("lookback", quantity, name, is_call, strike, expiry, settlement,
                   steps=steps)

    @classmethod
    def spot(cls, quantity, *, name=None) -> Position:
        """Coins held: value ``q S``."""
        return cls("spot", quantity, name)

    @classmethod
    def perpetual(cls, quantity, entry, *, name=None) -> Position:
        """USD-margined perpetual: value ``q (S - entry)``."""
        return cls("perpetual", quantity, name, entry=entry)

    @classmethod
    def future(cls, quantity, expiry, entry, *, name=None) -> Position:
        """USD-margined future: value ``q (F(T) - entry) D(T)``."""
        return cls("future", quantity, name, expiry=expiry, entry=entry)

    # views ------------------------------------------------------------------------------
    @property
    def is_option(self) -> bool:
        return self.type in OPTION_TYPES

    @property
    def is_mc(self) -> bool:
        return self.type in MC_TYPES

    @property
    def label(self) -> str:
        """The name, else the instrument name, else a generated description
        (``"call 65000 30d"``)."""
        if self.name:
            return self.name
        if self.instrument:
            return self.instrument
        days = f"{self.expiry * DAYS_PER_YEAR:g}d" if self.expiry is not None else ""
        if self.is_option:
            cp = "call" if self.is_call else "put"
            k = f" {self.strike:g}" if self.strike is not None else " floating"
            prefix = "" if self.type == "european" else f"{self.type} "
            return f"{prefix}{cp}{k} {days}".strip()
        return f"{self.type} {days}".strip()

    def mc_steps(self) -> int:
        """Simulation steps of a Monte Carlo position (``steps`` or daily)."""
        if self.steps is not None:
            return int(self.steps)
        return max(1, math.ceil(self.expiry * DAYS_PER_YEAR - 1e-9))

    def payoff(self):
        """The ``qmr_jax.pricing.payoffs`` object of an option (per coin)."""
        if self.type == "european":
            return _payoffs.european(self.strike, self.expiry, self.is_call)
        if self.type == "digital":
            return _payoffs.digital(self.strike, self.expiry, self.is_call, self.cash)
        if self.type == "asian":
            return _payoffs.asian(self.strike, self.expiry, self.is_call)
        if self.type == "barrier":
            return _payoffs.barrier(self.strike, self.expiry, self.barrier, self.barrier_kind,
                                    self.is_call, self.rebate)
        if self.type == "lookback":
            return _payoffs.lookback(self.expiry, self.strike, self.is_call)
        raise TypeError(f"a {self.type} position has no option payoff")

    def as_row(self) -> dict[str, Any]:
        """Descriptive fields for tables."""
        return {
            "name": self.label,
            "type": self.type,
            "quantity": self.quantity,
            "call_put": (None if self.is_call is None else ("call" if self.is_call else "put")),
            "strike": self.strike,
            "expiry_days": None if self.expiry is None else self.expiry * DAYS_PER_YEAR,
            "settlement": self.settlement,
            "barrier": self.barrier,
            "barrier_kind": self.barrier_kind,
            "entry": self.entry,
        }


def _finite(name, v, rule=None, desc="finite"):
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        raise PositionError(name, f"must be a number; got {v!r}")
    x = float(v)
    if not math.isfinite(x) or (rule is not None and not rule(x)):
        raise PositionError(name, f"must be {desc}; got {v!r}")
    return x


# fields each type needs (beyond type and quantity) and may have
_REQUIRED = {
    "european": ("is_call", "strike", "expiry"),
    "digital": ("is_call", "strike", "expiry"),
    "asian": ("is_call", "strike", "expiry"),
    "barrier": ("is_call", "strike", "expiry", "barrier", "barrier_kind"),
    "lookback": ("is_call", "expiry"),
    "spot": (),
    "perpetual": ("entry",),
    "future": ("expiry", "entry"),
}
_OPTIONAL = {
    "european": ("settlement",),
    "digital": ("settlement", "cash", "steps"),
    "asian": ("settlement", "steps"),
    "barrier": ("settlement", "rebate", "steps"),
    "lookback": ("settlement", "strike", "steps"),
    "spot": (),
    "perpetual": (),
    "future": (),
}
_DEFAULT_VALUES = {"barrier": {"rebate": 0.0}, "digital": {"cash": 1.0}}
"""Values of optional fields left out (``None``), per position type."""


def _within(lo, hi):
    return lambda x: lo <= x <= hi


_PRICE = (_within(*PRICE_RANGE),
          f"a positive USD price in [{PRICE_RANGE[0]:g}, {PRICE_RANGE[1]:g}]")


def _check_position(p: Position) -> None:
    if p.type not in POSITION_TYPES:
        raise PositionError("type", f"unknown position type {p.type!r}; choose one of "
                            f"{', '.join(POSITION_TYPES)}")
    _finite("quantity", p.quantity, lambda x: abs(x) <= MAX_QUANTITY,
            f"a number of coins with |quantity| <= {MAX_QUANTITY:g}")
    if p.name is not None and (not isinstance(p.name, str) or not p.name.strip()):
        raise PositionError("name", f"must be a non-empty string (or left out); got "
                            f"{p.name!r}")
    if p.instrument is not None:
        if not p.is_option:
            raise PositionError("instrument", f"names an option; not a field of a {p.type} "
                                "position")
        if not isinstance(p.instrument, str) or not p.instrument.strip():
            raise PositionError("instrument", f"must be a non-empty string (or left out); "
                                f"got {p.instrument!r}")
    allowed = set(_REQUIRED[p.type]) | set(_OPTIONAL[p.type])
    for f in ("is_call", "strike", "expiry", "cash", "barrier", "barrier_kind", "rebate",
              "entry", "steps"):
        value = getattr(p, f)
        if f in _REQUIRED[p.type] and value is None:
            raise PositionError(f, f"required for a {p.type} position")
        if f not in allowed and value is not None:
            raise PositionError(f, f"not a field of a {p.type} position")
    if p.settlement not in SETTLEMENTS:
        raise PositionError("settlement", f"must be one of {', '.join(SETTLEMENTS)}; "
                            f"got {p.settlement!r}")
    if not p.is_option and p.settlement != "usd":
        raise PositionError("settlement", f"a {p.type} position is USD-margined")
    if p.is_call is not None and not isinstance(p.is_call, bool | np.bool_):
        raise PositionError("is_call", f"must be a boolean; got {p.is_call!r}")
    if p.strike is not None:
        _finite("strike", p.strike, *_PRICE)
    if p.expiry is not None:
        _finite("expiry", p.expiry, lambda x: 0 < x <= MAX_EXPIRY_YEARS,
                f"positive and at most {MAX_EXPIRY_YEARS:g} years")
    if p.cash is not None:
        _finite("cash", p.cash, lambda x: abs(x) <= MAX_CASH,
                f"a USD amount with |cash| <= {MAX_CASH:g}")
    if p.barrier is not None:
        _finite("barrier", p.barrier, *_PRICE)
    if p.barrier_kind is not None and p.barrier_kind not in _payoffs.BARRIER_KINDS:
        raise PositionError("barrier_kind", f"must be one of "
                            f"{', '.join(_payoffs.BARRIER_KINDS)}; got {p.barrier_kind!r}")
    if p.rebate is not None:
        _finite("rebate", p.rebate, _within(0.0, MAX_CASH),
                f"a USD amount in [0, {MAX_CASH:g}]")
    if p.entry is not None:
        _finite("entry", p.entry, *_PRICE)
    if p.steps is not None and (isinstance(p.steps, bool)
                                or not isinstance(p.steps, int | np.integer)
                                or not 1 <= p.steps <= MAX_STEPS):
        raise PositionError("steps", f"must be an integer in [1, {MAX_STEPS}]; got "
                            f"{p.steps!r}")


# ------------------------------------------------------------------------------------------
# the book


@dataclass(frozen=True)
class Book:
    """Positions on one coin.

    Attributes:
      name: the book's name (reports).
      currency: the coin, e.g. ``"BTC"`` or ``"ETH"`` (a label: the spot comes from the
        market).
      positions: the positions.
      multiplier: coins per unit of ``quantity`` (default 1).
      spot_source: where the spot comes from (a label for reports, e.g. an index name).
      description: free text.
      as_of: the valuation time the expiries were counted from (a timezone-aware UTC
        ``datetime``; ``None`` when every expiry was given in years).
    """

    name: str
    currency: str
    positions: tuple[Position, ...]
    multiplier: float = 1.0
    spot_source: str = ""
    description: str = ""
    as_of: datetime.datetime | None = None
    _plans: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"book name must be a non-empty string; got {self.name!r}")
        _check_currency(self.currency)
        if self.as_of is not None:
            object.__setattr__(self, "as_of", parse_time(self.as_of, what="as_of"))
        object.__setattr__(self, "positions", tuple(self.positions))
        if not self.positions:
            raise ValueError("a book needs at least one position")
        for i, p in enumerate(self.positions):
            if not isinstance(p, Position):
                raise TypeError(f"position {i} must be a Position; got {type(p).__name__}")
        m = self.multiplier
        lo, hi = MULTIPLIER_RANGE
        if isinstance(m, bool) or not isinstance(m, int | float | np.integer | np.floating) or (
                not (math.isfinite(m) and lo <= m <= hi)):
            raise ValueError(f"multiplier must be a positive number in [{lo:g}, {hi:g}]; got "
                             f"{m!r}")
        for i, p in enumerate(self.positions):
            if abs(p.quantity) * m > MAX_QUANTITY:
                raise ValueError(f"position #{i + 1} ({p.label!r}): quantity x multiplier = "
                                 f"{p.quantity:g} x {m:g} coins is beyond "
                                 f"{MAX_QUANTITY:g} coins")
        dup = duplicate_names(self.positions)
        if dup is not None:
            i, j = dup
            raise ValueError(f"positions #{i + 1} and #{j + 1} are both named "
                             f"{self.positions[j].name!r}; position names must be unique "
                             "(reports and scenario tables are keyed by them)")
        unique_labels(self.positions)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def labels(self) -> list[str]:
        """One unique label per position: its name, or a generated description
        (``Position.label``) followed by ``#i`` (1-based) where two would be equal."""
        return unique_labels(self.positions)

    @property
    def has_mc(self) -> bool:
        return any(p.is_mc for p in self.positions)

    def with_positions(self, positions: Sequence[Position]) -> Book:
        """The same book with other positions."""
        return replace(self, positions=tuple(positions), _plans={})

    def table(self):
        """The positions as a pandas DataFrame (descriptive fields)."""
        import pandas as pd

        return pd.DataFrame([p.as_row() for p in self.positions])

    # valuation --------------------------------------------------------------------------
    def bind(self, model, market: Market, *, key=None, n_paths: int = DEFAULT_MC_PATHS,
             method: str = "lewis", tol: float | None = None, mc_options=None) -> BookValuer:
        """Plan the valuation at ``model``/``market`` (concrete) and return the value function.

        Plans are cached on the book (by parameters, market, key and settings), so binding
        again at the same point returns the same valuer and its compiled functions.

        Args:
          model, market: concrete parameters to plan the Fourier pricer at.
          key: PRNG key of the Monte Carlo positions (required when the book has any).
          n_paths: Monte Carlo paths per path-dependent position.
          method, tol: of the ``fourier_pricer`` of the European options.
          mc_options: extra keyword arguments of ``mc_value`` (e.g. ``antithetic``,
            ``smoothing``).

        Returns:
          ``BookValuer``: ``valuer(model, market, elapsed=0.0) -> [n_positions]`` USD.
        """
        if not _is_concrete((model, market)):
            raise TypeError("Book.bind plans at concrete parameters; call it outside "
                            "jit/grad and transform the valuer it returns")
        sig = (type(model).__name__, tuple(float(v) for v in model),
               tuple(float(v) for v in market), int(n_paths),
               None if key is None else _key_id(key), method, tol,
               repr(sorted((mc_options or {}).items())))
        v = self._plans.get(sig)
        if v is None:
            v = BookValuer(self, model, market, key=key, n_paths=n_paths, method=method,
                           tol=tol, mc_options=mc_options)
            if len(self._plans) > 16:
                self._plans.clear()
            self._plans[sig] = v
        self._plans[("last", type(model).__name__)] = v
        return v

    def _valuer(self, model, market, key, n_paths) -> BookValuer:
        if _is_concrete((model, market)):
            return self.bind(model, market, key=key, n_paths=n_paths)
        v = self._plans.get(("last", type(model).__name__))
        if v is None:
            raise TypeError("Book.value under jit/grad needs a plan made at concrete "
                            "parameters: call book.bind(model, market) outside the "
                            "transformation (or Book.value once with concrete inputs)")
        return v.with_key(key, n_paths) if key is not None else v

    def value(self, model, market: Market, elapsed=0.0, *, key=None,
              n_paths: int = DEFAULT_MC_PATHS):
        """Per-position USD values ``[n_positions]`` (see ``bind``; the plan is cached)."""
        return self._valuer(model, market, key, n_paths)(model, market, elapsed)

    def greeks(self, model, market: Market, *, elapsed=0.0, key=None,
               n_paths: int = DEFAULT_MC_PATHS):
        """Per-position Greeks in market units as a pandas DataFrame (see ``greeks_table``)."""
        valuer = self._valuer(model, market, key, n_paths)
        return greeks_table(self, valuer.greeks(model, market, elapsed), market)

    def totals(self, model, market: Market, *, elapsed=0.0, key=None,
               n_paths: int = DEFAULT_MC_PATHS):
        """The book's total value and Greeks (reverse mode of the total, forward over reverse
        for the second order) in the units of ``greeks_table``, as a pandas Series."""
        valuer = self._valuer(model, market, key, n_paths)
        return totals_series(valuer.total_risk(model, market, elapsed).as_greeks(), market)

    def sensitivities(self, model, market: Market, *, elapsed=0.0, key=None,
                      n_paths: int = DEFAULT_MC_PATHS):
        """Per-position first derivatives w.r.t. spot, rate, div and every model parameter
        (per unit of each input), as a pandas DataFrame (one row per position)."""
        import pandas as pd

        valuer = self._valuer(model, market, key, n_paths)
        s = valuer.sensitivities(model, market, elapsed)
        grad = np.asarray(s.gradient, np.float64)
        df = pd.DataFrame(grad, columns=list(s.names))
        df.insert(0, "name", self.labels)
        df.insert(1, "value", np.asarray(s.value, np.float64))
        return df


def _name_key(name: str) -> str:
    return name.strip()


def duplicate_names(positions: Sequence[Position]) -> tuple[int, int] | None:
    """The 0-based indices ``(first, second)`` of the first two positions with the same
    ``name`` (surrounding spaces ignored), or ``None``."""
    seen: dict[str, int] = {}
    for j, p in enumerate(positions):
        if p.name is None:
            continue
        key = _name_key(p.name)
        if key in seen:
            return seen[key], j
        seen[key] = j
    return None


def unique_labels(positions: Sequence[Position]) -> list[str]:
    """``Position.label`` of each position, made unique: an unnamed position whose generated
    label equals another label gets ``" #i"`` (its 1-based index) appended."""
    labels = [p.label for p in positions]
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    out = [lab if (p.name is not None or counts[lab] == 1) else f"{lab} #{i + 1}"
           for i, (p, lab) in enumerate(zip(positions, labels, strict=True))]
    if len(set(out)) != len(out):  # a name that looks like a numbered generated label
        seen: dict[str, int] = {}
        for i, lab in enumerate(out):
            if lab in seen:
                raise ValueError(f"positions #{seen[lab] + 1} and #{i + 1} are both labelled "
                                 f"{lab!r}; give them distinct names")
            seen[lab] = i
    return out


def _is_concrete(tree) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(tree))


def _key_id(key):
    try:
        data = jax.random.key_data(key)
    except (TypeError, ValueError):
        data = key
    return tuple(np.asarray(data).ravel().tolist())


def _check_currency(c):
    if not isinstance(c, str) or not c.isalnum() or not 2 <= len(c) <= 10 or c != c.upper():
        raise ValueError(f"currency must be an upper-case coin code such as 'BTC' or 'ETH'; "
                         f"got {c!r}")


# ------------------------------------------------------------------------------------------
# the value function


class Risk(NamedTuple):
    """Values with their gradient and Hessian in the risk coordinates ``RISK_COORDINATES``.

    Coordinates: spot (USD), vol (a parallel shift of the model's vol inputs in vol units,
    see ``qmr_jax.sensitivities``), rate (continuous, per 1.00) and time (calendar years
    passed, spot/vol/rates held). Per position (``value [n]``, ``gradient [n, 4]``,
    ``hessian [n, 4, 4]``) or for the book's total (scalar, ``[4]``, ``[4, 4]``).
    """

    value: jax.Array
    gradient: jax.Array
    hessian: jax.Array

    def as_greeks(self) -> Greeks:
        """The trader's Greeks (raw units; see ``Greeks.in_market_units``)."""
        g, h = self.gradient, self.hessian
        return Greeks(value=self.value, delta=g[..., 0], gamma=h[..., 0, 0], vega=g[..., 1],
                      vanna=h[..., 0, 1], volga=h[..., 1, 1], theta=g[..., 3],
                      rho=g[..., 2])

    def total(self) -> Risk:
        """Sums over the positions."""
        return Risk(jnp.sum(self.value, axis=0), jnp.sum(self.gradient, axis=0),
                    jnp.sum(self.hessian, axis=0))


class BookValuer:
    """The book's value function, planned once: ``valuer(model, market, elapsed)``.

    Made by ``Book.bind``. Pure in ``(model, market, elapsed)``: jit it, differentiate it,
    pass it to ``qmr_jax.sensitivities.greeks``/``parameter_sensitivities``. Returns USD values
    per position (quantity and multiplier included), shape ``[n_positions]``.

    Attributes:
      book: the book.
      pricer: the ``FourierPricer`` of the European options (``None`` without any).
      key, n_paths: Monte Carlo settings of the path-dependent positions.
      market: the planning market (default market of calls).
    """

    def __init__(self, book: Book, model, market: Market, *, key=None,
                 n_paths: int = DEFAULT_MC_PATHS, method: str = "lewis",
                 tol: float | None = None, mc_options=None, _pricer=None):
        from .pricing.fourier import fourier_pricer

        model.validate()
        market.validate()
        self.book, self.market = book, market
        self.model_type = type(model)
        self.method, self.tol = method, tol
        self.key, self.n_paths = key, int(n_paths)
        self.mc_options = dict(mc_options or {})
        pos = book.positions
        n = len(pos)
        mult = float(book.multiplier)
        self.n_positions = n

        eur = [i for i, p in enumerate(pos) if p.type == "european"]
        lin = [i for i, p in enumerate(pos) if p.type in LINEAR_TYPES]
        mc = [i for i, p in enumerate(pos) if p.is_mc]
        self.mc_index = mc
        if mc and key is None:
            names = ", ".join(f"#{i + 1} {pos[i].label!r}" for i in mc[:3])
            raise ValueError(f"the book has Monte Carlo positions ({names}"
                             f"{', ...' if len(mc) > 3 else ''}): pass "
                             "key=jax.random.key(seed)")
        if mc:
            _mc_value()  # fail early with a clear message if it is unavailable
        order = eur + lin + mc
        self._perm = np.argsort(np.asarray(order, dtype=np.int64)) if order else None

        # European options: one pricer, strike grid against an expiry column when compact
        self.pricer = None
        self.layout = None
        if eur:
            strikes = np.array([pos[i].strike for i in eur], np.float64)
            expiries = np.array([pos[i].expiry for i in eur], np.float64)
            calls = np.array([bool(pos[i].is_call) for i in eur])
            uniq, row = np.unique(expiries, return_inverse=True)
            counts = np.bincount(row, minlength=uniq.size)
            width = int(counts.max())
            if uniq.size * width <= 2 * len(eur) + 8:
                self.layout = "grid"
                k_grid = np.empty((uniq.size, width))
                c_grid = np.zeros((uniq.size, width), bool)
                col = np.zeros(len(eur), np.int64)
                fill = np.zeros(uniq.size, np.int64)
                for j, r in enumerate(row):
                    col[j] = fill[r]
                    fill[r] += 1
                    k_grid[r, col[j]] = strikes[j]
                    c_grid[r, col[j]] = calls[j]
                for r in range(uniq.size):  # padding: repeat a strike of the row
                    k_grid[r, fill[r]:] = k_grid[r, 0]
                self._eur_flat = row * width + col
                args = (k_grid, uniq[:, None], c_grid)
            else:
                self.layout = "flat"
                self._eur_flat = np.arange(len(eur))
                args = (strikes, expiries, calls)
            self.pricer = _pricer if _pricer is not None else fourier_pricer(
                model, market, *args, method=method, tol=tol)
            self._eur_qty = np.array([pos[i].quantity for i in eur]) * mult

        # linear positions: q (F(t) - entry) D(t), t = 0 for spot and perpetuals
        self._lin_qty = np.array([pos[i].quantity for i in lin], np.float64) * mult
        self._lin_entry = np.array([pos[i].entry or 0.0 for i in lin], np.float64)
        self._lin_t = np.array([pos[i].expiry if pos[i].type == "future" else 0.0
                                for i in lin], np.float64)
        self._lin_is_future = np.array([pos[i].type == "future" for i in lin], bool)
        self._mc = [(i, pos[i].payoff(), pos[i].mc_steps(), pos[i].quantity * mult)
                    for i in mc]
        self._min_expiry = min((p.expiry for p in pos if p.expiry is not None),
                               default=math.inf)

    def with_key(self, key, n_paths: int | None = None) -> BookValuer:
        """The same plan with another Monte Carlo key (and number of paths)."""
        new = object.__new__(BookValuer)
        new.__dict__.update(self.__dict__)
        new.__dict__.pop("_compiled", None)
        new.key = key
        if n_paths is not None:
            new.n_paths = int(n_paths)
        return new

    def __call__(self, model, market: Market | None = None, elapsed=0.0):
        market = self.market if market is None else market
        if not any(isinstance(x, jax.core.Tracer)
                   for x in jax.tree_util.tree_leaves((model, market, elapsed))):
            if type(model) is not self.model_type:
                raise TypeError(f"the book was planned for {self.model_type.__name__}; got "
                                f"{type(model).__name__} (bind it again)")
            model.validate()
            market.validate()
            if not float(elapsed) < self._min_expiry:
                raise ValueError(f"elapsed={float(elapsed)!r} must be shorter than every "
                                 f"expiry of the book (shortest {self._min_expiry!r} years)")
        dtype = jnp.result_type(*jax.tree_util.tree_leaves((model, market)), float)
        parts = []
        if self.pricer is not None:
            prices = self.pricer(model, market, elapsed)
            parts.append(jnp.reshape(prices, (-1,))[self._eur_flat] * self._eur_qty)
        if self._lin_qty.size:
            t = jnp.where(self._lin_is_future, self._lin_t - elapsed, 0.0)
            lin = self._lin_qty * (market.forward(t) - self._lin_entry) * market.discount(t)
            parts.append(lin)
        if self._mc:
            mc_value = _mc_value()
            vals = []
            for i, payoff, steps, qty in self._mc:
                v = mc_value(model, market, payoff, elapsed,
                             key=jax.random.fold_in(self.key, i), n_paths=self.n_paths,
                             n_steps=steps, **self.mc_options)
                v = getattr(v, "value", v)
                vals.append(qty * jnp.reshape(jnp.asarray(v, dtype), ()))
            parts.append(jnp.stack(vals))
        values = jnp.concatenate([jnp.asarray(p, dtype) for p in parts])
        return values[self._perm]

    def batch(self, model, market: Market | None = None, elapsed=0.0):
        """USD values ``B + [n_positions]`` on a batch of states in one evaluation.

        The leaves of ``model`` and ``market`` carry leading batch axes that broadcast to a
        common shape ``B`` (e.g. ``v0`` of shape ``[n_vol, 1]`` against ``spot`` of shape
        ``[1, n_spot]`` for a vol x spot grid). The European options go through the pricer
        once, grouped so that the characteristic function and the Lewis geometry are
        evaluated once per distinct model and expiry and shared by every spot: a vol x spot
        grid costs little more than its vol column. Each group's trapezoid period covers the
        strikes seen from all of its spots, so values agree with ``__call__`` to the pricer's
        tolerance, not bit for bit. Linear positions use their closed forms. Path-dependent
        (Monte Carlo) positions are not supported here.
        """
        if self._mc:
            names = ", ".join(repr(self.book.positions[i].label) for i, *_ in self._mc[:3])
            raise ValueError(f"BookValuer.batch values European and linear positions; the "
                             f"book has Monte Carlo position(s) {names}")
        market = self.market if market is None else market
        leaves = jax.tree_util.tree_leaves((model, market))
        dtype = jnp.result_type(*leaves, float)
        shape = jnp.broadcast_shapes(*(jnp.shape(x) for x in leaves))
        parts = []
        if self.pricer is not None:
            opt = np.broadcast_shapes(*(np.shape(x) for x in (
                self.pricer.strikes, self.pricer.expiries, self.pricer.is_call)))
            grow = lambda x: jnp.reshape(x, jnp.shape(x) + (1,) * len(opt))
            prices = self.pricer(jax.tree_util.tree_map(grow, model),
                                 jax.tree_util.tree_map(grow, market), elapsed)
            prices = jnp.broadcast_to(prices, shape + opt).reshape(shape + (-1,))
            parts.append(prices[..., self._eur_flat] * self._eur_qty)
        if self._lin_qty.size:
            t = jnp.where(self._lin_is_future, self._lin_t - elapsed, 0.0)
            mk = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[..., None], market)
            lin = self._lin_qty * (mk.forward(t) - self._lin_entry) * mk.discount(t)
            parts.append(jnp.broadcast_to(lin, shape + (self._lin_qty.size,)))
        values = jnp.concatenate([jnp.asarray(p, dtype) for p in parts], axis=-1)
        return values[..., self._perm]

    # derivatives ------------------------------------------------------------------------
    def total(self, model, market: Market | None = None, elapsed=0.0):
        """The book's total USD value (a scalar)."""
        return jnp.sum(self(model, market, elapsed))

    def _jitted(self, name, fn):
        """``jax.jit(fn)``, compiled once per valuer and name."""
        cache = self.__dict__.setdefault("_compiled", {})
        if name not in cache:
            cache[name] = jax.jit(fn)
        return cache[name]

    def greeks(self, model, market: Market | None = None, elapsed=0.0) -> Greeks:
        """Per-position Greeks (raw units) by forward mode (``sensitivities.greeks``),
        compiled once per valuer."""
        market = self.market if market is None else market
        f = self._jitted("greeks", lambda m, mk, e: greeks(self, m, mk, elapsed=e))
        return f(model, market, elapsed)

    def sensitivities(self, model, market: Market | None = None, elapsed=0.0, *,
                      second_order: bool = False) -> Sensitivities:
        """Per-position derivatives w.r.t. spot, rate, div and the model parameters
        (forward mode; ``sensitivities.parameter_sensitivities``)."""
        market = self.market if market is None else market
        f = self._jitted(("sens", second_order), lambda m, mk, e: parameter_sensitivities(
            self, m, mk, elapsed=e, second_order=second_order, mode="forward")[1:])
        return Sensitivities(input_names(model), *f(model, market, elapsed))

    def total_sensitivities(self, model, market: Market | None = None, elapsed=0.0, *,
                            second_order: bool = True) -> Sensitivities:
        """Gradient (reverse mode) and Hessian (forward over reverse) of the total w.r.t.
        spot, rate, div and the model parameters."""
        market = self.market if market is None else market
        f = self._jitted(("total_sens", second_order), lambda m, mk, e: parameter_sensitivities(
            self.total, m, mk, elapsed=e, second_order=second_order, mode="reverse")[1:])
        return Sensitivities(input_names(model), *f(model, market, elapsed))

    def risk_fn(self, model, market: Market | None = None, *, total: bool = True):
        """``f(x)`` with ``x = (spot, dvol, rate, elapsed)`` around the point: the total
        (``total=True``) or the per-position values."""
        market = self.market if market is None else market
        fn = self.total if total else self

        def f(x):
            return fn(shift_vol(model, x[1]), market._replace(spot=x[0], rate=x[2]), x[3])

        return f

    def risk_point(self, market: Market | None = None, elapsed=0.0):
        """``x0 = (spot, 0, rate, elapsed)``: the point of ``risk_fn``."""
        market = self.market if market is None else market
        dtype = jnp.result_type(market.spot, float)
        return jnp.stack([jnp.asarray(market.spot, dtype), jnp.zeros((), dtype),
                          jnp.asarray(market.rate, dtype), jnp.asarray(elapsed, dtype)])

    def total_risk(self, model, market: Market | None = None, elapsed=0.0) -> Risk:
        """Total value, gradient (reverse mode) and Hessian (forward over reverse) in the
        risk coordinates (spot, vol, rate, time); compiled once per valuer."""
        market = self.market if market is None else market
        return self._jitted("total_risk", self._total_risk)(model, market, elapsed)

    def position_risk(self, model, market: Market | None = None, elapsed=0.0) -> Risk:
        """Per-position values, gradients ``[n, 4]`` and Hessians ``[n, 4, 4]`` in the risk
        coordinates, by forward over forward mode (the full Hessian behind
        ``sensitivities.greeks``, which keeps only gamma, vanna and volga); compiled once
        per valuer."""
        market = self.market if market is None else market
        return self._jitted("position_risk", self._position_risk)(model, market, elapsed)

    def _total_risk(self, model, market, elapsed):
        f = self.risk_fn(model, market)
        x0 = self.risk_point(market, elapsed)
        value, grad = jax.value_and_grad(f)(x0)
        hess = jax.jacfwd(jax.grad(f))(x0)
        return Risk(value, grad, hess)

    def _position_risk(self, model, market, elapsed):
        f = self.risk_fn(model, market, total=False)
        x0 = self.risk_point(market, elapsed)
        eye = jnp.eye(4, dtype=x0.dtype)

        def first(x):
            value = f(x)
            jac = jax.vmap(lambda t: jax.jvp(f, (x,), (t,))[1], out_axes=-1)(eye)
            return jac, value

        def directional(t):
            (jac, value), (djac, _) = jax.jvp(first, (x0,), (t,))
            return jac, value, djac

        jac, value, hess = jax.vmap(directional, out_axes=(None, None, -1))(eye)
        return Risk(value, jac, hess)

    def __repr__(self):
        return (f"BookValuer({self.book.name!r}, {self.n_positions} positions, "
                f"model={self.model_type.__name__}, pricer={self.pricer!r}, "
                f"mc_positions={len(self._mc)}, n_paths={self.n_paths})")


def _mc_value():
    """``qmr_jax.pricing.mc_greeks.mc_value``, imported when first needed."""
    try:
        from .pricing.mc_greeks import mc_value
    except ImportError as exc:
        raise NotImplementedError(
            "path-dependent positions (digital, asian, barrier, lookback) are valued by "
            "qmr_jax.pricing.mc_greeks.mc_value, which is not available in this "
            f"installation ({exc}); remove them from the book or price them with "
            "qmr_jax.mc_price") from None
    return mc_value


# ------------------------------------------------------------------------------------------
# tables


def _market_units(g: Greeks, spot: float) -> dict[str, np.ndarray]:
    """The columns of ``greeks_table`` (value and Greeks in market units) as arrays."""
    m = g.in_market_units()
    a = {k: np.asarray(v, np.float64) for k, v in m._asdict().items()}
    return {
        "value_usd": a["value"],
        "value_coin": a["value"] / spot,
        "delta_coin": a["delta"],
        "delta_usd": a["delta"] * spot,
        "gamma": a["gamma"],
        "gamma_coin_1pct": a["gamma"] * spot * 0.01,
        "vega_usd_vol_pt": a["vega"],
        "theta_usd_day": a["theta"],
        "rho_usd_pct": a["rho"],
        "vanna_coin_vol_pt": a["vanna"],
        "volga_usd_vol_pt2": a["volga"],
    }


def greeks_table(book: Book, g: Greeks, market: Market):
    """Per-position Greeks in the units people quote, as a pandas DataFrame.

    Columns: the position's descriptive fields (``Position.as_row``), then
    ``value_usd``; ``value_coin`` (= value / spot: the premium in coin of an inverse option);
    ``delta_coin`` (dV/dS, coins) and ``delta_usd`` (dV/dS x S); ``delta_coin_pa`` (the
    premium-adjusted delta ``dV/dS - V/S`` of a coin-margined account, inverse options only);
    ``gamma`` (d2V/dS2, coins per USD) and ``gamma_coin_1pct`` (change of the coin delta for a
    1% spot move); ``vega_usd_vol_pt`` (per vol point), ``theta_usd_day`` (per calendar day),
    ``rho_usd_pct`` (per 1% of rate), ``vanna_coin_vol_pt`` (change of the coin delta per vol
    point) and ``volga_usd_vol_pt2``.
    """
    import pandas as pd

    s = float(market.spot)
    cols = _market_units(g, s)
    rows = []
    labels = book.labels
    for i, p in enumerate(book.positions):
        row = {"position": i + 1, **p.as_row()}
        row["name"] = labels[i]
        for k, v in cols.items():
            row[k] = float(v[i])
            if k == "delta_usd":
                inverse = p.is_option and p.settlement == "inverse"
                row["delta_coin_pa"] = (float(cols["delta_coin"][i] - cols["value_coin"][i])
                                        if inverse else np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def totals_series(g: Greeks, market: Market):
    """Book totals (scalar ``Greeks``) in the units of ``greeks_table``, as a pandas Series."""
    import pandas as pd

    return pd.Series({k: float(v) for k, v in _market_units(g, float(market.spot)).items()})


# ------------------------------------------------------------------------------------------
# files

BOOK_HEADER_FIELDS = {
    "name": "book name (required)",
    "currency": "coin code, e.g. BTC or ETH (required)",
    "spot_source": "where the spot comes from (label, optional)",
    "multiplier": "coins per unit of quantity (optional, default 1)",
    "description": "free text (optional)",
    "as_of": "valuation time of absolute expiries and instrument names: a TOML datetime or "
             "an ISO string with a time of day, e.g. 2026-04-01T10:00:00Z (optional; "
             "load_book(path, as_of=...) wins)",
}
"""Fields of the ``[book]`` table."""

BOOK_FIELDS = {
    "name": "label, unique within the book (optional)",
    "type": "european, digital, asian, barrier, lookback, spot, perpetual or future",
    "quantity": "coins, negative for short (required; at most 1e9 in size)",
    "call_put": "'call' or 'put' (options)",
    "strike": "USD, in [1e-8, 1e9] (options; optional for a lookback: floating strike)",
    "expiry": "years, or a string with a unit: '30d', '2w', '0.5y', or an absolute date "
              "(2026-06-26: 08:00 UTC) or date and time (TOML or ISO; without a zone, UTC), "
              "counted from as_of; at most 10 years (options, futures)",
    "instrument": "a Deribit option name, e.g. BTC-26JUN26-70000-C: sets strike, call_put and "
                  "expiry (08:00 UTC of that date, counted from as_of), type european and "
                  "settlement inverse unless given; its coin must be the book's currency "
                  "(options)",
    "settlement": "'usd' (default) or 'inverse' (options)",
    "cash": "USD paid by a digital (default 1)",
    "barrier": "barrier level, USD (barrier)",
    "barrier_kind": "up-and-out, up-and-in, down-and-out or down-and-in (barrier)",
    "rebate": "USD rebate (barrier, default 0)",
    "entry": "entry price, USD (perpetual, future)",
    "steps": "simulation steps to expiry of a Monte Carlo position (default daily)",
}
"""Fields of a ``[[position]]`` entry."""

# file key -> Position attribute, per position type
_FILE_KEYS = {"call_put": "is_call"}


def _file_fields(ptype: str) -> tuple[set[str], set[str]]:
    """(required, optional) file keys of a position type."""
    to_file = {v: k for k, v in _FILE_KEYS.items()}
    req = {to_file.get(f, f) for f in _REQUIRED[ptype]} | {"type", "quantity"}
    opt = {to_file.get(f, f) for f in _OPTIONAL[ptype]} | {"name"}
    if ptype in OPTION_TYPES:
        opt.add("instrument")
    return req, opt


EXPIRY_HOUR_UTC = 8
"""Hour (UTC) of an expiry given as a date alone: Deribit's options expire at 08:00 UTC."""
SECONDS_PER_YEAR = DAYS_PER_YEAR * 86400.0
_ISO_DATE = re.compile(r"\s*\d{4}-\d{2}-\d{2}\s*")
_ISO_START = re.compile(r"\s*\d{4}-\d{2}-\d{2}")


def parse_time(value, *, date_hour: int | None = None, what: str = "time") -> datetime.datetime:
    """A timezone-aware UTC ``datetime`` from a datetime (naive: UTC), a date (``date_hour``
    o'clock UTC; refused when ``date_hour`` is None: a time of day is needed) or an ISO-8601
    string (``2026-06-26``, ``2026-06-26T08:00:00Z``, ``2026-06-26 08:00+02:00``).

    Raises:
      ValueError: anything else, saying what ``what`` must be.
    """
    if hasattr(value, "to_pydatetime") and not isinstance(value, str):
        value = value.to_pydatetime()  # a pandas Timestamp
    if isinstance(value, str):
        text = value.strip()
        if not _ISO_START.match(text):
            raise ValueError(f"{what} must be an ISO date or date and time such as "
                             f"2026-06-26T08:00:00Z; got {value!r}")
        try:
            if _ISO_DATE.fullmatch(text):
                value = datetime.date.fromisoformat(text)
            else:
                value = datetime.datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"{what} must be an ISO date or date and time such as "
                             f"2026-06-26T08:00:00Z; got {value!r} ({exc})") from None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=datetime.UTC)
        return value.astimezone(datetime.UTC)
    if isinstance(value, datetime.date):
        if date_hour is None:
            raise ValueError(f"{what} needs a time of day, e.g. {value.isoformat()}T10:00:00Z; "
                             f"got the date {value.isoformat()}")
        return datetime.datetime(value.year, value.month, value.day, date_hour,
                                 tzinfo=datetime.UTC)
    raise ValueError(f"{what} must be a datetime or an ISO string such as "
                     f"2026-06-26T08:00:00Z; got {value!r}")


def _is_absolute(value) -> bool:
    """An expiry given as a date or time rather than a time to expiry."""
    return (isinstance(value, datetime.date) and not isinstance(value, bool)) or (
        isinstance(value, str) and bool(_ISO_START.match(value)))


def years_between(start: datetime.datetime, end: datetime.datetime) -> float:
    """ACT/365 years from ``start`` to ``end`` (as ``qmr_jax.data``'s ``expiry_years``)."""
    return (end - start).total_seconds() / SECONDS_PER_YEAR


_UNITS = {"d": 1.0 / DAYS_PER_YEAR, "w": 7.0 / DAYS_PER_YEAR, "y": 1.0}


def parse_expiry(value) -> float:
    """Years from a number or a string with a unit (``"30d"``, ``"2w"``, ``"0.5y"``)."""
    if isinstance(value, datetime.date | datetime.time) or (
            isinstance(value, str) and re.fullmatch(r"\s*\d{4}-\d{2}-\d{2}.*", value)):
        raise ValueError(f"expected the time to expiry in years or with a unit ('30d', "
                         f"'0.25y'), not a date; got {value!r}")
    if isinstance(value, bool):
        raise ValueError(f"expected years or a string like '30d'; got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        scale = _UNITS.get(text[-1:]) if text else None
        number = text[:-1] if scale is not None else text
        try:
            x = float(number) * (scale or 1.0)
        except ValueError:
            raise ValueError(f"expected years or a string like '30d'; got {value!r}") from None
        return x
    raise ValueError(f"expected years or a string like '30d'; got {value!r}")


def read_text(path, *, expected: str = "text") -> str:
    """The UTF-8 text of a file (a leading byte-order mark dropped).

    Raises:
      ValueError: naming the file: unreadable, not UTF-8 (with the line and column of the
        first byte that does not decode) or empty (``expected`` says what it should hold).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[:exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 text: byte 0x{raw[exc.start]:02x} at "
                         f"column {column} does not decode ({exc.reason}); save the file as "
                         "UTF-8") from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise ValueError(f"{path}: the file is empty; expected {expected}")
    return text


def _parse_toml(path, text: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        raise ValueError(f"{_at(path, m and int(m.group(1)))}: not valid TOML: {exc}") from None


def _read_toml(path: Path, expected: str = "TOML") -> tuple[dict, str]:
    text = read_text(path, expected=expected)
    return _parse_toml(path, text), text


def _at(source, line: int | None) -> str:
    """``"file, line 12"`` (or ``"file"`` without a line)."""
    return f"{source}, line {line}" if line else f"{source}"


_TOML_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\[\]#]+?)\s*\]\]?\s*(?:#.*)?$")
_TOML_KEY = re.compile(r"""^\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)\s*[.=]""")


class _Lines:
    """Best-effort line numbers of the tables and keys of a TOML or JSON file, for messages.

    ``line(table, index, key)``: the line of ``key`` in the ``index``-th ``table`` (``""``:
    the top level; ``index`` counts ``[[table]]`` entries), else of the table's header, else
    ``None``. ``count(table)``: how many headers of ``table`` were seen (a caller trusts the
    numbers only when it equals the parsed number of entries).
    """

    def __init__(self, text: str | None = None):
        self._json: list[str] | None = None
        self._tables: dict[tuple[str, int], int] = {}
        self._keys: dict[tuple[str, int], dict[str, int]] = {("", 0): {}}
        self._counts: dict[str, int] = {}
        if text is None:
            return
        if text.lstrip().startswith("{"):  # JSON (a TOML file cannot start with "{")
            self._json = text.splitlines()
            return
        current = ("", 0)
        multiline = None
        for n, line in enumerate(text.splitlines(), 1):
            if multiline is not None:
                if line.count(multiline) % 2 == 1:
                    multiline = None
                continue
            m = _TOML_HEADER.match(line)
            if m:
                name = m.group(2).strip()
                k = 0
                if m.group(1) == "[[":
                    k = self._counts.get(name, 0)
                self._counts[name] = k + 1
                current = (name, k)
                self._tables[current] = n
                self._keys[current] = {}
                continue
            m = _TOML_KEY.match(line)
            if m:
                self._keys[current].setdefault(m.group(1).strip("\"'"), n)
                for quote in ('"""', "'''"):
                    if line.count(quote) % 2 == 1:
                        multiline = quote
                        break

    def count(self, table: str) -> int:
        return self._counts.get(table, 0)

    def line(self, table: str, index: int = 0, key: str | None = None) -> int | None:
        if self._json is not None:
            return self._json_line(table, key)
        header = self._tables.get((table, index))
        keys = self._keys.get((table, index), {})
        return keys.get(key, header) if key is not None else header

    def _json_line(self, table: str, key: str | None) -> int | None:
        start = 0
        if table:
            pattern = re.compile(rf'"{re.escape(table)}"\s*:')
            start = next((i for i, s in enumerate(self._json) if pattern.search(s)), -1)
            if start < 0:
                return None
            if key is None:
                return start + 1
        if key is None:
            return None
        pattern = re.compile(rf'"{re.escape(key)}"\s*:')
        found = next((i for i in range(start, len(self._json)) if pattern.search(self._json[i])),
                     None)
        return None if found is None else found + 1


def load_book(path, as_of=None) -> Book:
    """Read a TOML book file (see ``BOOK_HEADER_FIELDS``, ``BOOK_FIELDS``).

    Args:
      path: the TOML file.
      as_of: the valuation time that absolute expiries and instrument names are counted from
        (a datetime, naive meaning UTC, or an ISO string with a time of day); it wins over
        the file's ``[book] as_of``. Books whose expiries are all in years need neither.

    Raises:
      ValueError: unreadable, empty or non-UTF-8 file, bad TOML, an unknown/missing/bad
        field, two positions with the same name, a value outside its range (``MAX_QUANTITY``,
        ``PRICE_RANGE``, ...), an absolute expiry without a valuation time or at/before it,
        an instrument name that conflicts with the position's other fields or the book's
        currency; the message names the file, the line, the position (``#i``, 1-based, and
        its name) and the field.
    """
    path = Path(path)
    if as_of is not None:
        try:
            as_of = parse_time(as_of, what="as_of")
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    data, text = _read_toml(path, "a [book] table and [[position]] entries")
    return parse_book(data, source=str(path), text=text, as_of=as_of)


def parse_book(data: Mapping[str, Any], *, source: str = "<book>",
               text: str | None = None, as_of=None) -> Book:
    """Build a ``Book`` from the parsed TOML mapping (strict; see ``load_book``).

    ``text`` (the file's text, optional) puts line numbers in the messages; ``as_of`` (the
    valuation time) wins over ``[book] as_of``.
    """
    lines = _Lines(text)

    def fail(message, key=None, table="book"):
        return ValueError(f"{_at(source, lines.line(table, 0, key))}: "
                          f"{'[book]: ' if table == 'book' else ''}{message}")

    extra = sorted(set(data) - {"book", "position"})
    if extra:
        raise fail(f"unknown top-level key {extra[0]!r}; expected [book] and [[position]] "
                   "tables", extra[0], table="")
    header = data.get("book")
    if not isinstance(header, dict):
        raise ValueError(f"{source}: missing [book] table (fields: "
                         f"{', '.join(BOOK_HEADER_FIELDS)})")
    for k in header:
        if k not in BOOK_HEADER_FIELDS:
            raise fail(f"unknown field {k!r}; valid fields: {', '.join(BOOK_HEADER_FIELDS)}", k)
    for k in ("name", "currency"):
        if k not in header:
            raise fail(f"missing field {k!r}")
    for k in ("name", "currency", "spot_source", "description"):
        if k in header and not isinstance(header[k], str):
            raise fail(f"field {k!r} must be a string; got {header[k]!r}", k)
    if not header["name"].strip():
        raise fail(f"field 'name' must be a non-empty string; got {header['name']!r}", "name")
    try:
        _check_currency(header["currency"])
    except ValueError as exc:
        raise fail(f"field 'currency': {exc}", "currency") from None
    if as_of is not None:
        as_of = parse_time(as_of, what="as_of")
    elif "as_of" in header:
        try:
            as_of = parse_time(header["as_of"], what="field 'as_of'")
        except ValueError as exc:
            raise fail(f"{exc} (the valuation time of absolute expiries)", "as_of") from None
    mult = header.get("multiplier", 1.0)
    lo, hi = MULTIPLIER_RANGE
    if isinstance(mult, bool) or not isinstance(mult, int | float) or not (
            math.isfinite(mult) and lo <= mult <= hi):
        raise fail(f"field 'multiplier' must be a positive number in [{lo:g}, {hi:g}] (coins "
                   f"per unit of quantity); got {mult!r}", "multiplier")
    entries = data.get("position")
    if entries is None:
        raise ValueError(f"{source}: no [[position]] entries")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        line = lines.line("", 0, "position") or lines.line("position", 0)
        raise ValueError(f"{_at(source, line)}: 'position' must be an array of tables "
                         "([[position]] entries)")
    if not entries:
        raise ValueError(f"{source}: no [[position]] entries")
    trusted = lines.count("position") == len(entries)

    def pos_line(i, key=None):
        return lines.line("position", i, key) if trusted else None

    positions = [parse_position(e, index=i, source=source, line=pos_line(i),
                                key_lines={k: pos_line(i, k) for k in e}, as_of=as_of,
                                currency=header["currency"])
                 for i, e in enumerate(entries)]
    for i, p in enumerate(positions):
        if abs(p.quantity) * mult > MAX_QUANTITY:
            raise ValueError(f"{_at(source, pos_line(i, 'quantity'))}: position #{i + 1} "
                             f"({p.label!r}): field 'quantity': {p.quantity:g} x multiplier "
                             f"{mult:g} = {abs(p.quantity) * mult:g} coins is beyond "
                             f"{MAX_QUANTITY:g}")
    dup = duplicate_names(positions)
    if dup is not None:
        i, j = dup
        a, b = pos_line(i, "name"), pos_line(j, "name")
        where = f"{source}, lines {a} and {b}" if a and b else source
        raise ValueError(f"{where}: positions #{i + 1} and #{j + 1} are both named "
                         f"{positions[j].name!r}: field 'name' must be unique within a book "
                         "(reports and scenario tables are keyed by it)")
    try:
        return Book(name=header["name"], currency=header["currency"],
                    positions=tuple(positions), multiplier=float(mult),
                    spot_source=header.get("spot_source", ""),
                    description=header.get("description", ""), as_of=as_of)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def parse_position(entry: Mapping[str, Any], *, index: int = 0, source: str = "<book>",
                   line: int | None = None,
                   key_lines: Mapping[str, int | None] | None = None, as_of=None,
                   currency: str | None = None) -> Position:
    """One ``[[position]]`` table -> ``Position`` (``index`` is 0-based; messages say
    ``#index+1``; ``line`` and ``key_lines``, the lines of the entry's header and of each of
    its keys, optional, put line numbers in the messages).

    ``as_of`` (the valuation time) turns an absolute ``expiry`` or an ``instrument`` name
    into ACT/365 years; ``currency`` (the book's) must be the instrument's coin.
    """
    name = entry.get("name")
    label = f"position #{index + 1}" + (f" ({name!r})" if isinstance(name, str) else "")
    if as_of is not None:
        as_of = parse_time(as_of, what="as_of")

    def fail(field_name, message):
        ln = (key_lines or {}).get(field_name) or line
        return ValueError(f"{_at(source, ln)}: {label}: field '{field_name}': {message}")

    def years_to(when: datetime.datetime, field_name: str, given) -> float:
        if as_of is None:
            raise fail(field_name, f"an absolute expiry ({when:%Y-%m-%d %H:%M} UTC) needs the "
                       "valuation time: set as_of in [book] (e.g. as_of = "
                       "2026-04-01T10:00:00Z) or pass load_book(path, as_of=...)")
        years = years_between(as_of, when)
        if isinstance(given, datetime.date):
            given = given.isoformat()
        if years <= 0:
            raise fail(field_name, f"expires {when:%Y-%m-%d %H:%M} UTC, at or before as_of "
                       f"{as_of:%Y-%m-%d %H:%M:%S} UTC (a past expiry is not a position); "
                       f"got {given!r}")
        if years > MAX_EXPIRY_YEARS:
            raise fail(field_name, f"must be a positive time to expiry of at most "
                       f"{MAX_EXPIRY_YEARS:g} years; {when:%Y-%m-%d} is {years:.4g} years "
                       f"after as_of; got {given!r}")
        return years

    inst = None
    if "instrument" in entry:
        inst = _instrument(entry["instrument"], currency, fail)
    if "type" not in entry and inst is None:
        raise fail("type", f"missing; one of {', '.join(POSITION_TYPES)}")
    ptype = entry.get("type", "european")
    if ptype not in POSITION_TYPES:
        raise fail("type", f"unknown position type {ptype!r}; choose one of "
                   f"{', '.join(POSITION_TYPES)}")
    req, opt = _file_fields(ptype)
    for k in entry:
        if k not in req | opt:
            known = "known" if k in BOOK_FIELDS else "unknown"
            raise fail(k, f"{known} field not allowed for a {ptype} position; its fields: "
                       f"{', '.join(sorted(req | opt))}")
    given_by_instrument = {"type", "strike", "call_put", "expiry"} if inst else set()
    for k in sorted(req):
        if k not in entry and k not in given_by_instrument:
            raise fail(k, f"missing (required for a {ptype} position)")
    kwargs: dict[str, Any] = {}
    for k, v in entry.items():
        attr = _FILE_KEYS.get(k, k)
        if k in ("type", "instrument"):
            continue
        if k == "call_put":
            if v not in ("call", "put"):
                raise fail(k, f"must be 'call' or 'put'; got {v!r}")
            v = v == "call"
        elif k == "expiry":
            if _is_absolute(v):
                try:
                    when = parse_time(v, date_hour=EXPIRY_HOUR_UTC, what="an absolute expiry")
                except ValueError as exc:
                    raise fail(k, str(exc)) from None
                v = years_to(when, k, v)
            else:
                try:
                    years = parse_expiry(v)
                except ValueError as exc:
                    raise fail(k, str(exc)) from None
                if not (math.isfinite(years) and 0 < years <= MAX_EXPIRY_YEARS):
                    why = " (a past expiry is not a position)" if years <= 0 else ""
                    raise fail(k, f"must be a positive time to expiry of at most "
                               f"{MAX_EXPIRY_YEARS:g} years{why}; got {v!r}")
                v = years
        elif k == "steps":
            if isinstance(v, bool) or not isinstance(v, int):
                raise fail(k, f"must be a positive integer; got {v!r}")
        elif k in ("name", "settlement", "barrier_kind"):
            if not isinstance(v, str):
                raise fail(k, f"must be a string; got {v!r}")
        kwargs[attr] = v
    if inst is not None:
        years = years_to(inst.expiry, "instrument", inst.name)
        from_name = {"strike": inst.strike, "is_call": inst.is_call, "expiry": years}
        for attr, value in from_name.items():
            key = _FILE_NAMES.get(attr, attr)
            if attr not in kwargs:
                continue
            mine = kwargs[attr]
            same = (abs(mine - value) <= 1.0 / SECONDS_PER_YEAR if attr == "expiry"
                    else (mine == value if isinstance(mine, bool) else _same_number(mine, value)))
            if not same:
                shown = {"is_call": "call" if value else "put",
                         "expiry": f"{inst.expiry:%Y-%m-%d %H:%M} UTC ({value:.6g} years)"
                         }.get(attr, f"{value:g}")
                raise fail(key, f"conflicts with instrument {inst.name!r}, whose {key} is "
                           f"{shown}; got {entry[key]!r} (give one or the other)")
        kwargs.update(from_name)
        kwargs["instrument"] = inst.name
        kwargs.setdefault("settlement", "inverse")
    try:
        return Position(type=ptype, **kwargs)
    except PositionError as exc:
        raise fail(_FILE_NAMES.get(exc.field, exc.field), exc.detail) from None


def _same_number(a, b) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def _instrument(value, currency, fail):
    """The parsed Deribit option name of a position (``fail(field, message)`` raises)."""
    from .data.instruments import parse_instrument

    try:
        inst = parse_instrument(value)
    except ValueError as exc:
        raise fail("instrument", str(exc)) from None
    if inst.kind != "option":
        raise fail("instrument", f"{inst.name!r} is a Deribit {inst.kind}, not an option (a "
                   "future position takes type = 'future', expiry and entry)")
    if currency is not None and inst.currency != currency:
        raise fail("instrument", f"{inst.name!r} is an option on {inst.currency}; the book's "
                   f"currency is {currency}")
    return inst


_FILE_NAMES = {v: k for k, v in _FILE_KEYS.items()}


class ModelSpec(NamedTuple):
    """A model file: the model, the market and descriptive fields."""

    model: Any
    market: Market
    name: str
    source: str
    meta: dict


MODEL_FILE_KEYS = ("model", "market", "name", "description", "source", "meta")
"""Top-level keys of a model file (``meta``: free-form, e.g. calibration statistics)."""

_CALIBRATION_RESULT_KEYS = ("params", "converged", "rmse_iv", "settings")


def load_model(path) -> ModelSpec:
    """Read a model file (TOML, or JSON such as a calibration result with the same fields).

    Layout::

        name = "BTC Heston"            # optional; also description, source, [meta]
        [model]
        type = "heston"                # gbm, merton, kou, heston, bates
        v0 = 0.36                      # every parameter of the model
        ...
        [market]
        spot = 60000.0                 # required
        rate = 0.04                    # optional, default 0
        div = 0.0                      # optional, default 0

    Raises:
      ValueError: naming the file, the line (where it can be found), the table and the
        field: unreadable, empty or non-UTF-8 file, bad TOML/JSON, an unknown, missing or
        out-of-domain field (``Market.validate`` bounds ``rate`` and ``div``), a spot outside
        ``PRICE_RANGE``.
    """
    path = Path(path)
    expected = "a [model] table (type and parameters) and a [market] table (spot, rate, div)"
    if path.suffix.lower() == ".json":
        text = read_text(path, expected=expected)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{_at(path, exc.lineno)}: not valid JSON: {exc}") from None
    elif path.suffix.lower() == ".toml":
        data, text = _read_toml(path, expected)
    else:
        raise ValueError(f"{path}: a model file must end in .toml or .json")
    return parse_model_spec(data, source=str(path), text=text)


def _number(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)


def parse_model_spec(data: Mapping[str, Any], *, source: str = "<model>",
                     text: str | None = None) -> ModelSpec:
    """Build the model and market from a parsed model file (strict; see ``load_model``).

    ``text`` (the file's text, optional) puts line numbers in the messages.
    """
    lines = _Lines(text)

    def fail(message, table="", key=None):
        prefix = f"[{table}]: " if table else ""
        return ValueError(f"{_at(source, lines.line(table, 0, key))}: {prefix}{message}")

    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a table/object at the top level")
    for k in data:
        if k not in MODEL_FILE_KEYS:
            hint = ""
            if isinstance(data.get("model"), str) and any(
                    c in data for c in _CALIBRATION_RESULT_KEYS):
                hint = ("; this looks like a calibration result (qmr calibrate's "
                        "result.json), not a model file: copy its 'params' into a [model] "
                        f"table with type = {data['model'].lower()!r} and add a [market] "
                        "table (spot, rate, div)")
            raise fail(f"unknown top-level key {k!r}; valid keys: "
                       f"{', '.join(MODEL_FILE_KEYS)}{hint}", key=k)
    types = {cls.__name__.lower(): cls for cls in MODELS}
    m = data.get("model")
    if not isinstance(m, dict):
        raise fail("missing [model] table (type and parameters)"
                   if m is None else f"'model' must be a table (type and parameters); got "
                   f"{m!r}", key="model")
    if "type" not in m:
        raise fail(f"missing field 'type' (one of {', '.join(types)})", "model")
    cls = types.get(str(m["type"]).lower()) if isinstance(m["type"], str) else None
    if cls is None:
        raise fail(f"field 'type': unknown model {m['type']!r}; choose one of "
                   f"{', '.join(types)}", "model", "type")
    params = {}
    for k, v in m.items():
        if k == "type":
            continue
        if k not in cls._fields:
            raise fail(f"unknown field {k!r} for {cls.__name__}; parameters: "
                       f"{', '.join(cls._fields)}", "model", k)
        if not _number(v):
            raise fail(f"field {k!r} must be a finite number; got {v!r}", "model", k)
        params[k] = float(v)
    missing = [f for f in cls._fields if f not in params]
    if missing:
        raise fail(f"missing field {missing[0]!r} for {cls.__name__}; parameters: "
                   f"{', '.join(cls._fields)}", "model")
    model = cls(**params)
    try:
        model.validate()
    except ValueError as exc:
        field_name = str(exc).split(" ", 1)[0].split(".")[-1]
        raise fail(f"field {field_name!r}: {exc}", "model", field_name) from None
    mk = data.get("market")
    if not isinstance(mk, dict):
        raise fail("missing [market] table (spot, rate, div)"
                   if mk is None else f"'market' must be a table (spot, rate, div); got "
                   f"{mk!r}", key="market")
    for k, v in mk.items():
        if k not in Market._fields:
            raise fail(f"unknown field {k!r}; fields: {', '.join(Market._fields)}", "market",
                       k)
        if not _number(v):
            raise fail(f"field {k!r} must be a finite number; got {v!r}", "market", k)
    if "spot" not in mk:
        raise fail("missing field 'spot'", "market")
    lo, hi = PRICE_RANGE
    if not lo <= mk["spot"] <= hi:
        raise fail(f"field 'spot' must be a positive USD price in [{lo:g}, {hi:g}]; got "
                   f"{mk['spot']!r}", "market", "spot")
    market = Market(float(mk["spot"]), float(mk.get("rate", 0.0)), float(mk.get("div", 0.0)))
    try:
        market.validate()
    except ValueError as exc:
        field_name = str(exc).split(" ", 1)[0].split(".")[-1]
        raise fail(f"field {field_name!r}: {exc}", "market", field_name) from None
    for k in ("name", "description", "source"):
        if k in data and not isinstance(data[k], str):
            raise fail(f"field {k!r} must be a string; got {data[k]!r}", key=k)
    meta = data.get("meta", {})
    if not isinstance(meta, dict):
        raise fail("field 'meta' must be a table", key="meta")
    return ModelSpec(model, market, data.get("name", cls.__name__), source, meta)


__all__ = [
    "Book",
    "Position",
    "PositionError",
    "BookValuer",
    "Risk",
    "ModelSpec",
    "greeks_table",
    "totals_series",
    "load_book",
    "parse_book",
    "parse_position",
    "parse_expiry",
    "parse_time",
    "years_between",
    "load_model",
    "parse_model_spec",
    "read_text",
    "duplicate_names",
    "unique_labels",
    "MAX_QUANTITY",
    "PRICE_RANGE",
    "MAX_CASH",
    "MULTIPLIER_RANGE",
    "MAX_EXPIRY_YEARS",
    "MAX_STEPS",
    "POSITION_TYPES",
    "OPTION_TYPES",
    "MC_TYPES",
    "LINEAR_TYPES",
    "SETTLEMENTS",
    "RISK_COORDINATES",
    "BOOK_FIELDS",
    "BOOK_HEADER_FIELDS",
    "MODEL_FILE_KEYS",
    "DEFAULT_MC_PATHS",
]
