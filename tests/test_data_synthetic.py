"""Synthetic Deribit-like chains: the loader's table, model IVs against independent pricers
(QuantLib's analytic Heston engine, the Merton series, GBM's flat smile), quotes and tick
rounding processed as the loader does, reproducible noise of the stated size, the Deribit
calendar and strike grid, cleaning, and clear errors."""

from __future__ import annotations

import re

import jax
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import qmr_jax as qmr
from qmr_jax.data import CHAIN_COLUMNS, clean_chain, normalise_deribit
from qmr_jax.data import synthetic as S
from qmr_jax.data.synthetic import (
    default_half_spread_iv,
    deribit_expiries,
    deribit_strikes,
    synthetic_chain,
)

from . import oracles

HESTON = qmr.Heston(v0=0.25, kappa=2.0, theta=0.3, xi=1.0, rho=-0.3)
BASIS = 0.05
SNAP = pd.Timestamp("2026-03-02T09:00:00Z")


@pytest.fixture(scope="module")
def raw_chain():
    """The default calendar and grid, noise-free, uncleaned, with a forward basis."""
    return synthetic_chain(HESTON, basis=BASIS, clean=False)


@pytest.fixture(scope="module")
def both_sides():
    """A call and a put at every strike, noise-free."""
    return synthetic_chain(HESTON, basis=BASIS, otm_only=False, clean=False)


def _z(chain):
    return chain["log_moneyness"] / (chain["mark_iv"] * np.sqrt(chain["expiry_years"]))


# ------------------------------------------------------------------------------------------
# the table


def _to_raw(chain):
    """Raw Deribit rows carrying the chain's quotes, for the loader."""
    return pd.DataFrame({
        "timestamp": chain["snapshot"].map(lambda ts: ts.isoformat()),
        "instrument_name": chain["instrument"], "underlying": chain["forward"],
        "option_type": np.where(chain["is_call"], "call", "put"), "strike": chain["strike"],
        "expiry_datetime": chain["expiry"].map(lambda ts: ts.isoformat()),
        "bid_price": chain["bid_coin"], "ask_price": chain["ask_coin"],
        "mark_price": chain["mark_coin"], "implied_volatility": chain["deribit_mark_iv"],
        "open_interest": chain["open_interest"], "currency": chain["currency"],
        "index_price": chain["spot"], "volume": chain["volume"],
    })


def _loader_view(chain):
    """``normalise_deribit`` of the chain's quotes. The rows are padded to the size the
    generator pads its implied-vol calls to, so the loader's compiled solver is shared."""
    raw = _to_raw(chain)
    pad = S._bucket(len(raw), S._LEAST_QUOTES) - len(raw)
    raw = pd.concat([raw, raw.iloc[np.zeros(pad, int)]], ignore_index=True)
    return normalise_deribit(raw).iloc[:len(chain)]


def _ivs(usd, chain):
    """Black-76 implied vols of USD prices of the chain's options (padded solver)."""
    f, k, t, call = (chain[c].to_numpy() for c in ("forward", "strike", "expiry_years",
                                                    "is_call"))
    vols, status = S._implied_vols(np.asarray(usd, np.float64), f, k, t, call)
    assert (status == 0).all()
    return vols


def test_columns_dtypes_and_attrs(raw_chain):
    assert list(raw_chain.columns) == list(CHAIN_COLUMNS)
    loaded = _loader_view(raw_chain)
    for col in CHAIN_COLUMNS:
        assert raw_chain[col].dtype == loaded[col].dtype, col
    assert raw_chain["snapshot"].dtype == "datetime64[us, UTC]"
    assert raw_chain.notna().all().all()  # noise-free, no tick: every quote complete
    truth = raw_chain.attrs["synthetic"]
    assert truth["model"] == "Heston"
    assert truth["params"] == {"v0": 0.25, "kappa": 2.0, "theta": 0.3, "xi": 1.0, "rho": -0.3}
    assert (truth["spot"], truth["basis"], truth["noise_iv"]) == (60000.0, BASIS, 0.0)
    assert truth["n_quotes"] == len(raw_chain) and truth["n_unpriceable"] == 0
    # sorted like the loader's output
    keys = raw_chain[["expiry", "strike", "is_call"]]
    assert keys.equals(keys.sort_values(["expiry", "strike", "is_call"]))


