"""Deribit instrument names: ``BTC-26JUN26-70000-C`` -> coin, expiry, strike, call/put.

Deribit names its instruments ``COIN-DMMMYY-STRIKE-C|P`` (options), ``COIN-DMMMYY``
(futures), ``COIN-PERPETUAL`` (perpetuals), ``COIN_QUOTE`` (spot pairs) and
``COIN-CODE-...`` (combos such as ``BTC-FS-26JUN26_PERP``). The day has one or two digits,
the month three upper-case letters, the year two digits; every expiry is at 08:00 UTC. A
strike with a fraction writes its decimal point as ``d`` (``XRP_USDC-27JUN25-2d5-C``).

This module needs only the standard library, so that ``qmr_jax.book`` can read instrument
names without the data stack.
"""

from __future__ import annotations

import datetime
import re
from typing import NamedTuple

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
EXPIRY_HOUR_UTC = 8
"""Deribit options and futures expire at 08:00 UTC."""

INSTRUMENT_KINDS = ("option", "future", "perpetual", "spot", "combo")

_COIN = re.compile(r"[A-Z0-9]+(?:_[A-Z0-9]+)?")
_DATE = re.compile(r"(\d{1,2})([A-Z]{3})(\d{2})")
_STRIKE = re.compile(r"(\d+)(?:d(\d+))?")
_CODE = re.compile(r"[A-Z]+")
EXAMPLE = "BTC-26JUN26-70000-C"


class Instrument(NamedTuple):
    """A parsed Deribit instrument name.

    Attributes:
      name: the name as given.
      currency: the prefix (``"BTC"``; ``"BTC_USDC"`` for USDC-settled instruments).
      kind: one of ``INSTRUMENT_KINDS``.
      expiry: 08:00 UTC of the expiry date (options, futures; else ``None``), a timezone-aware
        ``datetime.datetime``.
      strike: USD strike (options; else ``None``).
      is_call: ``True`` for calls (options; else ``None``).
    """

    name: str
    currency: str
    kind: str
    expiry: datetime.datetime | None = None
    strike: float | None = None
    is_call: bool | None = None


def expiry_date(text: str) -> datetime.datetime:
    """08:00 UTC of a Deribit expiry date such as ``26JUN26`` or ``3APR26``.

    Raises:
      ValueError: not of the form ``DMMMYY``/``DDMMMYY`` or not a calendar date.
    """
    m = _DATE.fullmatch(text)
    if m is None or m.group(2) not in MONTHS:
        raise ValueError(f"{text!r} is not a Deribit expiry date such as 26JUN26 (day, "
                         "upper-case month, two-digit year)")
    day, month, year = int(m.group(1)), MONTHS.index(m.group(2)) + 1, 2000 + int(m.group(3))
    try:
        return datetime.datetime(year, month, day, EXPIRY_HOUR_UTC, tzinfo=datetime.UTC)
    except ValueError:
        raise ValueError(f"{text!r} is not a calendar date") from None


def parse_instrument(name) -> Instrument:
    """Parse a Deribit instrument name (see the module docstring).

    Examples:
      >>> parse_instrument("BTC-26JUN26-70000-C").strike
      70000.0
      >>> parse_instrument("ETH-PERPETUAL").kind
      'perpetual'

    Raises:
      ValueError: a name of none of Deribit's forms, an impossible date or a zero strike; the
        message quotes the name and says what is wrong (callers add the file and field).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"an instrument name must be a non-empty string such as {EXAMPLE}; "
                         f"got {name!r}")
    form = (f"not a Deribit instrument name: an option is COIN-DMMMYY-STRIKE-C or -P, e.g. "
            f"{EXAMPLE}; got {name!r}")
    parts = name.split("-")
    if not _COIN.fullmatch(parts[0]):
        raise ValueError(form)
    coin = parts[0]
    if len(parts) == 1:
        if "_" in coin:
            return Instrument(name, coin.split("_")[0], "spot")
        raise ValueError(form)
    if len(parts) == 2:
        if parts[1] == "PERPETUAL":
            return Instrument(name, coin, "perpetual")
        if _DATE.fullmatch(parts[1]):
            return Instrument(name, coin, "future", _checked_date(parts[1], name))
        raise ValueError(form)
    if _CODE.fullmatch(parts[1]):
        return Instrument(name, coin, "combo")
    if len(parts) != 4 or parts[3] not in ("C", "P"):
        raise ValueError(form)
    expiry = _checked_date(parts[1], name)
    m = _STRIKE.fullmatch(parts[2])
    if m is None:
        raise ValueError(f"{name!r}: strike {parts[2]!r} is not a number (digits, with 'd' "
                         "for a decimal point)")
    strike = float(m.group(1) + ("." + m.group(2) if m.group(2) else ""))
    if not strike > 0:
        raise ValueError(f"{name!r}: strike {parts[2]!r} must be positive")
    return Instrument(name, coin, "option", expiry, strike, parts[3] == "C")


def _checked_date(text: str, name: str) -> datetime.datetime:
    try:
        return expiry_date(text)
    except ValueError as exc:
        raise ValueError(f"{name!r}: expiry {exc}") from None


def instrument_name(currency: str, expiry: datetime.datetime, strike: float,
                    is_call: bool) -> str:
    """The Deribit name of an option (the date of ``expiry`` in UTC; ``d`` for a decimal
    point in the strike)."""
    day = expiry.astimezone(datetime.UTC) if expiry.tzinfo is not None else expiry
    k = float(strike)
    text = str(int(k)) if k.is_integer() else f"{k:.10g}".replace(".", "d")
    return (f"{currency}-{day.day}{MONTHS[day.month - 1]}{day.year % 100:02d}-{text}-"
            f"{'C' if is_call else 'P'}")


__all__ = ["Instrument", "parse_instrument", "expiry_date", "instrument_name", "MONTHS",
           "EXPIRY_HOUR_UTC", "INSTRUMENT_KINDS"]
