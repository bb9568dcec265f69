"""A user's own option chain: Deribit files, a simple CSV/Parquet schema and Deribit API JSON,
read into the option-chain table; the market (spot, flat basis) of a chain.

``load_chain`` reads, by content and extension:

* a Deribit parquet, raw snapshot CSV or data folder (``load_deribit``);
* the **simple schema** (``SIMPLE_COLUMNS``), a CSV or Parquet file with one row per quote:
  ``expiry``, ``strike``, ``type``, ``bid``, ``ask`` and ``forward`` and/or ``spot``, optional
  ``mark``, vols in percent, ``snapshot``, ``open_interest``, ``volume``, ``currency``;
  prices in USD (``price_unit="usd"``, the default) or in coin (``price_unit="coin"``);
* a **Deribit API response** of ``public/get_book_summary_by_currency`` (JSON: the JSON-RPC
  envelope ``{"jsonrpc": "2.0", "result": [...]}`` or the bare list; ``DERIBIT_API_FIELDS``):
  options named ``BTC-26JUN26-70000-C``, prices in coin, ``underlying_price`` the expiry's
  forward, ``estimated_delivery_price`` the index, ``creation_timestamp`` (ms) the snapshot,
  ``mark_iv`` in percent. Futures, perpetuals, spot pairs and combos are skipped with the
  reason ``not_an_option``.

Every format becomes raw Deribit rows and goes through the same steps as ``load_deribit``:
``check_integrity`` (rows that cannot be right dropped with a reason), ``normalise_deribit``
(the ``CHAIN_COLUMNS`` table with ``source_row``) and ``clean_chain`` (``CleaningRules``).
Conventions are Deribit's: Black-76 on the forward, no discounting, ACT/365 to the expiry
(08:00 UTC when only a date is given). Unusable input is refused with a ``ValueError`` naming
the file, the row (the file's own line number for text, the 0-based index for parquet rows
and JSON list elements) and the field.

``market_from_chain(chain, rate)`` gives the ``Market`` of one snapshot: its spot index and
the funding rate ``div = rate - basis`` of the flat basis fitted to the chain's forwards.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from . import deribit as _d
from .deribit import TICK, CleaningRules
from .instruments import EXPIRY_HOUR_UTC, instrument_name, parse_instrument

SIMPLE_COLUMNS = {
    "expiry": "expiry: an ISO date (2026-06-26, meaning 08:00 UTC, Deribit's expiry time) or "
              "a date and time (2026-06-26T08:00:00Z; without a zone, UTC)",
    "strike": "strike, USD",
    "type": "C, P, call or put",
    "bid": "best bid in price_unit (empty: no bid)",
    "ask": "best ask in price_unit (empty: no ask)",
    "forward": "the expiry's forward, USD (default: spot, i.e. no basis)",
    "spot": "spot index, USD (default: the forward of the snapshot's nearest expiry)",
    "mark": "mark price in price_unit (optional; default: priced from mark_iv, else the mid)",
    "bid_iv": "implied vol of the bid in percent, 55.3 for 55.3% (optional; prices an empty "
              "bid, else must roughly agree with it: IV_AGREEMENT)",
    "ask_iv": "implied vol of the ask in percent (optional; as bid_iv)",
    "mark_iv": "quoted mark vol in percent (optional; kept as deribit_mark_iv; prices an "
               "empty mark, else must agree with it)",
    "snapshot": "quote time, a date and time (without a zone, UTC); without this column "
                "load_chain needs as_of=",
    "open_interest": "open interest, contracts (optional)",
    "volume": "24h volume, contracts (optional)",
    "currency": "BTC or ETH (optional; else load_chain(currency=...))",
}
"""The simple chain schema: column -> meaning. Required: ``expiry``, ``strike``, ``type``,
``bid`` (or ``bid_iv``), ``ask`` (or ``ask_iv``) and ``forward`` or ``spot``. Any other column
is refused."""

SIMPLE_REQUIRED = ("expiry", "strike", "type", "bid", "ask", "forward or spot")

_SIMPLE_NUMERIC = ("strike", "bid", "ask", "mark", "forward", "spot", "bid_iv", "ask_iv",
                   "mark_iv", "open_interest", "volume")

PRICE_UNITS = ("usd", "coin")
"""Units of the simple schema's prices: USD per contract (one coin) or coin per contract
(Deribit's quotes; USD = coin x forward)."""

IV_PERCENT_RANGE = (1.0, 1000.0)
"""Accepted quoted vols, percent. A value in (0, 1) is refused as ambiguous (a decimal 0.55
written where 55 is meant); vols are in percent as Deribit quotes them."""

IV_AGREEMENT = (5.0, 10.0, 0.05)
"""``(vol points, ticks, fraction)``: a vol and a price given for the same quote must agree,
the vol's Black-76 price within ``5 vol points x vega + 10 ticks (1e-4 coin) + 5%`` of the
price. A loose check, for gross mistakes (a vol of another quote, on another forward): the
price is what is used. Deribit's own marks and mark vols differ by up to 50 ticks for deep
in-the-money puts and by a few percent for expiries hours away (quotes are gathered over
minutes); all 970,000 quotes of the shared data pass with a margin of 10 ticks."""

DERIBIT_API_FIELDS = {
    "instrument_name": "e.g. BTC-26JUN26-70000-C: coin, expiry (08:00 UTC), strike, call/put",
    "bid_price": "best bid, coin (null: no bid)",
    "ask_price": "best ask, coin (null: no ask)",
    "mark_price": "mark price, coin",
    "mark_iv": "Deribit's mark vol, percent (kept as deribit_mark_iv)",
    "underlying_price": "the expiry's forward, USD (Deribit's underlying for its vols)",
    "estimated_delivery_price": "the index, USD (the chain's spot)",
    "creation_timestamp": "milliseconds since 1970-01-01 UTC (the snapshot: the latest of the "
                          "response)",
    "open_interest": "open interest, contracts",
    "volume": "24h volume, contracts",
    "base_currency": "the coin (must match the instrument name)",
    "quote_currency": "the currency of the prices (an option's must be its coin)",
}
"""Fields of a ``get_book_summary_by_currency`` element that ``load_chain`` reads."""

DERIBIT_API_IGNORED = (
    "mid_price", "last", "last_price", "high", "low", "price_change", "volume_usd",
    "volume_notional", "volume_btc", "interest_rate", "underlying_index", "current_funding",
    "funding_8h", "open_interest_value", "delivery_price", "bid_iv", "ask_iv",
)
"""Documented fields of a book summary that ``load_chain`` ignores (ours are computed from the
prices); any other field is refused."""

API_ENVELOPE_KEYS = ("jsonrpc", "id", "result", "usIn", "usOut", "usDiff", "testnet")
"""Keys of the JSON-RPC envelope of a Deribit response."""

MAX_RESPONSE_SPAN_S = 300.0
"""Largest spread of ``creation_timestamp`` within one response, seconds: one response is one
snapshot; more means lists from different times pasted together."""

_MS_RANGE = (pd.Timestamp("2015-01-01", tz="UTC"), pd.Timestamp("2100-01-01", tz="UTC"))
_ISO_START = re.compile(r"\s*\d{4}-\d{2}-\d{2}")
_DATE_ONLY = re.compile(r"\s*\d{4}-\d{2}-\d{2}\s*")
_TYPES = {"C": True, "call": True, "P": False, "put": False}
_YEAR_SECONDS = 365.0 * 86400.0


# ------------------------------------------------------------------------------------------
# the entry point


def load_chain(source=None, *, currency: str | None = None, snapshot="last", clean: bool = True,
               rules: CleaningRules | None = None, return_dropped: bool = False,
               as_of=None, price_unit: str | None = None):
    """Load an option chain from a Deribit file, a simple CSV/Parquet or Deribit API JSON.

    The format is told by the content and the extension: a folder or a file with Deribit's
    raw columns (``instrument_name``, ``expiry_datetime``, ...) goes to ``load_deribit``; a
    CSV or Parquet file with an ``expiry`` column is the simple schema (``SIMPLE_COLUMNS``,
    documented in ``scenarios/chains/README.md``); a ``.json`` file (or one that starts with
    ``{`` or ``[``) is a Deribit ``public/get_book_summary_by_currency`` response
    (``DERIBIT_API_FIELDS``). All three go through ``check_integrity`` and ``CleaningRules``
    as ``load_deribit`` does and give the same table.

    Args:
      source: a file or a Deribit data folder; ``None``: the shared Deribit data
        (``load_deribit``'s default, ``$QMR_DATA_DIR``), currency BTC unless given.
      currency: ``"BTC"`` or ``"ETH"``; ``None`` for the only coin of the file (a file
        holding both needs it). A simple file without a ``currency`` column needs it.
      snapshot: ``"last"`` (default), ``"first"``, an ``int`` index, a time (the latest
        snapshot at or before it) or ``None`` for every snapshot (see ``load_deribit``).
      clean: apply ``rules`` (default ``CleaningRules()``).
      rules: the cleaning rules.
      return_dropped: also return the dropped rows with their ``reason``.
      as_of: the quote time of a simple file without a ``snapshot`` column (a datetime or
        an ISO string with a time of day; naive times are UTC); refused for files that carry
        their own times.
      price_unit: ``"usd"`` (default for the simple schema) or ``"coin"``; Deribit files and
        responses are in coin.

    Returns:
      The chain (``CHAIN_COLUMNS`` and ``source_row``), sorted by snapshot, expiry, strike;
      with ``return_dropped``, ``(chain, dropped)``. ``chain.attrs``: ``cleaning``
      (``cleaning_summary``), ``source``, ``source_row`` and ``format`` (``"deribit"``,
      ``"simple"`` or ``"deribit_api"``).

    Raises:
      FileNotFoundError: no such file or folder.
      ValueError: unreadable or malformed input, naming the file, the row and the field.
    """
    if source is None:
        if as_of is not None or price_unit not in (None, "coin"):
            raise ValueError("as_of and price_unit apply to a simple file; the default data "
                             "is Deribit's")
        from .deribit import load_deribit

        out = load_deribit(None, currency=currency or "BTC", snapshot=snapshot, clean=clean,
                           rules=rules, return_dropped=return_dropped)
        (out[0] if return_dropped else out).attrs["format"] = "deribit"
        return out
    p = Path(source)
    if not p.exists():
        raise FileNotFoundError(f"option chain file not found: {p}")
    if currency is not None and currency not in TICK:
        raise ValueError(f"{p}: currency must be one of {sorted(TICK)}; got {currency!r}")
    if price_unit is not None and price_unit not in PRICE_UNITS:
        raise ValueError(f"{p}: price_unit must be one of {', '.join(PRICE_UNITS)}; got "
                         f"{price_unit!r}")
    kind = _format(p)
    common = dict(currency=currency, snapshot=snapshot, clean=clean, rules=rules,
                  return_dropped=return_dropped)
    if kind != "simple":
        if as_of is not None:
            what = "Deribit API response" if kind == "deribit_api" else "Deribit file"
            raise ValueError(f"{p}: as_of is for simple files without snapshot times; this "
                             f"{what} carries its own (choose one with snapshot=)")
        if price_unit not in (None, "coin"):
            raise ValueError(f"{p}: Deribit prices are in coin; price_unit={price_unit!r} "
                             "applies to the simple schema only")
    if kind == "deribit":
        out = _load_deribit(p, **common)
    elif kind == "deribit_api":
        out = _load_api(p, **common)
    else:
        out = _load_simple(p, as_of=as_of, price_unit=price_unit or "usd", **common)
    chain = out[0] if return_dropped else out
    chain.attrs["format"] = kind
    return out


def _format(p: Path) -> str:
    """``"deribit"``, ``"simple"`` or ``"deribit_api"``, from the extension and the content."""
    if p.is_dir():
        return "deribit"
    suffix = p.suffix.lower()
    if suffix == ".json":
        return "deribit_api"
    try:
        with p.open("rb") as f:
            head = f.read(65536)
    except OSError as exc:
        raise ValueError(f"{p}: cannot read the file ({exc.strerror or exc})") from None
    if not head.lstrip(b"\xef\xbb\xbf \t\r\n"):
        raise ValueError(f"{p}: empty file; expected an option chain (the simple schema's "
                         f"columns {', '.join(SIMPLE_REQUIRED)}, a Deribit chain or a Deribit "
                         "API response)")
    if suffix == ".parquet" or (suffix != ".csv" and head.startswith(b"PAR1")):
        names = _parquet_names(p)
    elif suffix != ".csv" and head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"["):
        return "deribit_api"
    else:
        names = _csv_header(p, head)
    if "expiry" in names:
        return "simple"
    if "instrument_name" in names or "expiry_datetime" in names:
        return "deribit"
    raise ValueError(
        f"{p}: neither the simple chain schema (columns {', '.join(SIMPLE_REQUIRED)}; see "
        f"scenarios/chains/README.md) nor a Deribit chain (columns "
        f"{', '.join(_d.RAW_COLUMNS)}); the header has {', '.join(map(repr, names)) or 'none'}")


