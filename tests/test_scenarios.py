"""Scenario files and shocks: the shipped library, the malformed corpus, the parser's units and
the identities of ``apply_shock``.

* ``scenarios/library/*.toml``: every file loads, names are unique and equal to the file
  stems, every shock passes ``check_shock`` for the model it is written for, and the historical
  windows (and the closes quoted in the files) are checked against the shared spot data.
* ``tests/data/bad/scenarios/*.toml``: each file is malformed in one way; its leading
  ``# expect: ...`` lines are substrings of the ``ScenarioError`` message, which must also name
  the file.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from qmr_jax.models import GBM, Bates, Heston, Market, Merton
from qmr_jax.stress.scenarios import (
    DEFAULT_PATHS,
    KINDS,
    Scenario,
    ScenarioError,
    default_scenario_dir,
    load_scenario,
    load_scenarios,
    parse_duration,
    parse_scenario,
)
from qmr_jax.stress.shocks import (
    SHOCK_DOMAIN,
    Shock,
    apply_shock,
    check_shock,
    index_shock,
    shock_size,
    stack_shocks,
)

jax.config.update("jax_enable_x64", True)

BAD_DIR = Path(__file__).resolve().parent / "data" / "bad" / "scenarios"
BAD_FILES = sorted(BAD_DIR.glob("*.toml"))
LIBRARY_FILES = sorted(default_scenario_dir().glob("*.toml"))

# the demo's BTC-like parameters (qmr_jax.demo.BTC_MODELS)
HESTON = Heston(v0=0.36, kappa=2.0, theta=0.36, xi=1.0, rho=-0.25)
BATES = Bates(v0=0.30, kappa=2.0, theta=0.30, xi=0.9, rho=-0.20, lam=3.0, mu_j=-0.04,
              sigma_j=0.14)
GBM_M = GBM(sigma=0.60)
MERTON = Merton(sigma=0.52, lam=4.0, mu_j=-0.04, sigma_j=0.12)
MARKET = Market(spot=60000.0, rate=0.04, div=0.01)
JUMP_FIELDS = {"lam", "mu_j", "sigma_j"}
DAY = 1.0 / 365.0

HEADER = {"name": "t", "kind": "instant", "description": "d", "source": "s"}


def _doc(kind="instant", **tables):
    return {"scenario": dict(HEADER, kind=kind), **tables}


def _model_for(s: Scenario):
    """The demo model a library scenario is written for: Bates when it moves jump fields."""
    fields = set(s.shock.scale) | set(s.shock.shift)
    return BATES if fields & JUMP_FIELDS else HESTON


def _f(x) -> float:
    return float(np.asarray(x))


# ------------------------------------------------------------------------------------------
# the shipped library


@pytest.fixture(scope="module")
def library() -> list[Scenario]:
    return load_scenarios(default_scenario_dir())


def test_library_loads_with_unique_names_equal_to_stems(library):
    assert len(library) >= 14
    names = [s.name for s in library]
    assert len(set(names)) == len(names)
    for s in library:
        assert s.path is not None and s.name == s.path.stem
        assert s.path.parent == default_scenario_dir()
    assert {p.stem for p in LIBRARY_FILES} == set(names)


def test_library_headers_are_documented(library):
    for s in library:
        assert s.description.strip() and s.source.strip() and s.dates.strip(), s.name
        assert s.tags and all(isinstance(t, str) and t for t in s.tags), s.name
        text = s.path.read_text(encoding="utf-8")
        assert text.startswith(f"# {s.name}:"), f"{s.name}: the comment block comes first"
        comment = [ln for ln in text.splitlines() if ln.startswith("#")]
        assert len(comment) >= 4, f"{s.name}: explain the numbers in the comment block"


def test_library_readme_lists_every_scenario(library):
    readme = (default_scenario_dir() / "README.md").read_text(encoding="utf-8")
    for s in library:
        assert f"| `{s.name}` |" in readme, f"{s.name} is missing from the README table"


def test_library_has_every_kind_and_the_liquidity_regimes(library):
    by_name = {s.name: s for s in library}
    assert {s.kind for s in library} == set(KINDS)
    assert sum(s.kind == "historical" for s in library) >= 4
    assert sum(s.kind == "path" for s in library) >= 4
    calm = by_name["liquidity-calm-exit"].shock
    assert (_f(calm.spread), _f(calm.impact_bps), _f(calm.exit_fraction)) == (1.0, 0.0, 1.0)
    assert _f(calm.spot) == 0.0 and _f(calm.vol) == 0.0
    weekend = by_name["liquidity-weekend-thin"].shock
    assert (_f(weekend.spread), _f(weekend.impact_bps)) == (3.0, 10.0)
    crisis = by_name["liquidity-crisis-crash"].shock
    assert (_f(crisis.spread), _f(crisis.impact_bps)) == (8.0, 50.0)
    assert _f(crisis.spot) < 0 and _f(crisis.vol) > 0
    # only the liquidity regimes close the book out
    exits = {s.name for s in library if _f(s.shock.exit_fraction) > 0}
    assert exits == {"liquidity-calm-exit", "liquidity-weekend-thin", "liquidity-crisis-crash"}


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=[p.stem for p in LIBRARY_FILES])
def test_library_shock_fits_its_model(path):
    s = load_scenario(path)
    check_shock(s.shock, _model_for(s), where=s.name)
    if s.kind == "path":
        assert s.horizon > 0 and s.n_steps() >= 1 and s.n_paths >= 1000
    elif s.kind == "historical":
        h = s.historical
        assert h["start"] <= h["end"] and h.get("currency") in ("BTC", "ETH")
        assert 0 <= h["vol_beta"] <= 1
    else:
        assert s.horizon == 0.0 and s.historical is None


def test_library_numbers_in_the_comments():
    """The arithmetic quoted in the path scenarios' comments."""
    crash = load_scenario(default_scenario_dir() / "crash-drift-1d.toml").shock
    total = (1 + _f(crash.spot)) * math.exp(_f(crash.drift) * _f(crash.horizon))
    assert total == pytest.approx(0.9208, abs=1e-4)
    bleed = load_scenario(default_scenario_dir() / "slow-bleed-14d.toml").shock
    assert math.exp(_f(bleed.drift) * _f(bleed.horizon)) == pytest.approx(0.8913, abs=1e-4)
    assert _f(bleed.horizon) == pytest.approx(14 * DAY)


