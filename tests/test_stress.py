"""Revaluation identities, horizon paths and sweeps (determinism, resume)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pandas as pd
import pytest

import qmr_jax as qmr
from qmr_jax.book import Book, Position
from qmr_jax.stress import Shock, StressEngine, SweepDesign, apply_shock, load_sweep, sweep
from qmr_jax.stress import sweeps as sweep_mod

jax.config.update("jax_enable_x64", True)

SPOT = 60_000.0
MODEL = qmr.Heston(v0=0.36, kappa=2.0, theta=0.30, xi=0.9, rho=-0.4)
MARKET = qmr.Market(SPOT, 0.04, 0.01)
LEVELS = (0.95, 0.99)


def _book():
    return Book("test", "BTC", (
        Position.european(65_000.0, 30 / 365, True, -10.0, settlement="inverse"),
        Position.european(55_000.0, 14 / 365, False, 5.0),
        Position.european(60_000.0, 90 / 365, False, 3.0),
        Position.future(4.0, 90 / 365, 60_400.0),
        Position.spot(2.5),
        Position.perpetual(-1.0, 60_100.0),
    ))


@pytest.fixture(scope="module")
def engine():
    return StressEngine(_book(), MODEL, MARKET)


def test_zero_shock_gives_zero_pnl(engine):
    r = engine.revalue(Shock())
    gross = np.abs(engine.qty) * SPOT
    assert np.all(np.abs(np.asarray(r.pnl_usd)) <= 1e-12 * gross)
    assert np.all(np.asarray(r.cost) == 0.0)


def test_linear_positions_match_closed_form(engine):
    sh = Shock(spot=-0.25, rate=0.02, basis=0.10, horizon=3 / 365)
    r = engine.revalue(sh)
    _, mk = apply_shock(MODEL, MARKET, sh)
    s1 = SPOT * 0.75
    assert float(mk.spot) == pytest.approx(s1, rel=1e-15)
    carry = float(mk.rate - mk.div)
    assert carry == pytest.approx(0.04 - 0.01 + 0.10, abs=1e-15)
    t = 90 / 365 - 3 / 365
    fut = 4.0 * (s1 * np.exp(carry * t) - 60_400.0) * np.exp(-float(mk.rate) * t)
    base_fut = 4.0 * (SPOT * np.exp(0.03 * 90 / 365) - 60_400.0) * np.exp(-0.04 * 90 / 365)
    pnl = np.asarray(r.pnl_usd)
    assert pnl[3] == pytest.approx(fut - base_fut, rel=1e-12)
    assert pnl[4] == pytest.approx(2.5 * (s1 - SPOT), rel=1e-12)
    assert pnl[5] == pytest.approx(-1.0 * (s1 - SPOT), rel=1e-12)
    # coin P&L: change of value measured in coin
    coin = np.asarray(r.pnl_coin)
    assert coin[4] == pytest.approx(0.0, abs=1e-12)  # coins held are worth the same coins


def test_options_match_the_pricer(engine):
    sh = Shock(spot=0.08, vol=0.12, skew=-0.2, term=0.05, horizon=2 / 365,
               scale={"xi": 1.5})
    r = engine.revalue(sh)
    m1, mk1 = apply_shock(MODEL, MARKET, sh)
    assert float(m1.xi) == pytest.approx(0.9 * 1.5)
    assert np.sqrt(float(m1.v0)) == pytest.approx(0.6 + 0.17)
    assert np.sqrt(float(m1.theta)) == pytest.approx(np.sqrt(0.30) + 0.12)
    assert float(m1.rho) == pytest.approx(-0.6)
    h = 2 / 365
    for i, (k, t, call, q) in enumerate([(65_000.0, 30 / 365, True, -10.0),
                                         (55_000.0, 14 / 365, False, 5.0),
                                         (60_000.0, 90 / 365, False, 3.0)]):
        want = q * float(qmr.fourier_price(m1, mk1, k, t - h, call))
        base = q * float(qmr.fourier_price(MODEL, MARKET, k, t, call))
        assert float(r.value[i]) == pytest.approx(want, rel=1e-9, abs=1e-6)
        assert float(r.pnl_usd[i]) == pytest.approx(want - base, rel=1e-8, abs=1e-5)


def test_expiring_options_settle_at_the_shocked_spot(engine):
    r = engine.revalue(Shock(spot=-0.2, horizon=20 / 365))  # the 14-day put has expired
    assert float(r.value[1]) == pytest.approx(5.0 * (55_000.0 - 48_000.0), rel=1e-14)


def test_liquidity_cost_formula(engine):
    sh = Shock(spot=-0.1, vol=0.05, spread=3.0, impact_bps=20.0, exit_fraction=0.5)
    r = engine.revalue(sh)
    eps = 1e-5
    up = np.asarray(engine.revalue(sh._replace(vol=0.05 + eps, exit_fraction=0.0)).value)
    dn = np.asarray(engine.revalue(sh._replace(vol=0.05 - eps, exit_fraction=0.0)).value)
    vega = (up - dn) / (2 * eps)
    s1 = SPOT * 0.9
    notional = np.abs(engine.qty) * s1
    half = np.where(engine.is_option,
                    np.maximum(0.005 * np.abs(vega), 0.00025 * notional),
                    engine.half_spread_bps * 1e-4 * notional)
    want = 0.5 * (3.0 * half + 20e-4 * notional)
    np.testing.assert_allclose(np.asarray(r.cost), want, rtol=1e-6)
    assert float(r.pnl_usd.sum()) == pytest.approx(
        float(engine.revalue(sh._replace(exit_fraction=0.0)).pnl_usd.sum())
        - float(r.cost.sum()), rel=1e-9)


def test_grid_revaluation_matches_direct_pricing(engine):
    sh = Shock(vol=0.05, horizon=7 / 365)
    key = jax.random.key(3)
    d = engine.paths(sh, key, 1024, 7, revalue="direct")
    g = engine.paths(sh, key, 1024, 7, revalue="grid")
    np.testing.assert_array_equal(np.asarray(d.spot), np.asarray(g.spot))
    err = np.abs(np.asarray(d.pnl_usd) - np.asarray(g.pnl_usd)).max(axis=0)
    gross = np.abs(engine.qty) * SPOT
    assert np.all(err <= 2e-5 * gross), err / gross


def test_horizon_paths_are_risk_neutral_martingales(engine):
    """The spot position's mean P&L over paths equals the forward drift (4 standard errors)."""
    h = 7 / 365
    p = engine.paths(Shock(horizon=h), jax.random.key(11), 4096, 7)
    s_t = np.asarray(p.spot)
    want = SPOT * np.exp((0.04 - 0.01) * h)
    se = s_t.std(ddof=1) / np.sqrt(s_t.size)
    assert abs(s_t.mean() - want) <= 4 * se
    spot_pnl = np.asarray(p.pnl_usd)[:, 4]
    np.testing.assert_allclose(spot_pnl, 2.5 * (s_t - SPOT), rtol=1e-12, atol=1e-8)