def test_quote_identities(raw_chain):
    c = raw_chain
    t = c["expiry_years"].to_numpy()
    np.testing.assert_allclose(c["forward"], 60000.0 * np.exp(BASIS * t), rtol=1e-15)
    np.testing.assert_allclose(c["log_moneyness"], np.log(c["strike"] / c["forward"]),
                               rtol=0, atol=1e-15)
    for side in ("bid", "ask", "mark"):
        np.testing.assert_allclose(c[f"{side}_usd"], c[f"{side}_coin"] * c["forward"],
                                   rtol=1e-15)
    # noise-free: the mid vol is the model IV, quotes straddle it by the default half-spread
    assert (c["mid_iv"] == c["mark_iv"]).all()
    half = default_half_spread_iv(c["log_moneyness"], t, c["mark_iv"])
    np.testing.assert_allclose(c["ask_iv"] - c["mid_iv"], half, rtol=1e-12)
    np.testing.assert_allclose(c["mid_iv"] - c["bid_iv"], half, rtol=1e-12)
    assert (c["bid_coin"] < c["mark_coin"]).all() and (c["mark_coin"] < c["ask_coin"]).all()
    # bid/ask prices are Black-76 at their vols, undiscounted, in coin
    for side in ("bid", "ask"):
        usd = S._black_coin(c["forward"].to_numpy(), c["strike"].to_numpy(), t,
                            c[f"{side}_iv"].to_numpy(), c["is_call"].to_numpy()) * c["forward"]
        np.testing.assert_allclose(c[f"{side}_usd"], usd, rtol=1e-12)
        np.testing.assert_allclose(_ivs(c[f"{side}_usd"], c), c[f"{side}_iv"], rtol=1e-12)
    assert (c["deribit_mark_iv"] - c["mark_iv"]).abs().max() <= 5e-5 + 1e-15
    np.testing.assert_allclose(c["spread_iv"], 2 * half, rtol=1e-12)
    # the loader's own reading of these quotes: same vega and mark IV
    loaded = _loader_view(c)
    np.testing.assert_allclose(loaded["vega"], c["vega"], rtol=1e-9)
    np.testing.assert_allclose(loaded["mark_iv"], c["mark_iv"], rtol=0, atol=1e-10)
    assert (c["open_interest"] > 0).all() and (c["volume"] >= 0).all()


def test_instrument_names(raw_chain):
    pattern = re.compile(r"^BTC-(\d{1,2})([A-Z]{3})(\d{2})-(\d+)-([CP])$")
    for name, expiry, strike, call in raw_chain[
            ["instrument", "expiry", "strike", "is_call"]].itertuples(index=False):
        m = pattern.match(name)
        assert m, name
        day, mon, yy, k, cp = m.groups()
        assert pd.Timestamp(f"{day} {mon} 20{yy}").date() == expiry.date(), name
        assert float(k) == strike and (cp == "C") == call, name
    assert raw_chain["instrument"].is_unique
    assert "BTC-27MAR26-60000-P" in set(raw_chain["instrument"])
    alt = synthetic_chain(qmr.GBM(1.5), spot=0.5, currency="XRP", expiries=[0.25],
                          clean=False)
    assert any(re.fullmatch(r"XRP-\d+[A-Z]{3}\d{2}-0d\d+-[CP]", n) for n in alt["instrument"])


# ------------------------------------------------------------------------------------------
# model IVs against independent pricers


def _quantlib_heston_ivs(model, basis, chain):
    """Implied vols of QuantLib's analytic Heston prices of the chain's options.

    QuantLib expiries are whole days, Deribit's are not (08:00 expiries, 09:00 snapshot).
    Heston is invariant under a change of clock: with ``a = T / T'``, the model
    ``(a v0, a kappa, a theta, a xi, rho)`` and basis ``a b`` at ``T'`` gives the same
    distribution of ``S_T / F`` (``v`` is a variance per unit time), so each expiry is priced
    at its nearest whole number of days ``T'`` with the parameters scaled.
    """
    v0, kappa, theta, xi, rho = (float(p) for p in model)
    usd = np.empty(len(chain))
    for t, rows in chain.groupby("expiry_years").groups.items():
        days = max(1, int(round(t * 365)))
        a = t / (days / 365)
        engine = oracles.heston_engine(60000.0, 0.0, -a * basis, a * v0, a * kappa, a * theta,
                                       a * xi, rho)
        for i in chain.index.get_indexer(rows):
            q = chain.iloc[i]
            usd[i] = oracles.price(engine, q["strike"], days, q["is_call"])
    return _ivs(usd, chain)


