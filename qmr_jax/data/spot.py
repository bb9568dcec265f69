"""Real spot history: loaders for the shared OHLCV files, returns, named stress episodes.

The shared data folder (``default_data_dir()``: ``$QMR_DATA_DIR``, else ``../shared/data``)
holds, under ``spot/`` (each folder has a PROVENANCE.txt):

==========  ==============================  ==========  ==============================
source      files                           bars        range
==========  ==============================  ==========  ==============================
binance     ``{BTC,ETH}USDT_{1d,4h}.csv``   1d, 4h      2017-08-17 .. 2026-01-05 (USDT)
bitstamp    ``BTC_USD_2h.csv``              2h          2011-08-18 .. 2025-08-26 (USD)
yahoo       ``{BTC,ETH}-USD.csv``           1d          2014-09-17 .. 2022-11-14 (USD)
==========  ==============================  ==========  ==============================

Conventions of the history table returned by ``load_spot_history``:

* Index: the bar's *open* time, UTC (tz-aware), named ``timestamp``, sorted and unique: the
  daily bar of 2020-03-12 is labelled 2020-03-12 and its close is the price at 2020-03-13
  00:00 UTC, as the providers and the usual "close on 2020-03-12" quotes have it.
  ``history.attrs["bar"]`` is the bar length (``"1d"``, ``"4h"``, ``"2h"``).
* Columns ``open, high, low, close, volume`` (float64). Volume is in the base coin for
  Binance and Bitstamp, in USD for Yahoo (``attrs["volume_unit"]``). Binance quotes USDT,
  not USD (``attrs["quote"]``); USDT traded below par at times (May 2022).
* The last row of every file is dropped as a partial bar: Binance's README says so; the
  Bitstamp and Yahoo PROVENANCE files say theirs is likely partial. The drop is recorded in
  ``attrs["dropped"]`` (see ``dropped_rows``).
* Bitstamp's early years (2011-2012, a few later bars) hold zero-volume bars whose prices
  were forward-filled by the provider: they are kept (the price path is continuous and the
  timestamps regular) and counted in ``attrs["zero_volume_bars"]``; their returns are zero, so
  realised volatility measured over 2011-2012 understates the true one.
* Malformed files raise rather than being filtered: a missing column, an unparsable
  timestamp, a missing, non-numeric, non-positive or non-finite price, a negative or
  non-finite volume and a duplicate timestamp each raise ``ValueError`` naming the file, the
  line (1-based, the header is line 1), the timestamp and the field. Out-of-order rows are
  sorted (order carries no information).

Episodes: ``EPISODES`` names crypto stress episodes (dates, description, a source);
``episode_path`` gives the actual path of one in the data, ``realized_vol`` its realised
volatility before and during, for setting vol shocks consistent with the episode.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from .deribit import default_data_dir

OHLCV = ("open", "high", "low", "close", "volume")
"""Columns of a spot history table."""

_YEAR = 365.0 * 86400.0  # ACT/365, seconds


class _Provider(NamedTuple):
    folder: str
    symbols: dict            # currency -> symbol in the file name
    freqs: tuple             # bar lengths available
    pattern: str             # file name; {symbol}, {freq}
    columns: dict            # our column -> column in the file
    quote: str
    volume_unit: str


PROVIDERS = {
    "binance": _Provider(
        "binance", {"BTC": "BTCUSDT", "ETH": "ETHUSDT"}, ("1d", "4h"), "{symbol}_{freq}.csv",
        {"timestamp": "timestamp", "open": "open", "high": "high", "low": "low",
         "close": "close", "volume": "volume"}, "USDT", "base coin"),
    "bitstamp": _Provider(
        "bitstamp", {"BTC": "BTC_USD"}, ("2h",), "{symbol}_{freq}.csv",
        {"timestamp": "timestamp", "open": "open", "high": "high", "low": "low",
         "close": "close", "volume": "volume"}, "USD", "base coin"),
    "yahoo": _Provider(
        "yahoo", {"BTC": "BTC-USD", "ETH": "ETH-USD"}, ("1d",), "{symbol}.csv",
        {"timestamp": "Date", "open": "Open", "high": "High", "low": "Low", "close": "Close",
         "volume": "Volume"}, "USD", "USD"),
}
"""Spot sources: folder under ``spot/``, currencies, bar lengths, file names and columns."""

CURRENCIES = ("BTC", "ETH")

_AUTO_ORDER = ("binance", "yahoo", "bitstamp")  # tie-break of the automatic choice

PARTIAL_LAST_BAR = "partial last bar (provider's README/PROVENANCE: the file's last bar is "\
                   "incomplete)"


# ------------------------------------------------------------------------------------------
# loading


def _norm_freq(freq) -> str | None:
    if freq is None:
        return None
    f = str(freq).strip().lower()
    return {"d": "1d", "daily": "1d", "1day": "1d"}.get(f, f)


def spot_file(currency: str = "BTC", source: str = "binance", freq: str | None = None,
              data_dir=None) -> Path:
    """Path of the shared spot file for ``currency``, ``source`` and bar length ``freq``.

    Args:
      currency: ``"BTC"`` or ``"ETH"``.
      source: ``"binance"``, ``"bitstamp"`` or ``"yahoo"``.
      freq: bar length offered by the source (``"1d"``, ``"4h"``, ``"2h"``); ``None`` for the
        source's first (``"1d"`` for Binance and Yahoo, ``"2h"`` for Bitstamp).
      data_dir: the data folder (default ``default_data_dir()``).

    Returns:
      ``<data_dir>/spot/<source>/<file>`` (not checked for existence).

    Raises:
      ValueError: unknown currency, source or bar length, or a combination the data do not
        have (the message lists the choices).
    """
    if currency not in CURRENCIES:
        raise ValueError(f"currency must be one of {list(CURRENCIES)}; got {currency!r}")
    if source not in PROVIDERS:
        raise ValueError(f"source must be one of {list(PROVIDERS)} (or None for the "
                         f"automatic choice); got {source!r}")
    prov = PROVIDERS[source]
    if currency not in prov.symbols:
        have = [s for s, p in PROVIDERS.items() if currency in p.symbols]
        raise ValueError(f"source {source!r} has no {currency} history (it has "
                         f"{list(prov.symbols)}); sources with {currency}: {have}")
    f = _norm_freq(freq) or prov.freqs[0]
    if f not in prov.freqs:
        raise ValueError(f"source {source!r} has bars {list(prov.freqs)}; got freq={freq!r} "
                         "(resample with log_returns(..., freq=...) for coarser returns)")
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    return root / "spot" / prov.folder / prov.pattern.format(symbol=prov.symbols[currency],
                                                              freq=f)


def read_spot_file(path, provider: str = "binance", *, drop_last: bool = True,
                   currency: str | None = None, freq: str | None = None) -> pd.DataFrame:
    """Read and validate one OHLCV CSV file in a provider's layout.

    Args:
      path: the CSV file.
      provider: its layout: ``"binance"``/``"bitstamp"`` (``timestamp, open, high, low,
        close, volume``) or ``"yahoo"`` (``Date, Open, High, Low, Close, Adj Close, Volume``).
      drop_last: drop the last row, a partial bar in the shared files (recorded in
        ``attrs["dropped"]``).
      currency, freq: recorded in ``attrs`` (``freq`` default: the provider's first).

    Returns:
      The history table (see the module docstring) with ``attrs``: ``source`` (the path),
      ``provider``, ``currency``, ``bar``, ``quote``, ``volume_unit``, ``dropped`` (a list of
      ``{"line", "timestamp", "reason"}`` dicts; not a DataFrame because ``pd.concat``
      compares ``attrs`` with ``==``), ``zero_volume_bars``.

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file is unreadable, lacks a column, or has a bad row (the message names
        the file, the line, the timestamp and the field).

    Examples:
      >>> h = read_spot_file("BTCUSDT_1d.csv", "binance")          # doctest: +SKIP
    """
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {list(PROVIDERS)}; got {provider!r}")
    prov = PROVIDERS[provider]
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"spot history file not found: {p}")
    try:
        raw = pd.read_csv(p, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ValueError(f"{p}: cannot read the CSV file ({exc})") from exc
    missing = [c for c in prov.columns.values() if c not in raw.columns]
    if missing:
        raise ValueError(f"{p}: missing column(s) {', '.join(map(repr, missing))} (a {provider} "
                         f"spot file has {', '.join(prov.columns.values())}; found "
                         f"{', '.join(map(str, raw.columns))})")
    if raw.empty:
        raise ValueError(f"{p}: no data rows")
    tcol = prov.columns["timestamp"]
    stamps = pd.to_datetime(raw[tcol].str.strip(), utc=True, format="ISO8601", errors="coerce")
    lines = np.arange(len(raw)) + 2  # 1-based file lines, header on line 1

    def fail(i, field, rule, value):
        shown = raw[tcol].iloc[i]
        raise ValueError(f"{p}: line {lines[i]} (timestamp {shown!r}): field {field!r} {rule}; "
                         f"got {value!r}")

    bad = stamps.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        fail(i, tcol, "must be an ISO-8601 date or time", raw[tcol].iloc[i])
    out = {}
    for ours in OHLCV:
        col = prov.columns[ours]
        text = raw[col].str.strip()
        vals = pd.to_numeric(text.replace("", np.nan), errors="coerce").to_numpy(np.float64)
        if ours == "volume":
            ok = np.isfinite(vals) & (vals >= 0)
            rule = "must be a finite number >= 0"
        else:
            ok = np.isfinite(vals) & (vals > 0)
            rule = "must be a finite positive price"
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            shown = raw[col].iloc[i]
            fail(i, col, rule + (" (empty or not a number)" if np.isnan(vals[i]) else ""),
                 shown if np.isnan(vals[i]) else float(vals[i]))
        out[ours] = vals
    dup = stamps.duplicated(keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((stamps == stamps.iloc[i]).to_numpy())[0])
        fail(i, tcol, f"duplicates line {lines[first]}", raw[tcol].iloc[i])
    df = pd.DataFrame(out, index=pd.DatetimeIndex(stamps, name="timestamp"))
    df["line"] = lines
    df = df.sort_index(kind="stable")
    dropped = []
    if drop_last:
        last = df.iloc[-1]
        dropped.append({"line": int(last["line"]), "timestamp": df.index[-1].isoformat(),
                        "reason": PARTIAL_LAST_BAR})
        df = df.iloc[:-1]
    df = df.drop(columns="line")
    f = _norm_freq(freq) or prov.freqs[0]
    df.attrs.update({
        "source": str(p), "provider": provider, "currency": currency, "bar": f,
        "quote": prov.quote, "volume_unit": prov.volume_unit, "dropped": dropped,
        "zero_volume_bars": int((df["volume"] == 0).sum()),
    })
    return df


def load_spot_history(currency: str = "BTC", *, source: str | None = None,
                      freq: str | None = None, data_dir=None) -> pd.DataFrame:
    """The spot OHLCV history of ``currency`` from the shared data folder.

    Args:
      currency: ``"BTC"`` or ``"ETH"``.
      source: ``"binance"`` (BTC, ETH; ``1d``, ``4h``; USDT), ``"bitstamp"`` (BTC; ``2h``;
        USD) or ``"yahoo"`` (BTC, ETH; ``1d``; USD, aggregated across exchanges). ``None``:
        among the sources with bars of ``freq`` (default ``"1d"``) whose file exists, the one
        with the longest history (first to last bar; ties in the order binance, yahoo,
        bitstamp). Histories are never spliced across sources: one call, one provider, so
        levels (USDT vs USD, exchange vs aggregate) never jump inside a series. With the
        shared files the daily choice is Binance for both coins (BTC 2017-08-17..2026-01-05
        against Yahoo's 2014-09-17..2022-11-14); ask for ``source="yahoo"`` for BTC before
        2017-08 and ``"bitstamp"`` (2h) for 2011-2017 intraday.
      freq: bar length: ``"1d"`` (also ``"D"``, ``"daily"``), ``"4h"`` or ``"2h"``, as the
        source offers; ``None`` for the source's first (daily where there is one).
      data_dir: the data folder (default ``default_data_dir()``: ``$QMR_DATA_DIR`` or
        ``../shared/data``).

    Returns:
      A DataFrame indexed by bar open time (UTC, sorted, unique) with float columns ``open,
      high, low, close, volume`` and ``attrs`` ``source`` (file path), ``provider``,
      ``currency``, ``bar``, ``quote``, ``volume_unit``, ``dropped`` (the partial last bar),
      ``zero_volume_bars`` (see the module docstring).

    Raises:
      FileNotFoundError: the file (or, with ``source=None``, every candidate) is missing; the
        message names the path(s) and the ``QMR_DATA_DIR`` setting.
      ValueError: unknown currency, source or bar length (the choices are listed); a
        malformed file (file, line, timestamp and field named).

    Examples:
      >>> btc = load_spot_history("BTC")                      # doctest: +SKIP
      >>> btc.attrs["provider"], btc.index[0].date()          # doctest: +SKIP
      ('binance', datetime.date(2017, 8, 17))
      >>> intraday = load_spot_history("BTC", source="bitstamp")  # 2h bars  # doctest: +SKIP
    """
    if currency not in CURRENCIES:
        raise ValueError(f"currency must be one of {list(CURRENCIES)}; got {currency!r}")
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if source is not None:
        path = spot_file(currency, source, freq, root)
        if not path.is_file():
            raise FileNotFoundError(_missing_message([path], root))
        return read_spot_file(path, source, currency=currency, freq=freq)
    f = _norm_freq(freq) or "1d"
    candidates = [s for s in _AUTO_ORDER
                  if currency in PROVIDERS[s].symbols and f in PROVIDERS[s].freqs]
    if not candidates:
        offered = sorted({g for p in PROVIDERS.values() if currency in p.symbols
                          for g in p.freqs})
        raise ValueError(f"no source has {currency} bars of freq={freq!r}; choices: {offered}")
    paths = [spot_file(currency, s, f, root) for s in candidates]
    found = [(s, p) for s, p in zip(candidates, paths, strict=True) if p.is_file()]
    if not found:
        raise FileNotFoundError(_missing_message(paths, root))
    best, best_span = None, None
    for s, p in found:
        h = read_spot_file(p, s, currency=currency, freq=f)
        span = h.index[-1] - h.index[0] if len(h) else pd.Timedelta(0)
        if best is None or span > best_span:
            best, best_span = h, span
    best.attrs["auto_choice"] = (f"longest {f} history among "
                                 f"{', '.join(s for s, _ in found)}")
    return best


def _missing_message(paths, root: Path) -> str:
    listed = ", ".join(str(p) for p in paths)
    return (f"spot history file not found: {listed}. The data folder is {root} (set "
            "QMR_DATA_DIR to the folder holding spot/, or pass data_dir=; the default is "
            "../shared/data beside the project)")


def dropped_rows(history: pd.DataFrame) -> pd.DataFrame:
    """The rows the loader dropped, as a DataFrame (``line``, ``timestamp``, ``reason``)."""
    rows = history.attrs.get("dropped", [])
    return pd.DataFrame(list(rows), columns=["line", "timestamp", "reason"])


def load_dvol(currency: str = "BTC", data_dir=None) -> pd.Series:
    """Deribit's DVOL index (30-day implied vol), daily close, as a decimal.

    Reads ``<data_dir>/spot/deribit_dvol/dvol_{currency}.json`` (a JSON list of
    ``[timestamp_ms, vol_points]``, timestamps at UTC midnight; 2022-11-06..2025-11-12 for
    BTC, one missing day). Only BTC is in the shared data.

    Args:
      currency: ``"BTC"``.
      data_dir: the data folder (default ``default_data_dir()``).

    Returns:
      A float Series ``dvol`` (decimal: 0.55 is 55 vol points) indexed by UTC day, sorted;
      ``attrs["source"]`` is the file.

    Raises:
      ValueError: a currency without DVOL data; a malformed file (entry index named).
      FileNotFoundError: the file is missing (path and ``QMR_DATA_DIR`` named).

    Examples:
      >>> dvol = load_dvol()                          # doctest: +SKIP
      >>> float(dvol["2022-11-09"])                   # doctest: +SKIP
      1.1472
    """
    have = ("BTC",)
    if currency not in have:
        raise ValueError(f"DVOL history is available for {list(have)}; got {currency!r}")
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    p = root / "spot" / "deribit_dvol" / f"dvol_{currency.lower()}.json"
    if not p.is_file():
        raise FileNotFoundError(_missing_message([p], root))
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{p}: cannot read the JSON file ({exc})") from exc
    if not isinstance(data, list) or not data:
        raise ValueError(f"{p}: expected a non-empty JSON list of [timestamp_ms, vol_points]")
    ms, vols = [], []
    for i, item in enumerate(data):
        ok = (isinstance(item, list | tuple) and len(item) == 2
              and all(isinstance(v, int | float) and not isinstance(v, bool) for v in item))
        if not ok or not (math.isfinite(item[1]) and item[1] > 0):
            raise ValueError(f"{p}: entry {i}: expected [timestamp_ms, positive vol points]; "
                             f"got {item!r}")
        ms.append(int(item[0]))
        vols.append(float(item[1]) / 100.0)
    index = pd.DatetimeIndex(pd.to_datetime(ms, unit="ms", utc=True), name="timestamp")
    s = pd.Series(vols, index=index, name="dvol")
    dup = s.index.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise ValueError(f"{p}: entry {i}: duplicate timestamp {s.index[i].isoformat()}")
    s = s.sort_index(kind="stable")
    s.attrs.update({"source": str(p), "currency": currency, "unit": "decimal"})
    return s


# ------------------------------------------------------------------------------------------
# returns, episodes


def _bar(history) -> pd.Timedelta:
    bar = history.attrs.get("bar")
    if bar:
        b = str(bar).strip().lower()
        if b.endswith("d") and (b[:-1].isdigit() or b == "d"):
            return pd.Timedelta(days=int(b[:-1] or 1))  # pandas deprecates "1d"
        return pd.Timedelta(pd.tseries.frequencies.to_offset(bar))
    if len(history.index) < 2:
        raise ValueError("cannot infer the bar length of a history with fewer than 2 rows; "
                         "set history.attrs['bar'] (e.g. '1d')")
    return pd.Series(history.index).diff().median()


def _describe(history) -> str:
    src = history.attrs.get("source", "<history>")
    if len(history.index) == 0:
        return f"{src} (empty)"
    return (f"{src}, which covers {history.index[0].isoformat()} .. "
            f"{history.index[-1].isoformat()} (bar opens)")


def log_returns(history, *, freq: str | None = None) -> pd.Series:
    """Close-to-close log returns ``log(S_t / S_{t-1})``.

    Args:
      history: a table from ``load_spot_history`` (or a Series of closes).
      freq: ``None`` for one return per bar; else a pandas frequency (``"1D"``, ``"4h"``,
        ``"7D"``): closes are resampled to the last close of each period (periods labelled
        by their start, like the bars), empty periods dropped, so a return spans a gap; a
        last period that the data do not cover to its end is dropped (its close is not
        final). Binance 4h bars resampled to ``"1D"`` reproduce the daily file's returns.

    Returns:
      A Series ``log_return`` indexed like the later bar of each pair (its open time); one
      fewer entry than the closes. ``attrs`` carries ``source``, ``provider``, ``currency``
      and ``bar`` (``freq`` when resampled).

    Examples:
      >>> r = log_returns(load_spot_history("BTC", freq="4h"), freq="1D")  # doctest: +SKIP
    """
    close = history["close"] if isinstance(history, pd.DataFrame) else history
    close = close.astype(np.float64)
    bar = history.attrs.get("bar")
    if freq is not None:
        last_obs = close.index[-1] + _bar(history) if len(close) else None
        close = close.resample(freq, label="left", closed="left").last().dropna()
        if len(close) and close.index[-1] + pd.tseries.frequencies.to_offset(freq) > last_obs:
            close = close.iloc[:-1]  # the last period is incomplete: its close is not final
        bar = freq
    r = np.log(close).diff().iloc[1:].rename("log_return")
    r.attrs = {k: history.attrs[k] for k in ("source", "provider", "currency")
               if k in history.attrs}
    r.attrs["bar"] = bar
    return r


def _when(x, *, end: bool) -> pd.Timestamp:
    """A UTC time; a date (``"YYYY-MM-DD"`` or ``datetime.date``) as ``end`` is its whole day."""
    date_only = (isinstance(x, str) and len(x.strip()) == 10) or (
        isinstance(x, _dt.date) and not isinstance(x, _dt.datetime))
    try:
        t = pd.Timestamp(x)
    except (TypeError, ValueError):
        raise ValueError(f"expected a date or time; got {x!r}") from None
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    if end and date_only:
        t = t + pd.Timedelta(days=1)
    return t


def _closes(history) -> pd.Series:
    """Closes indexed by the time they are observed (bar open + bar length)."""
    c = history["close"].astype(np.float64)
    return pd.Series(c.to_numpy(), index=c.index + _bar(history), name="close")


def episode_path(history, start, end) -> pd.DataFrame:
    """The actual price path of an episode, from the last close at or before ``start``.

    Closes are placed at the time they are observed (bar open + bar length). The anchor is
    the last close at or before ``start``; the path runs through every later close up to
    ``end``. Dates are UTC days: ``start="2020-03-12"`` anchors on the close at 2020-03-12
    00:00 (the daily bar labelled 2020-03-11) and ``end="2020-03-13"`` includes the close at
    2020-03-14 00:00 (bar 2020-03-13): the two days 12 and 13 March. Times are taken exactly.

    Args:
      history: a table from ``load_spot_history``.
      start, end: dates (``"YYYY-MM-DD"``, ``datetime.date``) or times (strings, timestamps;
        naive means UTC); an ``Episode``'s ``start``/``end``.

    Returns:
      A DataFrame indexed by close time (UTC), the anchor first, with ``t_years`` (ACT/365
      from the anchor), ``close``, ``cum_return`` (``S_t / S_anchor - 1``) and ``log_return``
      (cumulative, ``log(S_t / S_anchor)``); the anchor row has zeros. ``attrs``: ``source``,
      ``provider``, ``start``, ``end``, ``anchor``.

    Raises:
      ValueError: ``end`` before ``start``; no close at or before ``start`` or none after it
        up to ``end`` (the message names the dates and the file's range).

    Examples:
      >>> btc = load_spot_history("BTC")                                 # doctest: +SKIP
      >>> p = episode_path(btc, *episode("covid-2020-03")[1:3])          # doctest: +SKIP
      >>> round(p["cum_return"].min(), 3)                                # doctest: +SKIP
      -0.395
    """
    t0, t1 = _when(start, end=False), _when(end, end=True)
    if t1 <= t0:
        raise ValueError(f"episode end {end!r} is not after start {start!r}")
    closes = _closes(history)
    before = closes[closes.index <= t0]
    if before.empty:
        raise ValueError(f"no close at or before {t0.isoformat()} (start {start!r}) in "
                         f"{_describe(history)}")
    anchor_t = before.index[-1]
    window = closes[(closes.index > anchor_t) & (closes.index <= t1)]
    if window.empty:
        raise ValueError(f"no close between {t0.isoformat()} and {t1.isoformat()} (episode "
                         f"{start!r}..{end!r}) in {_describe(history)}")
    path = pd.concat([before.iloc[-1:], window])
    s0 = float(path.iloc[0])
    out = pd.DataFrame({
        "t_years": (path.index - anchor_t).total_seconds().to_numpy() / _YEAR,
        "close": path.to_numpy(),
        "cum_return": path.to_numpy() / s0 - 1.0,
        "log_return": np.log(path.to_numpy() / s0),
    }, index=pd.DatetimeIndex(path.index, name="time"))
    out.attrs = {k: history.attrs[k] for k in ("source", "provider", "currency")
                 if k in history.attrs}
    out.attrs.update({"start": t0.isoformat(), "end": t1.isoformat(),
                      "anchor": anchor_t.isoformat()})
    return out


def _ann_vol(closes: pd.Series) -> tuple[float, int]:
    r = np.diff(np.log(closes.to_numpy()))
    secs = (closes.index - closes.index[0]).total_seconds().to_numpy()
    dt = np.diff(secs) / _YEAR  # years between closes (any datetime resolution)
    if r.size == 0:
        return math.nan, 0
    return float(np.sqrt(np.sum(r * r) / np.sum(dt))), int(r.size)


def realized_vol(history, start, end, *, window_days: float = 30) -> dict:
    """Annualised close-to-close realised volatility before and during an episode.

    ``sigma = sqrt(sum r_i^2 / sum dt_i)`` over the log returns ``r_i`` between consecutive
    closes, with ``dt_i`` their ACT/365 spacing in years: ``sqrt(365) * RMS(r)`` for
    daily bars without gaps, ``sqrt(365 * 6) * RMS(r)`` for 4h bars, and a return across a
    missing bar counts for its longer span. Returns are not demeaned (realised variance; a
    two-day crash should not be cancelled by its own mean).

    Args:
      history: a table from ``load_spot_history``.
      start, end: the episode, as in ``episode_path``.
      window_days: length of the calm window before the episode, in days, ending at the
        episode's anchor close.

    Returns:
      ``{"before": ..., "during": ..., "ratio": during / before, "n_before": ...,
      "n_during": ...}`` (decimals; counts of returns).

    Raises:
      ValueError: as ``episode_path``; no return in the ``window_days`` before the anchor.

    Examples:
      >>> rv = realized_vol(btc, "2022-11-06", "2022-11-09")          # doctest: +SKIP
      >>> rv["ratio"] > 2                                              # doctest: +SKIP
      True
    """
    if not window_days > 0:
        raise ValueError(f"window_days must be > 0; got {window_days!r}")
    path = episode_path(history, start, end)
    during, n_during = _ann_vol(path["close"])
    anchor_t = path.index[0]
    closes = _closes(history)
    calm = closes[(closes.index >= anchor_t - pd.Timedelta(days=window_days))
                  & (closes.index <= anchor_t)]
    before, n_before = _ann_vol(calm)
    if n_before == 0:
        raise ValueError(f"no return in the {window_days} days before {anchor_t.isoformat()} "
                         f"in {_describe(history)}")
    return {"before": before, "during": during, "ratio": during / before,
            "n_before": n_before, "n_during": n_during}


class Episode(NamedTuple):
    """A named stress episode: UTC dates (inclusive) and where its story is told."""

    name: str
    start: str
    end: str
    description: str
    source: str


EPISODES: dict[str, Episode] = {e.name: e for e in (
    Episode("bubble-2018-02", "2017-12-17", "2018-02-05",
            "End of the 2017 bubble: from BTC's Binance record close (19,103 USDT on "
            "2017-12-16) to the 2018-02-05 capitulation close (6,940): -64%; the 2018-02-05 "
            "day alone -15% (log -0.165).",
            "https://en.wikipedia.org/wiki/Cryptocurrency_bubble"),
    Episode("covid-2020-03", "2020-03-12", "2020-03-13",
            "COVID 'Black Thursday': BTC 7,935 -> 4,800 USDT on 2020-03-12 (-39.5%, the "
            "largest daily fall in the Binance history), Binance low 3,782 on 2020-03-13; "
            "-30% over the two days after a +16% rebound on the 13th. Yahoo close 2020-03-12: "
            "4,971 (-37%).",
            "https://en.wikipedia.org/wiki/2020_stock_market_crash"),
    Episode("may-2021", "2021-05-19", "2021-05-19",
            "China bars financial institutions from crypto services (announced 2021-05-18): "
            "BTC 42,850 -> 36,690 USDT close to close (-14%), intraday low 30,000; part of a "
            "fall from 56,670 on 2021-05-11.",
            "https://www.livemint.com/market/cryptocurrency/"
            "what-sent-crypto-market-into-a-24-hour-tailspin/amp-11621531928694.html"),
    Episode("luna-2022-05", "2022-05-07", "2022-05-13",
            "TerraUSD (UST) loses its peg and LUNA collapses: BTC 36,014 -> 29,287 USDT "
            "(-19%), the close of 2022-05-09 alone -12%; USDT itself traded below par.",
            "https://en.wikipedia.org/wiki/Terra_(blockchain)"),
    Episode("3ac-2022-06", "2022-06-12", "2022-06-18",
            "Celsius freezes withdrawals (2022-06-12), Three Arrows Capital defaults: BTC "
            "28,425 -> 18,971 USDT (-33%), 2022-06-13 -15% and 2022-06-18 -7%.",
            "https://en.wikipedia.org/wiki/Three_Arrows_Capital"),
    Episode("ftx-2022-11", "2022-11-06", "2022-11-09",
            "FTX collapse: Binance says it will sell its FTT (2022-11-06), FTX halts "
            "withdrawals (11-08), Binance drops its rescue offer (11-09): BTC 21,299 -> "
            "15,923 USDT (-25%), 11-08 -10% and 11-09 -14%; DVOL peaks at 114.7 on 11-09.",
            "https://en.wikipedia.org/wiki/Bankruptcy_of_FTX"),
    Episode("yen-carry-2024-08", "2024-08-02", "2024-08-05",
            "Yen carry-trade unwind and weak US payrolls; the Nikkei falls 12% on 2024-08-05: "
            "BTC 65,354 -> 54,019 USDT (-17%), 2024-08-05 -7%.",
            "https://cointeeth.com/en/news/"
            "the-main-culprit-for-the-cryptocurrency-market-s-plunge-last-weekend"),
    Episode("liquidation-2025-10", "2025-10-10", "2025-10-10",
            "US 100% tariff announcement on Chinese imports; record ~19 bn USD of crypto "
            "liquidations (CoinGlass): BTC 121,662 -> 112,775 USDT close to close (-7%), "
            "Binance intraday low 102,000.",
            "https://www.ainvest.com/news/bitcoin-news-today-trump-tariffs-expose-crypto-"
            "leverage-crisis-19b-liquidated-historic-collapse-2510"),
    Episode("drawdown-2025-11", "2025-10-07", "2025-11-22",
            "Drawdown from BTC's record close (124,659 USDT on 2025-10-06) to 84,740 on "
            "2025-11-22 (-32%) over seven weeks, through the 2025-10-10 liquidation cascade.",
            "Binance BTCUSDT daily closes in the shared data (spot/binance/BTCUSDT_1d.csv)"),
)}
"""Named crypto stress episodes (dates UTC, inclusive; moves quoted from the Binance daily
BTCUSDT closes in the shared data, anchored on the close before ``start``)."""


def episode(name: str) -> Episode:
    """The episode called ``name`` (see ``EPISODES``).

    Raises:
      ValueError: an unknown name (the known names are listed).

    Examples:
      >>> episode("ftx-2022-11").start
      '2022-11-06'
    """
    try:
        return EPISODES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown episode {name!r}; known episodes: "
                         f"{', '.join(EPISODES)}") from None


__all__ = [
    "load_spot_history", "read_spot_file", "spot_file", "dropped_rows", "load_dvol",
    "log_returns", "episode_path", "realized_vol", "episode", "Episode", "EPISODES",
    "PROVIDERS", "CURRENCIES", "OHLCV", "PARTIAL_LAST_BAR", "default_data_dir",
]