def test_path_revaluation_refuses_path_dependent_positions():
    book = Book("mc", "BTC", (Position.european(60_000.0, 0.1, True, 1.0),
                              Position.digital(60_000.0, 0.1, True, 1.0, cash=1000.0)))
    eng = StressEngine(book, MODEL, MARKET, key=jax.random.key(0), mc_paths=2048)
    with pytest.raises(ValueError, match="path-dependent"):
        eng.paths(Shock(horizon=1 / 365), jax.random.key(0), 512, 1)
    with pytest.raises(ValueError, match="skew shock needs a stochastic-volatility"):
        StressEngine(book.with_positions(book.positions[:1]), qmr.GBM(0.6), MARKET).revalue(
            Shock(skew=-0.1))


# ------------------------------------------------------------------------------------------
# sweeps

DESIGN = SweepDesign.grid(base=Shock(horizon=3 / 365), spot=[-0.2, 0.0, 0.1],
                          vol=[0.0, 0.15], **{"scale.xi": [1.0, 2.0]})


def _sweep(engine, **kw):
    kw = {"key": jax.random.key(5), "n_paths": 1024, "steps": 3, "levels": LEVELS,
          "progress": None, **kw}
    return sweep(engine, DESIGN, **kw)


@pytest.fixture(scope="module")
def full(engine, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "run"
    return _sweep(engine, out=out, chunk=4), out


def test_sweep_rows_match_single_scenario_revaluation(engine, full):
    res, _ = full
    t = res.table
    assert list(t.index) == list(range(len(DESIGN)))
    es_cols = [c for c in t.columns if c.startswith("es_contrib.")]
    np.testing.assert_allclose(t[es_cols].sum(axis=1), t["es99"], rtol=1e-10)
    assert np.all(t["es99"] >= t["var99"]) and np.all(t["es95"] >= t["var95"])
    # scenario 7 alone, through the eager engine with the same key (common random numbers)
    i = 7
    sh = DESIGN.shocks(i, i + 1)
    one = jax.tree_util.tree_map(lambda x: x[0], sh)
    p = engine.paths(one, jax.random.key(5), 1024, 3, revalue="grid")
    total = np.asarray(p.pnl_usd).sum(axis=1)
    assert t.loc[i, "mean"] == pytest.approx(total.mean(), rel=1e-9)
    assert t.loc[i, "worst"] == pytest.approx(total.min(), rel=1e-9)
    est = qmr.stress.var_es(total, LEVELS)
    assert t.loc[i, "es99"] == pytest.approx(float(est.es[1]), rel=1e-9)
    # the table is what was written
    back = load_sweep(full[1]).table
    pd.testing.assert_frame_equal(back, t)


def test_any_slice_rerun_alone_matches(engine, full):
    res, _ = full
    # the chunk planned from a memory budget of 3.5 scenarios (XLA's count of the compiled
    # chunk, cached from the full run) stays within it
    per = res.manifest["memory"]["bytes_per_scenario"]
    assert per > 8 * 1024 * engine.n_positions  # at least the per-path P&L
    budget = int(3.5 * per)
    part = _sweep(engine, start=5, stop=11, memory_budget=budget)
    chunk = part.manifest["chunk"]
    assert 1 <= chunk <= 3 and chunk * part.manifest["memory"]["bytes_per_scenario"] <= budget
    # other chunk sizes: the same numbers up to the last bits of vectorised arithmetic
    num = lambda t: t.drop(columns=sweep_mod.NOTE_COLUMN).to_numpy()  # noqa: E731
    np.testing.assert_allclose(num(part.table), num(res.table.loc[5:10]), rtol=1e-13,
                               atol=1e-9)
    other = _sweep(engine, start=5, stop=11, chunk=chunk, crn=False)
    assert not np.allclose(other.table["mean"], part.table["mean"])  # independent draws


def test_resume_after_a_kill(engine, full, tmp_path, monkeypatch):
    ref, _ = full
    out = tmp_path / "killed"
    real = sweep_mod._write_atomic
    calls = {"n": 0}

    def dying(path, write):
        if path.name.startswith("part-"):
            calls["n"] += 1
            if calls["n"] == 3:  # killed while writing the third part: a temporary file stays
                (path.parent / f".{path.name}.999.tmp").write_bytes(b"partial")
                raise KeyboardInterrupt("killed")
        real(path, write)

    monkeypatch.setattr(sweep_mod, "_write_atomic", dying)
    with pytest.raises(KeyboardInterrupt):
        _sweep(engine, out=out, chunk=4)
    monkeypatch.setattr(sweep_mod, "_write_atomic", real)
    parts = sorted(p.name for p in (out / "parts").iterdir())
    assert len([p for p in parts if p.startswith("part-")]) == 2 and not (
        out / "results.parquet").exists()
    again = _sweep(engine, out=out, chunk=4)
    assert again.resumed_scenarios == 8 and again.computed_scenarios == len(DESIGN) - 8
    pd.testing.assert_frame_equal(again.table, ref.table)
    assert not [p for p in (out / "parts").iterdir() if p.name.endswith(".tmp")]
    # a different sweep in the same folder is refused
    with pytest.raises(ValueError, match="different sweep"):
        _sweep(engine, out=out, chunk=4, n_paths=2048)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_scenarios"] == len(DESIGN) and manifest["crn"] is True


def test_instant_sweep_matches_engine(engine):
    d = SweepDesign.random(20, {"spot": (-0.5, 0.5), "vol": (-0.2, 0.4)}, seed=3)
    res = sweep(engine, d, key=jax.random.key(0), n_paths=0, progress=None)
    for i in (0, 13):
        sh = jax.tree_util.tree_map(lambda x: x[0], d.shocks(i, i + 1))
        r = engine.revalue(sh)
        assert res.table.loc[i, "pnl_usd"] == pytest.approx(float(r.pnl_usd.sum()), rel=1e-10)


def test_sweep_input_errors(engine):
    with pytest.raises(ValueError, match="unknown sweep dimension"):
        SweepDesign.grid(sppot=[0.1])
    with pytest.raises(ValueError, match="spot must be a relative move > -1"):
        sweep(engine, SweepDesign.grid(spot=[-1.5, 0.0]), key=jax.random.key(0), n_paths=0,
              progress=None)
    with pytest.raises(ValueError, match="horizon 0"):
        sweep(engine, SweepDesign.grid(spot=[0.1]), key=jax.random.key(0), n_paths=1024,
              levels=LEVELS, progress=None)
    with pytest.raises(ValueError, match="too few"):
        sweep(engine, DESIGN, key=jax.random.key(0), n_paths=1024, progress=None)
    with pytest.raises(ValueError, match="not a parameter of Heston"):
        sweep(engine, SweepDesign.grid(**{"scale.lam": [2.0]}), key=jax.random.key(0),
              n_paths=0, progress=None)


def test_qmr_stress_and_sweep_commands(tmp_path, capsys):
    from pathlib import Path

    from qmr_jax.cli import main

    root = Path(__file__).resolve().parents[1]
    book = root / "scenarios" / "books" / "btc_stress.toml"
    model = root / "scenarios" / "models" / "btc_heston.toml"
    rc = main(["stress", "--book", str(book), "crash-20-vol-spike", "jump-regime", "--model",
               str(model), "--out", str(tmp_path / "st")])
    out = capsys.readouterr().out
    assert rc == 0  # jump-regime scales lam: not a Heston parameter, so not applicable
    assert "crash-20-vol-spike" in out and "jump-regime.toml" in out and "not a parameter" in out
    assert (tmp_path / "st" / "report.html").exists()
    table = pd.read_csv(tmp_path / "st" / "stress.csv").set_index("name")
    assert table.loc["crash-20-vol-spike", "status"] == "ok"
    assert table.loc["jump-regime", "status"].startswith("n/a: ")
    # --json: stdout is one JSON document holding the same rows; the messages go to stderr
    rc = main(["stress", "--book", str(book), "crash-20-vol-spike", "--model", str(model),
               "--out", str(tmp_path / "st2"), "--json", "--levels", "95,99"])
    cap = capsys.readouterr()
    doc = json.loads(cap.out)
    assert rc == 0 and "crash-20-vol-spike" in cap.err and doc["levels"] == [0.95, 0.99]
    (row,) = doc["scenarios"]
    assert row["name"] == "crash-20-vol-spike"
    assert row["pnl_usd"] == pytest.approx(table.loc["crash-20-vol-spike", "pnl_usd"], rel=1e-12)
    rc = main(["sweep", "--book", str(book), "--model", str(model), "--dim", "spot=-0.2:0.2:3",
               "--dim", "vol=0,0.1", "--paths", "0", "--out", str(tmp_path / "sw"), "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    res = load_sweep(tmp_path / "sw")
    assert len(res.table) == 6 and (tmp_path / "sw" / "report.html").exists()
    assert doc["scenarios"] == 6 and len(doc["worst"]) == 5
    assert doc["worst"][0]["pnl_usd"] == pytest.approx(res.table["pnl_usd"].min(), rel=1e-12)
    assert main(["sweep", "--book", str(book), "--model", str(model), "--dim", "spot=a,b"]) == 2


def test_replays_and_not_applicable_scenarios_through_stress(engine, data_dir):
    from qmr_jax.stress import load_scenarios
    from qmr_jax.stress.run import replay_shocks, stress

    lib = qmr.stress.default_scenario_dir()
    scen = load_scenarios([lib / "replay-ftx-2022-11.toml", lib / "jump-regime.toml"])
    run = stress(engine.book, engine.model, engine.market, scen, key=jax.random.key(0),
                 engine=engine, data_dir=data_dir)
    assert run.table.loc["jump-regime", "status"].startswith("n/a: ")
    assert run.table.loc["replay-ftx-2022-11", "status"] == "ok"
    # the padded, vmapped replay equals revaluing each close alone
    path, shocks = replay_shocks(scen[0], "BTC", data_dir=data_dir)
    rep = run.replays["replay-ftx-2022-11"]
    assert len(rep) == len(path) and len(path) not in (16, 32, 64)  # padding was needed
    for i in (0, len(path) - 1):
        one = jax.tree_util.tree_map(lambda x, i=i: np.asarray(x)[i], shocks)
        ref = float(np.sum(engine.revalue(one).pnl_usd))
        assert rep["pnl_usd"].iloc[i] == pytest.approx(ref, rel=1e-12, abs=1e-6)
    assert run.table.loc["replay-ftx-2022-11", "pnl_usd"] == pytest.approx(
        rep["pnl_usd"].iloc[-1], rel=1e-15)
    # the worst P&L is over the closes after the anchor (day 0: the unshocked book)
    later = rep["pnl_usd"].iloc[1:]
    assert run.table.loc["replay-ftx-2022-11", "worst"] == later.min()
    assert run.table.loc["replay-ftx-2022-11", "worst_at"] == str(later.idxmin().date())


def test_path_scenarios_carry_the_historical_comparison(engine, data_dir):
    from qmr_jax.data.spot import load_spot_history, log_returns
    from qmr_jax.stress import load_scenarios
    from qmr_jax.stress.run import HISTORICAL_WINDOW_DAYS, stress

    s = load_scenarios([qmr.stress.default_scenario_dir() / "crash-drift-1d.toml"])[0]
    run = stress(engine.book, engine.model, engine.market, [s], key=jax.random.key(0),
                 engine=engine, data_dir=data_dir, n_paths=2000, levels=(0.95, 0.99))
    row = run.table.loc[s.name]
    r = log_returns(load_spot_history("BTC", data_dir=data_dir))
    if HISTORICAL_WINDOW_DAYS is not None:
        r = r.iloc[-HISTORICAL_WINDOW_DAYS:]
    assert row["status"] == "ok" and row["hist_n"] == len(r) > 2000
    # the same daily moves applied to the book: the batch against single revaluations at
    # the three worst moves, then VaR/ES of the whole batch against the table
    assert round(365 * s.horizon) == 1
    moves = np.expm1(r.to_numpy())
    batch = np.asarray(engine.revalue_many(Shock(spot=moves, horizon=np.full(len(r), 1 / 365))
                                           ).pnl_usd).sum(axis=1)
    for i in np.argsort(moves)[:3]:
        one = float(np.sum(engine.revalue(Shock(spot=float(moves[i]), horizon=1 / 365)).pnl_usd))
        assert batch[i] == pytest.approx(one, rel=1e-12, abs=1e-6)
    est = qmr.stress.var_es(batch, (0.95, 0.99))
    assert row["hist_es99"] == pytest.approx(float(est.es[1]), rel=1e-12)
    assert row["hist_var95"] == pytest.approx(float(est.var[0]), rel=1e-12)
    assert row["hist_es99_se"] == pytest.approx(float(est.es_stderr[1]), rel=1e-12)


# ------------------------------------------------------------------------------------------
# no wrong number passes silently: one shock domain, bounded shocks, trusted parts

from qmr_jax.stress.scenarios import Scenario  # noqa: E402
from qmr_jax.stress.shocks import SHOCK_DOMAIN, domain_notes, shock_model  # noqa: E402


@pytest.fixture(scope="module")
def small():
    book = Book("small", "BTC", (
        Position.european(65_000.0, 30 / 365, True, -10.0, settlement="inverse"),
        Position.european(55_000.0, 14 / 365, False, 5.0),
        Position.spot(1.0),
    ))
    return StressEngine(book, MODEL, MARKET)


KAPPA_SHOCKS = [Shock(scale={"kappa": 0.0}), Shock(shift={"kappa": -100.0}),
                Shock(scale={"kappa": 0.0}, horizon=1 / 365)]


def test_the_same_shock_gives_the_same_finite_number_everywhere(small):
    from qmr_jax.stress.run import stress

    floor = SHOCK_DOMAIN["kappa"][0]
    # revalue: clamped to the floor of the domain, finite, and noted
    direct = []
    for sh in KAPPA_SHOCKS:
        assert float(shock_model(small.model, sh).kappa) == floor
        assert "kappa" in str(domain_notes(small.model, sh))
        r = small.revalue(sh)
        assert np.all(np.isfinite(np.asarray(r.pnl_usd)))
        at_floor = small.revalue(sh._replace(scale={}, shift={"kappa": floor - MODEL.kappa}))
        np.testing.assert_allclose(np.asarray(r.pnl_usd), np.asarray(at_floor.pnl_usd),
                                   rtol=1e-12, atol=1e-9)
        direct.append(float(np.sum(r.pnl_usd)))
    # stress: status ok, the same P&L, the clamping in the notes
    scen = [Scenario(name=f"k{i}", shock=sh) for i, sh in enumerate(KAPPA_SHOCKS)]
    run = stress(small.book, small.model, small.market, scen, key=jax.random.key(0),
                 engine=small)
    assert list(run.table["status"]) == ["ok"] * 3
    np.testing.assert_allclose(run.table["pnl_usd"], direct, rtol=1e-12)
    assert all("kappa 0 clamped to 0.001" in n or "kappa -98 clamped to 0.001" in n
               for n in run.table["notes"])
    # sweep: the same numbers, and the clamped column says so
    design = SweepDesign({"scale.kappa": np.array([0.0, 1.0, 0.0]),
                          "shift.kappa": np.array([0.0, -100.0, 0.0]),
                          "horizon": np.array([0.0, 0.0, 1 / 365])})
    res = sweep(small, design, key=jax.random.key(0), n_paths=0, progress=None)
    np.testing.assert_allclose(res.table["pnl_usd"], direct, rtol=1e-12)
    assert all(n.startswith("kappa ") and "clamped to 0.001" in n
               for n in res.table[sweep_mod.NOTE_COLUMN])
    # an unclamped scenario carries no note
    plain = sweep(small, SweepDesign.grid(spot=[0.0, -0.1]), key=jax.random.key(0), n_paths=0,
                  progress=None)
    assert list(plain.table[sweep_mod.NOTE_COLUMN]) == ["", ""]


def test_a_zero_shock_never_moves_a_model_outside_the_shock_domain():
    # a base model beyond the domain (rho -0.995, kappa 1e-4) stays where it is
    base = qmr.Heston(v0=0.36, kappa=1e-4, theta=0.30, xi=0.9, rho=-0.995)
    m = shock_model(base, Shock())
    assert (float(m.kappa), float(m.rho)) == (1e-4, -0.995)
    assert str(domain_notes(base, Shock())) == ""
    # but a shock cannot push it further out
    m = shock_model(base, Shock(skew=-0.5, scale={"kappa": 0.5}))
    assert (float(m.kappa), float(m.rho)) == (1e-4, -0.995)


def test_a_row_that_is_not_finite_or_absurd_is_never_ok(small, monkeypatch):
    from qmr_jax.stress.run import stress

    scen = [Scenario(name="crash", shock=Shock(spot=-0.3)), Scenario(name="calm")]
    real = small.revalue

    def nan_for_crash(shock, *, where="shock"):
        r = real(shock, where=where)
        return r._replace(pnl_usd=r.pnl_usd * np.nan) if float(shock.spot) < 0 else r

    monkeypatch.setattr(small, "revalue", nan_for_crash)
    run = stress(small.book, small.model, small.market, scen, key=jax.random.key(0),
                 engine=small)
    assert run.table.loc["crash", "status"].startswith("error: ")
    assert "not finite" in run.table.loc["crash", "status"]
    assert not np.isfinite(run.table.loc["crash", "pnl_usd"])  # left out, not reported
    assert "crash" not in run.positions.index
    assert run.table.loc["calm", "status"] == "ok"
    with pytest.raises(FloatingPointError, match="not finite"):
        stress(small.book, small.model, small.market, scen[:1], key=jax.random.key(0),
               engine=small, on_error="raise")
    monkeypatch.undo()
    # absurd: beyond the engine's limit (lowered here to a few USD)
    monkeypatch.setattr(small, "pnl_limit", 5.0)
    run = stress(small.book, small.model, small.market, scen, key=jax.random.key(0),
                 engine=small)
    assert "absurd" in run.table.loc["crash", "status"]
    assert run.table.loc["calm", "status"] == "ok"  # zero P&L
    with pytest.raises(sweep_mod.NonFiniteResult, match="sweep scenario 1 .spot=-0.3.*absurd"):
        sweep(small, SweepDesign.grid(spot=[0.0, -0.3]), key=jax.random.key(0), n_paths=0,
              progress=None)


def test_overflowing_shocks_are_refused_before_revaluation(small):
    with pytest.raises(ValueError, match=r"drift x horizon .* got 19.9 x 5 years = 99.5"):
        small.revalue(Shock(drift=19.9, horizon=5.0))
    design = SweepDesign.grid(base=Shock(horizon=5.0), drift=[0.5, 19.9])
    with pytest.raises(ValueError, match=r"drift x horizon.*\(scenario \(1,\)\)"):
        sweep_mod.check_sweep(design, MODEL, n_paths=0)
    for sh, field in [(Shock(spot=1e6), "spot"), (Shock(vol=1e200), "vol"),
                      (Shock(impact_bps=1e9, exit_fraction=1.0), "impact_bps")]:
        with pytest.raises(ValueError, match=f"shock: {field} must be"):
            small.revalue(sh)
    with pytest.raises(ValueError, match="shocked market is out of range.*div"):
        small.revalue(Shock(rate=0.9, basis=-4.9))


def test_a_dimension_given_twice_is_refused():
    with pytest.raises(ValueError, match="--dim 'spot' is given twice .dimensions 1 and 3"):
        sweep_mod.design_from_dims([("spot", [0.1]), ("vol", [0.0]), ("spot", [0.2])])
    d = sweep_mod.design_from_dims([("spot", [0.1, 0.2]), ("vol", [0.0])])
    assert d.dims == ["spot", "vol"] and len(d) == 2


def test_resume_recomputes_parts_that_do_not_match_the_manifest(small, tmp_path):
    design = SweepDesign.grid(spot=[-0.2, -0.1, 0.0, 0.1, 0.2], vol=[0.0, 0.1])
    kw = dict(key=jax.random.key(0), n_paths=0, chunk=4, progress=None)
    out = tmp_path / "run"
    ref = sweep(small, design, out=out, **kw)
    manifest = json.loads((out / "manifest.json").read_text())
    parts = sorted((out / "parts").glob("part-*.parquet"))
    assert sorted(manifest["parts"]) == [p.name for p in parts] and len(parts) == 3
    assert all(manifest["parts"][p.name] == sweep_mod._sha256(p) for p in parts)
    # edit one number of the first part, empty the second, truncate the third
    df = pd.read_parquet(parts[0])
    df.loc[1, "pnl_usd"] = 123.0
    df.to_parquet(parts[0], index=False)
    df.iloc[:0].to_parquet(parts[1], index=False)
    parts[2].write_bytes(b"")
    (out / "results.parquet").write_bytes(b"PAR1")
    with pytest.raises(ValueError, match="SHA-256 differs"):
        load_sweep(out)
    again = sweep(small, design, out=out, **kw)
    assert len(again.recomputed) == 3 and all("SHA-256 differs" in r for r in again.recomputed)
    assert again.resumed_scenarios == 0 and again.computed_scenarios == len(design)
    pd.testing.assert_frame_equal(again.table, ref.table)
    pd.testing.assert_frame_equal(load_sweep(out).table, ref.table)
    # a part without a recorded checksum (written just before a kill) is computed again
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["parts"].pop(parts[1].name)
    (out / "manifest.json").write_text(json.dumps(manifest))
    third = sweep(small, design, out=out, **kw)
    assert [r.split(": ", 1)[1] for r in third.recomputed] == [
        "no checksum in the manifest (written before a kill, or not by this sweep)"]
    assert third.resumed_scenarios == len(design) - 4
    pd.testing.assert_frame_equal(third.table, ref.table)


# ------------------------------------------------------------------------------------------
# progress and the worst P&L of a replay


def test_stress_and_sweep_report_progress(small, tmp_path):
    import io

    from qmr_jax.stress.run import stress

    scen = [Scenario(name="crash", shock=Shock(spot=-0.3)), Scenario(name="calm")]
    out, calls = io.StringIO(), []
    stress(small.book, small.model, small.market, scen, key=jax.random.key(0), engine=small,
           progress=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "stress: 2 scenarios to run"
    assert lines[1].startswith("stress [1/2] crash: ok in ") and "ETA" in lines[1]
    assert lines[2].startswith("stress [2/2] calm: ok in ") and lines[2].endswith("ETA 0.0 s)")
    # a function still gets (i, n, name) before each scenario
    stress(small.book, small.model, small.market, scen, key=jax.random.key(0), engine=small,
           progress=lambda i, n, name: calls.append((i, n, name)))
    assert calls == [(0, 2, "crash"), (1, 2, "calm")]
    # sweeps: counts of scenarios; a resumed run shows what it found done
    design = SweepDesign.grid(spot=[-0.2, -0.1, 0.0, 0.1])
    kw = dict(key=jax.random.key(0), n_paths=0, chunk=2, out=tmp_path / "sw")
    out = io.StringIO()
    sweep(small, design, progress=out, **kw)
    lines = out.getvalue().splitlines()
    assert "sweep: 4 scenarios to run" in lines
    assert lines[-1].startswith("sweep: 4/4 scenarios (100%), ") and "ETA 0.0 s" in lines[-1]
    out = io.StringIO()
    again = sweep(small, design, progress=out, **kw)
    assert again.resumed_scenarios == 4
    lines = out.getvalue().splitlines()
    assert lines[0] == "sweep: 0 of 4 scenarios to run (4 resumed)"
    assert lines[-1].startswith("sweep: 4/4 scenarios (100%), 4 resumed, ")


def test_the_worst_of_a_replay_leaves_out_its_anchor(monkeypatch):
    from qmr_jax.stress import run as run_mod
    from qmr_jax.stress.shocks import stack_shocks

    assert run_mod.replay_worst([0.0, 5.0, 3.0, 7.0]) == 2  # not the anchor's 0
    assert run_mod.replay_worst([0.0, -1.0, 2.0]) == 1
    assert run_mod.replay_worst([0.0]) == 0
    # a long-spot book gains on every close of a rising path: the anchor (P&L 0, today's
    # book) is lower than all of them, and must not be reported as the worst
    eng = StressEngine(Book("long", "BTC", (Position.spot(2.0),)), MODEL, MARKET)
    when = pd.date_range("2024-03-01", periods=4, freq="D", tz="UTC")
    moves = np.array([0.0, 0.03, 0.01, 0.05])
    path = pd.DataFrame({"t_years": np.arange(4) / 365.0, "cum_return": moves}, index=when)
    path.attrs.update(start="2024-03-01", end="2024-03-04", vol_end=0.0)
    shocks = stack_shocks([Shock(spot=float(m), horizon=float(t))
                           for m, t in zip(moves, path["t_years"], strict=True)])
    monkeypatch.setattr(run_mod, "replay_shocks", lambda s, cur, data_dir=None: (path, shocks))
    scen = Scenario(name="rally", kind="historical", historical={"start": "2024-03-01"})
    run = run_mod.stress(eng.book, eng.model, eng.market, [scen], key=jax.random.key(0),
                         engine=eng)
    row = run.table.loc["rally"]
    assert row["status"] == "ok"
    assert row["worst"] == pytest.approx(2.0 * SPOT * 0.01, rel=1e-9)  # the +1% close
    assert row["worst_at"] == "2024-03-03"
    assert row["pnl_usd"] == pytest.approx(2.0 * SPOT * 0.05, rel=1e-9)