def test_heston_mid_iv_matches_quantlib(raw_chain, rng):
    sample = raw_chain.iloc[np.linspace(0, len(raw_chain) - 1, 40).astype(int)]
    iv = _quantlib_heston_ivs(HESTON, BASIS, sample)
    assert np.abs(sample["mid_iv"].to_numpy() - iv).max() < 1e-9
    # random parameters and basis
    v0, theta = rng.uniform(0.1, 0.6, 2)
    model = qmr.Heston(v0, rng.uniform(0.5, 4.0), theta, rng.uniform(0.3, 1.5),
                       rng.uniform(-0.8, 0.3))
    basis = rng.uniform(-0.05, 0.1)
    chain = synthetic_chain(model, basis=basis, clean=False)
    sample = chain.iloc[np.linspace(0, len(chain) - 1, 40).astype(int)]
    iv = _quantlib_heston_ivs(model, basis, sample)
    assert np.abs(sample["mid_iv"].to_numpy() - iv).max() < 1e-9, model


def test_gbm_smile_is_flat():
    chain = synthetic_chain(qmr.GBM(0.6), basis=0.1, clean=False)
    err = np.abs(chain["mid_iv"] - 0.6)
    # the price's absolute error (~1e-16 F) moves the vol of sub-tick wing quotes most
    assert err[chain["mark_coin"] >= 1e-4].max() < 1e-12
    assert err.max() < 1e-10


# ------------------------------------------------------------------------------------------
# out-of-the-money filter, cleaning


