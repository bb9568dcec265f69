"""Deribit option chains: reading, normalising into the option-chain table, cleaning.

Deribit options on BTC and ETH are inverse: premiums are quoted in coin per contract (one
contract on one coin) and the USD premium is ``coin premium x underlying``, where
``underlying`` is Deribit's forward for that expiry (a listed future or the synthetic forward
from put-call parity; for the nearest expiries sometimes the spot index). Deribit prices its
marks by Black-76 on that forward with no discounting (``r = 0``) and time as ACT/365 to the
08:00 UTC expiry; the same conventions here make our implied vols reproduce Deribit's mark IV.

The normalised chain (one row per quote; ``CHAIN_COLUMNS`` documents every column) carries
bid/ask/mark in coin and in USD and the bid/ask/mid/mark implied vols computed by
``qmr_jax.implied_vol``. ``load_deribit`` reads the shared parquet (all snapshots) or a raw
snapshot CSV, drops the rows that cannot be right (``check_integrity``: truncated, duplicated,
inconsistent index or forward, impossible open interest), normalises and, by default, cleans
it with ``CleaningRules``; every dropped row keeps its reason and its place in the file
(``load_deribit(..., return_dropped=True)``, ``cleaning_summary``). Unusable input is refused
with a ``ValueError`` naming the file, the line (the file's own line number, the header being
line 1; for parquet the 0-based row index) and the field.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from pathlib import Path

import jax
import numpy as np
import pandas as pd

RAW_COLUMNS = (
    "timestamp", "instrument_name", "underlying", "option_type", "strike", "expiry_datetime",
    "bid_price", "ask_price", "mark_price", "implied_volatility", "open_interest", "currency",
    "index_price",
)
"""Columns a raw Deribit chain (parquet or snapshot CSV) must have."""

OPTIONAL_RAW_COLUMNS = ("volume", "delta", "vega", "snapshot_file", "underlying_name")

CHAIN_COLUMNS = {
    "currency": "BTC or ETH",
    "snapshot": "snapshot time (UTC timestamp; the collector run's start)",
    "instrument": "Deribit instrument name, e.g. BTC-27FEB26-98000-P",
    "expiry": "expiry time (UTC timestamp, 08:00 on Deribit)",
    "expiry_years": "ACT/365 year fraction from snapshot to expiry",
    "strike": "strike in USD",
    "is_call": "True for calls",
    "forward": "Deribit's forward (underlying) for the expiry, USD",
    "spot": "Deribit spot index at the snapshot, USD",
    "log_moneyness": "log(strike / forward)",
    "bid_coin": "best bid, coin per contract (NaN: no bid)",
    "ask_coin": "best ask, coin per contract (NaN: no ask)",
    "mark_coin": "Deribit mark price, coin per contract",
    "bid_usd": "bid_coin x forward",
    "ask_usd": "ask_coin x forward",
    "mark_usd": "mark_coin x forward",
    "bid_iv": "Black-76 implied vol of the bid (decimal; NaN without a bid or outside bounds)",
    "ask_iv": "implied vol of the ask",
    "mid_iv": "implied vol of the mid price (bid + ask) / 2",
    "mark_iv": "implied vol of the mark price (ours)",
    "deribit_mark_iv": "Deribit's mark IV (decimal), for comparison",
    "vega": "Black-76 vega at the mark IV, USD per vol point",
    "spread_coin": "ask_coin - bid_coin",
    "spread_iv": "ask_iv - bid_iv (decimal)",
    "open_interest": "open interest, contracts",
    "volume": "24h volume, contracts (NaN if absent)",
}
"""The normalised option-chain table: column -> meaning. A chain read from a file by
``load_deribit`` also has ``source_row``: the quote's line in a CSV (the header is line 1), its
0-based row index in a parquet file (``attrs["source_row"]`` says which)."""

TICK = {"BTC": 1e-4, "ETH": 1e-4}
"""Deribit option price tick (coin) per currency."""


def default_data_dir() -> Path:
    """``$QMR_DATA_DIR`` if set, else ``../shared/data`` beside the project root."""
    env = os.environ.get("QMR_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _default_chain_file() -> Path:
    folder = default_data_dir() / "deribit_options"
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"no Deribit option parquet under {folder}; set QMR_DATA_DIR to the data folder "
            "or pass a path"
        )
    return files[0]


def _resolve(path) -> Path:
    if path is None:
        return _default_chain_file()
    p = Path(path)
    if p.is_dir():
        sub = p / "deribit_options"
        folder = sub if sub.is_dir() else p
        files = sorted(folder.glob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"no Deribit option parquet file in {folder}")
        return files[0]
    if not p.exists():
        raise FileNotFoundError(f"Deribit chain file not found: {p}")
    return p


NUMERIC_RAW_COLUMNS = (
    "underlying", "strike", "time_to_maturity", "bid_price", "ask_price", "mark_price",
    "mid_price", "futures_price", "implied_volatility", "delta", "vega", "open_interest",
    "volume", "bid_ask_spread", "index_price", "volume_usd",
)
"""Raw columns read as numbers: a cell that is neither empty nor a number is refused."""

_NA_TEXT = frozenset({"", "nan", "NaN", "NAN", "-nan", "NA", "N/A", "n/a", "#N/A", "null",
                      "NULL", "None", "<NA>"})
"""Cell texts read as missing (pandas' default missing-value markers)."""

_PARQUET_ROW = "parquet row"
"""``attrs["source_row"]`` of rows read from parquet: ``source_row`` is the 0-based row index."""

_JSON_ROW = "json element"
"""``attrs["source_row"]`` of rows read from a JSON list (Deribit's API): ``source_row`` is the
0-based index of the element in the list."""


def _field(raw: pd.DataFrame, name: str) -> str:
    """The name a raw column has in the file it was read from (``attrs["fields"]`` maps the
    raw Deribit names to another format's, e.g. ``bid_price`` -> ``bid``)."""
    return raw.attrs.get("fields", {}).get(name, name)


def _row_text(kind, n: int) -> str:
    """``line N``, ``row N (0-based ...)`` or ``element N (0-based ...)`` by the kind of
    ``source_row`` (``attrs["source_row"]``)."""
    if kind == _PARQUET_ROW:
        return f"row {n} (0-based row index in the parquet file)"
    if kind == _JSON_ROW:
        return f"element {n} (0-based index in the JSON result list)"
    return f"line {n}"


def _times(col: pd.Series) -> pd.Series:
    """ISO-8601 texts as UTC times (``NaT`` where unparsable), each distinct text parsed
    once (a chain repeats a few dozen timestamps over thousands of rows)."""
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    text = pd.Series(uniques, dtype=object).astype(str)
    # pandas reads "now" and "today" as the current time: only a text starting with a date
    text = text.where(text.str.match(r"\s*\d{4}-\d{2}-\d{2}"), "")
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    out = parsed.reindex(codes)  # code -1 (missing) is not in the index: NaT
    return pd.Series(out.array, index=col.index, name=col.name)


def _show(value) -> str:
    """A cell for a message: ``-5.0``, ``'lots'``, ``nan`` (not ``np.float64(-5.0)``)."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def _where(raw: pd.DataFrame, i: int) -> str:
    """Where raw row ``i`` (positional) is in its file: ``line N`` for a CSV (the file's own
    line number, the header being line 1), ``row N (0-based ...)`` for parquet."""
    if "source_row" in raw.columns:
        return _row_text(raw.attrs.get("source_row"), int(raw["source_row"].iloc[i]))
    return f"row {i}"


def _decode(p: Path, what: str = "a Deribit chain CSV") -> str:
    data = p.read_bytes()
    if data.startswith(b"PAR1"):
        raise ValueError(f"{p}: this is a parquet file, not CSV text; name it .parquet")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ValueError(
            f"{p}: line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x} at character "
            f"{col}); {what} must be saved as UTF-8") from None


def _read_csv(p: Path, *, what: str = "a Deribit chain CSV", columns=RAW_COLUMNS,
              numeric=NUMERIC_RAW_COLUMNS) -> pd.DataFrame:
    """A chain CSV as strings, ``numeric`` columns converted, ``source_row`` = file line.

    A short last line (the file cut mid-row) is left out of the table and listed in
    ``attrs["truncated"]`` as ``(line, currency or None, instrument or None)``; a short or
    long line elsewhere is refused. ``what`` and ``columns`` describe the expected file in
    the messages.
    """
    text = _decode(p, what)
    if not text.strip():
        raise ValueError(f"{p}: empty file; {what} starts with a header line "
                         f"naming its columns ({', '.join(columns)})")
    reader = csv.reader(io.StringIO(text, newline=""))
    header, header_line, records, lines = None, 0, [], []
    short = []  # (position in records, line, fields) of short rows
    previous_end = 0
    try:
        for fields in reader:
            line, previous_end = previous_end + 1, reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # a blank line holds no row
            if header is None:
                header, header_line = [f.strip() for f in fields], line
                seen = set()
                for name in header:
                    if name in seen:
                        raise ValueError(f"{p}: line {line}: column {name!r} appears twice in "
                                         "the header")
                    seen.add(name)
                continue
            if len(fields) > len(header):
                raise ValueError(f"{p}: line {line} has {len(fields)} fields, the header "
                                 f"(line {header_line}) has {len(header)}: an unquoted comma?")
            if fields == header:
                raise ValueError(f"{p}: line {line} repeats the header (two files pasted "
                                 "together?)")
            if len(fields) < len(header):
                short.append((len(records), line, fields))
                fields = fields + [""] * (len(header) - len(fields))
            records.append(fields)
            lines.append(line)
    except csv.Error as exc:
        raise ValueError(f"{p}: line {reader.line_num}: not valid CSV ({exc})") from None
    truncated = []
    for pos, line, fields in short:
        if pos != len(records) - 1:
            raise ValueError(f"{p}: line {line} has {len(fields)} fields, the header "
                             f"(line {header_line}) has {len(header)}; every row needs a "
                             f"value (or an empty field) for each column")
        given = dict(zip(header, fields[:-1], strict=False))  # the last field may be cut
        truncated.append((line, given.get("currency") or None,
                          given.get("instrument_name") or None))
    if truncated:
        del records[-1], lines[-1]
    raw = pd.DataFrame(records, columns=header, dtype=object)
    for c in raw.columns:
        text_col = raw[c].astype(str).str.strip()
        raw[c] = raw[c].where(~text_col.isin(_NA_TEXT), None)
    raw["source_row"] = np.asarray(lines, np.int64)
    raw.attrs["source_row"] = "line"
    raw.attrs["truncated"] = truncated
    _to_numbers(raw, p, numeric)
    return raw


def _to_numbers(raw: pd.DataFrame, source, columns=NUMERIC_RAW_COLUMNS) -> None:
    """Convert ``columns`` (those present) in place; refuse a cell that is not a number."""
    for c in columns:
        if c not in raw.columns or pd.api.types.is_numeric_dtype(raw[c]):
            continue
        col = raw[c].astype(object)
        missing = col.isna() | col.astype(str).str.strip().isin(_NA_TEXT)
        v = pd.to_numeric(col.where(~missing, np.nan), errors="coerce")
        bad = (v.isna() & ~missing).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{source}: {_where(raw, i)}, column {c!r}: expected a number (or "
                             f"an empty field), got {_show(col.iloc[i])}")
        raw[c] = v.astype(np.float64)


def _read_parquet(p: Path, filters: dict) -> pd.DataFrame:
    """The rows of a parquet file matching ``filters`` (column -> value), with
    ``source_row`` = their 0-based row index in the file."""
    import pyarrow.parquet as pq

    names = pq.read_schema(p).names
    missing = [c for c in RAW_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"{p}: missing column(s) {', '.join(repr(c) for c in missing)} (a "
                         f"Deribit chain needs {', '.join(RAW_COLUMNS)})")
    if filters and all(c in names for c in filters):
        keys = pd.read_parquet(p, columns=list(filters))
        _check_currency_present(keys, p, parquet=True)
        mask = np.ones(len(keys), bool)
        for c, value in filters.items():
            mask &= (keys[c] == value).to_numpy(dtype=bool, na_value=False)
        rows = np.flatnonzero(mask)
        raw = pd.read_parquet(p, filters=[(c, "==", v) for c, v in filters.items()])
        if len(raw) != len(rows):  # never expected: read everything, filter here
            raw = pd.read_parquet(p).iloc[rows].reset_index(drop=True)
    else:
        raw = pd.read_parquet(p)
        rows = np.arange(len(raw))
    raw["source_row"] = rows.astype(np.int64)
    raw.attrs["source_row"] = _PARQUET_ROW
    raw.attrs["truncated"] = []
    _to_numbers(raw, p)
    return raw


def _check_currency_present(raw: pd.DataFrame, source, parquet: bool = False) -> None:
    if "currency" not in raw.columns:
        return
    bad = raw["currency"].isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        where = (f"row {i} (0-based row index in the parquet file)" if parquet
                 else _where(raw, i))
        raise ValueError(f"{source}: {where}: field 'currency' is empty; every row names its "
                         "currency (BTC or ETH)")


def _read_file(p: Path, filters: dict | None = None) -> pd.DataFrame:
    """The raw rows of a chain file (all columns), ``source_row`` set, unfiltered for CSV."""
    if p.suffix not in (".parquet", ".csv"):
        raise ValueError(f"{p}: expected a .parquet or .csv Deribit chain file")
    try:
        if p.suffix == ".parquet":
            return _read_parquet(p, filters or {})
        return _read_csv(p)
    except ValueError as exc:
        if str(exc).startswith(str(p)):
            raise
        raise ValueError(f"{p}: cannot read the Deribit chain ({exc})") from exc
    except OSError as exc:
        raise ValueError(f"{p}: cannot read the Deribit chain ({exc})") from exc
    except Exception as exc:  # pyarrow's own errors on a damaged file
        if type(exc).__module__.startswith("pyarrow"):
            raise ValueError(f"{p}: cannot read the Deribit chain ({exc})") from exc
        raise


def read_deribit_raw(path=None, *, currency: str | None = None,
                     snapshot: str | None = None) -> pd.DataFrame:
    """The raw Deribit rows of a parquet or snapshot CSV file, with the columns checked.

    Every row keeps ``source_row``, where it is in its file: the file's own line number for
    a CSV (the header is line 1; ``attrs["source_row"] == "line"``), the 0-based row index
    for parquet (``attrs["source_row"] == "parquet row"``). Error messages use the same.

    Args:
      path: a ``.parquet`` or ``.csv`` file, or a folder holding ``deribit_options/`` (default:
        the shared data folder).
      currency: keep one currency (``"BTC"``/``"ETH"``).
      snapshot: keep one snapshot, by its exact ``timestamp`` string or ``snapshot_file``.

    Returns:
      The rows, numeric columns as floats. A CSV's last line cut short (a truncated file) is
      not among them: ``attrs["truncated"]`` lists it as ``(line, currency, instrument)``
      (``None`` where the cut line does not say), and ``load_deribit`` records it as a
      dropped row.

    Raises:
      FileNotFoundError: no such file. ValueError: unreadable file (not UTF-8, empty, not
      CSV/parquet), missing columns, a cell that is not a number, a row with too many or
      (before the last line) too few fields, a row without a currency; each names the file,
      the line and the column.
    """
    p = _resolve(path)
    filters = {}
    if currency is not None:
        filters["currency"] = currency
    if snapshot is not None:
        filters["snapshot_file" if str(snapshot).endswith(".csv") else "timestamp"] = str(
            snapshot)
    raw = _read_file(p, filters)
    truncated = raw.attrs["truncated"]
    missing = [c for c in RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{p}: missing column(s) {', '.join(repr(c) for c in missing)} (a "
                         f"Deribit chain needs {', '.join(RAW_COLUMNS)})")
    _check_currency_present(raw, p)
    if raw.empty and not truncated:
        raise ValueError(f"{p}: no data rows, only the header")
    keep = np.ones(len(raw), bool)
    if currency is not None:
        keep &= (raw["currency"] == currency).to_numpy(dtype=bool, na_value=False)
        # a cut line's currency, else its instrument name's (BTC-...), else unknown: kept
        truncated = [t for t in truncated
                     if (t[1] or (t[2] or "-").split("-")[0] or None) in (None, currency)]
    if snapshot is not None:
        if str(snapshot).endswith(".csv"):
            if "snapshot_file" in raw.columns:
                keep &= (raw["snapshot_file"] == str(snapshot)).to_numpy(dtype=bool,
                                                                         na_value=False)
            elif str(snapshot) != p.name:
                raise ValueError(f"{p}: snapshot={snapshot!r} names a snapshot file, but this "
                                 "file has no 'snapshot_file' column and another name")
        else:
            keep &= (raw["timestamp"] == str(snapshot)).to_numpy(dtype=bool, na_value=False)
    attrs = dict(raw.attrs)
    raw = raw.loc[keep].reset_index(drop=True)
    raw.attrs.update(attrs, source=str(p), truncated=truncated)
    if raw.empty and not truncated:
        raise ValueError(f"{p}: no rows for currency={currency!r}, snapshot={snapshot!r}")
    return raw


def _snapshot_keys(p: Path, currency: str) -> pd.DataFrame:
    """``timestamp`` (raw string), ``snapshot`` (parsed) and ``source_row`` of the rows of
    ``currency``; an unparsable time is refused with its line and field."""
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(p).names
        except Exception as exc:
            raise ValueError(f"{p}: cannot read the Deribit chain ({exc})") from exc
        missing = [c for c in ("timestamp", "currency") if c not in names]
        if missing:
            raise ValueError(f"{p}: missing column(s) {', '.join(repr(c) for c in missing)} "
                             f"(a Deribit chain needs {', '.join(RAW_COLUMNS)})")
        raw = pd.read_parquet(p, columns=["timestamp", "currency"])
        _check_currency_present(raw, p, parquet=True)
        raw["source_row"] = np.arange(len(raw), dtype=np.int64)
        raw.attrs["source_row"] = _PARQUET_ROW
    else:
        raw = _read_file(p)
        missing = [c for c in ("timestamp", "currency") if c not in raw.columns]
        if missing:
            raise ValueError(f"{p}: missing column(s) {', '.join(repr(c) for c in missing)} "
                             f"(a Deribit chain needs {', '.join(RAW_COLUMNS)})")
        _check_currency_present(raw, p)
        raw = raw[["timestamp", "currency", "source_row"]]
    attrs = dict(raw.attrs)
    raw = raw[(raw["currency"] == currency).to_numpy(dtype=bool, na_value=False)]
    raw = raw.reset_index(drop=True)
    raw.attrs.update(attrs)
    parsed = _times(raw["timestamp"])
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{p}: {_where(raw, i)}: field 'timestamp' must be an ISO-8601 time "
                         f"such as 2026-04-01T10:01:01+00:00; got {raw['timestamp'].iloc[i]!r}")
    raw["snapshot"] = parsed
    return raw


def list_snapshots(path=None, currency: str = "BTC") -> pd.DataFrame:
    """Snapshots available for ``currency``: ``snapshot`` (timestamp) and ``n_rows``."""
    keys = _snapshot_keys(_resolve(path), currency)
    out = keys.groupby("snapshot").size().rename("n_rows").reset_index()
    return out.sort_values("snapshot").reset_index(drop=True)


def _implied_vols(prices, forward, strikes, expiries, is_call):
    from ..pricing.black import implied_vol

    with jax.enable_x64(True):
        vols, status = implied_vol(np.asarray(prices, np.float64), forward, strikes, expiries,
                                   is_call, 1.0, return_status=True)
        vols, status = np.asarray(vols), np.asarray(status)
    return vols, status


def normalise_deribit(raw: pd.DataFrame) -> pd.DataFrame:
    """The option-chain table (``CHAIN_COLUMNS``) of raw Deribit rows.

    Rows with unusable identifiers (non-positive strike or forward, unknown option type,
    unparsable times, a strike, type or currency that contradicts the instrument name) raise a
    ``ValueError`` naming the source, the line (``source_row``, carried into the chain when
    the raw rows have it) and the field; price
    problems (no bid, crossed quotes, prices outside the no-arbitrage bounds) are left for the
    cleaning rules, which record a reason per row.
    """
    source = raw.attrs.get("source", "<table>")
    _check_identifiers(raw, source)
    snapshot = _times(raw["timestamp"])
    expiry = _times(raw["expiry_datetime"])
    years = (expiry - snapshot).dt.total_seconds().to_numpy() / (365.0 * 86400.0)
    strike = raw["strike"].to_numpy(np.float64)
    forward = raw["underlying"].to_numpy(np.float64)
    is_call = (raw["option_type"] == "call").to_numpy()
    out = pd.DataFrame({
        "currency": raw["currency"].to_numpy(),
        "snapshot": snapshot,
        "instrument": raw["instrument_name"].to_numpy(),
        "expiry": expiry,
        "expiry_years": years,
        "strike": strike,
        "is_call": is_call,
        "forward": forward,
        "spot": raw["index_price"].to_numpy(np.float64),
        "log_moneyness": np.log(strike / forward),
    })
    for side in ("bid", "ask", "mark"):
        coin = raw[f"{side}_price"].to_numpy(np.float64)
        out[f"{side}_coin"] = coin
        out[f"{side}_usd"] = coin * forward
    t_ok = np.where(years > 0, years, np.nan)
    ivs = {}
    for side in ("bid", "ask", "mark"):
        usd = out[f"{side}_usd"].to_numpy()
        vols, status = _implied_vols(np.where(np.isfinite(usd), usd, np.nan), forward, strike,
                                     t_ok, is_call)
        ivs[side] = np.where(status == 0, vols, np.nan)
        out[f"_{side}_status"] = status
    mid_usd = 0.5 * (out["bid_usd"].to_numpy() + out["ask_usd"].to_numpy())
    vols, status = _implied_vols(mid_usd, forward, strike, t_ok, is_call)
    ivs["mid"] = np.where(status == 0, vols, np.nan)
    for side in ("bid", "ask", "mid", "mark"):
        out[f"{side}_iv"] = ivs[side]
    out["deribit_mark_iv"] = raw["implied_volatility"].to_numpy(np.float64)
    out["vega"] = _vega(forward, strike, t_ok, ivs["mark"])
    out["spread_coin"] = out["ask_coin"] - out["bid_coin"]
    out["spread_iv"] = out["ask_iv"] - out["bid_iv"]
    out["open_interest"] = raw["open_interest"].to_numpy(np.float64)
    out["volume"] = raw["volume"].to_numpy(np.float64) if "volume" in raw else np.nan
    if "source_row" in raw.columns:
        out["source_row"] = raw["source_row"].to_numpy(np.int64)
    out.attrs["source"] = source
    if "source_row" in raw.attrs:
        out.attrs["source_row"] = raw.attrs["source_row"]
    return out


def _vega(forward, strike, expiries, vols):
    """Black-76 vega (undiscounted), USD per vol point."""
    sd = vols * np.sqrt(expiries)
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = (np.log(forward / strike) + 0.5 * sd * sd) / sd
    return forward * np.exp(-0.5 * d1 * d1) / np.sqrt(2.0 * np.pi) * np.sqrt(expiries) / 100.0


def _check_identifiers(raw: pd.DataFrame, source: str) -> None:
    """Refuse rows whose identifiers are unusable, naming the file, the line and the field."""
    def fail(mask, field, rule, value=None):
        i = int(np.flatnonzero(mask)[0])
        got = raw[field].iloc[i] if value is None else value[i]
        raise ValueError(f"{source}: {_where(raw, i)} ({raw['instrument_name'].iloc[i]}): "
                         f"field {_field(raw, field)!r} {rule}; got {_show(got)}")

    bad = raw["instrument_name"].isna().to_numpy()
    if bad.any():
        fail(bad, "instrument_name", "must name the instrument, e.g. BTC-27FEB26-98000-P")
    for field in ("strike", "underlying"):
        v = pd.to_numeric(raw[field], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(v) | (v <= 0)
        if bad.any():
            fail(bad, field, "must be a finite positive number")
    bad = ~raw["option_type"].isin(["call", "put"]).to_numpy()
    if bad.any():
        fail(bad, "option_type", "must be 'call' or 'put'")
    for field in ("timestamp", "expiry_datetime"):
        parsed = _times(raw[field])
        bad = parsed.isna().to_numpy()
        if bad.any():
            fail(bad, field, "must be an ISO-8601 time such as 2026-04-01T10:01:01+00:00")
    for field in ("bid_price", "ask_price", "mark_price"):
        v = pd.to_numeric(raw[field], errors="coerce")
        bad = (raw[field].notna() & v.isna()).to_numpy()
        if bad.any():
            fail(bad, field, "must be numeric or empty")
    # Deribit names say CUR-DDMMMYY-STRIKE-C/P: a name that disagrees with its row's
    # currency, strike or type means an edited or shifted row (checked once per distinct
    # combination: a file repeats each instrument in every snapshot)
    cols = [c for c in ("instrument_name", "currency", "strike", "option_type")
            if c in raw.columns]
    combos = raw[cols].drop_duplicates()
    names = combos["instrument_name"].astype(str)
    parts = names.str.split("-", expand=True)
    if parts.shape[1] < 4:
        return
    named = (names.str.count("-") == 3).to_numpy()
    checks = []
    if "currency" in combos.columns:
        checks.append(("currency", named & (parts[0] != combos["currency"].astype(str))
                       .to_numpy()))
    k = pd.to_numeric(parts[2], errors="coerce").to_numpy(np.float64)
    strike = pd.to_numeric(combos["strike"], errors="coerce").to_numpy(np.float64)
    checks.append(("strike", named & np.isfinite(k) & (k != strike)))
    kind = combos["option_type"].map({"call": "C", "put": "P"}).astype(str)
    checks.append(("option_type", named & parts[3].isin(["C", "P"]).to_numpy()
                   & (parts[3] != kind).to_numpy()))
    for field, bad_combo in checks:
        if bad_combo.any():
            first = combos.iloc[int(np.flatnonzero(bad_combo)[0])]
            row = (raw[cols] == first[cols]).all(axis=1).to_numpy()
            fail(row, field, "does not match the instrument name")


# ------------------------------------------------------------------------------------------
# cleaning


@dataclasses.dataclass(frozen=True)
class CleaningRules:
    """Rules for dropping quotes that carry no usable information; each drop is recorded.

    Applied in this order; a row is dropped for the first rule it breaks (its ``reason``):

    * ``expired_or_short``: ``expiry_years < min_expiry_days / 365`` (very short expiries:
      vols dominated by noise and the tick).
    * ``in_the_money``: with ``otm_only``, puts above and calls below the forward (their
      information is in the out-of-the-money twin, with a tighter relative spread; deep
      in-the-money bids often sit below intrinsic value).
    * ``no_bid`` / ``no_ask``: missing or non-positive bid, missing ask.
    * ``crossed_quote``: ``bid >= ask`` (crossed or zero-width, not a real market).
    * ``outside_bounds``: bid, ask or mark outside the Black-76 no-arbitrage bounds (below
      intrinsic or at/above the forward/strike), so no implied vol exists.
    * ``min_price``: bid below ``min_bid_ticks`` price ticks (``TICK``, 1e-4 coin). With the
      default ``min_bid_ticks=1`` a bid of exactly one tick is kept and only a bid under one
      tick is dropped; ``min_bid_ticks=2`` drops one-tick bids too (a one-tick bid says
      little about vol).
    * ``wide_spread``: ``ask_iv - bid_iv > max_spread_iv``.
    * ``far_wing``: ``|log(K/F)| > max_abs_z * mark_iv * sqrt(T)`` (standardised moneyness).
    """

    min_expiry_days: float = 2.0
    min_bid_ticks: float = 1.0
    max_spread_iv: float = 0.15
    max_abs_z: float = 4.0
    otm_only: bool = True

    def __post_init__(self):
        for f in ("min_expiry_days", "min_bid_ticks", "max_spread_iv", "max_abs_z"):
            v = getattr(self, f)
            if not (isinstance(v, int | float) and np.isfinite(v) and v >= 0):
                raise ValueError(f"CleaningRules.{f} must be a finite number >= 0; got {v!r}")


CLEANING_REASONS = ("expired_or_short", "in_the_money", "no_bid", "no_ask", "crossed_quote",
                    "outside_bounds", "min_price", "wide_spread", "far_wing")
"""Reasons ``CleaningRules`` drop a quote for, in the order they are tried."""

INTEGRITY_REASONS = ("truncated_line", "not_an_option", "duplicate_row", "bad_index_price",
                     "bad_forward", "bad_open_interest", "bad_volume", "bad_deribit_iv")
"""Reasons ``load_deribit`` and ``load_chain`` drop a raw row for, whatever the cleaning rules
(see ``check_integrity``; ``not_an_option``: a future, perpetual, spot pair or combo listed in
a Deribit API response, skipped by ``load_chain``)."""

REASONS = INTEGRITY_REASONS + CLEANING_REASONS
"""Every reason a row can be dropped for (``cleaning_summary`` lists each)."""


def drop_reasons(chain: pd.DataFrame, rules: CleaningRules | None = None) -> pd.Series:
    """Per row, the first cleaning rule it breaks (``""`` for rows kept)."""
    rules = CleaningRules() if rules is None else rules
    t = chain["expiry_years"].to_numpy()
    bid, ask = chain["bid_coin"].to_numpy(), chain["ask_coin"].to_numpy()
    tick = chain["currency"].map(TICK).fillna(1e-4).to_numpy()
    status_cols = [c for c in ("_bid_status", "_ask_status", "_mark_status") if c in chain]
    bad_bounds = np.zeros(len(chain), bool)
    for c in status_cols:
        s = chain[c].to_numpy()
        bad_bounds |= (s == 1) | (s == 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(chain["log_moneyness"].to_numpy()) / (
            chain["mark_iv"].to_numpy() * np.sqrt(np.maximum(t, 1e-12)))
    k, f = chain["strike"].to_numpy(), chain["forward"].to_numpy()
    call = chain["is_call"].to_numpy()
    checks = [
        ("expired_or_short", t < rules.min_expiry_days / 365.0),
        ("in_the_money", rules.otm_only & np.where(call, k < f, k > f)),
        ("no_bid", ~(bid > 0)),
        ("no_ask", ~np.isfinite(ask)),
        ("crossed_quote", bid >= ask),
        ("outside_bounds", bad_bounds | ~np.isfinite(chain["mark_iv"].to_numpy())),
        ("min_price", bid < rules.min_bid_ticks * tick * (1 - 1e-9)),
        ("wide_spread", ~(chain["spread_iv"].to_numpy() <= rules.max_spread_iv)),
        ("far_wing", ~(z <= rules.max_abs_z)),
    ]
    reason = np.full(len(chain), "", dtype=object)
    for name, mask in checks:
        reason = np.where((reason == "") & mask, name, reason)
    return pd.Series(reason, index=chain.index, name="reason")


def clean_chain(chain: pd.DataFrame, rules: CleaningRules | None = None):
    """Split a normalised chain into ``(kept, dropped)``; ``dropped`` has a ``reason`` column.

    ``kept.attrs["cleaning"]`` holds the summary (``cleaning_summary``).
    """
    reason = drop_reasons(chain, rules)
    keep = (reason == "").to_numpy()
    internal = [c for c in chain.columns if c.startswith("_")]
    kept = chain.loc[keep].drop(columns=internal).reset_index(drop=True)
    dropped = chain.loc[~keep].drop(columns=internal).assign(reason=reason[~keep].to_numpy())
    dropped = dropped.reset_index(drop=True)
    summary = cleaning_summary(len(chain), dropped)
    kept.attrs.update(chain.attrs)
    kept.attrs["cleaning"] = summary
    return kept, dropped


def cleaning_summary(n_rows: int, dropped: pd.DataFrame) -> dict:
    """Rows read, kept and dropped per reason (every reason listed, zeros included)."""
    counts = dropped["reason"].value_counts()
    by = {r: int(counts.get(r, 0)) for r in REASONS}
    return {"rows": int(n_rows), "kept": int(n_rows - len(dropped)), "dropped": by}


def format_cleaning_summary(summary: dict) -> str:
    """The cleaning summary as a few readable lines."""
    lines = [f"{summary['kept']} of {summary['rows']} quotes kept"]
    for reason, n in summary["dropped"].items():
        if n:
            lines.append(f"  dropped {n:7d}  {reason}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# integrity: rows that cannot be right, dropped with a reason before any cleaning


INDEX_TOLERANCE = 0.02
"""Largest ``|log(index_price / median index_price of its snapshot)|``. The index comes from
per-instrument ticker calls made one after another, so it moves a little within a snapshot:
by at most 0.0072 in the real data (604 snapshots)."""

FORWARD_TOLERANCE = 0.02
"""Largest ``|log(forward / median forward of its snapshot and expiry)|``. All quotes of one
expiry share Deribit's forward up to the same timing skew: at most 0.0039 in the real data."""

BASIS_LIMIT = (0.1, 0.5)
"""``(a, b)``: a forward must satisfy ``|log(forward / index)| <= a + b * expiry_years``
(a 50% annualised basis and 10% more; the real data's largest is 0.05, at one year)."""

MAX_DERIBIT_IV = 10.0
"""Largest credible Deribit mark IV (decimal, 1000 vol points; the real data's largest is
3.49)."""

MAX_CONTRACTS = 1e9
"""Largest credible open interest or 24h volume, contracts (more than the coins in
existence)."""


def check_integrity(raw: pd.DataFrame, *,
                    optional: tuple[str, ...] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split raw Deribit rows into ``(sound, dropped)``; ``dropped`` has a ``reason`` column.

    A row is dropped for the first of these it breaks:

    * ``duplicate_row``: an exact copy of an earlier row (same snapshot, currency, instrument
      and every value); the first copy is kept. A second row for one instrument in one
      snapshot with *different* values is refused: which one is right cannot be known.
    * ``bad_index_price``: ``index_price`` missing, not finite, not positive, or more than
      ``INDEX_TOLERANCE`` (log) away from the median index of its snapshot.
    * ``bad_forward``: ``underlying`` (the forward) further from the snapshot's index than
      ``BASIS_LIMIT`` allows, or more than ``FORWARD_TOLERANCE`` (log) away from the median
      forward of the other quotes of its snapshot and expiry.
    * ``bad_open_interest`` / ``bad_volume``: missing, not finite, negative or above
      ``MAX_CONTRACTS`` (``volume`` only where the column exists).
    * ``bad_deribit_iv``: Deribit's mark IV missing, not finite, not positive or above
      ``MAX_DERIBIT_IV``.

    ``optional`` names raw fields (``open_interest``, ``volume``, ``implied_volatility``) that
    a file may leave empty: a missing value there is no reason to drop the row (a user's chain,
    ``load_chain``); a value that is present is checked as above.

    (``truncated_line``, a CSV's last line cut short, is recorded by ``load_deribit`` from
    ``read_deribit_raw``'s ``attrs["truncated"]``.) Identifiers are checked first
    (``normalise_deribit``'s errors).

    Raises:
      ValueError: conflicting duplicates, naming the file, both lines and the first field
      that differs.
    """
    source = raw.attrs.get("source", "<table>")
    _check_identifiers(raw, source)
    n = len(raw)
    reason = np.full(n, "", dtype=object)

    def mark(mask, name):
        reason[(reason == "") & np.asarray(mask, bool)] = name

    key = ["timestamp", "currency", "instrument_name"]
    values = [c for c in raw.columns if c != "source_row"]
    same_key = raw.duplicated(key, keep="first").to_numpy()
    if same_key.any():
        exact = raw.duplicated(values, keep="first").to_numpy()
        conflict = same_key & ~exact
        if conflict.any():
            j = int(np.flatnonzero(conflict)[0])
            mine = raw.iloc[j]
            first = (raw[key] == mine[key]).all(axis=1).to_numpy()
            i = int(np.flatnonzero(first)[0])
            field = next(c for c in values if not _same(raw[c].iloc[i], mine[c]))
            raise ValueError(
                f"{source}: {_where(raw, j)} and {_where(raw, i)}: duplicate "
                f"{_field(raw, 'instrument_name')!r} {mine['instrument_name']} in snapshot "
                f"{mine['timestamp']} with different values ({_field(raw, field)} "
                f"{_show(raw[field].iloc[i])} and {_show(mine[field])}); a snapshot quotes "
                "each instrument once")
        mark(same_key, "duplicate_row")

    snap = (raw["timestamp"].astype(str) + "|" + raw["currency"].astype(str)).to_numpy()
    index = raw["index_price"].to_numpy(np.float64)
    valid = np.isfinite(index) & (index > 0)
    usable = valid & (reason == "")
    ref = pd.Series(np.where(usable, index, np.nan)).groupby(snap).transform("median")
    ref = ref.to_numpy()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mark(~valid | ~(np.abs(np.log(index / ref)) <= INDEX_TOLERANCE), "bad_index_price")
        forward = raw["underlying"].to_numpy(np.float64)
        t0 = _times(raw["timestamp"])
        t1 = _times(raw["expiry_datetime"])
        years = np.maximum((t1 - t0).dt.total_seconds().to_numpy() / (365.0 * 86400.0), 0.0)
        basis_ok = np.abs(np.log(forward / ref)) <= BASIS_LIMIT[0] + BASIS_LIMIT[1] * years
        expiry = snap + "|" + raw["expiry_datetime"].astype(str).to_numpy()
        usable = basis_ok & (reason == "")
        fref = pd.Series(np.where(usable, forward, np.nan)).groupby(expiry).transform("median")
        near = np.abs(np.log(forward / fref.to_numpy())) <= FORWARD_TOLERANCE
        mark(~basis_ok | ~near, "bad_forward")
        for field, name in (("open_interest", "bad_open_interest"), ("volume", "bad_volume")):
            if field in raw.columns:
                v = raw[field].to_numpy(np.float64)
                absent = np.isnan(v) if field in optional else False
                mark(~((v >= 0) & (v <= MAX_CONTRACTS)) & ~absent, name)
        iv = raw["implied_volatility"].to_numpy(np.float64)
        absent = np.isnan(iv) if "implied_volatility" in optional else False
        mark(~((iv > 0) & (iv <= MAX_DERIBIT_IV)) & ~absent, "bad_deribit_iv")
    ok = reason == ""
    attrs = dict(raw.attrs)
    sound = raw.loc[ok].reset_index(drop=True)
    dropped = raw.loc[~ok].assign(reason=reason[~ok]).reset_index(drop=True)
    sound.attrs.update(attrs)
    dropped.attrs.update(attrs)
    return sound, dropped


def _same(a, b) -> bool:
    if pd.isna(a) and pd.isna(b):
        return True
    return bool(a == b)


def _dropped_view(raw: pd.DataFrame, truncated) -> pd.DataFrame:
    """Rows dropped before normalising, in the chain's columns as far as they can be read,
    with ``source_row`` and ``reason``."""
    def num(c):
        return pd.to_numeric(raw[c], errors="coerce").to_numpy(np.float64)

    def time(c):
        return _times(raw[c])

    out = pd.DataFrame({
        "currency": raw["currency"].to_numpy(object),
        "snapshot": time("timestamp"),
        "instrument": raw["instrument_name"].to_numpy(object),
        "expiry": time("expiry_datetime"),
        "strike": num("strike"),
        "is_call": (raw["option_type"] == "call").to_numpy(bool),
        "forward": num("underlying"),
        "spot": num("index_price"),
        "bid_coin": num("bid_price"),
        "ask_coin": num("ask_price"),
        "mark_coin": num("mark_price"),
        "deribit_mark_iv": num("implied_volatility"),
        "open_interest": num("open_interest"),
        "volume": num("volume") if "volume" in raw.columns else np.nan,
        "source_row": raw["source_row"].to_numpy(np.int64) if "source_row" in raw.columns
        else np.arange(len(raw)),
        "reason": raw["reason"].to_numpy(object),
    })
    if truncated:
        cut = pd.DataFrame({
            "currency": [t[1] for t in truncated], "instrument": [t[2] for t in truncated],
            "source_row": np.asarray([t[0] for t in truncated], np.int64),
            "reason": "truncated_line",
        })
        out = cut if out.empty else pd.concat([out, cut], ignore_index=True)
    return out


# ------------------------------------------------------------------------------------------
# loading


def load_deribit(path=None, currency: str = "BTC", snapshot=None, *, clean: bool = True,
                 rules: CleaningRules | None = None, return_dropped: bool = False):
    """Load a Deribit chain as the normalised option-chain table, cleaned by default.

    Rows that cannot be right (``INTEGRITY_REASONS``: a truncated last line, exact duplicate
    rows, a bad or inconsistent index price or forward, a bad open interest, volume or
    Deribit IV; see ``check_integrity``) are dropped with their reason whether or not
    ``clean`` is set; rows that are unusable or ambiguous (a cell that is not a number, an
    unknown option type, an unparsable time, two different rows for one instrument) are
    refused with a ``ValueError`` naming the file, the line and the field.

    Args:
      path: parquet or snapshot CSV file, or a data folder (default: ``$QMR_DATA_DIR`` or
        ``../shared/data``).
      currency: ``"BTC"`` or ``"ETH"``.
      snapshot: ``None`` for every snapshot in the file; ``"first"``/``"last"``; an ``int``
        index into ``list_snapshots``; a ``snapshot_file`` name (``...csv``); or a time
        (string or timestamp): the latest snapshot at or before it.
      clean: apply ``rules`` (default ``CleaningRules()``).
      return_dropped: also return the dropped rows with their ``reason``.

    Returns:
      The chain (``CHAIN_COLUMNS``, and ``source_row``: the file's line number for a CSV,
      the 0-based row index for parquet), sorted by snapshot, expiry, strike; with
      ``return_dropped``, ``(chain, dropped)``. ``chain.attrs["cleaning"]`` summarises every
      drop (``cleaning_summary``).
    """
    if currency not in TICK:
        where = f"{path}: " if path is not None else ""
        raise ValueError(f"{where}currency must be one of {sorted(TICK)}; got {currency!r}")
    p = _resolve(path)
    stamp = _pick_snapshot(p, currency, snapshot)
    raw = read_deribit_raw(p, currency=currency, snapshot=stamp)
    return _chain_of_raw(raw, clean=clean, rules=rules, return_dropped=return_dropped)


def _chain_of_raw(raw: pd.DataFrame, *, clean: bool, rules, return_dropped: bool,
                  optional: tuple[str, ...] = (), skipped: pd.DataFrame | None = None):
    """The loaders' common end: integrity drops, normalising, sorting, cleaning, summary.

    ``raw`` holds raw Deribit columns (``attrs``: ``source``, ``source_row``, ``truncated``);
    ``optional`` goes to ``check_integrity``; ``skipped`` (rows in the chain's columns with a
    ``reason``, e.g. the futures of an API response) counts among the rows read and dropped.
    """
    truncated = raw.attrs.get("truncated", [])
    sound, bad = check_integrity(raw, optional=optional)
    early = _dropped_view(bad, truncated)
    if skipped is not None and len(skipped):
        early = skipped if early.empty else pd.concat([skipped, early], ignore_index=True)
    n_rows = len(raw) + len(truncated) + (0 if skipped is None else len(skipped))
    chain = normalise_deribit(sound)
    chain = chain.sort_values(["snapshot", "expiry", "strike", "is_call"], kind="stable")
    chain = chain.reset_index(drop=True)
    if clean:
        chain, dropped = clean_chain(chain, rules)
    else:
        dropped = chain.iloc[:0].assign(reason=pd.Series(dtype=object))
        chain = chain.drop(columns=[c for c in chain.columns if c.startswith("_")])
    if len(early):
        dropped = early if dropped.empty else pd.concat([early, dropped], ignore_index=True)
    chain.attrs["cleaning"] = cleaning_summary(n_rows, dropped)
    return (chain, dropped) if return_dropped else chain


SNAPSHOT_CHOICES = ("None (every snapshot), 'first', 'last', an int index into list_snapshots, "
                    "a snapshot file name ending in .csv, or a time such as "
                    "'2026-04-01T10:00:00Z' (the latest snapshot at or before it)")


def _snapshot_time(p: Path, snapshot):
    """The snapshot argument checked before any file is read: ``("first"|"last"|int|Timestamp)``."""
    def refuse(why=""):
        raise ValueError(f"{p}: snapshot must be {SNAPSHOT_CHOICES}; got {snapshot!r}{why}")

    if isinstance(snapshot, str):
        if snapshot in ("first", "last"):
            return snapshot
        if not snapshot.strip():
            refuse()
        try:
            when = pd.Timestamp(snapshot)
        except (TypeError, ValueError) as exc:
            refuse(f" ({exc})")
    elif isinstance(snapshot, bool):
        refuse()
    elif isinstance(snapshot, int | np.integer):
        return int(snapshot)
    elif isinstance(snapshot, pd.Timestamp | np.datetime64) or hasattr(snapshot, "isoformat"):
        try:
            when = pd.Timestamp(snapshot)
        except (TypeError, ValueError) as exc:
            refuse(f" ({exc})")
    else:
        refuse()
    if pd.isna(when):
        refuse()
    return when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")


def _choose_stamp(p, currency: str, stamps: pd.Series, choice):
    """The snapshot time ``choice`` (``_snapshot_time``'s result) picks among ``stamps``
    (sorted, unique, non-empty)."""
    stamps = pd.Series(stamps).reset_index(drop=True)
    if isinstance(choice, str):
        return stamps.iloc[0 if choice == "first" else -1]
    if isinstance(choice, int):
        if not -len(stamps) <= choice < len(stamps):
            raise ValueError(f"{p}: snapshot index {choice} out of range ({-len(stamps)}.."
                             f"{len(stamps) - 1}: the file has {len(stamps)} {currency} "
                             f"snapshot{'' if len(stamps) == 1 else 's'})")
        return stamps.iloc[choice]
    earlier = stamps[stamps <= choice]
    if earlier.empty:
        raise ValueError(f"{p}: no {currency} snapshot at or before {choice} (first is "
                         f"{stamps.iloc[0]})")
    return earlier.iloc[-1]


def _pick_snapshot(p: Path, currency: str, snapshot):
    if snapshot is None or (isinstance(snapshot, str) and snapshot.endswith(".csv")):
        return snapshot
    choice = _snapshot_time(p, snapshot)
    keys = _snapshot_keys(p, currency)
    if keys.empty:
        raise ValueError(f"{p}: no {currency} snapshots")
    stamps = pd.Series(np.sort(keys["snapshot"].unique()))
    ts = _choose_stamp(p, currency, stamps, choice)
    # the raw timestamp string of that snapshot
    at = np.flatnonzero((keys["snapshot"] == ts).to_numpy())[0]
    return str(keys["timestamp"].iloc[int(at)])


__all__ = [
    "load_deribit", "read_deribit_raw", "normalise_deribit", "check_integrity",
    "list_snapshots", "clean_chain", "drop_reasons", "cleaning_summary",
    "format_cleaning_summary", "CleaningRules", "CHAIN_COLUMNS", "RAW_COLUMNS", "REASONS",
    "INTEGRITY_REASONS", "default_data_dir",
]