def _parquet_names(p: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(p).names)
    except Exception as exc:  # pyarrow's errors on a damaged or foreign file
        raise ValueError(f"{p}: cannot read the parquet file ({exc})") from exc


def _csv_header(p: Path, head: bytes) -> list[str]:
    """The column names on the first non-blank line (the rest is checked when read)."""
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    text = head.decode("utf-8", errors="replace")
    for line in text.splitlines():
        if line.strip():
            return [c.strip().strip('"') for c in line.split(",")]
    return []


# ------------------------------------------------------------------------------------------
# Deribit files


def _load_deribit(p: Path, *, currency, snapshot, clean, rules, return_dropped):
    if currency is None:
        currency = _only_currency(p)
    return _d.load_deribit(p, currency, snapshot, clean=clean, rules=rules,
                           return_dropped=return_dropped)


def _only_currency(p: Path) -> str:
    """The one coin of a Deribit file or folder (refused when it has several)."""
    f = _d._resolve(p)
    if f.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(f).names
        except Exception as exc:
            raise ValueError(f"{f}: cannot read the Deribit chain ({exc})") from exc
        if "currency" not in names:
            raise ValueError(f"{f}: missing column(s) 'currency' (a Deribit chain needs "
                             f"{', '.join(_d.RAW_COLUMNS)})")
        coins = pd.read_parquet(f, columns=["currency"])["currency"]
    else:
        raw = _d.read_deribit_raw(f)
        coins = raw["currency"]
    found = sorted(str(c) for c in coins.dropna().unique())
    if len(found) != 1:
        raise ValueError(f"{f}: the file holds {', '.join(found) or 'no'} options; pass "
                         "currency='BTC' or 'ETH'")
    if found[0] not in TICK:
        raise ValueError(f"{f}: currency {found[0]!r} is not one of {sorted(TICK)}")
    return found[0]


