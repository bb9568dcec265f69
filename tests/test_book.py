"""The Book: values against independent pricers and closed forms, Greeks per position against
the book's totals (forward vs reverse mode), Taylor orders of the P&L, and strict file
parsing."""

from __future__ import annotations

import datetime
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qmr_jax as qmr
from qmr_jax.book import (
    Book,
    Position,
    greeks_table,
    load_book,
    load_model,
    parse_book,
)
from tests.conftest import ROOT

MODEL = qmr.Heston(v0=0.36, kappa=2.0, theta=0.36, xi=1.0, rho=-0.25)
GBM = qmr.GBM(0.6)  # second-order tests: the same pricer, cheaper to compile
MARKET = qmr.Market(60_000.0, 0.04, 0.01)
EXAMPLE_BOOK = ROOT / "scenarios" / "books" / "btc_example.toml"
EXAMPLE_MODEL = ROOT / "scenarios" / "models" / "btc_heston.toml"

EUROPEANS = [  # (strike, days, is_call, quantity, settlement)
    (55_000.0, 7, False, -3.0, "inverse"),
    (62_000.0, 7, True, 2.0, "usd"),
    (60_000.0, 30, True, 5.0, "inverse"),
    (60_000.0, 30, False, 5.0, "inverse"),
    (70_000.0, 30, True, -4.0, "usd"),
    (45_000.0, 90, False, 7.0, "inverse"),
]


def _book(extra=()) -> Book:
    pos = [Position.european(k, d / 365.0, c, q, settlement=s, name=f"o{i}")
           for i, (k, d, c, q, s) in enumerate(EUROPEANS)]
    pos += [Position.spot(2.5, name="spot"), Position.perpetual(-1.5, 59_000.0, name="perp"),
            Position.future(-4.0, 90 / 365.0, 60_400.0, name="fut"), *extra]
    return Book("test book", "BTC", tuple(pos))


@pytest.fixture(scope="module")
def book():
    return _book()


@pytest.fixture(scope="module")
def valuer(book):
    return book.bind(MODEL, MARKET)


@pytest.fixture(scope="module")
def gbm_valuer(book):
    return book.bind(GBM, MARKET)


@pytest.fixture(scope="module")
def per_greeks(gbm_valuer):
    return gbm_valuer.greeks(GBM, MARKET)  # sensitivities.greeks: forward mode per position


@pytest.fixture(scope="module")
def total_risk(gbm_valuer):
    return gbm_valuer.total_risk(GBM, MARKET)  # reverse mode of the total


# ------------------------------------------------------------------------------------------
# values


def test_european_values_equal_independent_fourier_prices(book, valuer):
    values = np.asarray(valuer(MODEL, MARKET))
    assert valuer.layout == "grid"
    for i, (k, d, c, q, _) in enumerate(EUROPEANS):
        ref = q * float(qmr.fourier_price(MODEL, MARKET, k, d / 365.0, c))  # COS, alone
        assert values[i] == pytest.approx(ref, rel=1e-9, abs=1e-8 * MARKET.spot), i
    # Book.value is the same function (planned and cached on first use)
    np.testing.assert_allclose(np.asarray(book.value(MODEL, MARKET)), values, rtol=1e-13)


def test_flat_layout_and_multiplier():
    # one option per expiry: flat arrays instead of a padded grid; multiplier scales all
    pos = [Position.european(60_000.0 + 1000 * i, (7 + 20 * i) / 365.0, i % 2 == 0, 1.0)
           for i in range(4)]
    pos.append(Position.european(65_000.0, 7 / 365.0, True, 2.0))
    pos += [Position.european(50_000.0 + 1000 * i, 200 / 365.0, False, 1.0) for i in range(9)]
    b = Book("flat", "ETH", tuple(pos), multiplier=10.0)
    v = b.bind(GBM, MARKET)
    assert v.layout == "flat"
    values = np.asarray(v(GBM, MARKET))
    s, r, q = MARKET
    for p, x in zip(pos, values, strict=True):  # Black-Scholes in closed form
        fwd, t = s * math.exp((r - q) * p.expiry), p.expiry
        ref = qmr.black_price(fwd, p.strike, t, GBM.sigma, p.is_call, math.exp(-r * t))
        assert x == pytest.approx(10.0 * p.quantity * float(ref), rel=1e-9,
                                  abs=1e-8 * MARKET.spot)


