"""Write the example chains of this folder from a synthetic BTC chain (a known Heston truth).

    .venv/bin/python scenarios/chains/make_examples.py [folder]

``example_simple.csv``: 36 out-of-the-money quotes over four expiries in the simple schema
(USD prices, vols in percent). ``example_deribit_api.json``: a ``get_book_summary_by_currency``
response with seven options of two expiries (one without a bid) and the June future. Both
come from the same chain, priced by ``qmr_jax.data.synthetic_chain`` with Deribit's tick, so
the files are the same on every run.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from qmr_jax.data.instruments import MONTHS

HERE = Path(__file__).resolve().parent
SNAPSHOT = pd.Timestamp("2026-04-01T10:00:00Z")
EXPIRIES = ("2026-04-10", "2026-04-24", "2026-05-29", "2026-06-26")
SPOT = 68_500.0
BASIS = 0.05


def example_chain() -> pd.DataFrame:
    """The synthetic chain behind both files (uncleaned: the loader cleans)."""
    import qmr_jax as qmr
    from qmr_jax.data import synthetic_chain

    with jax.enable_x64(True):
        truth = qmr.Heston(v0=0.25, kappa=2.0, theta=0.3, xi=1.2, rho=-0.3)
        return synthetic_chain(
            truth, spot=SPOT, snapshot=SNAPSHOT, basis=BASIS,
            expiries=[pd.Timestamp(f"{d}T08:00:00Z") for d in EXPIRIES],
            strikes_per_expiry=9, tick=1e-4, clean=False)


def simple_table(chain: pd.DataFrame) -> pd.DataFrame:
    """The chain in the simple schema: USD prices to the cent (bid down, ask up), forwards and
    spot to the cent, mark vols in percent to 0.01."""
    return pd.DataFrame({
        "currency": chain["currency"],
        "snapshot": chain["snapshot"].map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")),
        "expiry": chain["expiry"].map(lambda t: t.strftime("%Y-%m-%d")),
        "strike": chain["strike"].map(lambda k: f"{k:.0f}"),
        "type": np.where(chain["is_call"], "C", "P"),
        "bid": [_cents(v, math.floor) for v in chain["bid_usd"]],
        "ask": [_cents(v, math.ceil) for v in chain["ask_usd"]],
        "mark_iv": chain["mark_iv"].map(lambda v: f"{100 * v:.2f}"),
        "forward": chain["forward"].map(lambda v: f"{v:.2f}"),
        "spot": chain["spot"].map(lambda v: f"{v:.2f}"),
        "open_interest": chain["open_interest"].map(lambda v: f"{v:g}"),
    })


def _cents(usd: float, rounding) -> str:
    return "" if not np.isfinite(usd) else f"{rounding(usd * 100 * (1 + 1e-12)) / 100:.2f}"


def api_response(chain: pd.DataFrame) -> dict:
    """A ``public/get_book_summary_by_currency`` response: seven options of the first and the
    last expiry, the fields of Deribit's book summary, and the June future."""
    stamp = int(SNAPSHOT.value // 1_000_000) + 417  # milliseconds
    first, last = chain["expiry"].min(), chain["expiry"].max()
    picks = []
    for expiry, n in ((first, 4), (last, 3)):
        rows = chain[chain["expiry"] == expiry]
        near = (rows["log_moneyness"].abs()).sort_values().index[:n]
        picks.extend(sorted(near, key=lambda i: (rows.loc[i, "strike"])))
    result = []
    for i in picks:
        q = chain.loc[i]
        bid = None if not np.isfinite(q["bid_coin"]) else round(float(q["bid_coin"]), 4)
        ask = round(float(q["ask_coin"]), 4)
        result.append({
            "volume": float(q["volume"]),
            "underlying_price": round(float(q["forward"]), 2),
            "underlying_index": q["instrument"].rsplit("-", 2)[0],
            "quote_currency": "BTC",
            "price_change": None,
            "open_interest": float(q["open_interest"]),
            "mid_price": None if bid is None else round((bid + ask) / 2, 5),
            "mark_price": round(float(q["mark_coin"]), 8),
            "mark_iv": round(100 * float(q["mark_iv"]), 2),
            "low": None,
            "last": ask,
            "interest_rate": 0.0,
            "instrument_name": q["instrument"],
            "high": None,
            "estimated_delivery_price": round(SPOT, 2),
            "creation_timestamp": stamp,
            "bid_price": bid,
            "base_currency": "BTC",
            "ask_price": ask,
        })
    # the first quote of the response loses its bid (a quote without buyers)
    result[0]["bid_price"], result[0]["mid_price"] = None, None
    t = (last - SNAPSHOT).total_seconds() / (365 * 86400)
    fwd = round(SPOT * math.exp(BASIS * t), 2)
    tick = 2.5  # USD, Deribit's BTC future tick
    mark = round(fwd / tick) * tick
    result.append({
        "volume_usd": 41_866_410.0,
        "volume_notional": 41_866_410.0,
        "volume": 603.72,
        "quote_currency": "USD",
        "price_change": 1.2141,
        "open_interest": 1_104_542_840,
        "mid_price": mark,
        "mark_price": round(fwd, 2),
        "low": mark - 1_350.0,
        "last": mark + tick,
        "instrument_name": f"BTC-{last.day}{MONTHS[last.month - 1]}{last.year % 100:02d}",
        "high": mark + 610.0,
        "estimated_delivery_price": round(SPOT, 2),
        "creation_timestamp": stamp,
        "bid_price": mark - tick,
        "base_currency": "BTC",
        "ask_price": mark + tick,
    })
    return {"jsonrpc": "2.0", "id": 9344, "result": result, "usIn": stamp * 1000 + 512,
            "usOut": stamp * 1000 + 2_961, "usDiff": 2_449, "testnet": False}


def write_examples(folder: Path) -> list[Path]:
    """Write both example files into ``folder``; returns their paths."""
    folder = Path(folder)
    chain = example_chain()
    simple = folder / "example_simple.csv"
    simple_table(chain).to_csv(simple, index=False, lineterminator="\n")
    api = folder / "example_deribit_api.json"
    api.write_text(json.dumps(api_response(chain), indent=2) + "\n", encoding="utf-8")
    return [simple, api]


if __name__ == "__main__":
    for path in write_examples(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(path)