# ------------------------------------------------------------------------------------------
# times and snapshots


def _utc(value, what: str, where: str, *, date_hour: int | None = None) -> pd.Timestamp:
    """A time from a datetime, a date or an ISO string; naive times are UTC. A date alone
    is ``date_hour``:00 UTC, or refused (``date_hour=None``: a time of day is needed).
    Messages start with ``where`` (the file, and the row)."""
    if isinstance(value, pd.Timestamp | datetime.datetime | np.datetime64):
        ts = pd.Timestamp(value)
    elif isinstance(value, datetime.date):
        if date_hour is None:
            raise ValueError(f"{where}: {what} needs a time of day, e.g. "
                             f"{value.isoformat()}T10:00:00Z; got the date {value.isoformat()}")
        ts = pd.Timestamp(value) + pd.Timedelta(hours=date_hour)
    elif isinstance(value, str) and _ISO_START.match(value):
        if _DATE_ONLY.fullmatch(value):
            if date_hour is None:
                raise ValueError(f"{where}: {what} needs a time of day, e.g. "
                                 f"{value.strip()}T10:00:00Z; got {value!r}")
            ts = pd.Timestamp(value.strip()) + pd.Timedelta(hours=date_hour)
        else:
            ts = pd.to_datetime(pd.Series([value.strip()]), format="ISO8601", errors="coerce")
            ts = ts.iloc[0] if ts.dtype.kind == "M" else pd.NaT
    else:
        ts = pd.NaT
    if ts is pd.NaT or pd.isna(ts):
        example = "2026-06-26 or 2026-06-26T08:00:00Z" if date_hour is not None else (
            "2026-04-01T10:00:00Z")
        raise ValueError(f"{where}: {what} must be an ISO time such as {example}; got "
                         f"{_d._show(value)}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _column_times(t: pd.DataFrame, column: str, source, *, date_hour: int | None):
    """UTC times of a column (each distinct cell parsed once); a bad cell is refused with
    its row."""
    codes, uniques = pd.factorize(t[column], use_na_sentinel=True)
    if (codes < 0).any():
        i = int(np.flatnonzero(codes < 0)[0])
        raise ValueError(f"{source}: {_d._where(t, i)}: field {column!r} is empty")
    parsed = []
    for j, v in enumerate(uniques):
        i = int(np.flatnonzero(codes == j)[0])
        parsed.append(_utc(v, f"field {column!r}", f"{source}: {_d._where(t, i)}",
                           date_hour=date_hour))
    values = pd.DatetimeIndex(parsed).as_unit("us")
    return pd.Series(values[codes], index=t.index)


def _choose_snapshot(p, stamps, snapshot, currency):
    """The snapshot time chosen among ``stamps`` (sorted unique), ``None`` for every one."""
    if snapshot is None:
        return None
    if isinstance(snapshot, str) and snapshot.endswith(".csv"):
        raise ValueError(f"{p}: snapshot={snapshot!r} names a Deribit snapshot file; this file "
                         "is not one (choose by 'first', 'last', an index or a time)")
    choice = _d._snapshot_time(p, snapshot)
    return _d._choose_stamp(p, currency, pd.Series(stamps), choice)


# ------------------------------------------------------------------------------------------
# the simple schema


def _read_table(p: Path) -> pd.DataFrame:
    """A simple-schema file as a table with ``source_row``, numeric columns as floats."""
    if p.suffix.lower() == ".parquet" or (p.suffix.lower() != ".csv"
                                          and p.read_bytes()[:4] == b"PAR1"):
        try:
            t = pd.read_parquet(p)
        except Exception as exc:
            raise ValueError(f"{p}: cannot read the parquet file ({exc})") from exc
        t = t.reset_index(drop=True)
        t["source_row"] = np.arange(len(t), dtype=np.int64)
        t.attrs["source_row"] = _d._PARQUET_ROW
        t.attrs["truncated"] = []
        _d._to_numbers(t, p, [c for c in _SIMPLE_NUMERIC if c in t.columns])
    else:
        t = _d._read_csv(p, what="a simple chain CSV", columns=SIMPLE_REQUIRED,
                         numeric=_SIMPLE_NUMERIC)
    t.attrs["source"] = str(p)
    return t


def _load_simple(p: Path, *, currency, snapshot, clean, rules, return_dropped, as_of,
                 price_unit):
    t = _read_table(p)
    names = [c for c in t.columns if c != "source_row"]
    unknown = [c for c in names if c not in SIMPLE_COLUMNS]
    if unknown:
        raise ValueError(f"{p}: unknown column(s) {', '.join(map(repr, unknown))}; the simple "
                         f"chain schema has {', '.join(SIMPLE_COLUMNS)} (see "
                         "scenarios/chains/README.md)")
    missing = [repr(c) for c in ("expiry", "strike", "type") if c not in names]
    missing += [f"{c!r} (or {c}_iv)" for c in ("bid", "ask")
                if c not in names and f"{c}_iv" not in names]
    if "forward" not in names and "spot" not in names:
        missing.append("'forward' or 'spot'")
    if missing:
        raise ValueError(f"{p}: missing column(s) {', '.join(missing)} (the simple chain "
                         f"schema needs {', '.join(SIMPLE_REQUIRED)})")
    truncated = t.attrs.get("truncated", [])
    if t.empty and not truncated:
        raise ValueError(f"{p}: no data rows, only the header")

    # currency
    if "currency" in names:
        col = t["currency"]
        bad = ~col.isin(list(TICK)).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{p}: {_d._where(t, i)}: field 'currency' must be one of "
                             f"{sorted(TICK)}; got {_d._show(col.iloc[i])}")
        found = sorted(col.unique())
        if currency is None:
            if len(found) > 1:
                raise ValueError(f"{p}: the file holds {', '.join(found)} options; pass "
                                 "currency='BTC' or 'ETH'")
            currency = found[0] if found else None
    if currency is None:
        raise ValueError(f"{p}: which coin? pass currency='BTC' or 'ETH' (or add a 'currency' "
                         "column)")

    # times
    if "snapshot" in names:
        if as_of is not None:
            raise ValueError(f"{p}: the file has a 'snapshot' column; as_of is for files "
                             "without one (choose a snapshot with snapshot=)")
        snap = _column_times(t, "snapshot", p, date_hour=None)
    else:
        if as_of is None:
            raise ValueError(f"{p}: no 'snapshot' column: pass as_of= (the quotes' time, e.g. "
                             "'2026-04-01T10:00:00Z') or add a 'snapshot' column")
        when = _utc(as_of, "as_of", str(p))
        snap = pd.Series(pd.DatetimeIndex(np.full(len(t), when)).as_unit("us"), index=t.index)
    expiry = _column_times(t, "expiry", p, date_hour=EXPIRY_HOUR_UTC)

    # identifiers
    strike = t["strike"].to_numpy(np.float64)
    _refuse(t, p, ~(np.isfinite(strike) & (strike > 0)), "strike",
            "must be a finite positive number (USD)")
    kinds = t["type"].map(lambda v: _TYPES.get(v.strip() if isinstance(v, str) else v))
    _refuse(t, p, kinds.isna().to_numpy(), "type", "must be C, P, call or put")
    is_call = kinds.to_numpy(bool)
    spot = t["spot"].to_numpy(np.float64) if "spot" in names else None
    if "forward" in names:
        forward = t["forward"].to_numpy(np.float64)
        _refuse(t, p, ~(np.isfinite(forward) & (forward > 0)), "forward",
                "must be a finite positive number (USD)")
    else:
        forward = spot
        _refuse(t, p, ~(np.isfinite(forward) & (forward > 0)), "spot",
                "must be a finite positive number (USD; it is the forward of a file without "
                "a 'forward' column)")
    years = ((expiry - snap).dt.total_seconds() / _YEAR_SECONDS).to_numpy()
    if spot is None:
        spot = _nearest_forward(snap, expiry, forward)

    # vols (percent) and prices
    vols = {}
    for c in ("bid_iv", "ask_iv", "mark_iv"):
        if c in names:
            vols[c] = _percent_vols(t, p, c)
    prices = {c: t[c].to_numpy(np.float64) if c in names else np.full(len(t), np.nan)
              for c in ("bid", "ask", "mark")}
    _check_unit(t, p, prices, forward, price_unit)
    # coin per contract, as Deribit quotes (USD = coin x forward)
    coin = {c: v if price_unit == "coin" else v / forward for c, v in prices.items()}
    for side in ("bid", "ask", "mark"):
        iv = vols.get(f"{side}_iv")
        if iv is not None:
            coin[side] = _with_vols(t, p, side, coin[side], iv, forward, strike, years,
                                    is_call, price_unit)
    if "mark" not in names:  # no mark price: the mark vol's price, else the mid
        mid = 0.5 * (coin["bid"] + coin["ask"])
        coin["mark"] = np.where(np.isfinite(coin["mark"]), coin["mark"], mid)

    raw = pd.DataFrame({
        "timestamp": snap.map(pd.Timestamp.isoformat).to_numpy(object),
        "instrument_name": _names(currency, expiry, strike, is_call),
        "underlying": forward,
        "option_type": np.where(is_call, "call", "put").astype(object),
        "strike": strike,
        "expiry_datetime": expiry.map(pd.Timestamp.isoformat).to_numpy(object),
        "bid_price": coin["bid"],
        "ask_price": coin["ask"],
        "mark_price": coin["mark"],
        "implied_volatility": vols.get("mark_iv", np.full(len(t), np.nan)),
        "open_interest": (t["open_interest"].to_numpy(np.float64) if "open_interest" in names
                          else np.nan),
        "volume": t["volume"].to_numpy(np.float64) if "volume" in names else np.nan,
        "currency": (t["currency"].to_numpy(object) if "currency" in names
                     else np.full(len(t), currency, object)),
        "index_price": spot,
        "source_row": t["source_row"].to_numpy(np.int64),
    })
    keep = (raw["currency"] == currency).to_numpy().copy()
    stamps = pd.Series(snap[keep].unique()).sort_values()
    if not len(stamps) and not truncated:
        raise ValueError(f"{p}: no {currency} rows")
    if len(stamps):
        chosen = _choose_snapshot(p, stamps, snapshot, currency)
        if chosen is not None:
            keep &= (snap == chosen).to_numpy()
    raw = raw.loc[keep].reset_index(drop=True)
    raw.attrs.update(source=str(p), source_row=t.attrs["source_row"], truncated=truncated,
                     fields=_simple_fields("forward" in names))
    return _d._chain_of_raw(raw, clean=clean, rules=rules, return_dropped=return_dropped,
                            optional=("open_interest", "volume", "implied_volatility"))