def test_linear_positions_closed_form(valuer):
    s, r, q = MARKET
    for elapsed in (0.0, 5 / 365.0):
        values = np.asarray(valuer(MODEL, MARKET, elapsed))
        t = 90 / 365.0 - elapsed
        assert values[6] == pytest.approx(2.5 * s, rel=1e-15)
        assert values[7] == pytest.approx(-1.5 * (s - 59_000.0), rel=1e-13)
        fut = -4.0 * (s * math.exp((r - q) * t) - 60_400.0) * math.exp(-r * t)
        assert values[8] == pytest.approx(fut, rel=1e-12)


def test_inverse_premium_is_usd_value_over_spot(book, valuer, per_greeks):
    table = greeks_table(book, per_greeks._replace(value=valuer(MODEL, MARKET)), MARKET)
    np.testing.assert_allclose(table.value_coin, table.value_usd / MARKET.spot, rtol=1e-15)
    inv = table[table.settlement == "inverse"]
    assert len(inv) == 4 and inv.delta_coin_pa.notna().all()
    assert table[table.settlement == "usd"].delta_coin_pa.isna().all()
    np.testing.assert_allclose(inv.delta_coin_pa, inv.delta_coin - inv.value_usd / MARKET.spot,
                               rtol=1e-12)
    # the same option USD-settled has the same USD value: settlement changes the currency
    k, d, c, q, _ = EUROPEANS[2]
    usd = Book("u", "BTC", (Position.european(k, d / 365.0, c, q, settlement="usd"),))
    assert float(usd.value(MODEL, MARKET)[0]) == pytest.approx(table.value_usd[2], rel=1e-13)


def test_elapsed_past_an_expiry_is_rejected(valuer):
    with pytest.raises(ValueError, match="elapsed"):
        valuer(MODEL, MARKET, 8 / 365.0)


def test_value_is_jittable_and_differentiable(book, gbm_valuer, total_risk):
    f = jax.jit(gbm_valuer)
    np.testing.assert_allclose(np.asarray(f(GBM, MARKET)),
                               np.asarray(gbm_valuer(GBM, MARKET)), rtol=1e-12)
    # Book.value reuses the plan of book.bind at the same point, and under jit/grad the last
    # plan made for the model type
    assert book.bind(GBM, MARKET) is gbm_valuer
    np.testing.assert_allclose(np.asarray(book.value(GBM, MARKET)),
                               np.asarray(gbm_valuer(GBM, MARKET)), rtol=1e-14)
    delta = jax.jit(jax.grad(lambda s: jnp.sum(book.value(GBM, MARKET._replace(spot=s)))))
    assert float(delta(MARKET.spot)) == pytest.approx(float(total_risk.gradient[0]),
                                                      rel=1e-10)


# ------------------------------------------------------------------------------------------
# Greeks


def test_position_greeks_sum_to_book_totals(book, gbm_valuer, per_greeks, total_risk):
    per = per_greeks
    tot = total_risk.as_greeks()  # reverse mode of the total (and forward over reverse)
    for name in per._fields:
        a = float(jnp.sum(getattr(per, name)))
        b = float(getattr(tot, name))
        assert a == pytest.approx(b, rel=1e-9, abs=1e-9 * abs(float(tot.value))), name
    # the full forward-over-forward Hessian agrees too
    risk = gbm_valuer.position_risk(GBM, MARKET)
    np.testing.assert_allclose(np.asarray(risk.total().hessian), np.asarray(total_risk.hessian),
                               rtol=1e-8, atol=1e-8 * float(np.max(np.abs(total_risk.hessian))))
    np.testing.assert_allclose(np.asarray(risk.as_greeks().gamma), np.asarray(per.gamma),
                               rtol=1e-9, atol=1e-15)
    # the DataFrame edge: per-position table against the totals Series (reverse mode)
    table, totals = book.greeks(GBM, MARKET), book.totals(GBM, MARKET)
    for col in ("value_usd", "delta_coin", "delta_usd", "gamma_coin_1pct", "vega_usd_vol_pt",
                "theta_usd_day", "rho_usd_pct", "vanna_coin_vol_pt", "volga_usd_vol_pt2"):
        assert table[col].sum() == pytest.approx(totals[col], rel=1e-9, abs=1e-9), col