# closes quoted in the replay files: (currency, close before start, close on end) in the
# Binance daily data; the anchor of a window "start..end" is the close of the bar start - 1 day
REPLAY_CLOSES = {
    "replay-covid-2020-03": ("BTC", 7934.52, 5578.60),
    "replay-may-2021": ("BTC", 42849.78, 36690.09),
    "replay-may-2021-eth": ("ETH", 3375.07, 2438.92),
    "replay-luna-2022-05": ("BTC", 36013.77, 29287.05),
    "replay-3ac-2022-06": ("BTC", 26574.53, 18970.79),
    "replay-ftx-2022-11": ("BTC", 20591.13, 15922.81),
    "replay-yen-carry-2024-08": ("BTC", 65354.02, 54018.81),
    "replay-liquidation-2025-10": ("BTC", 121662.4, 112774.5),
}


def test_library_replays_match_the_spot_data(library, data_dir):
    replays = [s for s in library if s.kind == "historical"]
    assert {s.name for s in replays} == set(REPLAY_CLOSES)
    closes = {}
    for s in replays:
        cur, anchor, last = REPLAY_CLOSES[s.name]
        assert s.historical["currency"] == cur
        if cur not in closes:
            f = data_dir / "spot" / "binance" / f"{cur}USDT_1d.csv"
            if not f.is_file():
                pytest.skip(f"{f} not found")
            closes[cur] = pd.read_csv(f, index_col="timestamp", parse_dates=True)["close"]
        c = closes[cur]
        start, end = pd.Timestamp(s.historical["start"]), pd.Timestamp(s.historical["end"])
        window = c[start:end]
        assert len(window) == (end - start).days + 1, s.name
        assert c[start - pd.Timedelta(days=1)] == pytest.approx(anchor, rel=1e-9), s.name
        assert c[end] == pytest.approx(last, rel=1e-9), s.name