def _simple_fields(has_forward: bool) -> dict:
    """Raw Deribit column -> the simple schema's name, for messages."""
    return {"instrument_name": "expiry/strike/type", "underlying":
            "forward" if has_forward else "spot", "index_price": "spot", "bid_price": "bid",
            "ask_price": "ask", "mark_price": "mark", "implied_volatility": "mark_iv",
            "option_type": "type", "expiry_datetime": "expiry", "timestamp": "snapshot"}


def _refuse(t, source, bad, field, rule):
    """Raise for the first row of ``bad``, naming the file, its row and the field."""
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{source}: {_d._where(t, i)}: field {field!r} {rule}; got "
                         f"{_d._show(t[field].iloc[i])}")


def _names(currency, expiry, strike, is_call):
    return np.asarray([instrument_name(currency, e.to_pydatetime(), k, c)
                       for e, k, c in zip(expiry, strike, is_call, strict=True)], object)


def _nearest_forward(snap, expiry, forward):
    """Per row, the median forward of its snapshot's nearest expiry still to come (the last
    one when every expiry has passed): the spot of a file without a ``spot`` column."""
    frame = pd.DataFrame({"snap": snap, "expiry": expiry, "forward": forward})
    by = frame.groupby(["snap", "expiry"], sort=True)["forward"].median().reset_index()
    spot = {}
    for s, g in by.groupby("snap"):
        ahead = g[g["expiry"] > s]
        spot[s] = float((ahead if len(ahead) else g.iloc[[-1]])["forward"].iloc[0])
    return frame["snap"].map(spot).to_numpy(np.float64)