def test_parameter_sensitivities_against_central_differences(book, valuer):
    """Forward-mode derivatives of every position w.r.t. spot, rate, div and each Heston
    parameter against central differences of the same value function."""
    per = book.sensitivities(MODEL, MARKET)  # the DataFrame of valuer.sensitivities
    assert list(per.columns) == ["name", "value", "spot", "rate", "div", *MODEL._fields]
    f = jax.jit(valuer)
    for name in ("spot", "rate", "div", *MODEL._fields):
        is_market = name in qmr.Market._fields
        x0 = float(getattr(MARKET if is_market else MODEL, name))
        h = 1e-5 * max(abs(x0), 1.0)

        def at(x, name=name, is_market=is_market):
            if is_market:
                return np.asarray(f(MODEL, MARKET._replace(**{name: x})))
            return np.asarray(f(MODEL._replace(**{name: x}), MARKET))

        fd = (at(x0 + h) - at(x0 - h)) / (2 * h)
        scale = np.max(np.abs(fd)) + 1e-300
        np.testing.assert_allclose(per[name], fd, rtol=1e-5, atol=1e-6 * scale, err_msg=name)
    assert per.loc[6, "spot"] == pytest.approx(2.5, rel=1e-14)  # spot position: q
    assert (per.loc[6:8, list(MODEL._fields)] == 0.0).all().all()


def test_linear_deltas(per_greeks):
    g = per_greeks
    assert float(g.delta[6]) == pytest.approx(2.5, rel=1e-14)  # spot: the quantity
    assert float(g.delta[7]) == pytest.approx(-1.5, rel=1e-14)  # perpetual
    t, q = 90 / 365.0, MARKET.div
    assert float(g.delta[8]) == pytest.approx(-4.0 * math.exp(-q * t), rel=1e-12)
    assert float(g.gamma[6]) == 0.0 and float(g.vega[8]) == 0.0


def test_taylor_orders(gbm_valuer, total_risk):
    """Full revaluation against the Taylor predictions: the first-order error shrinks like
    h^2 and the second-order error like h^3 along each risk coordinate."""
    f = jax.jit(gbm_valuer.risk_fn(GBM, MARKET))
    x0 = np.asarray(gbm_valuer.risk_point(MARKET), np.float64)
    v0 = float(total_risk.value)
    g = np.asarray(total_risk.gradient)
    h_ = np.asarray(total_risk.hessian)
    steps = {0: 0.02 * MARKET.spot, 1: 0.04, 2: 0.02}  # spot (2%), vol (4 pts), rate (2%)
    for i, h0 in steps.items():
        err1, err2 = [], []
        for h in (h0, h0 / 2, h0 / 4):
            x = x0.copy()
            x[i] += h
            full = float(f(jnp.asarray(x))) - v0
            err1.append(abs(full - g[i] * h))
            err2.append(abs(full - g[i] * h - 0.5 * h_[i, i] * h * h))
        p1 = np.log2(np.asarray(err1[:-1]) / np.asarray(err1[1:]))
        p2 = np.log2(np.asarray(err2[:-1]) / np.asarray(err2[1:]))
        assert np.all((p1 > 1.8) & (p1 < 2.2)), (i, err1, p1)
        assert np.all((p2 > 2.6) & (p2 < 3.4)), (i, err2, p2)
        assert err2[0] < err1[0]


# ------------------------------------------------------------------------------------------
# Monte Carlo positions


def _mc_available() -> bool:
    try:
        import qmr_jax.pricing.mc_greeks  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _mc_available(), reason="qmr_jax.pricing.mc_greeks not available")
def test_mc_positions_use_mc_value_with_folded_keys():
    from qmr_jax.pricing.mc_greeks import mc_value

    extra = (Position.barrier_option(62_000.0, 30 / 365.0, 70_000.0, "up-and-out", True, -2.0,
                                     steps=8, name="uo"),)
    b = _book(extra)
    key = jax.random.key(11)
    with pytest.raises(ValueError, match="key"):
        b.bind(MODEL, MARKET)
    values = np.asarray(b.value(MODEL, MARKET, key=key, n_paths=1024))
    ref = -2.0 * float(mc_value(MODEL, MARKET, extra[0].payoff(), 0.0,
                                key=jax.random.fold_in(key, 9), n_paths=1024, n_steps=8))
    assert values[9] == pytest.approx(ref, rel=1e-12)
    assert np.all(np.isfinite(values))


def test_mc_positions_without_mc_value_raise(monkeypatch):
    monkeypatch.setitem(sys.modules, "qmr_jax.pricing.mc_greeks", None)
    b = _book((Position.digital(60_000.0, 30 / 365.0, True, 1.0, cash=100.0),))
    with pytest.raises(NotImplementedError, match="mc_value"):
        b.bind(MODEL, MARKET, key=jax.random.key(0))


