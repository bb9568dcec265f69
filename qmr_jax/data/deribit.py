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
snapshot CSV, normalises and, by default, cleans it with ``CleaningRules``; every dropped row
keeps its reason (``load_deribit(..., return_dropped=True)``, ``cleaning_summary``).
"""

from __future__ import annotations

import dataclasses
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
"""The normalised option-chain table: column -> meaning."""

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


def read_deribit_raw(path=None, *, currency: str | None = None,
                     snapshot: str | None = None) -> pd.DataFrame:
    """The raw Deribit rows of a parquet or snapshot CSV file, with the columns checked.

    Args:
      path: a ``.parquet`` or ``.csv`` file, or a folder holding ``deribit_options/`` (default:
        the shared data folder).
      currency: keep one currency (``"BTC"``/``"ETH"``).
      snapshot: keep one snapshot, by its exact ``timestamp`` string or ``snapshot_file``.

    Raises:
      FileNotFoundError: no such file. ValueError: unreadable file or missing columns (named).
    """
    p = _resolve(path)
    try:
        if p.suffix == ".parquet":
            filters = []
            if currency is not None:
                filters.append(("currency", "==", currency))
            if snapshot is not None and str(snapshot).endswith(".csv"):
                filters.append(("snapshot_file", "==", str(snapshot)))
            raw = pd.read_parquet(p, filters=filters or None)
        elif p.suffix == ".csv":
            raw = pd.read_csv(p)
        else:
            raise ValueError(f"{p}: expected a .parquet or .csv Deribit chain file")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(str(p)):
            raise
        raise ValueError(f"{p}: cannot read the Deribit chain ({exc})") from exc
    missing = [c for c in RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{p}: missing column(s) {', '.join(missing)} (a Deribit chain needs "
                         f"{', '.join(RAW_COLUMNS)})")
    if currency is not None:
        raw = raw[raw["currency"] == currency]
    if snapshot is not None and not str(snapshot).endswith(".csv"):
        raw = raw[raw["timestamp"] == str(snapshot)]
    if raw.empty:
        raise ValueError(f"{p}: no rows for currency={currency!r}, snapshot={snapshot!r}")
    raw = raw.reset_index(drop=True)
    raw.attrs["source"] = str(p)
    return raw


def list_snapshots(path=None, currency: str = "BTC") -> pd.DataFrame:
    """Snapshots available for ``currency``: ``snapshot`` (timestamp) and ``n_rows``."""
    p = _resolve(path)
    cols = ["timestamp", "currency"]
    raw = pd.read_parquet(p, columns=cols) if p.suffix == ".parquet" else pd.read_csv(
        p, usecols=cols)
    raw = raw[raw["currency"] == currency]
    out = raw.groupby("timestamp").size().rename("n_rows").reset_index()
    out.insert(0, "snapshot", pd.to_datetime(out.pop("timestamp"), utc=True, format="ISO8601"))
    return out


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
    unparsable times) raise a ``ValueError`` naming the source, the row and the field; price
    problems (no bid, crossed quotes, prices outside the no-arbitrage bounds) are left for the
    cleaning rules, which record a reason per row.
    """
    source = raw.attrs.get("source", "<table>")
    _check_identifiers(raw, source)
    snapshot = pd.to_datetime(raw["timestamp"], utc=True, format="ISO8601")
    expiry = pd.to_datetime(raw["expiry_datetime"], utc=True, format="ISO8601")
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
    out.attrs["source"] = source
    return out


def _vega(forward, strike, expiries, vols):
    """Black-76 vega (undiscounted), USD per vol point."""
    sd = vols * np.sqrt(expiries)
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = (np.log(forward / strike) + 0.5 * sd * sd) / sd
    return forward * np.exp(-0.5 * d1 * d1) / np.sqrt(2.0 * np.pi) * np.sqrt(expiries) / 100.0