def test_library_episode_names_match_the_spot_module(library):
    spot = pytest.importorskip("qmr_jax.data.spot")
    episodes = getattr(spot, "EPISODES", None)
    if episodes is None:
        pytest.skip("qmr_jax.data.spot has no EPISODES")
    for s in library:
        name = (s.historical or {}).get("episode")
        if name is None:
            continue
        assert name in episodes, f"{s.name}: unknown episode {name!r}"
        ep = episodes[name]
        assert (ep.start, ep.end) == (s.historical["start"], s.historical["end"]), s.name


# ------------------------------------------------------------------------------------------
# the malformed corpus


def _expectations(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    assert lines and lines[0].startswith("# expect: "), f"{path.name}: first line '# expect: '"
    out = []
    for ln in lines:
        if not ln.startswith("# expect: "):
            break
        out.append(ln[len("# expect: "):].strip())
    assert all(out)
    return out


def test_bad_corpus_is_large_and_named():
    assert len(BAD_FILES) >= 20


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.stem for p in BAD_FILES])
def test_bad_scenario_raises_with_key_and_file(path):
    expected = _expectations(path)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    msg = str(info.value)
    for sub in expected:
        assert sub in msg, f"{path.name}: {sub!r} not in {msg!r}"
    assert str(path) in msg and path.name in msg


def test_bad_corpus_in_a_folder_fails_on_the_first_file():
    with pytest.raises(ScenarioError, match=BAD_FILES[0].name):
        load_scenarios(BAD_DIR)


# ------------------------------------------------------------------------------------------
# parser units


@pytest.mark.parametrize("text, years", [
    ("12h", 0.5 * DAY), ("7d", 7 * DAY), ("2w", 14 * DAY), ("1y", 1.0), ("0.5y", 0.5),
    (" 7D ", 7 * DAY), ("1.5d", 1.5 * DAY), ("0.25", 0.25), (0.25, 0.25), (3, 3.0), (0, 0.0),
])
def test_parse_duration(text, years):
    assert parse_duration(text, "here") == pytest.approx(years, rel=1e-15)
    assert isinstance(parse_duration(text, "here"), float)


@pytest.mark.parametrize("bad", ["7x", "d", "", "seven days", True, None, [7], {"d": 7}])
def test_parse_duration_rejects(bad):
    with pytest.raises(ScenarioError, match="here: expected years or a duration"):
        parse_duration(bad, "here")


def test_defaults_of_an_instant_scenario():
    s = parse_scenario(_doc())
    assert isinstance(s, Scenario)
    assert (s.name, s.kind, s.dates, s.tags, s.historical, s.path) == ("t", "instant", "", (),
                                                                       None, None)
    assert (s.n_paths, s.steps, s.seed) == (DEFAULT_PATHS, None, None)
    assert s.shock == Shock() and s.horizon == 0.0
    assert s.where == "scenario 't'"


def test_path_scenario_settings():
    s = parse_scenario(_doc("path", shock={"horizon": "7d"}))
    assert s.n_paths == DEFAULT_PATHS and s.steps is None and s.n_steps() == 7
    assert parse_scenario(_doc("path", shock={"horizon": "12h"})).n_steps() == 1
    assert parse_scenario(_doc("path", shock={"horizon": "36h"})).n_steps() == 2
    s = parse_scenario(_doc("path", shock={"horizon": "2w", "drift": -2},
                            paths={"n_paths": 5000, "steps": 56, "seed": 7}))
    assert (s.n_paths, s.steps, s.seed, s.n_steps()) == (5000, 56, 7, 56)
    assert s.horizon == pytest.approx(14 * DAY) and s.shock.drift == -2.0