# ------------------------------------------------------------------------------------------
# files


def test_example_files_parse():
    b = load_book(EXAMPLE_BOOK)
    assert b.currency == "BTC" and b.name == "BTC example book"
    types = [p.type for p in b.positions]
    assert types.count("european") >= 10
    assert {"digital", "barrier", "spot", "future"} <= set(types)
    assert len({p.expiry for p in b.positions if p.type == "european"}) >= 3
    spec = load_model(EXAMPLE_MODEL)
    assert spec.model == qmr.Heston(0.36, 2.0, 0.36, 1.0, -0.25)
    assert spec.market == qmr.Market(60_000.0, 0.04, 0.0)


GOOD = """
[book]
name = "b"
currency = "BTC"

[[position]]
name = "c1"
type = "european"
call_put = "call"
strike = 60000
expiry = "30d"
quantity = 1
"""


def _write(tmp_path, text, name="book.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_book_and_expiry_units(tmp_path):
    b = load_book(_write(tmp_path, GOOD + '\n[[position]]\ntype = "future"\nexpiry = 0.25\n'
                                          'entry = 61000\nquantity = -2\n'))
    assert b.positions[0].expiry == pytest.approx(30 / 365.0)
    assert b.positions[0].is_call is True and b.positions[0].settlement == "usd"
    assert b.positions[1].expiry == 0.25 and b.positions[1].entry == 61000


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (lambda t: t.replace('quantity = 1', 'quantity = 1\nvolume = 3'),
         ["position #1 ('c1')", "field 'volume'", "unknown"]),
        (lambda t: t.replace('strike = 60000\n', ''),
         ["position #1 ('c1')", "field 'strike'", "missing"]),
        (lambda t: t.replace('strike = 60000', 'strike = -5'),
         ["position #1 ('c1')", "field 'strike'", "positive", "-5"]),
        (lambda t: t.replace('"european"', '"rainbow"'),
         ["position #1 ('c1')", "field 'type'", "rainbow", "european"]),
        (lambda t: t.replace('call_put = "call"', 'call_put = "C"'),
         ["position #1 ('c1')", "field 'call_put'", "'call' or 'put'"]),
        (lambda t: t.replace('expiry = "30d"', 'expiry = "30x"'),
         ["position #1 ('c1')", "field 'expiry'"]),
        (lambda t: t.replace('expiry = "30d"', 'expiry = -0.1'),
         ["position #1 ('c1')", "field 'expiry'", "positive"]),
        (lambda t: t.replace('quantity = 1', 'quantity = "one"'),
         ["position #1 ('c1')", "field 'quantity'", "number"]),
        (lambda t: t.replace('quantity = 1', 'quantity = 1\nsettlement = "eur"'),
         ["field 'settlement'", "usd, inverse"]),
        (lambda t: t.replace('quantity = 1', 'quantity = 1\nbarrier = 70000'),
         ["field 'barrier'", "not allowed for a european position"]),
        (lambda t: t + '\n[[position]]\ntype = "barrier"\ncall_put = "put"\nstrike = 1\n'
                       'expiry = 1\nbarrier = 2\nbarrier_kind = "sideways"\nquantity = 1\n',
         ["position #2:", "field 'barrier_kind'", "up-and-out"]),
        (lambda t: t + '\n[[position]]\ntype = "perpetual"\nquantity = 1\n',
         ["position #2:", "field 'entry'", "missing"]),
        (lambda t: t.replace('currency = "BTC"', 'currency = "btc"'),
         ["[book]", "field 'currency'"]),
        (lambda t: t.replace('name = "b"\n', ''), ["[book]", "missing field 'name'"]),
        (lambda t: t.replace('[book]', '[book]\nowner = "me"'), ["[book]", "'owner'"]),
        (lambda t: t.replace('strike = 60000', 'strike = 60000\nstrike = 1'),
         ["not valid TOML", "line"]),
        (lambda t: t + '\n[extra]\nx = 1\n', ["unknown top-level key 'extra'"]),
    ],
)
def test_book_parse_errors_name_file_position_field(tmp_path, edit, needles):
    path = _write(tmp_path, edit(GOOD))
    with pytest.raises(ValueError) as info:
        load_book(path)
    msg = str(info.value)
    assert msg.startswith(str(path)), msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_missing_book_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        load_book(tmp_path / "nope.toml")


