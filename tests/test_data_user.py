"""A user's own chain: ``load_chain`` on the simple schema and Deribit API JSON (the same table
and cleaning as ``load_deribit`` for the same quotes), ``market_from_chain``, Deribit
instrument names, and clear errors for bad files."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import qmr_jax as qmr
from qmr_jax.data import (
    CHAIN_COLUMNS,
    CleaningRules,
    instrument_name,
    load_chain,
    load_deribit,
    market_from_chain,
    parse_instrument,
    synthetic_chain,
)

from .test_data_deribit import CUT, SNAPSHOT_CSV, api_elements

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "scenarios" / "chains"
YEAR = 365.0 * 86400.0


def _rows(path: Path):
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    return rows[0], rows[1:]


def _write_csv(path: Path, header, rows) -> Path:
    path.write_text("".join(",".join(r) + "\n" for r in [header, *rows]), encoding="utf-8")
    return path


def _ms_timestamps(header, rows):
    """The rows with their snapshot time cut to whole milliseconds (Deribit's API resolution),
    so that all three formats carry the same time."""
    j = header.index("timestamp")
    out = []
    for r in rows:
        r = list(r)
        ts = pd.Timestamp(r[j]).floor("ms")
        r[j] = ts.isoformat()
        out.append(r)
    return out


def _simple_coin(header, rows) -> tuple[list[str], list[list[str]]]:
    """Raw Deribit rows in the simple schema, prices in coin as written, mark and mark vol
    both given (so they must agree), the vol in percent."""
    col = {c: j for j, c in enumerate(header)}
    head = ["currency", "snapshot", "expiry", "strike", "type", "bid", "ask", "mark", "mark_iv",
            "forward", "spot", "open_interest", "volume"]
    out = [[r[col["currency"]], r[col["timestamp"]], r[col["expiry_datetime"]], r[col["strike"]],
            r[col["option_type"]], r[col["bid_price"]], r[col["ask_price"]],
            r[col["mark_price"]], repr(100 * float(r[col["implied_volatility"]])),
            r[col["underlying"]], r[col["index_price"]], r[col["open_interest"]],
            r[col["volume"]]] for r in rows]
    return head, out


def _three_formats(tmp_path, header, rows, currency, **kw):
    """The same quotes loaded from a Deribit CSV, a simple CSV and a Deribit API response."""
    rows = _ms_timestamps(header, rows)
    deribit = _write_csv(tmp_path / "deribit.csv", header, rows)
    simple = _write_csv(tmp_path / "simple.csv", *_simple_coin(header, rows))
    api = tmp_path / "api.json"
    api.write_text(json.dumps({"jsonrpc": "2.0", "id": 1,
                               "result": api_elements(header, rows)}), encoding="utf-8")
    a = load_deribit(deribit, currency, return_dropped=True, **kw)
    b = load_chain(simple, currency=currency, price_unit="coin", return_dropped=True, **kw)
    c = load_chain(api, currency=currency, return_dropped=True, **kw)
    return a, b, c


def _same_chain(x: pd.DataFrame, y: pd.DataFrame):
    cols = list(CHAIN_COLUMNS)
    pd.testing.assert_frame_equal(x[cols].reset_index(drop=True), y[cols].reset_index(drop=True),
                                  check_exact=False, rtol=1e-14, atol=0.0)


# ------------------------------------------------------------------------------------------
# the same quotes in three formats


def test_three_formats_give_the_same_table(tmp_path):
    header, rows = _rows(CUT)
    for currency, n in (("BTC", 7), ("ETH", 3)):
        (a, da), (b, db), (c, dc) = _three_formats(tmp_path, header, rows, currency,
                                                   clean=False)
        assert len(a) == n and da.empty and db.empty and dc.empty
        _same_chain(a, b)
        _same_chain(a, c)
        # rows keep their place: the same line in both CSVs, element = line - 2 in the JSON
        assert list(a["source_row"]) == list(b["source_row"])
        assert list(c["source_row"]) == list(a["source_row"] - 2)
        assert c.attrs["source_row"] == "json element" and b.attrs["format"] == "simple"
    # by hand, the first BTC row (line 2): BTC-10APR26-74000-C
    row = load_chain(tmp_path / "api.json", currency="BTC",
                     clean=False).set_index("instrument").loc["BTC-10APR26-74000-C"]
    t = (pd.Timestamp("2026-04-10T08:00Z") - pd.Timestamp("2026-04-01T10:01:01.954Z"))
    assert row["expiry_years"] == t.total_seconds() / YEAR
    assert row["bid_usd"] == 0.0055 * 68668.65 and row["forward"] == 68668.65
    assert row["spot"] == 68638.14 and row["deribit_mark_iv"] == 0.4692


def test_three_formats_clean_alike(tmp_path):
    """A crossed quote, a missing bid and a bad index in all three formats: the same rows
    dropped for the same reasons."""
    header, rows = _rows(CUT)
    col = {c: j for j, c in enumerate(header)}
    rows = [list(r) for r in rows]
    rows[5][col["bid_price"]] = "0.0226"     # BTC-10APR26-70000-C, ask 0.0225: crossed
    rows[0][col["bid_price"]] = ""           # no bid
    rows[2][col["index_price"]] = "-1"       # bad index: an integrity drop
    (a, da), (b, db), (c, dc) = _three_formats(tmp_path, header, rows, "BTC")
    _same_chain(a, b)
    _same_chain(a, c)
    for d in (da, db, dc):
        assert dict(zip(d["instrument"], d["reason"], strict=True)) == {
            "BTC-10APR26-74000-C": "no_bid", "BTC-10APR26-70000-C": "crossed_quote",
            "BTC-10APR26-72000-C": "bad_index_price"}
    assert a.attrs["cleaning"] == b.attrs["cleaning"] == c.attrs["cleaning"]


def test_real_snapshot_in_three_formats(tmp_path, data_dir):
    """Every BTC quote of a real Deribit snapshot, as a simple CSV and as an API response:
    the same cleaned chain and the same drops as load_deribit."""
    header, rows = _rows(data_dir / "deribit_options" / SNAPSHOT_CSV)
    btc = [r for r in rows if r[header.index("currency")] == "BTC"]
    (a, da), (b, db), (c, dc) = _three_formats(tmp_path, header, btc, "BTC")
    assert len(a) > 300
    _same_chain(a, b)
    _same_chain(a, c)
    key = ["instrument", "reason"]
    for d in (db, dc):
        pd.testing.assert_frame_equal(d[key].sort_values(key).reset_index(drop=True),
                                      da[key].sort_values(key).reset_index(drop=True))


# ------------------------------------------------------------------------------------------
# the simple schema


def _synthetic():
    """Two Deribit expiries (08:00 UTC) of a Heston chain without ticks: exact quotes."""
    truth = qmr.Heston(v0=0.25, kappa=2.0, theta=0.3, xi=1.0, rho=-0.3)
    return synthetic_chain(truth, spot=60_000.0, basis=0.04, snapshot="2026-03-02T09:00:00Z",
                           expiries=[pd.Timestamp("2026-03-27T08:00Z"),
                                     pd.Timestamp("2026-06-26T08:00Z")],
                           strikes_per_expiry=7, clean=False)


def _simple_usd(chain, *, snapshot=True, spot=True, forward=True, vols=False, prices=True):
    """A synthetic chain in the simple schema, USD prices at full precision (repr)."""
    out = {}
    if snapshot:
        out["snapshot"] = chain["snapshot"].map(pd.Timestamp.isoformat)
    out["expiry"] = chain["expiry"].map(lambda e: e.strftime("%Y-%m-%d"))
    out["strike"] = chain["strike"].map(repr)
    out["type"] = np.where(chain["is_call"], "call", "put")
    if prices:
        out["bid"] = chain["bid_usd"].map(repr)
        out["ask"] = chain["ask_usd"].map(repr)
    if vols:
        out["bid_iv"] = (100 * chain["bid_iv"]).map(repr)
        out["ask_iv"] = (100 * chain["ask_iv"]).map(repr)
    if forward:
        out["forward"] = chain["forward"].map(repr)
    if spot:
        out["spot"] = chain["spot"].map(repr)
    return pd.DataFrame(out)


def test_simple_usd_prices_give_the_synthetic_vols(tmp_path):
    chain = _synthetic()
    path = tmp_path / "mine.csv"
    _simple_usd(chain).to_csv(path, index=False)
    got = load_chain(path, currency="BTC", clean=False)
    assert len(got) == len(chain) and got.attrs["format"] == "simple"
    # without a tick, bid_iv and ask_iv are the vols that priced the quotes
    np.testing.assert_allclose(got["bid_iv"], chain["bid_iv"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(got["ask_iv"], chain["ask_iv"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(got["bid_coin"], chain["bid_coin"], rtol=1e-14)
    np.testing.assert_allclose(got["expiry_years"], chain["expiry_years"], rtol=1e-12)
    # no mark given: the mid of bid and ask
    np.testing.assert_allclose(got["mark_usd"], (chain["bid_usd"] + chain["ask_usd"]) / 2,
                               rtol=1e-14)
    assert got["deribit_mark_iv"].isna().all() and got["open_interest"].isna().all()
    assert list(got["source_row"]) == list(range(2, len(chain) + 2))


def test_simple_parquet_rows_are_indexed(tmp_path):
    chain = _synthetic()
    table = _simple_usd(chain)
    for c in ("strike", "bid", "ask", "forward", "spot"):
        table[c] = table[c].astype(float)
    table["expiry"] = pd.to_datetime(table["expiry"]).dt.date    # dates: 08:00 UTC
    table.loc[3, "bid"] = -1.0
    path = tmp_path / "mine.parquet"
    table.to_parquet(path, index=False)
    got, dropped = load_chain(path, currency="BTC", return_dropped=True,
                              rules=CleaningRules(otm_only=False))
    assert got.attrs["source_row"] == "parquet row"
    assert dropped.set_index("source_row").loc[3, "reason"] == "no_bid"
    # row i of the file is quote i of the chain: same expiry (dates at 08:00 UTC) and prices
    rows = got["source_row"].to_numpy()
    np.testing.assert_allclose(got["expiry_years"], chain["expiry_years"].to_numpy()[rows],
                               rtol=1e-12)
    np.testing.assert_allclose(got["ask_usd"], chain["ask_usd"].to_numpy()[rows], rtol=1e-14)


def test_vol_quotes_are_priced_and_as_of_sets_the_time(tmp_path):
    """bid_iv/ask_iv without prices (percent), no snapshot column (as_of), no spot column
    (the nearest expiry's forward)."""
    chain = _synthetic()
    path = tmp_path / "vols.csv"
    _simple_usd(chain, snapshot=False, spot=False, vols=True, prices=False).to_csv(path,
                                                                                index=False)
    when = chain["snapshot"].iloc[0]
    got = load_chain(path, currency="BTC", clean=False, as_of=when.isoformat())
    assert (got["snapshot"] == when).all()
    np.testing.assert_allclose(got["bid_usd"], chain["bid_usd"], rtol=1e-10)
    np.testing.assert_allclose(got["bid_iv"], chain["bid_iv"], atol=1e-9)
    np.testing.assert_allclose(got["ask_iv"], chain["ask_iv"], atol=1e-9)
    nearest = chain.loc[chain["expiry_years"].idxmin(), "forward"]
    assert (got["spot"] == nearest).all()
    # no forward column: the spot is every expiry's forward
    path = tmp_path / "spot_only.csv"
    _simple_usd(chain, forward=False).to_csv(path, index=False)
    got = load_chain(path, currency="BTC", clean=False)
    assert (got["forward"] == chain["spot"].iloc[0]).all()


def test_price_and_vol_must_agree(tmp_path):
    chain = _synthetic()
    table = _simple_usd(chain, vols=True)
    path = tmp_path / "both.csv"
    table.to_csv(path, index=False)
    assert len(load_chain(path, currency="BTC", clean=False)) == len(chain)
    bid_iv = 100 * float(chain["bid_iv"].iloc[4])
    table.loc[4, "bid_iv"] = repr(bid_iv + 4.0)      # within the loose IV_AGREEMENT
    table.to_csv(path, index=False)
    assert len(load_chain(path, currency="BTC", clean=False)) == len(chain)
    table.loc[4, "bid_iv"] = repr(bid_iv + 10.0)     # a vol of another quote
    table.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"both.csv: line 6: field 'bid_iv' .* disagrees with "
                                         r"field 'bid' .* USD"):
        load_chain(path, currency="BTC")


def test_snapshots_are_chosen_like_load_deribit(tmp_path):
    header, rows = _rows(CUT)
    rows = _ms_timestamps(header, rows[:7])
    later = [list(r) for r in rows]
    for r in later:
        r[0] = "2026-04-01T11:00:00+00:00"
    head, body = _simple_coin(header, rows + later)
    path = _write_csv(tmp_path / "two.csv", head, body)
    kw = dict(currency="BTC", price_unit="coin", clean=False)
    assert set(load_chain(path, **kw)["source_row"]) == set(range(9, 16))      # last
    assert set(load_chain(path, snapshot="first", **kw)["source_row"]) == set(range(2, 9))
    assert set(load_chain(path, snapshot=0, **kw)["source_row"]) == set(range(2, 9))
    assert len(load_chain(path, snapshot=None, **kw)) == 14
    at = load_chain(path, snapshot="2026-04-01T10:30:00Z", **kw)
    assert set(at["source_row"]) == set(range(2, 9))
    with pytest.raises(ValueError, match=r"two.csv: snapshot index 2 out of range.*2 BTC "
                                         r"snapshots"):
        load_chain(path, snapshot=2, **kw)
    with pytest.raises(ValueError, match=r"two.csv: no BTC snapshot at or before"):
        load_chain(path, snapshot="2026-03-01T00:00:00Z", **kw)
    with pytest.raises(ValueError, match=r"two.csv: the file has a 'snapshot' column; as_of"):
        load_chain(path, as_of="2026-04-01T10:00:00Z", **kw)
    with pytest.raises(ValueError, match=r"two.csv: the chain has 2 snapshots \(2026-04-01 "
                                         r"10:01:01.954000\+00:00, 2026-04-01 11:00:00\+00:00\)"):
        market_from_chain(load_chain(path, snapshot=None, **kw))


@pytest.mark.parametrize(("edit", "needles"), [
    (lambda t: t.assign(currency="SOL"), ["line 2", "field 'currency'", "'SOL'"]),
    (lambda t: t.drop(columns="currency"), ["which coin?", "currency="]),
    (lambda t: t.assign(snapshot="2026-04-01"), ["line 2", "field 'snapshot'", "time of day"]),
    (lambda t: t.assign(snapshot="now"), ["line 2", "field 'snapshot'", "ISO time", "'now'"]),
    (lambda t: t.assign(snapshot=""), ["line 2", "field 'snapshot'", "empty"]),
    (lambda t: t.assign(forward=""), ["line 2", "field 'forward'", "finite positive"]),
    (lambda t: t.assign(mark_iv="1200"), ["line 2", "field 'mark_iv'", "[1, 1000]"]),
    (lambda t: t.assign(bid="abc"), ["line 2", "column 'bid'", "expected a number", "'abc'"]),
    (lambda t: t.drop(columns=["forward", "spot"]), ["missing column(s)", "'forward' or 'spot'"]),
    (lambda t: t.drop(columns=["bid"]), ["missing column(s)", "'bid' (or bid_iv)"]),
])
def test_simple_file_errors_name_file_row_field(tmp_path, edit, needles):
    header, rows = _rows(CUT)
    head, body = _simple_coin(header, rows[:7])
    table = pd.DataFrame(body, columns=head, dtype=str)
    path = tmp_path / "mine.csv"
    edit(table).to_csv(path, index=False)
    with pytest.raises(ValueError) as info:
        load_chain(path, price_unit="coin")
    message = str(info.value)
    assert message.startswith(str(path))
    for needle in needles:
        assert needle in message, message


def test_price_unit_mismatch_is_refused(tmp_path):
    header, rows = _rows(CUT)
    path = _write_csv(tmp_path / "coin.csv", *_simple_coin(header, rows[:7]))
    with pytest.raises(ValueError, match=r"coin.csv: every price is below 1 while the forwards "
                                         r"are about 68,669 USD.*price_unit='coin'"):
        load_chain(path)
    chain = _synthetic()
    path = tmp_path / "usd.csv"
    _simple_usd(chain[chain["bid_usd"] > 1]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"usd.csv: every price is above 1 coin"):
        load_chain(path, currency="BTC", price_unit="coin")
    with pytest.raises(ValueError, match=r"price_unit must be one of usd, coin; got 'USD'"):
        load_chain(path, price_unit="USD")


# ------------------------------------------------------------------------------------------
# Deribit API JSON


def test_api_example_response():
    path = EXAMPLES / "example_deribit_api.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    chain, dropped = load_chain(path, return_dropped=True)
    assert chain.attrs["format"] == "deribit_api" and chain.attrs["source_row"] == "json element"
    elements = data["result"]
    # the future is skipped, the quote without a bid dropped, each with its element index
    reasons = dict(zip(dropped["source_row"], dropped["reason"], strict=True))
    future = [i for i, e in enumerate(elements) if e["instrument_name"].count("-") == 1]
    no_bid = [i for i, e in enumerate(elements) if "bid_price" in e and e["bid_price"] is None]
    assert reasons == {**{i: "not_an_option" for i in future}, **{i: "no_bid" for i in no_bid}}
    assert len(chain) + len(dropped) == len(elements)
    stamp = pd.Timestamp(elements[0]["creation_timestamp"], unit="ms", tz="UTC")
    for _, q in chain.iterrows():
        e = elements[q["source_row"]]
        assert q["instrument"] == e["instrument_name"]
        day, mon, year = (e["instrument_name"].split("-")[1][:-5],
                          e["instrument_name"].split("-")[1][-5:-2],
                          e["instrument_name"].split("-")[1][-2:])
        expiry = pd.Timestamp(f"20{year}-{mon}-{int(day):02d} 08:00", tz="UTC")
        assert q["expiry"] == expiry and q["snapshot"] == stamp
        assert q["expiry_years"] == (expiry - stamp).total_seconds() / YEAR
        assert q["strike"] == float(e["instrument_name"].split("-")[2])
        assert q["is_call"] == e["instrument_name"].endswith("-C")
        assert q["bid_coin"] == e["bid_price"] and q["ask_coin"] == e["ask_price"]
        assert q["mark_coin"] == e["mark_price"] and q["forward"] == e["underlying_price"]
        assert q["spot"] == e["estimated_delivery_price"]
        assert q["deribit_mark_iv"] == e["mark_iv"] / 100
        assert q["open_interest"] == e["open_interest"] and q["volume"] == e["volume"]
        # our mark vol reprices Deribit's mark (rounded to 1e-8 coin) on its forward
        usd = float(qmr.black_price(q["forward"], q["strike"], q["expiry_years"], q["mark_iv"],
                                    q["is_call"]))
        assert usd == pytest.approx(e["mark_price"] * e["underlying_price"], rel=1e-12)


def _api(tmp_path, edit=None, *, envelope=True, name="api.json"):
    header, rows = _rows(CUT)
    els = api_elements(header, rows)
    if edit is not None:
        edit(els)
    path = tmp_path / name
    data = {"jsonrpc": "2.0", "id": 7, "result": els} if envelope else els
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_api_currency_and_arguments(tmp_path):
    path = _api(tmp_path)
    with pytest.raises(ValueError, match=r"api.json: the response holds BTC, ETH options; pass "
                                         r"currency="):
        load_chain(path)
    assert len(load_chain(path, currency="ETH", clean=False)) == 3
    assert len(load_chain(path, currency="BTC", snapshot=-1, clean=False)) == 7
    with pytest.raises(ValueError, match=r"api.json: as_of is for simple files.*Deribit API "
                                         r"response carries its own"):
        load_chain(path, currency="BTC", as_of="2026-04-01T10:00:00Z")
    with pytest.raises(ValueError, match=r"api.json: Deribit prices are in coin"):
        load_chain(path, currency="BTC", price_unit="usd")
    with pytest.raises(ValueError, match=r"api.json: snapshot index 1 out of range"):
        load_chain(path, currency="BTC", snapshot=1)
    with pytest.raises(ValueError, match=r"currency must be one of \['BTC', 'ETH'\]"):
        load_chain(path, currency="SOL")


def _setter(i, field, value):
    def edit(els):
        if value is KeyError:
            del els[i][field]
        else:
            els[i][field] = value
    return edit


@pytest.mark.parametrize(("edit", "needles"), [
    (_setter(4, "instrument_name", "BTC-10APR26-64000-X"),
     ["element 4", "'instrument_name'", "COIN-DMMMYY-STRIKE-C or -P"]),
    (_setter(4, "instrument_name", "BTC-10ABR26-64000-P"), ["element 4", "'10ABR26'"]),
    (_setter(4, "instrument_name", "BTC_USDC-10APR26-64000-P"), ["element 4", "USDC-settled"]),
    (_setter(4, "instrument_name", 64000), ["element 4", "non-empty string"]),
    (_setter(4, "quote_currency", "USD"), ["element 4", "'quote_currency'", "in its coin"]),
    (_setter(4, "base_currency", "ETH"), ["element 4", "'base_currency'", "does not match"]),
    (_setter(4, "creation_timestamp", "2026-04-01"), ["element 4", "'creation_timestamp'",
                                                      "whole milliseconds"]),
    (_setter(4, "creation_timestamp", KeyError), ["element 4", "missing field "
                                                  "'creation_timestamp'"]),
    (_setter(6, "creation_timestamp", 1775037661954 + 3_600_000),
     ["elements 0 and 6", "3600 s apart", "one snapshot"]),
    (_setter(4, "underlying_price", None), ["element 4", "'underlying_price'", "finite positive"]),
    (_setter(4, "bid_price", "0.01"), ["element 4", "'bid_price'", "number or null", "'0.01'"]),
    (_setter(4, "instrument_name", KeyError), ["element 4", "missing field 'instrument_name'"]),
])
def test_api_errors_name_the_element_and_field(tmp_path, edit, needles):
    path = _api(tmp_path, edit)
    with pytest.raises(ValueError) as info:
        load_chain(path, currency="BTC")
    message = str(info.value)
    assert message.startswith(str(path))
    for needle in needles:
        assert needle in message, message


def test_api_envelopes(tmp_path):
    bare = _api(tmp_path, envelope=False, name="bare.json")
    wrapped = _api(tmp_path)
    _same_chain(load_chain(bare, currency="BTC"), load_chain(wrapped, currency="BTC"))
    path = tmp_path / "error.json"
    path.write_text(json.dumps({"jsonrpc": "2.0", "id": 1, "error": {
        "code": 10001, "message": "Invalid currency"}}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"error.json: the response is a JSON-RPC error.*"
                                         r"Invalid currency"):
        load_chain(path)
    for data, needle in [({"jsonrpc": "2.0", "results": []}, "unknown key 'results'"),
                         ({"jsonrpc": "2.0"}, "no 'result'"),
                         ({"result": {"a": 1}}, "must be a list"),
                         ([], "lists no instruments"),
                         ([["BTC-10APR26-64000-P"]], "element 0 .*expected an object")]:
        path.write_text(json.dumps(data), encoding="utf-8")
        with pytest.raises(ValueError, match=rf"error.json: .*{needle}"):
            load_chain(path)
    path.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"error.json: empty file"):
        load_chain(path)
    # a response saved without the .json extension is read by its content
    other = tmp_path / "response.txt"
    other.write_bytes(wrapped.read_bytes())
    assert load_chain(other, currency="BTC").attrs["format"] == "deribit_api"


def test_unknown_formats_are_named(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text("date,close\n2026-04-01,68000\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"prices.csv: neither the simple chain schema .* nor a "
                                         r"Deribit chain .*'date', 'close'"):
        load_chain(path)
    with pytest.raises(FileNotFoundError):
        load_chain(tmp_path / "nope.csv")


# ------------------------------------------------------------------------------------------
# the examples


def _make_examples():
    spec = importlib.util.spec_from_file_location("make_examples",
                                                  EXAMPLES / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_examples_are_written_by_their_script(tmp_path):
    for path in _make_examples().write_examples(tmp_path):
        assert path.read_bytes() == (EXAMPLES / path.name).read_bytes(), path.name


def test_simple_example_loads():
    path = EXAMPLES / "example_simple.csv"
    header, rows = _rows(path)
    chain, dropped = load_chain(path, return_dropped=True)
    assert len(rows) >= 24 and len(chain) + len(dropped) == len(rows)
    col = {c: j for j, c in enumerate(header)}
    # every quote without a bid is dropped for it; the rest are kept or dropped by the rules
    empty_bid = {i + 2 for i, r in enumerate(rows) if not r[col["bid"]]}
    assert set(dropped.loc[dropped["reason"] == "no_bid", "source_row"]) == empty_bid
    for _, q in chain.iterrows():
        r = rows[q["source_row"] - 2]
        expiry = pd.Timestamp(r[col["expiry"]] + "T08:00:00Z")
        snap = pd.Timestamp(r[col["snapshot"]])
        assert q["expiry"] == expiry and q["snapshot"] == snap
        assert q["expiry_years"] == (expiry - snap).total_seconds() / YEAR
        assert q["bid_usd"] == pytest.approx(float(r[col["bid"]]), rel=1e-15)
        assert q["forward"] == float(r[col["forward"]]) and q["spot"] == float(r[col["spot"]])
        # no mark price: the mark is priced from the mark vol, which our vol gives back
        assert q["deribit_mark_iv"] == float(r[col["mark_iv"]]) / 100
        assert q["mark_iv"] == pytest.approx(q["deribit_mark_iv"], abs=1e-10)
    market, info = market_from_chain(chain)
    assert info["basis"] == pytest.approx(0.05, abs=1e-5)   # forwards rounded to the cent
    assert float(market.spot) == 68_500.0


# ------------------------------------------------------------------------------------------
# the market of a chain


def test_market_recovers_the_synthetic_basis():
    chain = _synthetic()
    market, info = market_from_chain(chain, rate=0.03)
    assert info["basis"] == pytest.approx(0.04, abs=1e-13)
    assert info["max_forward_error_bp"] < 1e-9
    assert float(market.spot) == 60_000.0 and float(market.rate) == 0.03
    assert float(market.div) == pytest.approx(0.03 - 0.04, abs=1e-13)
    assert info["snapshot"] == chain["snapshot"].iloc[0]
    t = chain["expiry_years"].to_numpy()
    np.testing.assert_allclose(np.asarray(market.forward(t)), chain["forward"], rtol=1e-13)


def test_market_fit_error_by_hand():
    """Two expiries whose forwards do not lie on one flat basis: the slope through the
    origin and the largest miss, computed here from the formulas."""
    snap = pd.Timestamp("2026-04-01T08:00Z")
    e1, e2 = snap + pd.Timedelta(days=73), snap + pd.Timedelta(days=365)
    t1, t2 = 0.2, 1.0
    f1, f2 = 100.0 * math.exp(0.10 * t1), 100.0 * math.exp(0.05 * t2)
    chain = pd.DataFrame({"snapshot": [snap] * 3, "spot": [100.0, 100.0, 100.0],
                          "expiry": [e1, e1, e2], "expiry_years": [t1, t1, t2],
                          "forward": [f1, f1, f2]})
    basis = (0.10 * t1 * t1 + 0.05 * t2 * t2) / (t1 * t1 + t2 * t2)
    miss = max(abs(math.exp(basis * t1) * 100 / f1 - 1), abs(math.exp(basis * t2) * 100 / f2 - 1))
    market, info = market_from_chain(chain)
    assert info["basis"] == pytest.approx(basis, rel=1e-14)
    assert info["max_forward_error_bp"] == pytest.approx(1e4 * miss, rel=1e-10)
    assert list(info["forwards"]["expiry"]) == [e1, e2]
    with pytest.raises(ValueError, match="the chain is empty"):
        market_from_chain(chain.iloc[:0])
    with pytest.raises(ValueError, match="rate must be a finite number"):
        market_from_chain(chain, rate=float("nan"))
    with pytest.raises(ValueError, match="no finite positive spot"):
        market_from_chain(chain.assign(spot=np.nan))
    with pytest.raises(ValueError, match="out of bounds"):
        market_from_chain(chain.assign(forward=chain["forward"] * 1e4))


# ------------------------------------------------------------------------------------------
# instrument names


def test_instrument_names():
    i = parse_instrument("BTC-26JUN26-70000-C")
    assert (i.currency, i.kind, i.strike, i.is_call) == ("BTC", "option", 70000.0, True)
    assert i.expiry.isoformat() == "2026-06-26T08:00:00+00:00"
    assert parse_instrument("ETH-3APR26-1800-P").expiry.day == 3
    assert parse_instrument("XRP_USDC-27JUN25-2d5-C").strike == 2.5
    assert parse_instrument("BTC-26JUN26").kind == "future"
    assert parse_instrument("BTC-PERPETUAL").kind == "perpetual"
    assert parse_instrument("BTC_USDC").kind == "spot"
    assert parse_instrument("BTC-FS-26JUN26_PERP").kind == "combo"
    for bad, needle in [("BTC-29FEB26-70000-C", "not a calendar date"),
                        ("BTC-26jun26-70000-C", "not a Deribit expiry date"),
                        ("BTC-26JUN26-70,000-C", "not a number"),
                        ("BTC-26JUN26-0-C", "must be positive"),
                        ("BTC-26JUN26-70000", "not a Deribit instrument name"),
                        ("btc-26JUN26-70000-C", "not a Deribit instrument name"),
                        ("", "non-empty string")]:
        with pytest.raises(ValueError, match=needle):
            parse_instrument(bad)
    assert instrument_name("BTC", i.expiry, 70000.0, True) == "BTC-26JUN26-70000-C"