def test_shock_tables_and_types():
    s = parse_scenario(_doc(shock={"spot": -0.5, "vol": 1, "skew": -0.1, "scale": {"lam": 5},
                                   "shift": {"mu_j": -0.1}}))
    assert s.shock.spot == -0.5 and s.shock.vol == 1.0 and isinstance(s.shock.vol, float)
    assert s.shock.scale == {"lam": 5.0} and s.shock.shift == {"mu_j": -0.1}
    assert isinstance(s.shock.scale["lam"], float)


def test_liquidity_table():
    s = parse_scenario(_doc(liquidity={"spread": 3, "impact_bps": 10}))
    assert (s.shock.spread, s.shock.impact_bps, s.shock.exit_fraction) == (3.0, 10.0, 1.0)
    s = parse_scenario(_doc(liquidity={"exit_fraction": 0.25}))
    assert (s.shock.spread, s.shock.impact_bps, s.shock.exit_fraction) == (1.0, 0.0, 0.25)
    s = parse_scenario(_doc(shock={"spot": -0.1}))
    assert s.shock.exit_fraction == 0.0 and s.shock.spread == 1.0


def test_historical_table():
    text = """
[scenario]
name = "h"
kind = "historical"
description = "d"
source = "s"

[shock]
vol = 0.05

[historical]
start = 2022-11-08
end = 2022-11-09
currency = "eth"
"""
    s = parse_scenario(tomllib.loads(text))
    assert s.historical == {"start": "2022-11-08", "end": "2022-11-09", "currency": "ETH",
                            "vol": "realized", "vol_beta": 0.5, "window_days": 30}
    assert s.shock.vol == 0.05
    s = parse_scenario(_doc("historical", historical={"episode": "ftx-2022-11", "vol": 0.3,
                                                      "vol_beta": 0, "window_days": 60}))
    assert s.historical == {"episode": "ftx-2022-11", "vol": 0.3, "vol_beta": 0.0,
                            "window_days": 60}


def test_error_names_the_source():
    with pytest.raises(ScenarioError, match=r"^<scenario>: shock\.spot"):
        parse_scenario(_doc(shock={"spot": -2.0}))
    with pytest.raises(ScenarioError, match=r"^mine: scenario\.kind"):
        parse_scenario({"scenario": dict(HEADER, kind="flash")}, source="mine")
    with pytest.raises(ScenarioError, match="expected a TOML table"):
        parse_scenario(["not", "a", "table"])


def _write(folder: Path, stem: str, name: str | None = None, **shock) -> Path:
    lines = ["[scenario]", f'name = "{name or stem}"', 'kind = "instant"',
             'description = "d"', 'source = "s"', "", "[shock]"]
    lines += [f"{k} = {v}" for k, v in shock.items()]
    p = folder / f"{stem}.toml"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def test_round_trip_file_and_dict(tmp_path):
    p = _write(tmp_path, "round-trip", spot=-0.25, vol=0.3, horizon='"2d"')
    from_file = load_scenario(p)
    from_dict = parse_scenario(tomllib.loads(p.read_text()), source=str(p), path=p)
    assert from_file == from_dict
    assert from_file.path == p and from_file.where == str(p)
    assert (from_file.shock.spot, from_file.shock.vol) == (-0.25, 0.3)
    assert from_file.horizon == pytest.approx(2 * DAY)
    for lib in LIBRARY_FILES[:3]:
        assert load_scenario(lib) == load_scenario(str(lib))