MODEL_TOML = """
[model]
type = "heston"
v0 = 0.36
kappa = 2.0
theta = 0.36
xi = 1.0
rho = -0.25

[market]
spot = 60000.0
rate = 0.04
"""


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (lambda t: t.replace("kappa", "kapa"), ["[model]", "unknown field 'kapa'"]),
        (lambda t: t.replace("rho = -0.25\n", ""), ["[model]", "missing field 'rho'"]),
        (lambda t: t.replace("rho = -0.25", "rho = -1.5"), ["[model]", "field 'rho'", "-1.5"]),
        (lambda t: t.replace('"heston"', '"sabr"'), ["[model]", "field 'type'", "sabr"]),
        (lambda t: t.replace("spot = 60000.0", "spot = -1.0"), ["[market]", "field 'spot'"]),
        (lambda t: t.replace("rate = 0.04", "rate = 0.04\nrepo = 0.0"), ["[market]", "'repo'"]),
        (lambda t: "calibrated = true\n" + t, ["unknown top-level key 'calibrated'"]),
    ],
)
def test_model_file_errors(tmp_path, edit, needles):
    path = _write(tmp_path, edit(MODEL_TOML), "model.toml")
    with pytest.raises(ValueError) as info:
        load_model(path)
    msg = str(info.value)
    assert msg.startswith(str(path)), msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_model_file_json(tmp_path):
    import json

    data = {"name": "calibrated", "model": {"type": "bates", "v0": 0.3, "kappa": 2.0,
                                            "theta": 0.3, "xi": 0.9, "rho": -0.2, "lam": 3.0,
                                            "mu_j": -0.04, "sigma_j": 0.14},
            "market": {"spot": 3000.0}, "meta": {"rmse_iv": 0.004}}
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(data))
    spec = load_model(path)
    assert isinstance(spec.model, qmr.Bates) and spec.market == qmr.Market(3000.0, 0.0, 0.0)
    assert spec.name == "calibrated" and spec.meta == {"rmse_iv": 0.004}
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(path)


def test_position_constructors_validate():
    with pytest.raises(ValueError, match="field 'strike'"):
        Position.european(-1.0, 0.1)
    with pytest.raises(ValueError, match="field 'settlement'"):
        Position("spot", 1.0, settlement="inverse")
    with pytest.raises(ValueError, match="currency"):
        Book("b", "bitcoin", (Position.spot(1.0),))
    with pytest.raises(ValueError, match="field 'type'"):
        parse_book({"book": {"name": "b", "currency": "BTC"},
                    "position": [{"quantity": 1}]})


def test_batch_values_equal_pointwise_values(book, valuer):
    # a vol x spot grid in one evaluation (shared characteristic functions) against
    # the valuer called at each state
    vols = np.array([0.4, 0.6, 0.9])
    spots = MARKET.spot * np.array([0.7, 1.0, 1.4])
    mb = MODEL._replace(v0=jnp.asarray(vols**2)[:, None])
    got = np.asarray(valuer.batch(mb, MARKET._replace(spot=jnp.asarray(spots)[None, :]),
                                  3 / 365))
    assert got.shape == (3, 3, len(book))
    for i, v in enumerate(vols):
        for j, s in enumerate(spots):
            ref = np.asarray(valuer(MODEL._replace(v0=v * v), MARKET._replace(spot=s),
                                    3 / 365))
            np.testing.assert_allclose(got[i, j], ref, rtol=1e-9, atol=1e-9 * s)


# ------------------------------------------------------------------------------------------
# input integrity: defaults, duplicates, ranges, file encodings

BARRIER_NO_REBATE = """
[book]
name = "b"
currency = "BTC"

[[position]]
name = "uo"
type = "barrier"
call_put = "call"
strike = 65000
barrier = 80000
barrier_kind = "up-and-out"
expiry = "90d"
quantity = 2

[[position]]
name = "dig"
type = "digital"
call_put = "put"
strike = 55000
expiry = "30d"
quantity = 1
"""


