"""The ``qmr`` command line: the quick demo's outputs and their consistency, ``price``,
``version`` and the handling of bad input (one-line message, exit status 2)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import qmr_jax
from qmr_jax.cli import main
from qmr_jax.demo import BTC_MODELS, EXPIRY_DAYS
from qmr_jax.report import Column, Page, html_table, text_table

MODEL_NAMES = ("gbm", "merton", "kou", "heston", "bates")


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--quick", "--seed", "3"]) == 0
    return out


@pytest.fixture(scope="module")
def summary(demo_out):
    return json.loads((demo_out / "summary.json").read_text())


def test_demo_writes_its_files(demo_out, summary):
    for name in ("report.html", "smiles.png", "prices.csv", "summary.json"):
        assert (demo_out / name).stat().st_size > 0, name
    assert sorted(summary["files"]) == sorted(p.name for p in demo_out.iterdir())
    assert (demo_out / "smiles.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (demo_out / "report.html").read_text()
    for text in ("Model parameters", "COS against Lewis", "Monte Carlo check", 'src="smiles.png"',
                 "Versions", "seed"):
        assert text in html, text
    assert summary["seed"] == 3 and summary["config"]["quick"] is True
    # the example book's sensitivity report, linked from the main page
    sens = summary["sensitivities"]
    assert sens["report"] == "sensitivities/report.html" and sens["seed"] == 3
    assert 'href="sensitivities/report.html"' in html
    for name in ("report.html", "tornado.png", "ladders.png", "positions.csv",
                 "sensitivities.json"):
        assert (demo_out / "sensitivities" / name).stat().st_size > 0, name
    book = json.loads((demo_out / "sensitivities" / "sensitivities.json").read_text())
    assert book["totals"] == sens["totals"]
    assert book["model"]["params"] == summary["models"]["Heston"]
    assert summary["versions"]["qmr_jax"] == qmr_jax.__version__
    assert summary["wall_seconds"] > 0


def test_demo_links_the_stress_and_sweep_reports(demo_out, summary):
    for name in ("stress/report.html", "stress/stress.csv", "stress/positions.csv",
                 "sweep/report.html", "sweep/results.parquet", "sweep/manifest.json"):
        assert (demo_out / name).stat().st_size > 0, name
    assert summary["stress"]["report"] == "stress/report.html"
    assert summary["sweep"]["report"] == "sweep/report.html"
    assert {"stress", "sweep"} <= set(summary["files"])
    html = (demo_out / "report.html").read_text()
    assert "Stress testing" in html
    # every sub-report (an HTML page below the output folder) is linked from the main page
    pages = sorted(p.relative_to(demo_out).as_posix() for p in demo_out.rglob("*.html"))
    pages.remove("report.html")
    assert {"stress/report.html", "sweep/report.html", "sensitivities/report.html"} <= set(pages)
    for page in pages:
        assert f'href="{page}"' in html, page


def test_demo_stress_covers_the_library(demo_out, summary):
    from qmr_jax.stress import default_scenario_dir, load_scenarios

    st = summary["stress"]
    library = [s.name for s in load_scenarios(default_scenario_dir())]
    assert st["n_scenarios"] == len(library)
    assert st["n_ok"] + st["n_failed"] == st["n_scenarios"] and st["n_ok"] > 0
    assert st["seed"] == 3 and st["n_positions"] == 20
    table = pd.read_csv(demo_out / "stress" / "stress.csv")
    assert sorted(table["name"]) == sorted(library)
    assert (table["status"] == "ok").sum() == st["n_ok"]
    assert sorted(st["failed"]) == sorted(table.loc[table["status"] != "ok", "name"])
    # the worst scenarios, worst first; the first is the minimum P&L of the CSV
    worst = [w["pnl_usd"] for w in st["worst"]]
    assert len(worst) == 3 and worst == sorted(worst)
    assert worst[0] == pytest.approx(table["pnl_usd"].min(), rel=1e-12)
    assert st["worst"][0]["scenario"] == table.loc[table["pnl_usd"].idxmin(), "name"]
    # stressed under the calibrated Heston model, on the calibration chain's market
    assert st["calibrated"] is True and st["model"] == "Heston"
    assert st["params"] == summary["calibration"]["fits"]["Heston"]["params"]
    assert st["market"] == summary["calibration"]["market"]
    assert st["rescale_factor"] == pytest.approx(st["market"]["spot"] / 60000.0, rel=1e-12)


def test_demo_rescales_the_stress_book():
    from qmr_jax.book import load_book
    from qmr_jax.demo import rescale_book, stress_book_path

    book = load_book(stress_book_path())
    scaled = rescale_book(book, 1.25)
    assert len(scaled) == len(book) and scaled.labels == book.labels
    for a, b in zip(book.positions, scaled.positions, strict=True):
        assert b.quantity == a.quantity and b.expiry == a.expiry and b.type == a.type
        for f in ("strike", "entry"):
            va, vb = getattr(a, f), getattr(b, f)
            assert (vb is None) if va is None else vb == pytest.approx(1.25 * va), (a.label, f)
    assert any(p.entry is not None for p in scaled.positions)


def test_demo_sweep_results(demo_out, summary):
    sw = summary["sweep"]
    res = pd.read_parquet(demo_out / "sweep" / "results.parquet")
    size = math.prod(len(v) for v in sw["grid"].values())
    assert sw["n_scenarios"] == size == len(res)
    assert sorted(res["index"]) == list(range(size))
    assert res["index"].is_unique
    for dim, values in sw["grid"].items():
        assert sorted(res[dim].unique()) == sorted(values), dim
    assert (res["es99"] >= res["var99"]).all()
    assert (res["es95"] >= res["var95"]).all()
    manifest = json.loads((demo_out / "sweep" / "manifest.json").read_text())
    assert manifest["n_paths"] == sw["n_paths"] and manifest["steps"] == sw["steps"]
    assert manifest["model"] == {"type": "Heston", **summary["stress"]["params"]}
    # the worst scenario by ES99 and its figures
    worst = res.loc[res["es99"].idxmax()]
    assert sw["worst"]["index"] == int(worst["index"])
    assert sw["worst"]["es99"] == pytest.approx(float(worst["es99"]), rel=1e-12)
    assert sw["worst"]["es99"] >= sw["worst"]["var99"]


def test_demo_fourier_methods_agree(summary, demo_out):
    spot = summary["market"]["spot"]
    assert set(summary["fourier"]) == set(BTC_MODELS)
    for name, stats in summary["fourier"].items():
        assert stats["max_rel_diff_to_spot"] < 1e-8, name
        assert stats["max_abs_diff"] == pytest.approx(stats["max_rel_diff_to_spot"] * spot)
    prices = pd.read_csv(demo_out / "prices.csv")
    assert len(prices) == len(BTC_MODELS) * summary["n_options_per_model"]
    assert np.max(np.abs(prices.price_cos - prices.price_lewis)) / spot < 1e-8
    assert np.max(np.abs(prices.price_cos - prices.price_lewis)) == pytest.approx(
        summary["max_cos_lewis_abs_diff"])
    # out-of-the-money convention: puts below the forward, calls at or above it
    assert ((prices.type == "call") == (prices.strike >= prices.forward)).all()
    assert (prices.price_cos > 0).all()


def test_demo_implied_vols_are_btc_like(summary, demo_out):
    prices = pd.read_csv(demo_out / "prices.csv")
    assert prices.implied_vol.notna().all()
    gbm = prices[prices.model == "GBM"]
    np.testing.assert_allclose(gbm.implied_vol, BTC_MODELS["GBM"].sigma, atol=1e-8)
    for name, by_expiry in summary["atm_implied_vol"].items():
        assert set(by_expiry) == {str(d) for d in EXPIRY_DAYS}
        for vol in by_expiry.values():
            assert 0.5 < vol < 0.7, (name, vol)
    # jump models: fat wings - the 7-day deep put vol is above the ATM vol
    for name in ("Merton", "Kou", "Bates"):
        short = prices[(prices.model == name) & (prices.expiry_days == 7)]
        assert short.implied_vol.iloc[0] > summary["atm_implied_vol"][name]["7"] + 0.05


def test_demo_monte_carlo_matches_fourier(summary, demo_out):
    prices = pd.read_csv(demo_out / "prices.csv")
    for name, mc in summary["monte_carlo"].items():
        assert mc["stderr"] > 0
        z = (mc["value"] - mc["fourier"]) / mc["stderr"]
        assert z == pytest.approx(mc["z_score"])
        assert abs(z) < 4.0, (name, z)
        assert mc["within_4_stderr"] is True
        row = prices[(prices.model == name) & (prices.expiry_days == mc["expiry_days"])
                     & (prices.strike == mc["strike"])]
        assert len(row) == 1 and row.type.iloc[0] == mc["type"]
        assert row.price_cos.iloc[0] == pytest.approx(mc["fourier"], rel=1e-12)
        assert mc["scheme"] == ("qe" if name in ("Heston", "Bates") else "exact")


def test_demo_monte_carlo_is_reproducible_from_the_seed(summary):
    # model i of the demo draws from fold_in(key(seed), i): rerun GBM (i = 0) alone
    import jax

    from qmr_jax.demo import BTC_MARKET
    from qmr_jax.pricing import payoffs
    from qmr_jax.pricing.montecarlo import mc_price

    mc = summary["monte_carlo"]["GBM"]
    res = mc_price(
        BTC_MODELS["GBM"], BTC_MARKET,
        payoffs.european(mc["strike"], mc["expiry_days"] / 365.0, mc["type"] == "call"),
        key=jax.random.fold_in(jax.random.key(summary["seed"]), 0), n_paths=mc["n_paths"],
        n_steps=mc["n_steps"], antithetic=True,
    )
    assert float(res.value) == mc["value"] and float(res.stderr) == mc["stderr"]


# ------------------------------------------------------------------------------------------
# qmr price


def _price(*extra):
    return ["price", "--model", "gbm", "--params", "sigma=0.6", "--spot", "60000",
            "--rate", "0.04", "--strikes", "50000,60000,75000", "--expiries", "30d,0.5",
            *extra]


def test_price_table_parses(capsys):
    assert main(_price()) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("GBM(sigma=0.6)")
    header = lines[1].split()
    assert header == ["expiry_y", "days", "strike", "forward", "call", "put", "iv_pct"]
    assert set(lines[2]) <= {"-", " "}
    rows = [dict(zip(header, map(float, ln.split()), strict=True)) for ln in lines[3:9]]
    assert len(rows) == 6
    for r in rows:
        t = r["days"] / 365.0  # exact in the table (expiry_y is rounded to 4 dp)
        fwd = 60000.0 * math.exp(0.04 * t)
        assert r["forward"] == pytest.approx(fwd, abs=0.006)
        parity = math.exp(-0.04 * t) * (fwd - r["strike"])  # prices rounded to 4 dp
        assert r["call"] - r["put"] == pytest.approx(parity, abs=2e-4)
        assert r["iv_pct"] == pytest.approx(60.0, abs=1e-3)
    assert [r["days"] for r in rows] == [30.0] * 3 + [182.5] * 3


def test_price_json_and_lewis(capsys):
    assert main(_price("--format", "json", "--method", "lewis")) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "GBM" and data["method"] == "lewis"
    assert len(data["rows"]) == 6
    assert all(r["iv"] == pytest.approx(0.6, abs=1e-9) for r in data["rows"])


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--model", "sabr", "--params", "alpha=1"], ["unknown model 'sabr'", *MODEL_NAMES]),
        (["--model", "heston", "--params", "v0=0.36,kapa=2,theta=0.36,xi=1,rho=-0.3"],
         ["unknown parameter 'kapa'", "v0, kappa, theta, xi, rho"]),
        (["--model", "heston", "--params", "v0=0.36,kappa=2"],
         ["missing parameters theta, xi, rho", "v0, kappa, theta, xi, rho"]),
        (["--model", "merton", "--params", "sigma=0.5,lam=x,mu_j=0,sigma_j=0.1"],
         ["parameter lam", "'x' is not a number"]),
        (["--model", "heston", "--params", "v0=0.36,kappa=2,theta=0.36,xi=1,rho=-1.5"],
         ["Heston.rho", "-1.5"]),
        (["--model", "gbm", "--params", "sigma"], ["expected name=value", "sigma"]),
    ],
)
def test_price_user_errors_exit_2(capsys, args, needles):
    argv = ["price", *args, "--spot", "60000", "--strikes", "60000", "--expiries", "0.5"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert err.startswith("qmr price: error:") and "Traceback" not in err
    assert len(err.splitlines()) == 1
    for needle in needles:
        assert needle in err, (needle, err)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--strikes", "60000,abc"], "--strikes: 'abc' is not a number"),
        (["--expiries", "-1"], "--expiries must be positive"),
        (["--spot", "-5"], "Market.spot"),
    ],
)
def test_price_bad_numbers_exit_2(capsys, extra, needle):
    base = {"--spot": "60000", "--strikes": "60000", "--expiries": "0.5"}
    base.update(dict(zip(extra[::2], extra[1::2], strict=True)))
    argv = ["price", "--model", "gbm", "--params", "sigma=0.5"]
    for k, v in base.items():
        argv += [k, v]
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["price", "--model", "gbm"]) == 2  # required arguments missing
    assert main(["demo", "--seed", "-1"]) == 2
    assert "usage: qmr" in capsys.readouterr().err


def test_demo_out_must_be_a_folder(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert main(["demo", "--out", str(target), "--quick"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_report_escapes_text(tmp_path):
    page = Page("a <b> & c")
    page.add_paragraph("<script>alert(1)</script>")
    page.add_html(html_table([{"name": "<i>x</i>", "value": 1234.5, "ok": True}],
                             [Column("name"), Column("value", fmt=",.1f"), Column("ok")]))
    page.add_image("fig \"1\".png", alt="<alt>")
    html = page.write(tmp_path / "r.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<title>a &lt;b&gt; &amp; c</title>" in html
    assert "<td>&lt;i&gt;x&lt;/i&gt;</td>" in html
    assert "<td class=num>1,234.5</td>" in html and "<td>yes</td>" in html
    assert 'src="fig &quot;1&quot;.png"' in html and 'alt="&lt;alt&gt;"' in html
    assert text_table([{"k": 1.0, "s": "ab"}], [Column("k", fmt=".2f"), Column("s")]).split(
        "\n") == ["   k  s", "----  --", "1.00  ab"]


def test_version_as_module():
    proc = subprocess.run([sys.executable, "-m", "qmr_jax.cli", "version"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == f"qmr_jax {qmr_jax.__version__}"


def test_out_is_checked_without_leaving_anything_behind(tmp_path):
    from qmr_jax.cli import UsageError, check_out_dir

    check_out_dir(tmp_path / "a" / "b" / "c")
    assert list(tmp_path.iterdir()) == []  # the folders made for the check are gone
    (tmp_path / "d").mkdir()
    check_out_dir(tmp_path / "d")
    assert list((tmp_path / "d").iterdir()) == []
    target = tmp_path / "file.txt"
    target.write_text("x")
    for path, needle in [(target, "exists and is not a folder"),
                         (target / "sub" / "dir", f"{str(target)!r} is a file"),
                         ("/proc/qmr-out", "cannot write"), ("", "empty path")]:
        with pytest.raises(UsageError, match="--out") as info:
            check_out_dir(path)
        assert needle in str(info.value), info.value


def test_errors_inside_a_command_are_one_line(monkeypatch, capsys):
    import errno

    from qmr_jax import cli

    def boom(args):
        raise args.error

    cmd = cli.Command("boom", "fails", lambda p: p.add_argument("--out", default=None),
                      boom, numeric=False)
    monkeypatch.setattr(cli, "COMMANDS", [cmd])
    for error, needle in [
        (ValueError("book.toml, line 3: bad\nsecond line"), "book.toml, line 3: bad second line"),
        (PermissionError(errno.EACCES, "Permission denied", "/x/y.csv"),
         "/x/y.csv: Permission denied"),
    ]:
        monkeypatch.setattr(cli.argparse.Namespace, "error", error, raising=False)
        assert main(["boom"]) == 2
        err = capsys.readouterr().err
        assert err == f"qmr boom: error: {needle}\n"
    # --out is checked before the command runs
    assert main(["boom", "--out", "/proc/qmr-out"]) == 2
    assert "qmr boom: error: --out" in capsys.readouterr().err
