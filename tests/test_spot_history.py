"""Spot history loaders on the shared files (skipped without them), the named stress
episodes against the raw data, returns and realised vol, and clear errors for missing or
malformed files (small CSV files written to tmp_path; these run without the shared data)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from qmr_jax.data import spot as S


@pytest.fixture(scope="module")
def spot_dir():
    root = S.default_data_dir()
    if not (root / "spot").is_dir():
        pytest.skip(f"spot history not found under {root} (set QMR_DATA_DIR to the shared "
                    "data folder)")
    return root / "spot"


@pytest.fixture(scope="module")
def btc(spot_dir):
    return S.load_spot_history("BTC", source="binance")


def _raw_closes(path, date_col="timestamp", close_col="close"):
    """Closes straight from the CSV (an independent reading of the file)."""
    raw = pd.read_csv(path)
    return pd.Series(raw[close_col].to_numpy(), index=pd.to_datetime(raw[date_col]))


# ------------------------------------------------------------------------------------------
# loaders on the shared files


@pytest.mark.parametrize("currency,source,freq,first,n_file_rows", [
    ("BTC", "binance", "1d", "2017-08-17", 3065),
    ("ETH", "binance", "1d", "2017-08-17", 3065),
    ("BTC", "binance", "4h", "2017-08-17 04:00", 18371),
    ("BTC", "bitstamp", "2h", "2011-08-18 12:00", 61465),
    ("BTC", "yahoo", "1d", "2014-09-17", 2982),
    ("ETH", "yahoo", "1d", "2017-11-09", 1833),
])
def test_each_source_loads_clean(spot_dir, currency, source, freq, first, n_file_rows):
    h = S.load_spot_history(currency, source=source, freq=freq)
    assert list(h.columns) == list(S.OHLCV)
    assert all(h[c].dtype == np.float64 for c in S.OHLCV)
    assert str(h.index.tz) == "UTC" and h.index.is_monotonic_increasing and h.index.is_unique
    assert h.index[0] == pd.Timestamp(first, tz="UTC")
    # row counts from the PROVENANCE files, less the partial last bar
    assert len(h) == n_file_rows - 1
    assert h.attrs["provider"] == source and h.attrs["bar"] == freq
    assert h.attrs["source"].endswith(".csv") and source in h.attrs["source"]
    dropped = S.dropped_rows(h)
    assert len(dropped) == 1 and dropped["line"].iloc[0] == n_file_rows + 1
    assert "partial last bar" in dropped["reason"].iloc[0]
    assert (h[["open", "high", "low", "close"]] > 0).all().all()
    assert (h["high"] >= h["low"]).all()


def test_documented_facts_of_the_files(spot_dir):
    # closes quoted in the PROVENANCE files
    assert S.load_spot_history("BTC", source="binance").loc["2020-03-12", "close"] == 4800.00
    assert S.load_spot_history("BTC", source="binance").loc["2022-11-09", "close"] == 15922.81
    yahoo = S.load_spot_history("BTC", source="yahoo")
    assert yahoo.loc["2020-03-12", "close"] == pytest.approx(4970.79, abs=0.01)
    assert yahoo.loc["2022-11-09", "close"] == pytest.approx(15880.78, abs=0.01)
    assert yahoo.attrs["quote"] == "USD" and yahoo.attrs["volume_unit"] == "USD"
    # Bitstamp: early zero-volume bars are kept and counted (2,430 in the file)
    bs = S.load_spot_history("BTC", source="bitstamp")
    assert bs.attrs["zero_volume_bars"] == int((bs["volume"] == 0).sum()) > 2000
    assert (bs.loc[:"2012-12-31", "volume"] == 0).mean() > 0.05
    # last bar dropped: Binance daily ends on 2026-01-05
    assert S.load_spot_history("ETH").index[-1] == pd.Timestamp("2026-01-05", tz="UTC")


def test_automatic_choice_is_the_longest_daily_history(spot_dir):
    auto = S.load_spot_history("BTC")
    spans = {s: (lambda h: h.index[-1] - h.index[0])(S.load_spot_history("BTC", source=s))
             for s in ("binance", "yahoo")}
    assert auto.attrs["provider"] == max(spans, key=spans.get) == "binance"
    assert "longest" in auto.attrs["auto_choice"]
    assert S.load_spot_history("BTC", freq="2h").attrs["provider"] == "bitstamp"
    assert S.load_spot_history("ETH", freq="4h").attrs["provider"] == "binance"
    with pytest.raises(ValueError, match=r"no source has ETH bars of freq='2h'.*'1d', '4h'"):
        S.load_spot_history("ETH", freq="2h")


def test_log_returns_and_resampling(spot_dir, btc):
    r = S.log_returns(btc)
    assert len(r) == len(btc) - 1 and r.name == "log_return"
    assert r.loc["2020-03-12"] == pytest.approx(np.log(4800.00 / 7934.52), rel=1e-12)
    # 4h closes resampled to UTC days reproduce the daily file's returns
    r4 = S.log_returns(S.load_spot_history("BTC", freq="4h"), freq="1D")
    common = r.index.intersection(r4.index)
    assert len(common) > 3000
    diff = np.abs(r.loc[common] - r4.loc[common])
    assert (diff < 1e-9).mean() > 0.999 and r4.index[-1] == r.index[-1]


def test_dvol(spot_dir):
    d = S.load_dvol("BTC")
    assert len(d) == 1102 and d.index.is_monotonic_increasing and str(d.index.tz) == "UTC"
    assert d.loc["2022-11-09"] == pytest.approx(1.1472) and d.idxmax() == d.index[3]
    assert 0.3 < d.min() and d.max() < 1.2
    with pytest.raises(ValueError, match=r"DVOL history is available for \['BTC'\]"):
        S.load_dvol("ETH")


# ------------------------------------------------------------------------------------------
# episodes


def test_episode_lookup():
    assert set(S.EPISODES) >= {"covid-2020-03", "may-2021", "luna-2022-05", "3ac-2022-06",
                               "ftx-2022-11"}
    assert len(S.EPISODES) >= 7
    for name, e in S.EPISODES.items():
        assert S.episode(name) is e and e.name == name
        assert pd.Timestamp(e.start) <= pd.Timestamp(e.end)
        assert e.description and e.source
    with pytest.raises(ValueError, match=r"unknown episode 'covid'.*covid-2020-03.*ftx-2022-11"):
        S.episode("covid")


def test_episodes_moves_match_the_raw_data(spot_dir, btc):
    raw = _raw_closes(spot_dir / "binance" / "BTCUSDT_1d.csv")
    for name, e in S.EPISODES.items():
        path = S.episode_path(btc, e.start, e.end)
        # independently: close of the end day over the close of the day before the start
        before = pd.Timestamp(e.start) - pd.Timedelta(days=1)
        expected = raw[pd.Timestamp(e.end)] / raw[before] - 1.0
        assert path["cum_return"].iloc[-1] == pytest.approx(expected, rel=1e-12), name
        assert path["close"].iloc[0] == raw[before]
        n_days = (pd.Timestamp(e.end) - pd.Timestamp(e.start)).days + 1
        assert len(path) == n_days + 1, name
        assert expected < -0.05, f"{name}: BTC moved {expected:+.1%}, not a stress episode"
    # COVID: the close of 2020-03-12 was more than 35% below the previous close on every
    # source; the two days together lost more than a quarter on Binance
    covid = S.episode("covid-2020-03")
    for source in ("binance", "yahoo"):
        h = S.load_spot_history("BTC", source=source)
        p = S.episode_path(h, covid.start, covid.end)
        assert p["cum_return"].iloc[1] < -0.35, source
    bs = S.load_spot_history("BTC", source="bitstamp")
    p = S.episode_path(bs, covid.start, covid.end)
    assert p["cum_return"].min() < -0.4  # intraday (2h closes) the fall went further
    assert len(p) == 1 + 24 and p["t_years"].iloc[-1] == pytest.approx(2 / 365)
    # FTX: more than 20% down on every source
    ftx = S.episode("ftx-2022-11")
    for h in (btc, S.load_spot_history("BTC", source="yahoo"), bs):
        assert S.episode_path(h, ftx.start, ftx.end)["cum_return"].iloc[-1] < -0.2


def test_episode_path_conventions(btc):
    p = S.episode_path(btc, "2020-03-12", "2020-03-13")
    # the anchor is the close at 2020-03-12 00:00 (the bar labelled 2020-03-11)
    assert list(p.index) == [pd.Timestamp(f"2020-03-{d}", tz="UTC") for d in (12, 13, 14)]
    np.testing.assert_allclose(p["t_years"], [0.0, 1 / 365, 2 / 365], rtol=1e-15)
    np.testing.assert_allclose(p["close"], [7934.52, 4800.00, 5578.60])
    np.testing.assert_allclose(p["log_return"], np.log(p["close"] / 7934.52), rtol=1e-14)
    assert p["cum_return"].iloc[0] == 0.0 and p["log_return"].iloc[0] == 0.0
    # exact times: an end at 2020-03-13 00:00 stops at the close observed then
    q = S.episode_path(btc, "2020-03-12", pd.Timestamp("2020-03-13 00:00", tz="UTC"))
    assert len(q) == 2


def test_realized_vol_around_episodes(btc):
    ftx = S.realized_vol(btc, "2022-11-06", "2022-11-09")
    assert ftx["n_before"] == 30 and ftx["n_during"] == 4
    r = S.log_returns(btc)
    calm = r.loc["2022-10-07":"2022-11-05"]  # closes observed 10-08 .. 11-06
    assert ftx["before"] == pytest.approx(np.sqrt(365 * np.mean(calm**2)), rel=1e-12)
    assert ftx["ratio"] == pytest.approx(ftx["during"] / ftx["before"])
    assert ftx["ratio"] > 2 and ftx["during"] > 1.0
    covid = S.realized_vol(btc, "2020-03-12", "2020-03-13")
    assert covid["during"] > 3.0 and covid["ratio"] > 5
    # 4h bars scale by their own length: the same order of magnitude as daily
    h4 = S.realized_vol(S.load_spot_history("BTC", freq="4h"), "2022-11-06", "2022-11-09")
    assert h4["n_during"] == 24 and 0.5 < h4["during"] / ftx["during"] < 2
    # DVOL (30-day implied) before FTX was near the realised level; it doubled after
    dvol = S.load_dvol()
    assert dvol.loc["2022-11-06"] < 0.8 < dvol.loc["2022-11-09"]


def test_episode_outside_the_data_names_the_range(spot_dir):
    yahoo = S.load_spot_history("BTC", source="yahoo")
    with pytest.raises(ValueError, match=r"no close between 2024-08-02.*BTC-USD\.csv.*"
                                         r"2014-09-17.*2022-11-14"):
        S.episode_path(yahoo, "2024-08-02", "2024-08-05")
    with pytest.raises(ValueError, match=r"no close at or before 2010-01-01.*2014-09-17"):
        S.episode_path(yahoo, "2010-01-01", "2010-02-01")
    with pytest.raises(ValueError, match="not after start"):
        S.episode_path(yahoo, "2020-03-13", "2020-03-12 12:00")


# ------------------------------------------------------------------------------------------
# errors: unknown names, missing and malformed files (no shared data needed)

GOOD = """timestamp,open,high,low,close,volume
2024-01-01,100.0,110.0,95.0,105.0,10.0
2024-01-02,105.0,112.0,101.0,110.0,12.0
2024-01-03,110.0,111.0,90.0,92.0,30.0
2024-01-04,92.0,99.0,91.0,98.0,9.0
2024-01-05,98.0,99.0,97.0,98.5,1.0
"""


def _write(root, text, name="BTCUSDT_1d.csv", folder="binance"):
    d = root / "spot" / folder
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(text)
    return d / name


def test_small_file_loads_and_drops_the_partial_bar(tmp_path):
    path = _write(tmp_path, GOOD)
    h = S.load_spot_history("BTC", source="binance", data_dir=tmp_path)
    assert len(h) == 4 and h.index[-1] == pd.Timestamp("2024-01-04", tz="UTC")
    assert S.dropped_rows(h)["line"].tolist() == [6]
    assert h.attrs["source"] == str(path)
    p = S.episode_path(h, "2024-01-02", "2024-01-03")
    np.testing.assert_allclose(p["cum_return"], [0.0, 110 / 105 - 1, 92 / 105 - 1])
    rv = S.realized_vol(h, "2024-01-03", "2024-01-03", window_days=2)
    assert rv["n_before"] == 1 and rv["during"] == pytest.approx(
        abs(np.log(92 / 110)) * np.sqrt(365))
    # concatenating two histories keeps working (attrs hold no DataFrame)
    assert len(pd.concat([h, h.iloc[:0]])) == 4


def test_unknown_names_list_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"currency must be one of \['BTC', 'ETH'\]"):
        S.load_spot_history("DOGE", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"source must be one of \['binance', 'bitstamp', "
                                         r"'yahoo'\]"):
        S.load_spot_history("BTC", source="kraken", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"'bitstamp' has no ETH.*\['binance', 'yahoo'\]"):
        S.load_spot_history("ETH", source="bitstamp", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"bars \['1d', '4h'\]; got freq='1h'"):
        S.load_spot_history("BTC", source="binance", freq="1h", data_dir=tmp_path)


def test_missing_file_names_path_and_setting(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"BTCUSDT_4h\.csv.*QMR_DATA_DIR"):
        S.load_spot_history("BTC", source="binance", freq="4h", data_dir=tmp_path)
    monkeypatch.setenv("QMR_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as err:
        S.load_spot_history("ETH")
    msg = str(err.value)
    assert "nowhere" in msg and "ETHUSDT_1d.csv" in msg and "ETH-USD.csv" in msg
    assert "QMR_DATA_DIR" in msg
    with pytest.raises(FileNotFoundError, match=r"dvol_btc\.json.*QMR_DATA_DIR"):
        S.load_dvol()


@pytest.mark.parametrize("edit,match", [
    (lambda t: t.replace(",close,", ",last,"),
     r"BTCUSDT_1d\.csv: missing column\(s\) 'close'"),
    (lambda t: t.replace("2024-01-02,105.0,112.0,101.0,110.0", "2024-01-02,105.0,112.0,101.0,"),
     r"BTCUSDT_1d\.csv: line 3 \(timestamp '2024-01-02'\): field 'close' must be a finite "
     r"positive price \(empty or not a number\)"),
    (lambda t: t.replace("110.0,12.0", "nan,12.0"),
     r"line 3 \(timestamp '2024-01-02'\): field 'close'.*got 'nan'"),
    (lambda t: t.replace("92.0,99.0,91.0", "92.0,99.0,-91.0"),
     r"line 5 \(timestamp '2024-01-04'\): field 'low' must be a finite positive price; "
     r"got -91\.0"),
    (lambda t: t.replace("2024-01-04", "2024-01-03"),
     r"line 5 \(timestamp '2024-01-03'\): field 'timestamp' duplicates line 4"),
    (lambda t: t.replace("2024-01-02", "Jan second"),
     r"line 3 \(timestamp 'Jan second'\): field 'timestamp' must be an ISO-8601"),
    (lambda t: t.replace("30.0\n", "-3.0\n"),
     r"line 4 .*field 'volume' must be a finite number >= 0; got -3\.0"),
])
def test_malformed_files_name_file_line_and_field(tmp_path, edit, match):
    _write(tmp_path, edit(GOOD))
    with pytest.raises(ValueError, match=match) as err:
        S.load_spot_history("BTC", source="binance", data_dir=tmp_path)
    assert str(tmp_path) in str(err.value)


def test_yahoo_layout_and_malformed_dvol(tmp_path):
    text = ("Date,Open,High,Low,Close,Adj Close,Volume\n"
            "2020-03-11,7910,7950,7600,7911.43,7911.43,1\n"
            "2020-03-12,7913,7929,4860,4970.79,4970.79,2\n"
            "2020-03-13,5017,5838,4106,5563.71,5563.71,3\n")
    _write(tmp_path, text, "BTC-USD.csv", "yahoo")
    h = S.load_spot_history("BTC", source="yahoo", data_dir=tmp_path)
    assert list(h.columns) == list(S.OHLCV) and len(h) == 2
    assert h.attrs["volume_unit"] == "USD"
    with pytest.raises(ValueError, match=r"missing column\(s\) 'Close'"):
        _write(tmp_path, text.replace("Close,Adj", "Last,Adj"), "BTC-USD.csv", "yahoo")
        S.load_spot_history("BTC", source="yahoo", data_dir=tmp_path)
    d = tmp_path / "spot" / "deribit_dvol"
    d.mkdir(parents=True)
    (d / "dvol_btc.json").write_text(json.dumps([[1667692800000, 56.76], [1667779200000, -1]]))
    with pytest.raises(ValueError, match=r"dvol_btc\.json: entry 1: expected"):
        S.load_dvol(data_dir=tmp_path)
    (d / "dvol_btc.json").write_text(json.dumps([[1667692800000, 56.76], [1667692800000, 50]]))
    with pytest.raises(ValueError, match="entry 1: duplicate timestamp 2022-11-06"):
        S.load_dvol(data_dir=tmp_path)
    (d / "dvol_btc.json").write_text(json.dumps([[1667779200000, 59.48], [1667692800000, 50]]))
    s = S.load_dvol(data_dir=tmp_path)
    assert s.index.is_monotonic_increasing and s.iloc[0] == pytest.approx(0.5)