def test_optional_rebate_and_cash_take_their_documented_defaults(tmp_path):
    b = load_book(_write(tmp_path, BARRIER_NO_REBATE))
    uo, dig = b.positions
    assert uo.rebate == 0.0 and dig.cash == 1.0
    # the payoffs are those of the explicit defaults (the valuation sees the same objects)
    explicit = Position.barrier_option(65_000.0, uo.expiry, 80_000.0, "up-and-out", True, 2.0,
                                       rebate=0.0, name="uo")
    assert uo == explicit
    assert repr(uo.payoff()) == repr(explicit.payoff())
    assert float(uo.payoff().rebate) == 0.0
    assert float(dig.payoff().cash) == 1.0
    direct = Position("barrier", 1.0, None, True, 60_000.0, 0.1, barrier=70_000.0,
                      barrier_kind="up-and-in")
    assert direct.rebate == 0.0


def test_duplicate_names_are_refused_naming_both_positions(tmp_path):
    text = GOOD + ('\n[[position]]\nname = "p1"\ntype = "spot"\nquantity = 1\n'
                   '\n[[position]]\nname = "c1"\ntype = "spot"\nquantity = 2\n')
    path = _write(tmp_path, text)
    with pytest.raises(ValueError) as info:
        load_book(path)
    msg = str(info.value)
    lines = text.splitlines()
    first, second = (i + 1 for i, s in enumerate(lines) if s == 'name = "c1"')
    assert msg.startswith(f"{path}, lines {first} and {second}:"), msg
    assert "positions #1 and #3" in msg and "'c1'" in msg
    with pytest.raises(ValueError, match=r"positions #1 and #2 are both named 'x'"):
        Book("b", "BTC", (Position.spot(1.0, name="x"), Position.spot(2.0, name="x")))
    with pytest.raises(ValueError, match="positions #2 and #3"):
        Book("b", "BTC", (Position.spot(1.0, name="a"), Position.spot(2.0, name="x"),
                          Position.spot(3.0, name=" x ")))


def test_unnamed_equal_positions_get_unique_labels():
    b = Book("b", "BTC", (Position.spot(1.0), Position.european(60_000.0, 30 / 365.0),
                          Position.spot(2.0), Position.european(60_000.0, 30 / 365.0),
                          Position.spot(3.0, name="spot")))
    assert b.labels == ["spot #1", "call 60000 30d #2", "spot #3", "call 60000 30d #4",
                        "spot"]
    assert len(set(b.labels)) == len(b)
    # a name that equals a numbered generated label cannot be told apart: refused
    with pytest.raises(ValueError, match="both labelled 'spot #1'"):
        Book("b", "BTC", (Position.spot(1.0), Position.spot(2.0),
                          Position.spot(3.0, name="spot #1")))


@pytest.mark.parametrize(
    ("make", "field_name"),
    [
        (lambda: Position.spot(1e308), "quantity"),
        (lambda: Position.spot(-2e9), "quantity"),
        (lambda: Position.european(1e300, 0.1), "strike"),
        (lambda: Position.european(1e-12, 0.1), "strike"),
        (lambda: Position.european(60_000.0, 11.0), "expiry"),
        (lambda: Position.perpetual(1.0, 1e12), "entry"),
        (lambda: Position.digital(60_000.0, 0.1, cash=1e300), "cash"),
        (lambda: Position.barrier_option(60_000.0, 0.1, 1e300), "barrier"),
        (lambda: Position.barrier_option(60_000.0, 0.1, 7e4, rebate=1e300), "rebate"),
        (lambda: Position.asian(60_000.0, 0.1, steps=10**9), "steps"),
        (lambda: Position.spot(1.0, name=" "), "name"),
    ],
)
def test_physically_meaningless_values_are_refused(make, field_name):
    with pytest.raises(ValueError, match=f"field '{field_name}'"):
        make()


def test_book_multiplier_and_notional_bounds():
    with pytest.raises(ValueError, match="multiplier"):
        Book("b", "BTC", (Position.spot(1.0),), multiplier=1e300)
    with pytest.raises(ValueError, match=r"position #2 \('big'\): quantity x multiplier"):
        Book("b", "BTC", (Position.spot(1.0), Position.spot(2e5, name="big")),
             multiplier=1e5)
    # the largest book the bounds allow still has finite totals
    b = Book("b", "BTC", (Position.spot(1e9, name="s"), Position.perpetual(-1e9, 1e9)))
    assert np.isfinite(np.asarray(b.value(GBM, qmr.Market(1e9, 0.0)))).all()


def test_book_header_errors_name_the_file(tmp_path):
    path = _write(tmp_path, GOOD.replace('name = "b"', 'name = "  "'))
    with pytest.raises(ValueError) as info:
        load_book(path)
    assert str(info.value).startswith(f"{path}, line 3: [book]: field 'name'"), info.value