def _percent_vols(t, source, column):
    """A vol column in percent, as decimals (NaN where empty); a value outside
    ``IV_PERCENT_RANGE`` is refused, a value in (0, 1) as a decimal written for percent."""
    v = t[column].to_numpy(np.float64)
    lo, hi = IV_PERCENT_RANGE
    small = (v > 0) & (v < lo)
    if small.any():
        i = int(np.flatnonzero(small)[0])
        raise ValueError(f"{source}: {_d._where(t, i)}: field {column!r} is in percent (55.3 "
                         f"for 55.3%); got {_d._show(t[column].iloc[i])}, which reads as a "
                         f"decimal: write {100 * v[i]:g}")
    _refuse(t, source, ~np.isnan(v) & ~((v >= lo) & (v <= hi)), column,
            f"must be a vol in percent in [{lo:g}, {hi:g}] (or empty)")
    return v / 100.0


def _check_unit(t, source, prices, forward, price_unit):
    """Refuse a file whose every price reads as the other unit."""
    given = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in prices.values()])
    if not given.size:
        return
    level = float(np.median(forward))
    if price_unit == "usd" and given.max() < 1.0 and level > 100.0:
        raise ValueError(f"{source}: every price is below 1 while the forwards are about "
                         f"{level:,.0f} USD: are the prices in coin? pass price_unit='coin' "
                         "(the default is 'usd')")
    if price_unit == "coin" and given.min() > 1.0:
        raise ValueError(f"{source}: every price is above 1 coin (an out-of-the-money option "
                         "is worth less than one coin): are the prices in USD? pass "
                         "price_unit='usd'")