def test_otm_filter(raw_chain, both_sides):
    k, f, call = raw_chain["strike"], raw_chain["forward"], raw_chain["is_call"]
    assert ((call & (k >= f)) | (~call & (k <= f))).all()
    assert call.any() and (~call).any()
    # the full chain lists a call and a put at every strike
    pairs = both_sides.groupby(["expiry", "strike"])["is_call"].agg(["sum", "size"])
    assert (pairs["sum"] == 1).all() and (pairs["size"] == 2).all()
    # and its out-of-the-money half is the OTM chain
    otm = both_sides[np.where(both_sides["is_call"], both_sides["strike"] >= both_sides[
        "forward"], both_sides["strike"] <= both_sides["forward"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(otm, raw_chain, rtol=1e-13)
    # put-call parity between the twins: C - P = F - K (undiscounted)
    wide = both_sides.pivot_table(index=["expiry", "strike"], columns="is_call",
                                  values=["mark_usd", "forward"])
    parity = wide[("mark_usd", True)] - wide[("mark_usd", False)]
    strikes = wide.index.get_level_values("strike")
    np.testing.assert_allclose(parity, wide[("forward", True)] - strikes, rtol=0,
                               atol=1e-13 * 60000 * 4)


def test_clean_drops_only_short_expiries_and_far_wings(raw_chain):
    kept, dropped = clean_chain(raw_chain)
    chain = synthetic_chain(HESTON, basis=BASIS)  # clean=True: the same rows
    pd.testing.assert_frame_equal(chain, kept)
    assert chain.attrs["cleaning"]["kept"] == len(chain)
    assert chain.attrs["synthetic"]["params"]["rho"] == -0.3
    assert set(dropped["reason"]) <= {"expired_or_short", "min_price"}
    short = dropped["reason"] == "expired_or_short"
    assert (dropped.loc[short, "expiry_years"] < 2 / 365).all()
    assert (raw_chain["expiry_years"] < 2 / 365).sum() == short.sum()
    wing = dropped[~short]
    assert (wing["bid_coin"] < 1e-4).all() and (_z(wing).abs() > 2.0).all()
    listed = (raw_chain["expiry_years"] >= 2 / 365).sum()
    assert len(kept) >= 0.75 * listed
    assert (_z(kept).abs() < 4.0).all()


# ------------------------------------------------------------------------------------------
# noise, keys, ticks


def test_same_key_same_chain_other_key_other_chain():
    kw = dict(expiries=[0.05, 0.3], basis=BASIS, noise_iv=0.01, clean=False)
    a = synthetic_chain(HESTON, key=jax.random.key(3), **kw)
    b = synthetic_chain(HESTON, key=jax.random.key(3), **kw)
    c = synthetic_chain(HESTON, key=jax.random.key(4), **kw)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert a.attrs["synthetic"]["key"] == b.attrs["synthetic"]["key"]
    assert (a["mid_iv"] != c["mid_iv"]).all()
    pd.testing.assert_series_equal(a["mark_iv"], c["mark_iv"], check_exact=True)
    # an int seed is the same as jax.random.key(seed)
    pd.testing.assert_frame_equal(synthetic_chain(HESTON, key=3, **kw), a, check_exact=True)
    # a key without noise changes nothing
    quiet = dict(kw, noise_iv=0.0)
    pd.testing.assert_frame_equal(synthetic_chain(HESTON, key=5, **quiet),
                                  synthetic_chain(HESTON, **quiet), check_exact=True)


def test_noise_has_the_stated_std(both_sides):
    s = 0.01
    noisy = synthetic_chain(HESTON, basis=BASIS, otm_only=False, clean=False, noise_iv=s,
                            key=jax.random.key(2026))
    pd.testing.assert_series_equal(noisy["mark_iv"], both_sides["mark_iv"], check_exact=True)
    e = (noisy["mid_iv"] - noisy["mark_iv"]).to_numpy() / s
    n = len(e)
    assert n > 800
    # mean 0 and variance 1 within 5 standard errors of the sample, normal shape
    assert abs(e.mean()) < 5 / np.sqrt(n)
    assert abs((e * e).sum() - n) < 5 * np.sqrt(2 * n)
    assert stats.kstest(e, "norm").pvalue > 1e-4
    # independent per quote: the call and the put at a strike get different noise
    both = noisy.assign(e=e).pivot_table(index=["expiry", "strike"], columns="is_call",
                                         values="e")
    assert abs(np.corrcoef(both[True], both[False])[0, 1]) < 5 / np.sqrt(len(both))
    # the quotes straddle the noisy mid by the half-spread
    half = default_half_spread_iv(noisy["log_moneyness"], noisy["expiry_years"],
                                  noisy["mark_iv"])
    np.testing.assert_allclose(noisy["ask_iv"] - noisy["mid_iv"], half, rtol=1e-12)
    assert (noisy["bid_coin"] < noisy["ask_coin"]).all()
    assert noisy.attrs["synthetic"]["noise_iv"] == s


def test_tick_rounding_is_read_back_by_the_loader(raw_chain):
    tick = 1e-4
    chain = synthetic_chain(HESTON, basis=BASIS, tick=tick, clean=False)
    pd.testing.assert_series_equal(chain["mark_coin"], raw_chain["mark_coin"])
    for side in ("bid", "ask"):
        q = chain[f"{side}_coin"].dropna() / tick
        np.testing.assert_allclose(q, np.round(q), rtol=0, atol=1e-9)
    has_bid = chain["bid_coin"].notna()
    # rounded outwards, from the exact quotes; no bid where the exact bid is under a tick
    assert (chain.loc[has_bid, "bid_coin"] <= raw_chain.loc[has_bid, "bid_coin"]).all()
    assert (chain["ask_coin"] >= raw_chain["ask_coin"]).all()
    np.testing.assert_array_equal(has_bid, raw_chain["bid_coin"] >= tick)
    assert (~has_bid).any() and has_bid.mean() > 0.7
    assert (chain.loc[has_bid, "bid_iv"] < chain.loc[has_bid, "mark_iv"]).all()
    assert (chain["mark_iv"] < chain["ask_iv"]).all()
    # every vol is what the loader computes from these prices
    loaded = _loader_view(chain)
    for col in ("bid_iv", "ask_iv", "mid_iv", "spread_iv", "spread_coin"):
        np.testing.assert_allclose(chain[col], loaded[col], rtol=0, atol=1e-12, err_msg=col)
    assert chain["mid_iv"].isna().equals(~has_bid)
    kept = synthetic_chain(HESTON, basis=BASIS, tick=tick)
    assert set(kept.attrs["cleaning"]["dropped"]) >= {"no_bid"}
    assert kept.attrs["cleaning"]["dropped"]["no_bid"] == (~has_bid & (
        chain["expiry_years"] >= 2 / 365)).sum()


def test_same_chain_without_global_x64(raw_chain):
    with jax.enable_x64(False):
        chain = synthetic_chain(HESTON, basis=BASIS, clean=False)
    pd.testing.assert_frame_equal(chain, raw_chain, check_exact=True)
    assert chain["mid_iv"].dtype == np.float64


# ------------------------------------------------------------------------------------------
# calendar and strikes


def test_default_calendar():
    days = deribit_expiries(SNAP)
    expected = ["2026-03-03", "2026-03-04", "2026-03-05", "2026-03-06", "2026-03-13",
                "2026-03-20", "2026-03-27", "2026-04-24", "2026-05-29", "2026-06-26",
                "2026-09-25", "2026-12-25", "2027-03-26"]
    assert [d.strftime("%Y-%m-%d") for d in days] == expected
    assert (days.hour == 8).all() and (days.minute == 0).all() and days.tz is not None
    assert days.is_monotonic_increasing and days.is_unique
    assert (days[3:].day_of_week == 4).all()  # weeklies, monthlies, quarterlies: Fridays
    # monthlies and quarterlies are the last Friday of their month
    assert ((days[6:] + pd.Timedelta(days=7)).month != days[6:].month).all()
    # the BTC calendar of deribit_options_snapshot_20260401T100101Z.csv (shared data), with
    # its four dailies
    real = ["2026-04-02", "2026-04-03", "2026-04-04", "2026-04-05", "2026-04-10",
            "2026-04-17", "2026-04-24", "2026-05-29", "2026-06-26", "2026-09-25",
            "2026-12-25", "2027-03-26"]
    got = deribit_expiries("2026-04-01T10:01:01Z", n_daily=4)
    assert [d.strftime("%Y-%m-%d") for d in got] == real
    # a snapshot at 08:00 on a Friday: that expiry has gone
    fri = deribit_expiries("2026-03-06T08:00:00")
    assert fri[0] == pd.Timestamp("2026-03-07T08:00Z")
    assert pd.Timestamp("2026-03-13T08:00Z") in fri and pd.Timestamp("2026-03-06T08:00Z") not in fri


def test_chain_expiries_act365(raw_chain):
    exp = raw_chain.drop_duplicates("expiry")
    assert list(exp["expiry"]) == list(deribit_expiries(SNAP))
    years = (exp["expiry"] - SNAP).dt.total_seconds() / (365 * 86400)
    np.testing.assert_array_equal(exp["expiry_years"], years)
    # explicit times and year fractions
    chain = synthetic_chain(HESTON, expiries=["2026-06-26T08:00:00Z", 0.1], clean=False)
    got = chain.drop_duplicates("expiry")
    assert got["expiry_years"].iloc[0] == 0.1
    assert abs((got["expiry"].iloc[0] - SNAP).total_seconds() - 0.1 * 365 * 86400) <= 1e-6
    assert got["expiry_years"].iloc[1] == (pd.Timestamp("2026-06-26T08:00Z") - SNAP
                                           ).total_seconds() / (365 * 86400)


def test_default_strike_grid(raw_chain):
    sd = np.sqrt(np.asarray(qmr.cumulants(HESTON, np.asarray(
        raw_chain["expiry_years"].unique()), orders=(2,))[0]))
    counts = []
    for (_, g), s in zip(raw_chain.groupby("expiry"), sd, strict=True):
        k = np.unique(g["strike"])
        counts.append(len(k))
        assert 9 <= len(k) <= 60
        assert (k % 500 == 0).all()
        x = np.log(k / g["forward"].iloc[0]) / s
        assert x.min() < -2.5 and x.max() > 2.5 and np.abs(x).max() <= 4.0
        # finer near the money than in the wings
        near = np.diff(k)[np.abs(x[1:]) < 1].min()
        assert near <= np.diff(k).max() / 4
    assert counts[0] < 20 and max(counts[-4:]) >= 40
    # ETH: strikes scaled to spot
    eth = deribit_strikes(2000.0, 0.1, spot=2000.0)
    assert (eth % 10 == 0).all() and 9 <= len(eth) <= 60
    # a tiny vol still gets a usable grid
    assert len(deribit_strikes(60000.0, 0.002)) >= 9


def test_strike_choices():
    chain = synthetic_chain(HESTON, expiries=[0.1, 0.5], strikes_per_expiry=11, clean=False)
    assert (chain.groupby("expiry")["strike"].nunique() == 11).all()
    listed = [50000.0, 60000.0, 75000.0]
    chain = synthetic_chain(HESTON, expiries=[0.1, 0.5], strikes_per_expiry=listed,
                            otm_only=False, clean=False)
    assert sorted(chain["strike"].unique()) == listed and len(chain) == 12
    wide = synthetic_chain(HESTON, expiries=[0.25], half_spread_iv=0.02, clean=False)
    np.testing.assert_allclose(wide["spread_iv"], 0.04, rtol=1e-12)


# ------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("kwargs, match", [
    (dict(spot=0.0), r"spot must be finite and > 0; got 0\.0"),
    (dict(spot=float("nan")), "spot must be"),
    (dict(noise_iv=-0.01), r"noise_iv must be finite and >= 0; got -0\.01"),
    (dict(noise_iv=0.01), "noise_iv=0.01 needs a key"),
    (dict(expiries=[]), "expiries is empty"),
    (dict(expiries=[0.1, -0.2]), r"expiries\[1\] must be a finite positive year fraction"),
    (dict(expiries=["2026-03-01T08:00Z"]), r"expiries\[0\] .* is not after the snapshot"),
    (dict(expiries=["tomorrow-ish"]), r"expiries\[0\] must be a time"),
    (dict(expiries=[0.1, 0.1]), "twice"),
    (dict(tick=0.0), "tick must be finite and > 0"),
    (dict(half_spread_iv=-0.01), "half_spread_iv must be finite and > 0"),
    (dict(half_spread_iv=lambda x, t, v: 0 * x), "half_spread_iv must be finite and positive"),
    (dict(strikes_per_expiry=[60000.0, -1.0]), "strikes must be finite and positive"),
    (dict(strikes_per_expiry=0), "strikes_per_expiry must be a positive count"),
    (dict(snapshot="not a time"), "snapshot must be a time"),
    (dict(currency="BTC-X"), "currency must be a coin name"),
])
def test_errors(kwargs, match):
    kwargs.setdefault("expiries", [0.1])
    with pytest.raises(ValueError, match=match):
        synthetic_chain(HESTON, **kwargs)


def test_model_errors():
    with pytest.raises(ValueError, match=r"Heston\.rho must be a correlation.*got 1\.5"):
        synthetic_chain(HESTON._replace(rho=1.5), expiries=[0.1])
    with pytest.raises(ValueError, match=r"GBM\.sigma must be .*got -0\.2"):
        synthetic_chain(qmr.GBM(-0.2), expiries=[0.1])
    with pytest.raises(ValueError, match=r"one model: GBM\.sigma must be a scalar"):
        synthetic_chain(qmr.GBM(np.array([0.5, 0.6])), expiries=[0.1])
    with pytest.raises(TypeError, match="model must be a qmr_jax model"):
        synthetic_chain({"sigma": 0.5}, expiries=[0.1])
    with pytest.raises(TypeError, match="key must be a jax PRNG key"):
        synthetic_chain(HESTON, expiries=[0.1], noise_iv=0.01, key="seed")


def test_internals_round_steps():
    assert [S._nice_up(x) for x in (0.9, 1.0, 1.1, 2.2, 3.0, 6.0)] == [1, 1, 2, 2.5, 5, 10]
    assert [S._nice_down(x) for x in (0.9, 1.0, 2.2, 3.0, 6.0)] == [0.5, 1, 2, 2.5, 5]