def test_load_scenarios_folder_and_duplicates(tmp_path):
    folder = tmp_path / "lib"
    folder.mkdir()
    _write(folder, "b-second", spot=-0.1)
    _write(folder, "a-first", vol=0.1)
    (folder / "notes.txt").write_text("not a scenario")
    out = load_scenarios(folder)
    assert [s.name for s in out] == ["a-first", "b-second"]
    extra = _write(tmp_path, "c-third", spot=0.1)
    assert [s.name for s in load_scenarios([folder, extra])] == ["a-first", "b-second",
                                                                "c-third"]
    assert [s.name for s in load_scenarios(str(extra))] == ["c-third"]
    dup = _write(tmp_path, "dup", name="a-first", spot=-0.2)
    with pytest.raises(ScenarioError, match="'a-first' is also used by") as info:
        load_scenarios([folder, dup])
    assert str(dup) in str(info.value) and str(folder / "a-first.toml") in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ScenarioError, match="no \\*.toml scenario files"):
        load_scenarios(empty)
    with pytest.raises(ScenarioError, match="cannot read the file"):
        load_scenario(tmp_path / "missing.toml")


# ------------------------------------------------------------------------------------------
# apply_shock identities


def _same(a, b):
    assert type(a) is type(b)
    for f in a._fields:
        assert _f(getattr(a, f)) == _f(getattr(b, f)), f


@pytest.mark.parametrize("model", [HESTON, GBM_M, MERTON], ids=["heston", "gbm", "merton"])
def test_zero_shock_is_the_identity(model):
    m, mk = apply_shock(model, MARKET, Shock())
    _same(m, model)
    _same(mk, MARKET)


def test_zero_shock_keeps_variances_to_an_ulp():
    m, _ = apply_shock(BATES, MARKET, Shock())
    for f in BATES._fields:
        np.testing.assert_allclose(_f(getattr(m, f)), getattr(BATES, f), rtol=3e-16, atol=0)


def test_zero_shock_is_exact_for_every_variance():
    m, _ = apply_shock(BATES, MARKET, Shock())
    _same(m, BATES)


def test_spot_shock_scales_spot_only():
    m, mk = apply_shock(HESTON, MARKET, Shock(spot=-0.3))
    assert _f(mk.spot) == pytest.approx(0.7 * MARKET.spot, rel=1e-15)
    assert (_f(mk.rate), _f(mk.div)) == (MARKET.rate, MARKET.div)
    _same(m, HESTON)


def test_vol_shock():
    m, _ = apply_shock(HESTON, MARKET, Shock(vol=0.1))
    assert math.sqrt(_f(m.v0)) == pytest.approx(math.sqrt(HESTON.v0) + 0.1, rel=1e-14)
    assert math.sqrt(_f(m.theta)) == pytest.approx(math.sqrt(HESTON.theta) + 0.1, rel=1e-14)
    assert (_f(m.kappa), _f(m.xi), _f(m.rho)) == (HESTON.kappa, HESTON.xi, HESTON.rho)
    for model in (GBM_M, MERTON):
        m, _ = apply_shock(model, MARKET, Shock(vol=0.1))
        assert _f(m.sigma) == pytest.approx(model.sigma + 0.1, rel=1e-15)
    m, _ = apply_shock(MERTON, MARKET, Shock(vol=0.1))
    assert (_f(m.lam), _f(m.mu_j), _f(m.sigma_j)) == (MERTON.lam, MERTON.mu_j, MERTON.sigma_j)


def test_term_shock_moves_only_v0():
    m, _ = apply_shock(HESTON, MARKET, Shock(term=0.15))
    assert math.sqrt(_f(m.v0)) == pytest.approx(0.6 + 0.15, rel=1e-14)
    np.testing.assert_allclose(_f(m.theta), HESTON.theta, rtol=3e-16)
    m, _ = apply_shock(HESTON, MARKET, Shock(vol=0.25, term=0.15))
    assert math.sqrt(_f(m.v0)) == pytest.approx(0.6 + 0.40, rel=1e-14)
    assert math.sqrt(_f(m.theta)) == pytest.approx(0.6 + 0.25, rel=1e-14)