def _with_vols(t, source, side, coin, iv, forward, strike, years, is_call, price_unit):
    """Coin prices of one side: an empty price priced from its vol (Black-76 on the forward);
    a price and a vol given together must agree (``IV_AGREEMENT``)."""
    from ..pricing.black import black_price

    live = np.isfinite(iv) & (years > 0)
    if not live.any():
        return coin
    idx = np.flatnonzero(live)
    f, k, tt, s = forward[idx], strike[idx], years[idx], iv[idx]
    with jax.enable_x64(True):
        model = np.asarray(black_price(f, k, tt, s, is_call[idx]), np.float64)
    usd = coin * forward
    out = coin.copy()
    empty = ~np.isfinite(coin[idx])
    out[idx[empty]] = model[empty] / f[empty]
    both = ~empty
    if both.any():
        sd = s * np.sqrt(tt)
        d1 = (np.log(f / k) + 0.5 * sd * sd) / sd
        vega = f * np.exp(-0.5 * d1 * d1) / math.sqrt(2.0 * math.pi) * np.sqrt(tt)
        vol_pts, ticks, fraction = IV_AGREEMENT
        tol = vol_pts / 100.0 * vega + ticks * 1e-4 * f + fraction * np.abs(usd[idx])
        off = both & (np.abs(model - usd[idx]) > tol)
        if off.any():
            j = int(np.flatnonzero(off)[0])
            i = int(idx[j])
            unit = "USD" if price_unit == "usd" else "coin"
            price = usd[i] if price_unit == "usd" else coin[i]
            at_vol = model[j] if price_unit == "usd" else model[j] / forward[i]
            raise ValueError(
                f"{source}: {_d._where(t, i)}: field '{side}_iv' {100 * iv[i]:g} disagrees "
                f"with field {side!r} {price:.6g} {unit}: that vol prices the quote at "
                f"{at_vol:.6g} {unit} (forward {forward[i]:g}, {years[i]:.6g} years, Black-76); "
                f"give one of them, or fix the other")
    return out


# ------------------------------------------------------------------------------------------
# Deribit API JSON