def _check_identifiers(raw: pd.DataFrame, source: str) -> None:
    def fail(mask, field, rule):
        i = int(np.flatnonzero(mask)[0])
        raise ValueError(f"{source}: row {i} ({raw['instrument_name'].iloc[i]}): {field} "
                         f"{rule}; got {raw[field].iloc[i]!r}")

    for field in ("strike", "underlying"):
        v = pd.to_numeric(raw[field], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(v) | (v <= 0)
        if bad.any():
            fail(bad, field, "must be a finite positive number")
    bad = ~raw["option_type"].isin(["call", "put"]).to_numpy()
    if bad.any():
        fail(bad, "option_type", "must be 'call' or 'put'")
    for field in ("timestamp", "expiry_datetime"):
        parsed = pd.to_datetime(raw[field], utc=True, format="ISO8601", errors="coerce")
        bad = parsed.isna().to_numpy()
        if bad.any():
            fail(bad, field, "must be an ISO-8601 time")
    for field in ("bid_price", "ask_price", "mark_price"):
        v = pd.to_numeric(raw[field], errors="coerce")
        bad = (raw[field].notna() & v.isna()).to_numpy()
        if bad.any():
            fail(bad, field, "must be numeric or empty")


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
    * ``min_price``: bid below ``min_bid_ticks`` price ticks (a tick bid says nothing about vol).
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


REASONS = ("expired_or_short", "in_the_money", "no_bid", "no_ask", "crossed_quote",
           "outside_bounds", "min_price", "wide_spread", "far_wing")


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


def load_deribit(path=None, currency: str = "BTC", snapshot=None, *, clean: bool = True,
                 rules: CleaningRules | None = None, return_dropped: bool = False):
    """Load a Deribit chain as the normalised option-chain table, cleaned by default.

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
      The chain (``CHAIN_COLUMNS``), sorted by snapshot, expiry, strike; with
      ``return_dropped``, ``(chain, dropped)``. ``chain.attrs["cleaning"]`` summarises.
    """
    if currency not in TICK:
        raise ValueError(f"currency must be one of {sorted(TICK)}; got {currency!r}")
    p = _resolve(path)
    stamp = _pick_snapshot(p, currency, snapshot)
    raw = read_deribit_raw(p, currency=currency, snapshot=stamp)
    chain = normalise_deribit(raw)
    chain = chain.sort_values(["snapshot", "expiry", "strike", "is_call"], kind="stable")
    chain = chain.reset_index(drop=True)
    if clean:
        chain, dropped = clean_chain(chain, rules)
    else:
        dropped = chain.iloc[:0].assign(reason=pd.Series(dtype=object))
        chain = chain.drop(columns=[c for c in chain.columns if c.startswith("_")])
    return (chain, dropped) if return_dropped else chain


def _pick_snapshot(p: Path, currency: str, snapshot):
    if snapshot is None or (isinstance(snapshot, str) and snapshot.endswith(".csv")):
        return snapshot
    snaps = list_snapshots(p, currency)
    if snaps.empty:
        raise ValueError(f"{p}: no {currency} snapshots")
    stamps = snaps["snapshot"]
    if isinstance(snapshot, str) and snapshot in ("first", "last"):
        ts = stamps.iloc[0 if snapshot == "first" else -1]
    elif isinstance(snapshot, int | np.integer) and not isinstance(snapshot, bool):
        if not -len(stamps) <= snapshot < len(stamps):
            raise ValueError(f"snapshot index {snapshot} out of range (0..{len(stamps) - 1})")
        ts = stamps.iloc[int(snapshot)]
    else:
        try:
            when = pd.Timestamp(snapshot)
        except (TypeError, ValueError):
            raise ValueError(f"snapshot must be None, 'first', 'last', an index, a snapshot "
                             f"file name or a time; got {snapshot!r}") from None
        when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
        earlier = stamps[stamps <= when]
        if earlier.empty:
            raise ValueError(f"no {currency} snapshot at or before {when} (first is "
                             f"{stamps.iloc[0]})")
        ts = earlier.iloc[-1]
    # the raw timestamp string of that snapshot
    return _raw_stamp(p, currency, ts)


def _raw_stamp(p: Path, currency: str, ts) -> str:
    cols = ["timestamp", "currency"]
    raw = pd.read_parquet(p, columns=cols) if p.suffix == ".parquet" else pd.read_csv(
        p, usecols=cols)
    raw = raw[raw["currency"] == currency].drop_duplicates("timestamp")
    parsed = pd.to_datetime(raw["timestamp"], utc=True, format="ISO8601")
    return str(raw["timestamp"].iloc[int(np.flatnonzero((parsed == ts).to_numpy())[0])])


__all__ = [
    "load_deribit", "read_deribit_raw", "normalise_deribit", "list_snapshots", "clean_chain",
    "drop_reasons", "cleaning_summary", "format_cleaning_summary", "CleaningRules",
    "CHAIN_COLUMNS", "RAW_COLUMNS", "REASONS", "default_data_dir",
]
