"""Calibration starting points, the calibration report and ``qmr calibrate``.

One model type (Heston) and one synthetic chain (the one ``qmr calibrate --synthetic`` uses)
throughout, so the solver and the smile grid compile once: the in-process command-line run
and the report fixture share the compiled functions.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tomllib

import numpy as np
import pandas as pd
import pytest

import qmr_jax as qmr
from qmr_jax.book import load_model
from qmr_jax.calibration import DEFAULT_BOUNDS, MODELS, calibrate, initial_guess
from qmr_jax.calibration.defaults import atm_term_structure
from qmr_jax.cli import main, synthetic_calibration_chain, synthetic_truth
from qmr_jax.report.calibration import FILES, _buckets, calibration_report
from tests.conftest import ROOT

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def chain():
    return synthetic_calibration_chain("BTC")


@pytest.fixture(scope="module")
def cli_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("calib_cli")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["calibrate", "--synthetic", "--model", "heston", "--out", str(out),
                     "--rate", "0.03", "--json"]) == 0
    (out.parent / f"{out.name}.stdout").write_text(stdout.getvalue())
    return out


@pytest.fixture(scope="module")
def result(chain, cli_out):
    # the command's settings: the same compiled solver
    return calibrate(initial_guess("heston", chain), chain, weights="uniform")


@pytest.fixture(scope="module")
def report(result, chain, tmp_path_factory):
    out = tmp_path_factory.mktemp("calib_report")
    return out, calibration_report(result, chain, out)


def _inside_boxes(model) -> None:
    for name, box in DEFAULT_BOUNDS[type(model)].items():
        value = float(getattr(model, name))
        assert box.lo < value < box.hi, (type(model).__name__, name, value)


# ------------------------------------------------------------------------------------------
# initial_guess


def test_initial_guess_inside_boxes_and_near_atm_levels(chain):
    ts = atm_term_structure(chain)
    atm = ts["atm_iv"].to_numpy()
    assert len(ts) == chain["expiry_years"].nunique()
    assert np.all((atm > 0.4) & (atm < 0.6))  # truth: 50-55% vol
    for name, cls in MODELS.items():
        guess = initial_guess(name, chain)
        assert type(guess) is cls
        guess.validate()
        _inside_boxes(guess)
        assert initial_guess(cls, chain) == guess == initial_guess(guess, chain)
        assert initial_guess(name.upper(), chain) == guess

    h = initial_guess("heston", chain)
    assert math.sqrt(h.v0) == pytest.approx(atm[:2].mean(), abs=0.01)
    assert math.sqrt(h.theta) == pytest.approx(atm[-1], abs=0.06)
    truth = synthetic_truth()
    assert h.rho < 0 and h.rho == pytest.approx(truth.rho, abs=0.1)  # from the skew
    g = initial_guess("gbm", chain)
    assert atm.min() - 1e-9 <= g.sigma <= atm.max() + 1e-9
    b = initial_guess("bates", chain)
    assert b.v0 < h.v0 and (b.lam, b.mu_j, b.sigma_j) == (0.1, -0.3, 0.3)  # rare, large
    k = initial_guess("kou", chain)
    assert (k.lam, k.p, k.eta1, k.eta2) == (1.0, 0.4, 10.0, 8.0) and k.sigma < g.sigma


@pytest.mark.parametrize("scale", [0.01, 12.0])
def test_initial_guess_stays_inside_boxes_for_extreme_vols(chain, scale):
    odd = chain.copy()
    for col in ("bid_iv", "mid_iv", "ask_iv"):
        odd[col] = chain[col] * scale
    for name in MODELS:
        _inside_boxes(initial_guess(name, odd))


def test_initial_guess_errors(chain):
    with pytest.raises(ValueError, match="unknown model 'sabr'.*heston, bates, merton"):
        initial_guess("sabr", chain)
    with pytest.raises(ValueError, match="cannot calibrate a Market"):
        initial_guess(qmr.Market(1.0), chain)
    with pytest.raises(ValueError, match="missing column"):
        initial_guess("heston", chain.drop(columns=["mid_iv"]))


# ------------------------------------------------------------------------------------------
# the report


def test_report_writes_every_file(report, result):
    out, paths = report
    assert set(paths) == set(FILES)
    for name in FILES:
        assert paths[name] == out / name and paths[name].stat().st_size > 0, name
    for name in ("smiles.png", "residuals.png", "convergence.png"):
        assert paths[name].read_bytes()[:8] == PNG, name
    # a synthetic, noise-free chain: the fit recovers the truth
    assert result.converged and result.rmse_iv < 1e-3
    for name, value in synthetic_truth()._asdict().items():
        assert result.params_dict()[name] == pytest.approx(value, rel=1e-4, abs=1e-5)


def test_report_json_round_trips(report, result, chain):
    data = json.loads(report[1]["result.json"].read_text())
    assert data["params"] == result.params_dict()
    assert data["rmse_iv"] == result.rmse_iv and data["converged"] is True
    assert data["model"] == "Heston" and data["n_quotes"] == result.n_quotes == len(chain)
    assert data["feller_ratio"] == pytest.approx(result.feller_ratio(), rel=1e-12)
    assert data["settings"]["method"] == "lm" and data["settings"]["loss"] == "iv"
    assert set(data["settings"]["bounds"]) == set(qmr.Heston._fields)
    info = data["chain"]
    assert info["source"] == "synthetic_chain" and info["currency"] == "BTC"
    assert info["synthetic"]["params"] == synthetic_truth()._asdict()
    assert info["cleaning"]["kept"] == len(chain)
    assert sorted(data["files"]) == sorted(FILES)


def test_report_tables(report, result, chain):
    paths = report[1]
    res = pd.read_csv(paths["residuals.csv"])
    assert len(res) == result.n_quotes
    np.testing.assert_allclose(res["residual_iv"], 100.0 * (res["model_iv"] - res["mid_iv"]),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(res["row"], chain.index)
    np.testing.assert_array_equal(res["instrument"], chain["instrument"])
    np.testing.assert_allclose(res["mid_iv"], chain["mid_iv"], rtol=1e-15)
    by = pd.read_csv(paths["by_expiry.csv"])
    assert len(by) == chain["expiry_years"].nunique()
    assert by["n_quotes"].sum() == result.n_quotes
    np.testing.assert_allclose(by["days"], 365.0 * by["expiry_years"])
    # per-expiry RMSE agrees with the per-quote residuals
    rmse = res.groupby("expiry_years")["residual_iv"].apply(lambda r: np.sqrt(np.mean(r**2)))
    np.testing.assert_allclose(by["rmse_iv"], rmse.to_numpy(), rtol=1e-9, atol=1e-12)


def test_report_html(report, result):
    html = report[1]["report.html"].read_text()
    for name, value in result.params_dict().items():
        assert f"<td>{name}</td><td class=num>{value:.6g}</td>" in html, name
    for text in ("Heston calibration: BTC", "converged", "Feller ratio", "RMSE",
                 "Fit per expiry", "Settings", "truth (synthetic)", "n_terms",
                 "data:image/png;base64,"):
        assert text in html, text
    assert 'class="warning"' not in html and "Not converged" not in html
    assert 'src="smiles.png"' not in html  # self-contained: figures embedded


def test_report_rejects_another_chain(result, chain, tmp_path):
    with pytest.raises(ValueError, match="calibrated to"):
        calibration_report(result, chain.iloc[:10], tmp_path)


def test_buckets_cover_the_quotes():
    x = np.array([-0.93, -0.2, -0.01, 0.0, 0.04, 1.21])
    edges = _buckets(x)
    assert edges[0] <= x.min() and edges[-1] >= x.max() and 0.0 in edges
    assert np.all(np.diff(edges) > 0)
    assert _buckets(np.array([0.01, 0.3]))[0] == 0.0


# ------------------------------------------------------------------------------------------
# qmr calibrate


def test_cli_synthetic(cli_out, result, capsys):
    for name in FILES:
        assert (cli_out / name).stat().st_size > 0, name
    data = json.loads((cli_out / "result.json").read_text())
    assert data["converged"] is True
    for name, value in result.params_dict().items():
        assert data["params"][name] == pytest.approx(value, rel=1e-10, abs=1e-12)


def test_cli_writes_a_model_file_every_command_reads(cli_out, result, chain):
    spec = load_model(cli_out / "model.toml")
    assert type(spec.model) is type(result.params)
    for name, value in result.params_dict().items():  # bit for bit through the TOML
        assert float(getattr(spec.model, name)) == value
    # the chain's market: its index, and forwards that match the chain's (a flat basis here)
    assert float(spec.market.spot) == pytest.approx(float(chain["spot"].median()), rel=1e-12)
    assert float(spec.market.rate) == 0.03
    t = chain["expiry_years"].to_numpy()
    fwd = np.asarray(spec.market.forward(t))
    np.testing.assert_allclose(fwd, chain["forward"].to_numpy(), rtol=1e-9)
    meta = tomllib.loads((cli_out / "model.toml").read_text())["meta"]
    assert meta["converged"] is True and meta["rmse_iv"] == pytest.approx(result.rmse_iv)


def test_cli_json_is_the_result(cli_out, result, capsys):
    # the fixture's --json run printed one JSON document (and nothing else) on stdout
    doc = json.loads((cli_out.parent / f"{cli_out.name}.stdout").read_text())
    assert doc["params"] == pytest.approx(result.params_dict(), rel=1e-10)
    assert doc["converged"] is True and doc["market"]["rate"] == 0.03
    assert doc["files"]["model.toml"] == str(cli_out / "model.toml")


def test_cli_fixed_and_bounds_reach_the_solver(tmp_path, capsys, monkeypatch):
    import qmr_jax.calibration as calibration

    seen = {}

    def spy(initial, chain, **kw):
        seen.update(kw, initial=initial)
        raise ValueError("stop here")

    monkeypatch.setattr(calibration, "calibrate", spy)
    assert main(["calibrate", "--synthetic", "--fixed", "rho=-0.45,kappa", "--bounds",
                 "xi=0.2:3,theta=0.01:1", "--out", str(tmp_path)]) == 2
    assert "stop here" in capsys.readouterr().err
    assert seen["fixed"] == ("rho", "kappa")
    assert seen["bounds"] == {"xi": (0.2, 3.0), "theta": (0.01, 1.0)}
    assert float(seen["initial"].rho) == -0.45  # held at the given value


def test_cli_prints_summary(tmp_path, capsys):
    # not converged: one iteration only; the report is still written, with a warning
    assert main(["calibrate", "--synthetic", "--out", str(tmp_path), "--max-iter", "1"]) == 1
    out = capsys.readouterr().out
    assert "Heston calibration to" in out and "NOT CONVERGED" in out
    assert "did NOT converge" in out and str(tmp_path / "report.html") in out
    html = (tmp_path / "report.html").read_text()
    assert 'class="warning"' in html and "Not converged." in html
    assert "iteration limit reached" in html
    assert json.loads((tmp_path / "result.json").read_text())["converged"] is False


@pytest.mark.parametrize("args, needles", [
    (["--model", "sabr", "--synthetic"], ["unknown model 'sabr'", "heston"]),
    (["--chain", "no/such/chain.parquet"], ["not found", "no/such/chain.parquet"]),
    (["--synthetic", "--snapshot", "last"], ["--snapshot", "--synthetic"]),
    (["--synthetic", "--model", "gbm", "--feller-penalty", "1"], ["feller_penalty", "GBM"]),
    (["--synthetic", "--model", "bates", "--initial",
      str(ROOT / "scenarios" / "models" / "btc_heston.toml")], ["Heston", "bates"]),
    (["--synthetic", "--initial", "missing.toml"], ["--initial", "missing.toml"]),
])
def test_cli_user_errors_exit_2(tmp_path, capsys, args, needles):
    assert main(["calibrate", "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("qmr calibrate: error:"), err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not (tmp_path / "o" / "report.html").exists()


def test_cli_without_default_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("QMR_DATA_DIR", str(tmp_path))
    assert main(["calibrate", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no Deribit option parquet" in err and "--synthetic" in err


def test_cli_bad_snapshot(data_dir, tmp_path, capsys):
    assert main(["calibrate", "--snapshot", "99999", "--out", str(tmp_path)]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["calibrate", "--snapshot", "not-a-time", "--out", str(tmp_path)]) == 2
    assert "snapshot" in capsys.readouterr().err
