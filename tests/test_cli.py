"""Conventions every ``qmr`` command follows: ``--json`` on stdout (messages on stderr),
``--book``/``--model`` for book commands, ``report.html`` under ``--out``, the VaR level
arguments and their path requirements, readable sensitivity lines."""

from __future__ import annotations

import json
import math

import pytest

from qmr_jax import cli
from qmr_jax.cli import COMMANDS, build_parser, main


def _options(name: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[name]
    return {opt for a in sub._actions for opt in a.option_strings}


@pytest.mark.parametrize("cmd", [c.name for c in COMMANDS])
def test_every_command_has_json(cmd):
    assert "--json" in _options(cmd)


@pytest.mark.parametrize("cmd", ["sensitivities", "stress", "sweep"])
def test_book_commands_share_their_arguments(cmd):
    assert {"--book", "--model", "--snapshot", "--chain", "--out", "--json"} <= _options(cmd)


@pytest.mark.parametrize("cmd", ["stress", "sweep"])
def test_risk_commands_take_levels(cmd):
    assert "--levels" in _options(cmd)


def test_calibrate_takes_fixed_and_bounds():
    assert {"--fixed", "--bounds", "--initial", "--json"} <= _options("calibrate")


def test_parse_levels():
    assert cli.parse_levels("0.99,0.95,0.99") == (0.95, 0.99)
    assert cli.parse_levels("95,99.9") == (0.95, 0.999)
    assert cli.parse_levels(None) is None
    for bad in ("0.3", "100", "1", "x"):
        with pytest.raises(cli.UsageError, match="--levels"):
            cli.parse_levels(bad)


@pytest.mark.parametrize("level", [0.9, 0.95, 0.975, 0.99, 0.995, 0.999])
def test_min_paths_is_the_risk_modules_tail_rule(level):
    from qmr_jax.stress import risk

    n = cli.min_paths(level, risk.MIN_TAIL)
    assert n == cli.min_paths(level)  # the CLI's constant is the risk module's
    # n paths leave MIN_TAIL samples in the tail, n - 1 do not
    assert math.floor(n * (1 - level) + 1e-9) >= risk.MIN_TAIL
    assert math.floor((n - 1) * (1 - level) + 1e-9) < risk.MIN_TAIL


def test_sweep_help_states_the_minimum_paths(capsys):
    assert main(["sweep", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--levels" in text and "10/(1-a)" in text
    assert "99%: 1,000" in text and "99.9%: 10,000" in text


def test_sensitivity_lines_name_the_down_and_the_up_move():
    tornado = [{"input": "spot", "move": "+-5%", "down_to": 57_000.0, "up_to": 63_000.0,
                "full_down": -1234.5, "full_up": 1100.25},
               {"input": "vol", "move": "+-5 vol pts", "down_to": -0.05, "up_to": 0.05,
                "full_down": -300.0, "full_up": 310.0}]
    head, spot, vol = cli.sensitivity_lines(tornado)
    assert "down move | up move" in head
    assert "down to 57,000 -1,234.50 | up to 63,000 +1,100.25" in spot
    assert "down to -5 vol pts -300.00 | up to +5 vol pts +310.00" in vol


def test_price_json_flag_matches_format_json(capsys):
    argv = ["price", "--model", "gbm", "--params", "sigma=0.6", "--spot", "60000",
            "--strikes", "50000,70000", "--expiries", "30d"]
    assert main([*argv, "--json"]) == 0
    cap = capsys.readouterr()
    a = json.loads(cap.out)
    assert "pricing 2 calls and puts" in cap.err  # the status line is not on stdout
    assert main([*argv, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == a
    assert [r["strike"] for r in a["rows"]] == [50_000.0, 70_000.0]


def test_version_json(capsys):
    assert main(["version", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    import qmr_jax

    assert doc["qmr_jax"] == qmr_jax.__version__
    assert set(doc) >= {"jax", "jaxlib", "numpy", "python", "compilation_cache"}


def test_jsonable_turns_nan_into_null():
    import numpy as np

    doc = cli._jsonable({"a": float("nan"), "b": np.float64(1.5), "c": np.arange(2),
                         "d": [np.inf, 2]})
    assert json.loads(json.dumps(doc, allow_nan=False)) == {"a": None, "b": 1.5, "c": [0, 1],
                                                            "d": [None, 2]}


@pytest.mark.parametrize("name", ["gbm", "merton", "kou", "heston", "bates"])
def test_save_model_round_trips_bit_for_bit(name, tmp_path):
    import numpy as np

    import qmr_jax as qmr
    from qmr_jax.demo import BTC_MODELS

    model = next(m for k, m in BTC_MODELS.items() if k.lower() == name)
    rng = np.random.default_rng(7)
    # perturb every parameter by an irrational-looking factor: 17 digits must survive
    model = type(model)(*(float(v) * (1 + 1e-3 * rng.random()) for v in model))
    market = qmr.Market(61_234.56789, 0.0412345, -0.0123)
    path = qmr.save_model(tmp_path / "m.toml", model, market, name="x \"quoted\"",
                          meta={"rmse_iv": 0.5, "at_bounds": ["rho"], "skip": None})
    spec = qmr.load_model(path)
    assert type(spec.model) is type(model) and spec.name == 'x "quoted"'
    for a, b in zip(spec.model, model, strict=True):
        assert float(a) == float(b)
    for f in ("spot", "rate", "div"):
        assert float(getattr(spec.market, f)) == float(getattr(market, f))
    assert spec.meta == {"rmse_iv": 0.5, "at_bounds": ["rho"]}


def test_save_model_refuses_a_batch_and_nan(tmp_path):
    import numpy as np

    import qmr_jax as qmr

    market = qmr.Market(60_000.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="holds one model"):
        qmr.save_model(tmp_path / "b.toml", qmr.GBM(np.array([0.5, 0.6])), market)
    with pytest.raises(ValueError, match="model.sigma: nan"):
        qmr.save_model(tmp_path / "n.toml", qmr.GBM(float("nan")), market)
    assert not (tmp_path / "b.toml").exists() and not (tmp_path / "n.toml").exists()


def test_snapshot_values_a_book_at_the_chains_market_and_time(tmp_path, capsys):
    import argparse
    from datetime import UTC, datetime

    import numpy as np

    from qmr_jax.data import load_chain
    from tests.conftest import ROOT

    api = ROOT / "scenarios" / "chains" / "example_deribit_api.json"
    book_file = tmp_path / "book.toml"
    book_file.write_text('[book]\nname = "n"\ncurrency = "BTC"\n[[position]]\n'
                         'instrument = "BTC-26JUN26-70000-C"\nquantity = 1\n')
    args = argparse.Namespace(book=str(book_file), chain=str(api), snapshot=None,
                              model=str(ROOT / "scenarios" / "models" / "btc_heston.toml"),
                              json=False)
    book, spec = cli._book_and_model(args)
    chain = load_chain(api)
    # the index, and a flat basis that reproduces the chain's forwards
    assert float(spec.market.spot) == float(chain["spot"].median())
    assert float(spec.market.rate) == 0.04  # the model file's rate is kept
    np.testing.assert_allclose(np.asarray(spec.market.forward(chain["expiry_years"].to_numpy())),
                               chain["forward"].to_numpy(), rtol=1e-6)
    # the expiry counts from the snapshot's time: 26 June 2026 08:00 UTC, ACT/365
    when = chain["snapshot"].iloc[0].to_pydatetime()
    expiry = datetime(2026, 6, 26, 8, tzinfo=UTC)
    assert book.positions[0].expiry == pytest.approx((expiry - when).total_seconds()
                                                     / (365 * 86400), rel=1e-12)
    assert "market from BTC snapshot" in capsys.readouterr().out
    # without --snapshot/--chain an absolute expiry has no valuation time: a clear error
    args.chain = None
    with pytest.raises(cli.UsageError, match="as_of"):
        cli._book_and_model(args)
