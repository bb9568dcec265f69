"""The gradient sensitivity report: ``qmr sensitivities`` on the example files (files written,
totals consistent across CSV and JSON), the report function's tornado and ladders on a small
book, and bad input (exit status 2)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import qmr_jax as qmr
from qmr_jax.book import Book, Position
from qmr_jax.cli import main
from qmr_jax.report.sensitivity import TYPICAL_MOVES, Move, sensitivity_report
from tests.conftest import ROOT

EXAMPLE_BOOK = ROOT / "scenarios" / "books" / "btc_example.toml"
EXAMPLE_MODEL = ROOT / "scenarios" / "models" / "btc_heston.toml"
FILES = ("report.html", "tornado.png", "ladders.png", "positions.csv",
         "position_parameters.csv", "parameters.csv", "ladders.csv", "sensitivities.json")


def _mc_available() -> bool:
    try:
        import qmr_jax.pricing.mc_greeks  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def cli_out(tmp_path_factory):
    if not _mc_available():
        pytest.skip("the example book has Monte Carlo positions: qmr_jax.pricing.mc_greeks "
                    "is not available")
    out = tmp_path_factory.mktemp("sens")
    # seed and paths as in the quick demo: the same compiled programs
    argv = ["sensitivities", "--book", str(EXAMPLE_BOOK), "--model", str(EXAMPLE_MODEL),
            "--out", str(out), "--seed", "3", "--paths", "2000"]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def report(cli_out):
    return json.loads((cli_out / "sensitivities.json").read_text())


def test_cli_writes_the_files(cli_out, report, capsys):
    for name in FILES:
        assert (cli_out / name).stat().st_size > 0, name
    assert sorted(report["files"]) == sorted(FILES)
    for png in ("tornado.png", "ladders.png"):
        assert (cli_out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (cli_out / "report.html").read_text()
    for text in ("BTC example book", "Heston", "seed 3", "Tornado", "P&amp;L ladders",
                 'src="tornado.png"', 'src="ladders.png"', "Greeks per position",
                 "premium per contract (coin)", "v0=0.36"):
        assert text in html, text
    assert report["valuation"]["monte_carlo"]["seed"] == 3
    assert report["valuation"]["monte_carlo"]["n_paths"] == 2000
    assert report["book"]["name"] == "BTC example book" and report["book"]["n_positions"] == 19
    assert report["model"]["params"] == {"v0": 0.36, "kappa": 2.0, "theta": 0.36, "xi": 1.0,
                                         "rho": -0.25}
    assert report["market"] == {"spot": 60000.0, "rate": 0.04, "div": 0.0}


def test_totals_agree_across_files(cli_out, report):
    pos = pd.read_csv(cli_out / "positions.csv")
    assert len(pos) == 19 and np.all(np.isfinite(pos.value_usd))
    t = report["totals"]
    for col in ("value_usd", "delta_coin", "delta_usd", "gamma", "vega_usd_vol_pt",
                "theta_usd_day", "rho_usd_pct", "vanna_coin_vol_pt", "volga_usd_vol_pt2"):
        assert pos[col].sum() == pytest.approx(t[col], rel=1e-9, abs=1e-9), col
    spot = report["market"]["spot"]
    np.testing.assert_allclose(pos.value_coin, pos.value_usd / spot, rtol=1e-12)
    # the spot position's delta is its quantity; the tornado's spot derivative is the delta
    row = pos[pos.type == "spot"].iloc[0]
    assert row.delta_coin == pytest.approx(row.quantity, rel=1e-12)
    tornado = {r["input"]: r for r in report["tornado"]}
    assert tornado["spot"]["per_unit"] == pytest.approx(t["delta_coin"], rel=1e-9)
    assert tornado["vol"]["per_unit"] == pytest.approx(100 * t["vega_usd_vol_pt"], rel=1e-9)
    # per-position parameter sensitivities sum to the tornado's per-unit derivatives
    pp = pd.read_csv(cli_out / "position_parameters.csv")
    for name in ("spot", "rate", "div", "v0", "kappa", "theta", "xi", "rho"):
        assert pp[name].sum() == pytest.approx(tornado[name]["per_unit"], rel=1e-9,
                                               abs=1e-9), name


def test_tornado_and_ladders(cli_out, report):
    params = pd.read_csv(cli_out / "parameters.csv")
    assert list(params["rank"]) == list(range(1, len(params) + 1))
    assert np.all(np.diff(params.effect.to_numpy()) <= 0)  # ranked by size
    assert set(params.input) == {"spot", "vol", "rate", "div", "v0", "kappa", "theta", "xi",
                                 "rho"}
    np.testing.assert_allclose(params.first_order_up,
                               params.per_unit * (params.up_to - params["value"]), rtol=1e-12)
    spot = params[params.input == "spot"].iloc[0]
    assert spot.up_to == pytest.approx(63000.0) and spot.down_to == pytest.approx(57000.0)
    lad = pd.read_csv(cli_out / "ladders.csv")
    assert set(lad.input) == {"spot", "vol", "rate", "time"}
    assert len(lad[lad.input == "spot"]) == 13
    assert lad[lad.input == "time"].bump.max() == 6  # below the 7-day expiry
    zero = lad[lad.bump == 0.0]
    assert np.all(np.abs(zero.full_pnl) < 1e-6 * report["totals"]["value_usd"])
    # near the point the second-order prediction beats the first-order one
    small = lad[(lad.input == "spot") & (lad.bump.abs() == 5.0)]
    assert np.all(small.second_order_error.abs() < small.first_order_error.abs())


def test_report_function_on_a_small_book(tmp_path):
    book = Book("small", "ETH", (
        Position.european(3000.0, 30 / 365.0, True, 10.0, settlement="inverse", name="c"),
        Position.european(2500.0, 60 / 365.0, False, -5.0, name="p"),
        Position.spot(-4.0, name="hedge"),
    ))
    model, market = qmr.GBM(0.7), qmr.Market(3000.0, 0.03, 0.0)
    rep = sensitivity_report(book, model, market, tmp_path, seed=5,
                             bumps={"spot": Move("rel", 0.10), "vol": ("abs", 0.02)})
    tornado = {r["input"]: r for r in rep["tornado"]}
    assert set(tornado) == {"spot", "vol", "rate", "div", "sigma"}
    assert tornado["spot"]["up_to"] == pytest.approx(3300.0)
    assert tornado["vol"]["up_to"] == pytest.approx(0.02)
    assert tornado["sigma"]["move"] == TYPICAL_MOVES["sigma"].describe("sigma")
    # GBM: the vol coordinate is sigma itself
    assert tornado["vol"]["per_unit"] == pytest.approx(tornado["sigma"]["per_unit"], rel=1e-9)
    assert rep["valuation"]["monte_carlo"]["used"] is False
    assert rep["totals"]["delta_coin"] == pytest.approx(
        sum(p["delta_coin"] for p in rep["positions"]), rel=1e-12)
    with pytest.raises(ValueError, match="move kind"):
        sensitivity_report(book, model, market, tmp_path, bumps={"rho": ("log", 1.0),
                                                                  "sigma": ("log", 1.0)})


# ------------------------------------------------------------------------------------------
# bad input


def _run(capsys, *argv):
    code = main(["sensitivities", *argv])
    captured = capsys.readouterr()
    return code, captured.err.strip()


@pytest.mark.parametrize(
    ("book_text", "needles"),
    [
        ("[book]\nname = 'b'\ncurrency = 'BTC'\n[[position]]\ntype = 'european'\n"
         "call_put = 'call'\nstrike = -1\nexpiry = 0.1\nquantity = 1\n",
         ["position #1", "field 'strike'"]),
        ("[book]\nname = 'b'\ncurrency = 'BTC'\n[[position]]\nname = 'x'\ntype = 'swap'\n"
         "quantity = 1\n", ["position #1 ('x')", "field 'type'", "swap"]),
        ("[book]\nname = 'b'\n", ["[book]", "missing field 'currency'"]),
        ("[book\n", ["not valid TOML"]),
    ],
)
def test_bad_book_exits_2(tmp_path, capsys, book_text, needles):
    path = tmp_path / "bad.toml"
    path.write_text(book_text)
    code, err = _run(capsys, "--book", str(path), "--model", str(EXAMPLE_MODEL),
                     "--out", str(tmp_path / "out"))
    assert code == 2
    assert err.startswith("qmr sensitivities: error:") and "Traceback" not in err
    assert len(err.splitlines()) == 1
    for needle in [str(path), *needles]:
        assert needle in err, (needle, err)
    assert not (tmp_path / "out").exists()


def test_bad_model_and_paths_exit_2(tmp_path, capsys):
    code, err = _run(capsys, "--book", str(EXAMPLE_BOOK), "--model",
                     str(tmp_path / "missing.toml"))
    assert code == 2 and "missing.toml" in err and "cannot read" in err
    model = tmp_path / "m.yaml"
    model.write_text("x")
    code, err = _run(capsys, "--book", str(EXAMPLE_BOOK), "--model", str(model))
    assert code == 2 and ".toml or .json" in err
    bad = tmp_path / "m.toml"
    bad.write_text(EXAMPLE_MODEL.read_text().replace("xi = 1.0", "xi = -1.0"))
    code, err = _run(capsys, "--book", str(EXAMPLE_BOOK), "--model", str(bad))
    assert code == 2 and "[model]: field 'xi'" in err and str(bad) in err
    target = tmp_path / "file.txt"
    target.write_text("x")
    code, err = _run(capsys, "--book", str(EXAMPLE_BOOK), "--model", str(EXAMPLE_MODEL),
                     "--out", str(target))
    assert code == 2 and "is not a folder" in err
    assert main(["sensitivities", "--book", str(EXAMPLE_BOOK)]) == 2  # --model missing
    assert main(["sensitivities", "--book", "b", "--model", "m", "--paths", "0"]) == 2


def test_non_finite_values_are_refused_naming_the_positions():
    from qmr_jax.report.sensitivity import _check_finite

    book = Book("b", "BTC", (Position.spot(1.0, name="s"), Position.spot(2.0),
                             Position.perpetual(1.0, 60_000.0, name="perp")))
    model = qmr.GBM(0.6)
    ok = np.array([60_000.0, 120_000.0, 0.0])
    _check_finite(book, model, ok, np.ones((3, 4)))
    with pytest.raises(ValueError) as info:
        _check_finite(book, model, np.array([1.0, np.nan, np.inf]), np.ones((3, 4)))
    msg = str(info.value)
    assert "2 position(s)" in msg and "#2 ('spot', value nan)" in msg
    assert "#3 ('perp', value inf)" in msg
    assert "GBM(sigma=0.6)" in msg and "#1" not in msg
    grad = np.ones((3, 4))
    grad[0, 1] = np.nan  # a NaN vega
    with pytest.raises(ValueError, match=r"1 position\(s\).*#1 \('s'"):
        _check_finite(book, model, ok, grad)