def test_position_errors_give_the_line_of_the_field(tmp_path):
    text = GOOD + '\n[[position]]\nname = "p"\ntype = "spot"\n\nquantity = "2"\n'
    path = _write(tmp_path, text)
    with pytest.raises(ValueError) as info:
        load_book(path)
    line = text.splitlines().index('quantity = "2"') + 1
    assert str(info.value).startswith(f"{path}, line {line}: position #2 ('p'): field "
                                      "'quantity'"), info.value


def test_encodings(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert load_book(path).name == "b"  # a UTF-8 byte-order mark is fine
    path.write_bytes(GOOD.replace('"c1"', '"\xe9t\xe9"').encode("latin-1"))
    with pytest.raises(ValueError) as info:
        load_book(path)
    line = GOOD.splitlines().index('name = "c1"') + 1
    assert str(info.value).startswith(f"{path}, line {line}: not UTF-8"), info.value
    model = tmp_path / "m.json"
    model.write_bytes(b'{"model": {"type": "gbm", "sigma": 0.5},\n "name": "\xff"}')
    with pytest.raises(ValueError, match=r"m.json, line 2: not UTF-8"):
        load_model(model)


def test_calibration_result_is_not_a_model_file(tmp_path):
    import json

    path = tmp_path / "result.json"
    path.write_text(json.dumps({"model": "Bates", "params": {"v0": 0.3}, "converged": True},
                               indent=2))
    with pytest.raises(ValueError) as info:
        load_model(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}, line 3: unknown top-level key 'params'"), msg
    assert "calibration result" in msg and "type = 'bates'" in msg


def test_model_file_market_bounds(tmp_path):
    for edit, needle in [("spot = 60000.0", "spot = 1e300"), ("rate = 0.04", "rate = 100.0")]:
        path = _write(tmp_path, MODEL_TOML.replace(edit, needle), "model.toml")
        with pytest.raises(ValueError) as info:
            load_model(path)
        field_name = needle.split(" ")[0]
        line = MODEL_TOML.replace(edit, needle).splitlines().index(needle) + 1
        assert str(info.value).startswith(f"{path}, line {line}: [market]: field "
                                          f"'{field_name}'"), info.value


# ------------------------------------------------------------------------------------------
# Deribit instrument names and absolute expiries

DATED = """
[book]
name = "dated"
currency = "BTC"
as_of = 2026-04-01T10:00:00Z

[[position]]
instrument = "BTC-26JUN26-70000-C"
quantity = -5

[[position]]
name = "P60k"
type = "european"
call_put = "put"
strike = 60000
expiry = 2026-06-26
quantity = 3

[[position]]
name = "fut"
type = "future"
expiry = "2026-09-25T08:00:00+00:00"
entry = 69000
quantity = 2
"""

# ACT/365 by hand: 1 April 10:00 UTC to 26 June 08:00 UTC is 85 days 22 hours
JUN_YEARS = (85 + 22 / 24) / 365
SEP_YEARS = (85 + 22 / 24 + 91) / 365


def test_instrument_names_and_absolute_expiries(tmp_path):
    b = load_book(_write(tmp_path, DATED))
    assert b.as_of == datetime.datetime(2026, 4, 1, 10, tzinfo=datetime.UTC)
    call, put, fut = b.positions
    assert (call.type, call.strike, call.is_call, call.settlement) == (
        "european", 70000.0, True, "inverse")
    assert call.expiry == pytest.approx(JUN_YEARS, rel=1e-15)
    assert call.instrument == "BTC-26JUN26-70000-C" and b.labels[0] == "BTC-26JUN26-70000-C"
    assert put.expiry == call.expiry and put.settlement == "usd" and put.instrument is None
    assert fut.expiry == pytest.approx(SEP_YEARS, rel=1e-15)
    # the argument wins over [book] as_of; naive times are UTC
    later = load_book(_write(tmp_path, DATED), as_of="2026-06-25T08:00:00")
    assert later.as_of == datetime.datetime(2026, 6, 25, 8, tzinfo=datetime.UTC)
    assert later.positions[0].expiry == pytest.approx(1 / 365, rel=1e-14)
    import pandas as pd

    from_chain = load_book(_write(tmp_path, DATED),
                           as_of=pd.Timestamp("2026-06-26T06:00:00+02:00"))
    assert from_chain.positions[1].expiry == pytest.approx(4 / 24 / 365, rel=1e-14)


def test_instrument_position_values_as_its_explicit_twin(tmp_path):
    b = load_book(_write(tmp_path, DATED))
    twin = Position.european(70000.0, JUN_YEARS, True, -5.0, settlement="inverse")
    ref = Book("twin", "BTC", (twin,))
    np.testing.assert_allclose(np.asarray(b.with_positions(b.positions[:1]).value(GBM, MARKET)),
                               np.asarray(ref.value(GBM, MARKET)), rtol=1e-13)


@pytest.mark.parametrize(("extra", "ok"), [
    ('strike = 70000', True),            # the same strike: redundant, not a conflict
    ('call_put = "call"', True),
    ('expiry = 2026-06-26', True),
    ('type = "digital"', True),          # a digital on the instrument's terms
    ('settlement = "usd"', True),
    ('strike = 70000.5', False),
    ('call_put = "put"', False),
    ('expiry = "30d"', False),
    ('expiry = 2026-06-27', False),
])
def test_instrument_fields_may_repeat_but_not_contradict(tmp_path, extra, ok):
    text = DATED.replace('quantity = -5', f'quantity = -5\n{extra}', 1)
    path = _write(tmp_path, text)
    if ok:
        p = load_book(path).positions[0]
        assert p.strike == 70000.0 and p.is_call and p.expiry == pytest.approx(JUN_YEARS)
        assert p.settlement == ("usd" if "usd" in extra else "inverse")
        return
    field_name = extra.split(" ")[0]
    with pytest.raises(ValueError) as info:
        load_book(path)
    line = text.splitlines().index(extra) + 1
    assert str(info.value).startswith(f"{path}, line {line}: position #1: field "
                                      f"'{field_name}': conflicts with instrument "
                                      "'BTC-26JUN26-70000-C'"), info.value


def test_absolute_expiries_need_a_valuation_time(tmp_path):
    path = _write(tmp_path, DATED.replace("as_of = 2026-04-01T10:00:00Z\n", ""))
    with pytest.raises(ValueError) as info:
        load_book(path)
    line = DATED.replace("as_of = 2026-04-01T10:00:00Z\n", "").splitlines().index(
        'instrument = "BTC-26JUN26-70000-C"') + 1
    assert str(info.value).startswith(f"{path}, line {line}: position #1: field 'instrument': "
                                      "an absolute expiry"), info.value
    assert "load_book(path, as_of=...)" in str(info.value)
    assert load_book(path, as_of="2026-04-01T10:00:00Z").as_of is not None
    # a book whose expiries are all in years needs no valuation time
    assert load_book(_write(tmp_path, GOOD, "years.toml")).as_of is None
    for bad in ("2026-04-01", "soon", 5):
        with pytest.raises(ValueError, match=r"book.toml: as_of"):
            load_book(path, as_of=bad)
    # expired at the valuation time, and beyond ten years
    with pytest.raises(ValueError, match=r"position #1: field 'instrument': expires 2026-06-26 "
                                         r"08:00 UTC, at or before as_of 2026-06-26 09:00:00"):
        load_book(path, as_of="2026-06-26T09:00:00Z")
    # 1 April 2026 10:00 to 1 January 2040 08:00: 5023 days less 2 hours, 13.76 years
    far = _write(tmp_path, GOOD.replace('expiry = "30d"', 'expiry = 2040-01-01'), "far.toml")
    with pytest.raises(ValueError, match=r"field 'expiry': must be a positive time to expiry of "
                                         r"at most 10 years; 2040-01-01 is 13.76 years"):
        load_book(far, as_of="2026-04-01T10:00:00Z")


def test_instrument_coin_and_type(tmp_path):
    eth = DATED.replace('currency = "BTC"', 'currency = "ETH"')
    with pytest.raises(ValueError, match=r"field 'instrument': 'BTC-26JUN26-70000-C' is an "
                                         r"option on BTC; the book's currency is ETH"):
        load_book(_write(tmp_path, eth))
    fut = DATED.replace('quantity = -5', 'quantity = -5\ntype = "future"\nentry = 1', 1)
    with pytest.raises(ValueError, match=r"field 'instrument': known field not allowed for a "
                                         r"future position"):
        load_book(_write(tmp_path, fut))
    with pytest.raises(ValueError, match="field 'instrument'"):
        Position("spot", 1.0, instrument="BTC-26JUN26-70000-C")