def test_skew_shock_moves_rho_and_clips():
    m, _ = apply_shock(HESTON, MARKET, Shock(skew=-0.15))
    assert _f(m.rho) == pytest.approx(-0.40, rel=1e-14)
    assert _f(apply_shock(HESTON, MARKET, Shock(skew=-1.5))[0].rho) == -0.99
    assert _f(apply_shock(HESTON, MARKET, Shock(skew=2.0))[0].rho) == 0.99
    assert _f(apply_shock(BATES, MARKET, Shock(skew=0.1))[0].rho) == pytest.approx(-0.10)


def test_scale_and_shift_of_parameters():
    m, _ = apply_shock(BATES, MARKET, Shock(scale={"lam": 5.0, "xi": 2.0},
                                            shift={"mu_j": -0.1}))
    assert _f(m.lam) == pytest.approx(15.0) and _f(m.xi) == pytest.approx(1.8)
    assert _f(m.mu_j) == pytest.approx(-0.14)
    assert (_f(m.kappa), _f(m.sigma_j)) == (BATES.kappa, BATES.sigma_j)
    # scale first, then shift: p * scale + shift
    m, _ = apply_shock(MERTON, MARKET, Shock(scale={"lam": 2.0}, shift={"lam": 1.0}))
    assert _f(m.lam) == pytest.approx(9.0)
    # floors: the domain is kept (kappa at the floor where the Fourier prices stay accurate)
    m, _ = apply_shock(HESTON, MARKET, Shock(scale={"kappa": 0.0, "v0": 0.0}))
    assert _f(m.kappa) == SHOCK_DOMAIN["kappa"][0] == 1e-3 and _f(m.v0) == 0.0
    m, _ = apply_shock(MERTON, MARKET, Shock(shift={"lam": -10.0}))
    assert _f(m.lam) == 0.0


def test_rate_keeps_the_forward_and_basis_moves_it():
    t = 0.5
    f0 = _f(MARKET.forward(t))
    _, mk = apply_shock(HESTON, MARKET, Shock(rate=0.02))
    assert _f(mk.rate) == pytest.approx(0.06) and _f(mk.rate - mk.div) == pytest.approx(0.03)
    assert _f(mk.forward(t)) == pytest.approx(f0, rel=1e-14)
    assert _f(mk.discount(t)) == pytest.approx(math.exp(-0.06 * t), rel=1e-14)
    _, mk = apply_shock(HESTON, MARKET, Shock(basis=-0.15))
    assert _f(mk.rate) == MARKET.rate
    assert _f(mk.forward(t)) == pytest.approx(f0 * math.exp(-0.15 * t), rel=1e-14)


def test_extreme_vol_down_floors_without_nan():
    m, _ = apply_shock(HESTON, MARKET, Shock(vol=-5.0))
    assert _f(m.v0) == 0.0 and 0 < _f(m.theta) <= 1e-10
    for model in (GBM_M, MERTON):
        sig = _f(apply_shock(model, MARKET, Shock(vol=-5.0))[0].sigma)
        assert np.isfinite(sig) and 0 < sig <= 1e-8
    m, _ = apply_shock(BATES, MARKET, Shock(vol=-5.0, term=-5.0, skew=-2.0))
    assert all(np.isfinite(_f(getattr(m, f))) for f in m._fields)