def _load_api(p: Path, *, currency, snapshot, clean, rules, return_dropped):
    elements = _api_elements(p)
    parsed = []
    for i, e in enumerate(elements):
        where = f"{p}: element {i} (0-based index in the JSON result list)"
        if not isinstance(e, dict):
            raise ValueError(f"{where}: expected an object with the fields of a book summary; "
                             f"got {_d._show(e)}")
        unknown = [k for k in e if k not in DERIBIT_API_FIELDS and k not in DERIBIT_API_IGNORED]
        if unknown:
            raise ValueError(f"{where}: unknown field {unknown[0]!r}; a book summary has "
                             f"{', '.join(DERIBIT_API_FIELDS)} (read) and "
                             f"{', '.join(DERIBIT_API_IGNORED)} (ignored)")
        if "instrument_name" not in e:
            raise ValueError(f"{where}: missing field 'instrument_name'")
        try:
            inst = parse_instrument(e["instrument_name"])
        except ValueError as exc:
            raise ValueError(f"{where}: field 'instrument_name': {exc}") from None
        if inst.kind == "option" and "_" in inst.currency:
            raise ValueError(f"{where} ({inst.name}): field 'instrument_name': USDC-settled "
                             "(linear) options are not read; load_chain reads Deribit's "
                             "coin-settled BTC and ETH options")
        for field in ("base_currency", "quote_currency"):
            if field in e and not isinstance(e[field], str):
                raise ValueError(f"{where} ({inst.name}): field {field!r} must be a string; "
                                 f"got {_d._show(e[field])}")
        if "base_currency" in e and e["base_currency"] != inst.currency.split("_")[0]:
            raise ValueError(f"{where} ({inst.name}): field 'base_currency' "
                             f"{e['base_currency']!r} does not match the instrument name")
        if inst.kind == "option" and e.get("quote_currency", inst.currency) != inst.currency:
            raise ValueError(f"{where} ({inst.name}): field 'quote_currency' "
                             f"{e['quote_currency']!r}: an option's prices must be in its coin "
                             f"({inst.currency})")
        stamp = _api_time(e.get("creation_timestamp"), where, inst.name)
        parsed.append((i, inst, stamp))

    coins = sorted({inst.currency for _, inst, _ in parsed if inst.kind == "option"})
    if currency is None:
        if len(coins) > 1:
            raise ValueError(f"{p}: the response holds {', '.join(coins)} options; pass "
                             "currency='BTC' or 'ETH'")
        if not coins:
            raise ValueError(f"{p}: no options in the response (only "
                             f"{len(parsed)} other instrument(s))")
        currency = coins[0]
        if currency not in TICK:
            raise ValueError(f"{p}: currency {currency!r} is not one of {sorted(TICK)}")
    mine = [(i, inst, s) for i, inst, s in parsed if inst.currency.split("_")[0] == currency]
    if not any(inst.kind == "option" for _, inst, _ in mine):
        raise ValueError(f"{p}: no {currency} options in the response")
    first = min(mine, key=lambda r: r[2])
    last = max(mine, key=lambda r: r[2])
    span = (last[2] - first[2]).total_seconds()
    if span > MAX_RESPONSE_SPAN_S:
        raise ValueError(f"{p}: elements {first[0]} and {last[0]}: field 'creation_timestamp' "
                         f"{first[2]} and {last[2]} are {span:g} s apart; one response is one "
                         f"snapshot (at most {MAX_RESPONSE_SPAN_S:g} s): lists from different "
                         "times pasted together?")
    when = last[2]
    _choose_snapshot(p, [when], snapshot, currency)  # one snapshot: check the argument

    rows, skipped = [], []
    for i, inst, _ in mine:
        e = elements[i]
        if inst.kind != "option":
            skipped.append({"currency": currency, "snapshot": when, "instrument": inst.name,
                            "source_row": i, "reason": "not_an_option"})
            continue
        where = f"{p}: element {i} (0-based index in the JSON result list) ({inst.name})"
        num = {f: _api_number(e, f, where) for f in (
            "bid_price", "ask_price", "mark_price", "underlying_price",
            "estimated_delivery_price", "open_interest", "volume", "mark_iv")}
        fwd = num["underlying_price"]
        if not (math.isfinite(fwd) and fwd > 0):
            raise ValueError(f"{where}: field 'underlying_price' must be a finite positive "
                             f"number (the expiry's forward, USD); got "
                             f"{_d._show(e.get('underlying_price'))}")
        iv = num["mark_iv"]
        if 0 < iv < IV_PERCENT_RANGE[0]:
            raise ValueError(f"{where}: field 'mark_iv' is in percent (Deribit's 46.92 for "
                             f"46.92%); got {_d._show(e['mark_iv'])}, which reads as a decimal")
        rows.append({
            "timestamp": when.isoformat(), "instrument_name": inst.name, "underlying": fwd,
            "option_type": "call" if inst.is_call else "put", "strike": inst.strike,
            "expiry_datetime": pd.Timestamp(inst.expiry).isoformat(),
            "bid_price": num["bid_price"], "ask_price": num["ask_price"],
            "mark_price": num["mark_price"], "implied_volatility": iv / 100.0,
            "open_interest": num["open_interest"], "volume": num["volume"],
            "currency": currency, "index_price": num["estimated_delivery_price"],
            "source_row": i,
        })
    raw = pd.DataFrame(rows)
    raw.attrs.update(source=str(p), source_row=_d._JSON_ROW, truncated=[],
                     fields={"underlying": "underlying_price", "index_price":
                             "estimated_delivery_price", "implied_volatility": "mark_iv",
                             "timestamp": "creation_timestamp"})
    skipped = pd.DataFrame(skipped) if skipped else None
    if skipped is not None:
        skipped["snapshot"] = pd.DatetimeIndex(skipped["snapshot"]).as_unit("us")
        skipped["source_row"] = skipped["source_row"].astype(np.int64)
    return _d._chain_of_raw(raw, clean=clean, rules=rules, return_dropped=return_dropped,
                            skipped=skipped)


def _api_elements(p: Path) -> list:
    """The list of book summaries of a response (envelope or bare list)."""
    text = _d._decode(p, "a Deribit API response")
    if not text.strip():
        raise ValueError(f"{p}: empty file; expected a Deribit API response (JSON: "
                         '{"jsonrpc": "2.0", "result": [...]} or the list of book summaries)')
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: line {exc.lineno}, column {exc.colno}: not valid JSON "
                         f"({exc.msg})") from None
    if isinstance(data, dict):
        if "error" in data:
            err = data["error"]
            raise ValueError(f"{p}: the response is a JSON-RPC error, not book summaries: "
                             f"{json.dumps(err)[:200]}")
        unknown = [k for k in data if k not in API_ENVELOPE_KEYS]
        if unknown:
            raise ValueError(f"{p}: unknown key {unknown[0]!r} in the JSON-RPC envelope; "
                             f"expected {', '.join(API_ENVELOPE_KEYS)}")
        if "result" not in data:
            raise ValueError(f"{p}: the JSON-RPC envelope has no 'result' (the list of book "
                             "summaries)")
        data = data["result"]
    if not isinstance(data, list):
        raise ValueError(f"{p}: 'result' must be a list of book summaries (one object per "
                         f"instrument); got {type(data).__name__}")
    if not data:
        raise ValueError(f"{p}: the response lists no instruments")
    return data


def _api_number(e: dict, field: str, where: str) -> float:
    """A numeric field of a book summary (``null`` or absent: NaN)."""
    v = e.get(field)
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{where}: field {field!r} must be a number or null; got "
                         f"{_d._show(v)}")
    return float(v)


