"""Deribit chain loader: normalisation, our implied vols against Deribit's marks, cleaning
rules with recorded reasons, and clear errors for bad files."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import qmr_jax as qmr
from qmr_jax.data import deribit as D

SNAPSHOT_CSV = "deribit_options_snapshot_20260401T100101Z.csv"


def _synthetic_raw(rng, n_expiries=3, n_strikes=9, spot=70_000.0):
    """Raw Deribit-format rows whose marks are exact Black-76 prices at known vols."""
    rows = []
    snap = pd.Timestamp("2026-04-01T10:01:01+00:00")
    for e, days in enumerate([7, 30, 120][:n_expiries]):
        expiry = (snap.normalize() + pd.Timedelta(days=days, hours=8))
        t = (expiry - snap).total_seconds() / (365.0 * 86400.0)
        fwd = spot * np.exp(0.05 * t)
        for k in np.exp(np.linspace(-0.4, 0.4, n_strikes)) * fwd:
            k = float(np.round(k, -2))
            vol = 0.5 + 0.2 * np.log(k / fwd) ** 2 + 0.01 * e
            for call in (True, False):
                usd = float(qmr.black_price(fwd, k, t, vol, call))
                coin = usd / fwd
                name = f"BTC-X{e}-{int(k)}-{'C' if call else 'P'}"
                rows.append(dict(
                    timestamp=snap.isoformat(), instrument_name=name,
                    underlying=fwd, option_type="call" if call else "put", strike=k,
                    expiry_datetime=expiry.isoformat(), bid_price=np.floor(coin * 0.97e4) / 1e4,
                    ask_price=np.ceil(coin * 1.03e4) / 1e4, mark_price=coin,
                    implied_volatility=vol, open_interest=10.0, currency="BTC",
                    index_price=spot, volume=1.0, true_vol=vol))
    return pd.DataFrame(rows)


def test_normalise_recovers_vols_and_units(rng):
    raw = _synthetic_raw(rng)
    chain = D.normalise_deribit(raw)
    assert set(D.CHAIN_COLUMNS) <= set(chain.columns)
    # to what the price carries: |d vol| <= eps * price / vega (vega per unit vol)
    bound = 1e-12 + 16 * np.finfo(float).eps * chain["mark_usd"] / (100 * chain["vega"])
    assert (np.abs(chain["mark_iv"] - raw["true_vol"]) <= bound).all()
    np.testing.assert_allclose(chain["mark_usd"], raw["mark_price"] * raw["underlying"],
                               rtol=1e-15)
    # ACT/365 to the 08:00 UTC expiry
    t = (pd.to_datetime(raw["expiry_datetime"]) - pd.to_datetime(raw["timestamp"]))
    np.testing.assert_allclose(chain["expiry_years"], t.dt.total_seconds() / 86400 / 365)
    quoted = chain[chain["bid_iv"] > 0]  # bids rounded to a tick, or below intrinsic, have none
    assert len(quoted) > len(chain) / 3
    assert (quoted["bid_iv"] < quoted["mark_iv"]).all()
    assert (chain["mark_iv"] < chain["ask_iv"]).all()


def test_cleaning_rules_record_a_reason_per_row(rng):
    raw = _synthetic_raw(rng)
    raw.loc[0, "bid_price"] = np.nan                         # no bid
    raw.loc[2, ["bid_price", "ask_price"]] = [0.05, 0.04]    # crossed
    raw.loc[4, "bid_price"] = 1e-6                           # below one tick
    # a call priced above the forward: outside the no-arbitrage bounds
    j = raw.index[(raw.option_type == "call") & (raw.strike > raw.underlying)][-1]
    raw.loc[j, ["bid_price", "ask_price", "mark_price"]] = [1.2, 1.3, 1.25]
    chain = D.normalise_deribit(raw)
    kept, dropped = D.clean_chain(chain)
    reason = dict(zip(dropped["instrument"], dropped["reason"], strict=True))
    name = raw["instrument_name"]
    otm = lambda i: (raw.option_type[i] == "call") == (raw.strike[i] > raw.underlying[i])
    for i, why in [(0, "no_bid"), (2, "crossed_quote"), (4, "min_price"), (j, "outside_bounds")]:
        if otm(i):
            assert reason[name[i]] == why
        else:
            assert reason[name[i]] == "in_the_money"
    assert (dropped["reason"] == "expired_or_short").sum() == 0
    # kept rows satisfy every rule
    assert (kept["bid_coin"] > 0).all() and (kept["bid_coin"] < kept["ask_coin"]).all()
    assert np.all(np.where(kept["is_call"], kept["strike"] >= kept["forward"],
                           kept["strike"] <= kept["forward"]))
    s = kept.attrs["cleaning"]
    assert s["rows"] == len(chain) == len(kept) + len(dropped)
    assert sum(s["dropped"].values()) == len(dropped)
    assert "quotes kept" in D.format_cleaning_summary(s)


def test_short_expiries_and_rules_are_configurable(rng):
    chain = D.normalise_deribit(_synthetic_raw(rng))
    _, dropped = D.clean_chain(chain, D.CleaningRules(min_expiry_days=10.0, otm_only=False))
    short = chain["expiry_years"] < 10 / 365
    assert set(dropped.loc[dropped.reason == "expired_or_short", "instrument"]) == set(
        chain.loc[short, "instrument"])
    with pytest.raises(ValueError, match="CleaningRules.max_abs_z"):
        D.CleaningRules(max_abs_z=-1.0)


def test_bad_files_give_clear_errors(tmp_path, rng):
    raw = _synthetic_raw(rng, n_expiries=1, n_strikes=3)
    bad = tmp_path / "missing.csv"
    raw.drop(columns=["strike", "underlying"]).to_csv(bad, index=False)
    with pytest.raises(ValueError,
                       match=r"missing.csv: missing column\(s\) 'underlying', 'strike'"):
        D.load_deribit(bad)
    bad = tmp_path / "negative.csv"
    r = raw.copy()
    r.loc[3, "strike"] = -5.0
    r.to_csv(bad, index=False)
    # the file's own line number: data row 3 is line 5 (the header is line 1)
    with pytest.raises(ValueError,
                       match=r"negative.csv: line 5 .*'strike' must be a finite positive"):
        D.load_deribit(bad)
    bad = tmp_path / "garbage.parquet"
    bad.write_bytes(b"not a parquet file")
    with pytest.raises(ValueError, match="garbage.parquet: cannot read"):
        D.load_deribit(bad)
    with pytest.raises(FileNotFoundError):
        D.load_deribit(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="currency must be one of"):
        D.load_deribit(tmp_path / "nope.csv", currency="SOL")


# ------------------------------------------------------------------------------------------
# real data


def test_real_snapshot_matches_deribit_marks(data_dir):
    path = data_dir / "deribit_options" / SNAPSHOT_CSV
    chain, dropped = D.load_deribit(path, "BTC", clean=False, return_dropped=True)
    assert dropped.empty
    otm = np.where(chain["is_call"], chain["strike"] >= chain["forward"],
                   chain["strike"] <= chain["forward"])
    ok = (chain["expiry_years"] > 2 / 365) & (chain["mark_coin"] > 1e-3) & otm
    diff = (chain.loc[ok, "mark_iv"] - chain.loc[ok, "deribit_mark_iv"]).abs()
    # Deribit publishes its mark IV rounded to 1e-4 (0.01 vol points): with ACT/365 to the
    # 08:00 expiry our vols are within that rounding (ACT/365.25 would add ~2.5e-4 relative)
    assert diff.median() < 5e-5
    assert diff.max() < 5e-4
    # our implied vols reprice the marks
    sel = chain[ok]
    usd = qmr.black_price(sel["forward"].to_numpy(), sel["strike"].to_numpy(),
                          sel["expiry_years"].to_numpy(), sel["mark_iv"].to_numpy(),
                          sel["is_call"].to_numpy())
    np.testing.assert_allclose(usd, sel["mark_usd"], rtol=1e-9)


def test_real_chain_cleaning_summary(data_dir):
    chain, dropped = D.load_deribit(data_dir, "ETH", "last", return_dropped=True)
    s = chain.attrs["cleaning"]
    assert s["kept"] == len(chain) > 100
    assert s["rows"] == len(chain) + len(dropped)
    assert chain["snapshot"].nunique() == 1
    assert set(dropped["reason"]) <= set(D.REASONS)
    assert chain[["bid_iv", "ask_iv", "mid_iv", "mark_iv", "vega"]].notna().all().all()
    assert (chain["bid_iv"] <= chain["mid_iv"]).all() and (chain["mid_iv"] <= chain["ask_iv"]).all()


def test_snapshot_selection(data_dir):
    snaps = D.list_snapshots(data_dir, "BTC")
    assert len(snaps) > 500 and snaps["snapshot"].is_monotonic_increasing
    first = D.load_deribit(data_dir, "BTC", 0, clean=False)
    assert first["snapshot"].iloc[0] == snaps["snapshot"].iloc[0]
    later = D.load_deribit(data_dir, "BTC", snaps["snapshot"].iloc[1] + pd.Timedelta(minutes=1),
                           clean=False)
    assert later["snapshot"].iloc[0] == snaps["snapshot"].iloc[1]
    with pytest.raises(ValueError, match="no BTC snapshot at or before"):
        D.load_deribit(data_dir, "BTC", "2020-01-01")


# ------------------------------------------------------------------------------------------
# malformed chains: the corpus in tests/data/bad/chains/ and the integrity checks

CHAIN_CORPUS = Path(__file__).resolve().parent / "data" / "bad" / "chains"
CUT = CHAIN_CORPUS / "source" / "snapshot_20260401_cut.csv"
"""Ten real rows (lines 56, 114, 326 ... 1510 of deribit_options_snapshot_20260401T100101Z.csv:
seven BTC quotes of the 10 April 2026 expiry, three ETH quotes), in file order."""


def _cut_rows() -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(CUT.read_text(encoding="utf-8"))))
    return rows[0], rows[1:]


def _csv_text(header, rows) -> str:
    return "".join(",".join(r) + "\n" for r in [header, *rows])


def write_chain_corpus(folder: Path) -> list[str]:
    """Write the malformed chains of ``tests/data/bad/chains/`` (each wrong in one way) from
    the real rows of ``CUT``; returns the file names. Line numbers count the header as 1, so
    data row ``i`` (0-based) is line ``i + 2``."""
    header, rows = _cut_rows()
    col = {name: j for j, name in enumerate(header)}
    files = {}

    def edited(edits):
        """A copy of the rows with ``{(row, column): text}`` applied."""
        out = [list(r) for r in rows]
        for (i, c), text in edits.items():
            out[i][col[c]] = text
        return out

    def csv_file(name, edits=None, *, text=None):
        files[name] = (text if text is not None else _csv_text(header, edited(edits or {})))

    # refused
    keep = [j for j, c in enumerate(header) if c not in ("strike", "underlying")]
    csv_file("missing_columns.csv", text=_csv_text([header[j] for j in keep],
                                                   [[r[j] for j in keep] for r in rows]))
    csv_file("empty.csv", text="")
    csv_file("header_only.csv", text=_csv_text(header, []))
    csv_file("lots_open_interest.csv", {(2, "open_interest"): "lots"})            # line 4
    csv_file("bad_timestamp.csv", {(3, "timestamp"): "yesterday"})                # line 5
    csv_file("bad_expiry.csv", {(5, "expiry_datetime"): "next friday"})           # line 7
    csv_file("bad_option_type.csv", {(4, "option_type"): "Put"})                  # line 6
    csv_file("strike_not_in_name.csv", {(4, "strike"): "66000.0"})                # line 6
    csv_file("missing_currency.csv", {(1, "currency"): ""})                       # line 3
    csv_file("eth_negative_strike.csv", {(8, "strike"): "-2400.0"})               # line 10
    csv_file("snapshot_argument.csv")
    csv_file("snapshot_index.csv")
    conflict = edited({})
    conflict.append(list(conflict[2]))
    conflict[-1][col["bid_price"]] = "0.0099"                                     # line 12
    csv_file("conflicting_duplicate.csv", text=_csv_text(header, conflict))
    short = edited({})
    short[3] = short[3][:12]                                                      # line 5
    csv_file("short_line.csv", text=_csv_text(header, short))
    extra = edited({})
    extra[4] = [*extra[4][:8], "0", *extra[4][8:]]                                # line 6
    csv_file("extra_field.csv", text=_csv_text(header, extra))
    pasted = _csv_text(header, rows)
    csv_file("pasted_twice.csv", text=pasted + pasted)                            # line 12
    latin1 = _csv_text(header, edited({(1, "underlying_name"): "BTC-10AVR26 \u00e9ch\u00e9ance"}))
    files["not_utf8.csv"] = latin1.encode("latin-1")                             # line 3
    # dropped with a reason
    csv_file("duplicate_rows.csv", text=_csv_text(header, rows + rows[:7]))      # lines 12-18
    csv_file("forward_1000.csv", {(3, "underlying"): "1000.0"})                  # line 5
    csv_file("forward_off_siblings.csv", {(3, "underlying"): "72000.0"})         # line 5
    csv_file("index_missing.csv", {(2, "index_price"): ""})                      # line 4
    csv_file("index_zero.csv", {(2, "index_price"): "0.0"})
    csv_file("index_negative.csv", {(2, "index_price"): "-68638.14"})
    csv_file("index_1e308.csv", {(2, "index_price"): "1e308"})
    csv_file("index_nan_text.csv", {(2, "index_price"): "NaN"})
    csv_file("negative_open_interest.csv", {(6, "open_interest"): "-248.0"})     # line 8
    csv_file("deribit_iv_negative.csv", {(0, "implied_volatility"): "-0.4692"})  # line 2
    whole = _csv_text(header, rows[:7])
    csv_file("truncated_last_line.csv", text=whole[:whole.rindex("\n", 0, -1) + 80])  # line 8
    # parquet: 0-based row indices
    frame = pd.read_csv(io.StringIO(_csv_text(header, rows)))
    lots = frame.astype({"open_interest": str})   # a text column, as a spreadsheet saves it
    lots.loc[3, "open_interest"] = "lots"
    files["lots_open_interest.parquet"] = lots
    files["duplicate_rows.parquet"] = pd.concat([frame, frame.iloc[:7]], ignore_index=True)
    _user_chain_corpus(files, header, rows)
    for name, content in files.items():
        path = folder / name
        if isinstance(content, pd.DataFrame):
            content.to_parquet(path, index=False)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return sorted(files)


SIMPLE_HEADER = ["currency", "snapshot", "expiry", "strike", "type", "bid", "ask", "mark_iv",
                 "forward", "spot", "open_interest", "volume"]


def simple_rows(header, rows) -> list[list[str]]:
    """Raw Deribit rows in the simple schema (``SIMPLE_HEADER``): USD prices to the cent
    (coin x forward), the mark vol in percent; row ``i`` is line ``i + 2`` again."""
    col = {name: j for j, name in enumerate(header)}

    def usd(r, c):
        return "" if not r[col[c]] else f"{float(r[col[c]]) * float(r[col['underlying']]):.2f}"

    return [[r[col["currency"]], r[col["timestamp"]], r[col["expiry_datetime"]][:10],
             r[col["strike"]], "C" if r[col["option_type"]] == "call" else "P",
             usd(r, "bid_price"), usd(r, "ask_price"),
             f"{100 * float(r[col['implied_volatility']]):.2f}", r[col["underlying"]],
             r[col["index_price"]], r[col["open_interest"]], r[col["volume"]]] for r in rows]


def api_elements(header, rows) -> list[dict]:
    """Raw Deribit rows as ``get_book_summary_by_currency`` elements (prices in coin, mark vol
    in percent, the snapshot time in whole milliseconds)."""
    col = {name: j for j, name in enumerate(header)}
    out = []
    for r in rows:
        stamp = pd.Timestamp(r[col["timestamp"]])

        def num(c, r=r):
            return None if not r[col[c]] else float(r[col[c]])

        out.append({
            "instrument_name": r[col["instrument_name"]], "base_currency": r[col["currency"]],
            "quote_currency": r[col["currency"]], "bid_price": num("bid_price"),
            "ask_price": num("ask_price"), "mark_price": num("mark_price"),
            "mark_iv": round(100 * float(r[col["implied_volatility"]]), 2),
            "underlying_price": num("underlying"),
            "underlying_index": r[col["underlying_name"]],
            "estimated_delivery_price": num("index_price"),
            "open_interest": num("open_interest"), "volume": num("volume"),
            "creation_timestamp": int(stamp.value // 1_000_000), "interest_rate": 0.0,
        })
    return out


def _user_chain_corpus(files: dict, header, rows) -> None:
    """The user formats of ``load_chain`` (simple CSV, Deribit API JSON), cut from the same
    seven BTC rows, each wrong in one way (see expect.toml)."""
    btc = rows[:7]
    simple = simple_rows(header, btc)
    scol = {name: j for j, name in enumerate(SIMPLE_HEADER)}

    def simple_file(name, edits=None, *, drop=(), add=None):
        out = [list(r) for r in simple]
        for (i, c), text in (edits or {}).items():
            out[i][scol[c]] = text
        keep = [j for j, c in enumerate(SIMPLE_HEADER) if c not in drop]
        head = [SIMPLE_HEADER[j] for j in keep]
        body = [[r[j] for j in keep] for r in out]
        if add is not None:
            head = [*head, add[0]]
            body = [[*r, add[1]] for r in body]
        files[name] = _csv_text(head, body)

    simple_file("simple_missing_column.csv", drop=("type",))
    simple_file("simple_unknown_column.csv", add=("delta", "0.25"))
    simple_file("simple_crossed_quote.csv", {(5, "bid"): "1600.00"})              # line 7
    simple_file("simple_nan_strike.csv", {(2, "strike"): "NaN"})                  # line 4
    simple_file("simple_no_snapshot.csv", drop=("snapshot",))
    simple_file("simple_iv_decimal.csv", {(1, "mark_iv"): "0.6018"})              # line 3
    simple_file("simple_bad_expiry.csv", {(3, "expiry"): "next friday"})          # line 5
    simple_file("simple_bad_type.csv", {(4, "type"): "Put"})                      # line 6
    elements = api_elements(header, btc)

    def api_file(name, edit=None, *, envelope=True, text=None):
        els = [dict(e) for e in elements]
        if edit is not None:
            edit(els)
        data = {"jsonrpc": "2.0", "id": 9344, "result": els} if envelope else els
        files[name] = text if text is not None else json.dumps(data, indent=1) + "\n"

    def set_field(i, field, value):
        return lambda els: els[i].__setitem__(field, value)

    api_file("api_bad_instrument.json", set_field(2, "instrument_name", "BTC-31APR26-72000-C"))
    api_file("api_timestamp_seconds.json",
             set_field(0, "creation_timestamp", elements[0]["creation_timestamp"] // 1000))
    api_file("api_unknown_field.json", set_field(3, "gamma", 0.0001))
    api_file("api_mark_iv_decimal.json", set_field(1, "mark_iv", 0.6018), envelope=False)
    api_file("api_crossed_quote.json", set_field(5, "bid_price", 0.0226))
    whole = json.dumps({"jsonrpc": "2.0", "id": 9344, "result": elements}, indent=1)
    api_file("api_malformed.json", text=whole[:whole.index('"mark_price"', 2000)])

    def with_future(els):
        els.append({"instrument_name": "BTC-10APR26", "base_currency": "BTC",
                    "quote_currency": "USD", "bid_price": 68665.0, "ask_price": 68667.5,
                    "mark_price": 68668.65, "estimated_delivery_price": 68573.82,
                    "open_interest": 48_200_000.0, "volume": 812.4, "volume_usd": 55_781_000.0,
                    "creation_timestamp": elements[0]["creation_timestamp"]})
    api_file("api_with_future.json", with_future)


def test_chain_corpus_is_written_by_its_script(tmp_path):
    """The committed corpus is exactly what ``write_chain_corpus`` writes from the real rows."""
    names = write_chain_corpus(tmp_path)
    committed = sorted(p.name for p in CHAIN_CORPUS.iterdir()
                       if p.is_file() and p.name not in ("expect.toml", "README.md"))
    assert committed == names
    expect = tomllib.loads((CHAIN_CORPUS / "expect.toml").read_text(encoding="utf-8"))
    assert sorted(expect) == names
    for name in names:
        if name.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / name),
                                          pd.read_parquet(CHAIN_CORPUS / name))
        else:
            assert (tmp_path / name).read_bytes() == (CHAIN_CORPUS / name).read_bytes(), name


def _load_cut(tmp_path, edit=None, name="chain.csv", **kw):
    header, rows = _cut_rows()
    rows = [list(r) for r in rows]
    if edit is not None:
        rows = edit(header, rows)
    path = tmp_path / name
    path.write_text(_csv_text(header, rows), encoding="utf-8")
    return D.load_deribit(path, return_dropped=True, **kw)


def test_cut_rows_load_with_line_numbers(tmp_path):
    chain, dropped = _load_cut(tmp_path)
    assert len(chain) == 7 and dropped.empty
    assert sorted(chain["source_row"]) == list(range(2, 9))
    header, rows = _cut_rows()
    for _, q in chain.iterrows():  # each quote comes from the line it says
        assert rows[q["source_row"] - 2][header.index("instrument_name")] == q["instrument"]
    eth, _ = _load_cut(tmp_path, currency="ETH")
    assert sorted(eth["source_row"]) == [9, 10, 11]
    assert chain.attrs["cleaning"] == D.cleaning_summary(7, dropped)


def _set(row, column, text):
    def edit(header, rows):
        rows[row][header.index(column)] = text
        return rows
    return edit


@pytest.mark.parametrize(("column", "text", "reason"), [
    ("index_price", "", "bad_index_price"),
    ("index_price", "0", "bad_index_price"),
    ("index_price", "-68638.14", "bad_index_price"),
    ("index_price", "1e308", "bad_index_price"),
    ("index_price", "inf", "bad_index_price"),
    ("index_price", "75000", "bad_index_price"),       # 9% off the snapshot's index
    ("underlying", "1000", "bad_forward"),              # far from the index
    ("underlying", "1e308", "bad_forward"),
    ("underlying", "70500", "bad_forward"),             # 2.6% off its expiry's forward
    ("open_interest", "-1", "bad_open_interest"),
    ("open_interest", "", "bad_open_interest"),
    ("open_interest", "1e308", "bad_open_interest"),
    ("volume", "-3", "bad_volume"),
    ("implied_volatility", "", "bad_deribit_iv"),
    ("implied_volatility", "1e308", "bad_deribit_iv"),
])
def test_integrity_drops_name_their_line(tmp_path, column, text, reason):
    chain, dropped = _load_cut(tmp_path, _set(4, column, text))   # data row 4: line 6
    assert list(dropped["reason"]) == [reason]
    assert list(dropped["source_row"]) == [6]
    assert dropped["instrument"].iloc[0] == "BTC-10APR26-64000-P"
    assert len(chain) == 6 and 6 not in set(chain["source_row"])
    assert chain.attrs["cleaning"]["dropped"][reason] == 1
    assert chain.attrs["cleaning"]["rows"] == 7
    assert np.isfinite(chain.select_dtypes("number").to_numpy(float)).all()


def test_sound_values_at_the_tolerances_are_kept(tmp_path):
    """A forward 1% off its siblings and an index 1% off the snapshot's stay (the real data
    has up to 0.4% and 0.7%)."""
    chain, dropped = _load_cut(tmp_path, _set(4, "underlying", str(68668.65 * 1.01)))
    assert dropped.empty and len(chain) == 7
    chain, dropped = _load_cut(tmp_path, _set(4, "index_price", str(68638.14 * 0.99)))
    assert dropped.empty and len(chain) == 7


def test_exact_duplicates_dropped_conflicting_refused(tmp_path):
    def twice(header, rows):
        return rows + rows[:7]
    chain, dropped = _load_cut(tmp_path, twice)
    assert len(chain) == 7 and sorted(chain["source_row"]) == list(range(2, 9))
    assert set(dropped["reason"]) == {"duplicate_row"}
    assert sorted(dropped["source_row"]) == list(range(12, 19))

    def conflicting(header, rows):
        rows.append(list(rows[2]))
        rows[-1][header.index("ask_price")] = "0.0123"
        return rows
    with pytest.raises(ValueError, match=r"chain.csv: line 12 and line 4: duplicate "
                                         r"'instrument_name' BTC-10APR26-72000-C .*ask_price"):
        _load_cut(tmp_path, conflicting)


def test_truncated_last_line_is_recorded(tmp_path):
    header, rows = _cut_rows()
    text = _csv_text(header, rows)
    path = tmp_path / "cut.csv"
    path.write_text(text[:-60], encoding="utf-8")   # the last line (11, ETH) loses its end
    chain, dropped = D.load_deribit(path, "ETH", return_dropped=True)
    assert list(dropped["reason"]) == ["truncated_line"]
    assert list(dropped["source_row"]) == [11]
    assert dropped["instrument"].iloc[0] == "ETH-10APR26-2200-C"
    assert sorted(chain["source_row"]) == [9, 10]
    assert chain.attrs["cleaning"] == {**chain.attrs["cleaning"], "rows": 3, "kept": 2}
    # a BTC load of the same file: the cut ETH line is not a BTC quote
    chain, dropped = D.load_deribit(path, "BTC", return_dropped=True)
    assert dropped.empty and len(chain) == 7
    # cut before its currency and name are known: recorded for either currency
    path.write_text(text[:text.rindex("\n", 0, -1) + 20], encoding="utf-8")
    _, dropped = D.load_deribit(path, "BTC", return_dropped=True)
    assert list(dropped["reason"]) == ["truncated_line"] and list(dropped["source_row"]) == [11]
    # a short line before the last is refused
    lines = text.splitlines(keepends=True)
    lines[4] = lines[4][:40] + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=r"cut.csv: line 5 has 2 fields, the header \(line 1\) "
                                         r"has 23"):
        D.load_deribit(path)


def test_line_numbers_count_the_whole_file(tmp_path):
    """An ETH row is named by its line in the file, not by its place among the ETH rows;
    blank lines count."""
    def bad_eth(header, rows):
        rows[8][header.index("strike")] = "-2400.0"
        return rows
    with pytest.raises(ValueError, match=r"chain.csv: line 10 \(ETH-10APR26-2400-C\): field "
                                         r"'strike' must be a finite positive number"):
        _load_cut(tmp_path, bad_eth, currency="ETH")
    header, rows = _cut_rows()
    rows[1][header.index("open_interest")] = "lots"
    lines = _csv_text(header, rows).splitlines(keepends=True)
    path = tmp_path / "blank.csv"
    path.write_text("".join([lines[0], "\n", *lines[1:]]), encoding="utf-8")
    with pytest.raises(ValueError, match=r"blank.csv: line 4, column 'open_interest': expected "
                                         r"a number \(or an empty field\), got 'lots'"):
        D.load_deribit(path)


def test_parquet_rows_are_named_by_their_index(tmp_path):
    header, rows = _cut_rows()
    frame = pd.read_csv(io.StringIO(_csv_text(header, rows)))
    frame.loc[9, "underlying"] = 5.0            # the last ETH row
    path = tmp_path / "chain.parquet"
    frame.to_parquet(path, index=False)
    chain, dropped = D.load_deribit(path, "ETH", return_dropped=True)
    assert list(dropped["source_row"]) == [9] and list(dropped["reason"]) == ["bad_forward"]
    assert sorted(chain["source_row"]) == [7, 8]
    assert chain.attrs["source_row"] == "parquet row"
    frame.loc[8, "underlying"] = -5.0
    frame.to_parquet(path, index=False)
    with pytest.raises(ValueError, match=r"chain.parquet: row 8 \(0-based row index in the "
                                         r"parquet file\) \(ETH-10APR26-2400-C\)"):
        D.load_deribit(path, "ETH")


def test_unreadable_files_say_why(tmp_path):
    header, rows = _cut_rows()
    text = _csv_text(header, rows)
    path = tmp_path / "chain.csv"
    path.write_bytes(text.replace("BTC-10APR26,put", "BTC-10AVR26 \u00e9,put", 1)
                     .encode("latin-1"))
    with pytest.raises(ValueError, match=r"chain.csv: line 3 is not UTF-8 text \(byte 0xe9"):
        D.load_deribit(path)
    path.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"chain.csv: empty file"):
        D.load_deribit(path, snapshot="last")
    path.write_text(text.replace("timestamp,", "time,", 1), encoding="utf-8")
    with pytest.raises(ValueError, match=r"chain.csv: missing column\(s\) 'timestamp'"):
        D.load_deribit(path, snapshot="last")
    rows[3][0] = "yesterday"
    path.write_text(_csv_text(header, rows), encoding="utf-8")
    for snapshot in ("last", None):
        with pytest.raises(ValueError, match=r"chain.csv: line 5.*'timestamp' must be an "
                                             r"ISO-8601 time .*got 'yesterday'"):
            D.load_deribit(path, snapshot=snapshot)


@pytest.mark.parametrize("snapshot", ["yesterday", "", 1.5, True, ["last"]])
def test_bad_snapshot_arguments_say_what_is_accepted(tmp_path, snapshot):
    path = tmp_path / "chain.csv"
    path.write_text(CUT.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ValueError, match=r"chain.csv: snapshot must be None \(every snapshot\), "
                                         r"'first', 'last', an int index"):
        D.load_deribit(path, snapshot=snapshot)
    with pytest.raises(ValueError, match=r"chain.csv: snapshot index 3 out of range"):
        D.load_deribit(path, snapshot=3)
    assert len(D.load_deribit(path, snapshot=0)) == len(D.load_deribit(path, snapshot="last"))


def test_one_tick_bid_is_kept_below_one_tick_dropped(rng):
    """``min_price`` (default ``min_bid_ticks=1``) drops bids *below* one tick (1e-4 coin);
    a bid of exactly one tick is kept. ``min_bid_ticks=2`` drops it."""
    raw = _synthetic_raw(rng)
    otm = np.where(raw.option_type == "call", raw.strike > raw.underlying,
                   raw.strike < raw.underlying)
    # the two cheapest out-of-the-money quotes of the 30-day expiry (marks 2e-4, 3e-4 coin)
    j, i = raw[otm & raw.instrument_name.str.startswith("BTC-X1-")].nsmallest(
        2, "mark_price").index
    raw.loc[j, ["bid_price", "ask_price"]] = [1e-4, 2 * raw.loc[j, "mark_price"]]
    raw.loc[i, ["bid_price", "ask_price"]] = [0.99e-4, 2 * raw.loc[i, "mark_price"]]
    loose = D.CleaningRules(max_spread_iv=10.0, max_abs_z=100.0, min_expiry_days=0.0)
    reason = D.drop_reasons(D.normalise_deribit(raw), loose)
    assert reason[j] == ""
    assert reason[i] == "min_price"
    strict = dataclasses.replace(loose, min_bid_ticks=2.0)
    assert D.drop_reasons(D.normalise_deribit(raw), strict)[j] == "min_price"