def test_check_shock_names_the_field():
    with pytest.raises(ValueError, match="scale names lam, not a parameter of Heston"):
        check_shock(Shock(scale={"lam": 5.0}), HESTON)
    with pytest.raises(ValueError, match="shift names mu_x"):
        check_shock(Shock(shift={"mu_x": 1.0}), Bates)
    with pytest.raises(ValueError, match="a term shock needs a stochastic-volatility model.*GBM"):
        check_shock(Shock(term=0.1), GBM_M)
    with pytest.raises(ValueError, match="a skew shock .*Merton"):
        check_shock(Shock(skew=-0.1), MERTON)
    with pytest.raises(ValueError, match=r"^here: spot must be a relative move > -1"):
        check_shock(Shock(spot=-1.0), where="here")
    with pytest.raises(ValueError, match=r"scale\.xi must be a non-negative"):
        check_shock(Shock(scale={"xi": -1.0}))
    with pytest.raises(ValueError, match=r"horizon .*\(scenario \(1,\)\)"):
        check_shock(Shock(horizon=np.array([0.1, -0.1])))
    with pytest.raises(TypeError, match="expected a Shock"):
        check_shock({"spot": 0.1})
    # fine: term/skew of zero on any model, and a supported shock
    assert check_shock(Shock(vol=0.1), GBM_M) == Shock(vol=0.1)
    check_shock(Shock(term=0.1, skew=-0.1, scale={"lam": 2.0}), BATES)


SHOCKS = [Shock(spot=-0.2, vol=0.25, term=0.15),
          Shock(skew=-0.15, basis=0.3, scale={"lam": 5.0}),
          Shock(rate=0.01, shift={"mu_j": -0.1}, spread=3.0, exit_fraction=1.0),
          Shock(vol=-5.0, horizon=7 * DAY, drift=-3.0, scale={"xi": 2.0, "lam": 0.5})]


def test_stack_and_index_round_trip():
    st = stack_shocks(SHOCKS)
    assert shock_size(st) == len(SHOCKS)
    assert sorted(st.scale) == ["lam", "xi"] and sorted(st.shift) == ["mu_j"]
    for i, s in enumerate(SHOCKS):
        got = index_shock(st, i)
        for f in Shock._fields[:-2]:
            assert _f(getattr(got, f)) == _f(getattr(s, f)), (i, f)
        assert {k: _f(v) for k, v in got.scale.items()} == {
            k: float(s.scale.get(k, 1.0)) for k in ("lam", "xi")}
        assert {k: _f(v) for k, v in got.shift.items()} == {"mu_j": float(s.shift.get("mu_j",
                                                                                      0.0))}
    assert shock_size(SHOCKS[0]) == 1
    with pytest.raises(ValueError, match="no shocks"):
        stack_shocks([])


def test_vmap_over_stacked_shocks_equals_a_loop():
    st = stack_shocks(SHOCKS)
    models, markets = jax.vmap(lambda s: apply_shock(BATES, MARKET, s))(st)
    for i in range(len(SHOCKS)):
        m, mk = apply_shock(BATES, MARKET, index_shock(st, i))
        for f in BATES._fields:
            np.testing.assert_allclose(np.asarray(getattr(models, f))[i], _f(getattr(m, f)),
                                       rtol=1e-14, atol=0, err_msg=f"{i} {f}")
        for f in Market._fields:
            np.testing.assert_allclose(np.asarray(getattr(markets, f))[i], _f(getattr(mk, f)),
                                       rtol=1e-14, atol=0)


def test_errors_name_the_line_of_the_key(tmp_path):
    text = "\n".join(['[scenario]', 'name = "t"', 'kind = "instant"', 'description = "d"',
                      'source = "s"', '', '[shock]', 'spot = -0.1', 'vol = 9.0', '',
                      '[shock.scale]', 'xi = -2.0'])
    f = tmp_path / "lines.toml"
    f.write_text(text)
    with pytest.raises(ScenarioError, match=r"lines.toml: line 9: shock.vol must be an absolute"):
        load_scenario(f)
    f.write_text(text.replace("vol = 9.0", "vol = 0.1"))
    with pytest.raises(ScenarioError, match=r"lines.toml: line 12: shock.scale.xi must be"):
        load_scenario(f)
    # a key that is not in the file: no line, the key still named
    f.write_text(text.replace('name = "t"\n', "").replace("vol = 9.0", "vol = 0.1")
                 .replace("xi = -2.0", "xi = 2.0"))
    with pytest.raises(ScenarioError, match=r"lines.toml: missing scenario.name"):
        load_scenario(f)