def _api_time(v, where: str, name: str) -> pd.Timestamp:
    """``creation_timestamp``: integer milliseconds since 1970 within ``_MS_RANGE``."""
    example = "such as 1775037661954"
    if v is None:
        raise ValueError(f"{where} ({name}): missing field 'creation_timestamp' (milliseconds "
                         f"since 1970-01-01 UTC, {example})")
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or (
            v != int(v)):
        raise ValueError(f"{where} ({name}): field 'creation_timestamp' must be whole "
                         f"milliseconds since 1970-01-01 UTC ({example}); got {_d._show(v)}")
    lo, hi = _MS_RANGE
    ts = pd.Timestamp(int(v), unit="ms", tz="UTC") if abs(v) < 1e17 else None
    if ts is None or not lo <= ts < hi:
        hint = ""
        if ts is not None and abs(v) < 1e11:
            hint = " (seconds? Deribit writes milliseconds)"
        raise ValueError(f"{where} ({name}): field 'creation_timestamp' {_d._show(v)} is not "
                         f"a time in milliseconds between {lo.year} and {hi.year}{hint}")
    return ts.as_unit("us")


# ------------------------------------------------------------------------------------------
# the market of a chain


def market_from_chain(chain: pd.DataFrame, rate: float = 0.0):
    """The market of one snapshot of a chain: spot index and flat basis.

    ``spot`` is the median of the chain's ``spot`` (the index); the basis ``b`` is the
    least-squares slope through the origin of ``log(F / spot)`` against ``expiry_years``,
    one point per expiry (its median forward); the market's funding rate is
    ``div = rate - b``, so that ``Market.forward(T) = spot * exp(b T)``.

    Args:
      chain: an option-chain table (``load_chain``, ``load_deribit``, ``synthetic_chain``) of
        a single snapshot.
      rate: the USD rate (continuously compounded; 0 by Deribit's convention).

    Returns:
      ``(market, info)``: the ``Market`` and a dict with ``snapshot`` (UTC timestamp),
      ``spot``, ``basis``, ``rate``, ``div``, ``max_forward_error_bp`` (the largest
      ``|F_fit / F - 1|`` over the expiries, in basis points) and ``forwards`` (a DataFrame
      per expiry: ``expiry``, ``expiry_years``, ``forward``, ``fitted``, ``error_bp``).

    Raises:
      ValueError: an empty chain, several snapshots (named), no usable spot or forward, or a
        basis beyond the market's bounds.
    """
    from ..models import Market

    source = chain.attrs.get("source", "chain")
    missing = [c for c in ("snapshot", "spot", "forward", "expiry", "expiry_years")
               if c not in chain.columns]
    if missing:
        raise ValueError(f"{source}: not an option-chain table: missing column(s) "
                         f"{', '.join(map(repr, missing))}")
    if chain.empty:
        raise ValueError(f"{source}: the chain is empty (every quote dropped?); no market")
    snaps = pd.Series(chain["snapshot"].unique()).sort_values()
    if len(snaps) > 1:
        shown = ", ".join(str(s) for s in snaps.iloc[:3])
        more = f" and {len(snaps) - 3} more" if len(snaps) > 3 else ""
        raise ValueError(f"{source}: the chain has {len(snaps)} snapshots ({shown}{more}); a "
                         "market is of one: load one (snapshot='last') or select it first")
    if isinstance(rate, bool) or not isinstance(rate, int | float | np.floating) or not (
            math.isfinite(rate)):
        raise ValueError(f"rate must be a finite number; got {rate!r}")
    spots = chain["spot"].to_numpy(np.float64)
    spots = spots[np.isfinite(spots) & (spots > 0)]
    if not spots.size:
        raise ValueError(f"{source}: no finite positive spot in the chain")
    spot = float(np.median(spots))
    by = chain.groupby("expiry", sort=True).agg(expiry_years=("expiry_years", "median"),
                                                forward=("forward", "median")).reset_index()
    t = by["expiry_years"].to_numpy(np.float64)
    f = by["forward"].to_numpy(np.float64)
    ok = np.isfinite(t) & (t > 0) & np.isfinite(f) & (f > 0)
    if not ok.any():
        raise ValueError(f"{source}: no expiry after the snapshot with a positive forward")
    y = np.log(f[ok] / spot)
    basis = float(np.sum(y * t[ok]) / np.sum(t[ok] ** 2))
    by = by[ok].reset_index(drop=True)
    by["fitted"] = spot * np.exp(basis * by["expiry_years"].to_numpy())
    by["error_bp"] = (by["fitted"] / by["forward"] - 1.0) * 1e4
    market = Market(spot=spot, rate=float(rate), div=float(rate) - basis)
    try:
        market.validate()
    except ValueError as exc:
        raise ValueError(f"{source}: the fitted market is out of bounds (basis {basis:.4g} a "
                         f"year): {exc}") from None
    info = {
        "snapshot": pd.Timestamp(snaps.iloc[0]),
        "spot": spot,
        "basis": basis,
        "rate": float(rate),
        "div": float(rate) - basis,
        "max_forward_error_bp": float(np.max(np.abs(by["error_bp"].to_numpy()))),
        "forwards": by,
    }
    return market, info


__all__ = ["load_chain", "market_from_chain", "SIMPLE_COLUMNS", "DERIBIT_API_FIELDS",
           "DERIBIT_API_IGNORED", "PRICE_UNITS", "IV_PERCENT_RANGE", "IV_AGREEMENT",
           "MAX_RESPONSE_SPAN_S"]
