"""Stress reports on hand-built sweep tables (no simulation): heatmap grids against a manual
groupby, worst-scenario ordering and drivers, ES contributions, files written and linked,
errors naming the available columns, the terminal table's formats; what a reader sees: tick
labels rounded to the grid, units of each dimension, a note on heatmaps of equal cells, a
header without raw dicts or scientific notation, P&L columns first, numerical noise as 0."""

from __future__ import annotations

import html as _html
import io
import itertools
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from qmr_jax.report.stress import (
    STRESS_FILES,
    clamped_summary,
    dim_label,
    dim_tick,
    dim_ticks,
    dimensions,
    drivers,
    es_contribution_figure,
    es_contribution_table,
    pnl_heatmap,
    print_stress_table,
    stress_facts,
    stress_report,
    stress_table,
    sweep_report,
    worst_scenarios,
    zero_threshold,
)

LABELS = ("call_80k", "put_60k", "perp")


def _path_table() -> pd.DataFrame:
    """A 3 x 3 x 2 path-sweep table in ``sweep``'s format."""
    rng = np.random.default_rng(7)
    grid = list(itertools.product([-0.3, -0.1, 0.1], [-0.1, 0.0, 0.1], [1 / 365, 7 / 365]))
    rows = []
    for spot, vol, hor in grid:
        pos = {"call_80k": 40_000 * spot + 5_000 * vol,
               "put_60k": -90_000 * min(spot, 0.0) - 8_000 * vol - 300 * hor * 365,
               "perp": 25_000 * spot + rng.normal(0, 100)}
        mean = sum(pos.values())
        es99 = max(1_000.0, -1.5 * mean + 3_000.0 + 2_000 * hor * 365 / 7)
        contrib = {"call_80k": 0.5 * es99, "put_60k": 0.3 * es99, "perp": 0.2 * es99}
        row = {"spot": spot, "vol": vol, "horizon": hor, "mean": mean,
               "std": 1_000.0 + abs(mean) / 10, "worst": mean - 3 * es99, "best": mean + es99,
               "cost": 50.0}
        for tag, f in (("95", 0.6), ("99", 1.0)):
            row |= {f"var{tag}": 0.8 * f * es99, f"var{tag}_se": 10.0, f"es{tag}": f * es99,
                    f"es{tag}_se": 12.0}
        row |= {f"pnl.{k}": v for k, v in pos.items()}
        row |= {f"es_contrib.{k}": v for k, v in contrib.items()}
        rows.append(row)
    t = pd.DataFrame(rows)
    t.index.name = "index"
    return t


def _instant_table() -> pd.DataFrame:
    grid = list(itertools.product([-0.2, 0.0, 0.2], [-0.05, 0.05]))
    rows = []
    for spot, vol in grid:
        a, b = 10_000 * spot, -20_000 * abs(spot) + 4_000 * vol
        rows.append({"spot": spot, "vol": vol, "pnl_usd": a + b, "pnl_coin": (a + b) / 60_000,
                     "cost": 25.0, "pnl.A": a, "pnl.B": b})
    t = pd.DataFrame(rows)
    t.index.name = "index"
    return t


def _manifest(n_paths: int, table: pd.DataFrame) -> dict:
    return {"book": {"name": "demo-book", "currency": "BTC", "positions": list(LABELS)},
            "model": {"type": "Heston", "v0": 0.36, "kappa": 2.0},
            "market": {"spot": 60_000.0, "rate": 0.04},
            "design": {"kind": "grid", "seed": None,
                       "dims": {d: [float(table[d].min()), float(table[d].max()),
                                    int(table[d].nunique())] for d in dimensions(table)}},
            "n_paths": n_paths, "steps": 7, "crn": True, "levels": [0.95, 0.99],
            "contrib_level": 0.99, "key": [0, 42], "n_scenarios": len(table)}


@pytest.fixture(scope="module")
def path_table():
    return _path_table()


def test_heatmap_grid_matches_groupby(path_table):
    t = path_table
    assert dimensions(t) == ["spot", "vol", "horizon"]
    for agg in ("min", "mean"):
        fig = pnl_heatmap(t, "spot", "vol", "mean", agg=agg)
        ax = fig.axes[0]
        got = np.asarray(ax.images[0].get_array())
        want = t.groupby(["vol", "spot"])["mean"].agg(agg).unstack("spot")
        np.testing.assert_allclose(got, want.sort_index().sort_index(axis=1).to_numpy(),
                                   rtol=1e-12)
        assert ax.images[0].get_cmap().name == "RdBu"
        assert ax.images[0].norm.vcenter == 0.0
        assert len(ax.texts) == 9  # small grid: every cell annotated
        assert "%" in ax.get_xlabel() and "vol" in ax.get_ylabel()
        assert [x.get_text() for x in ax.get_xticklabels()] == ["-30%", "-10%", "+10%"]
        assert agg in ax.get_title() and "horizon" in ax.get_title()
    # ES: sequential map; horizon in days
    fig = pnl_heatmap(t, "horizon", "spot", "es99", agg="max")
    ax = fig.axes[0]
    assert ax.images[0].get_cmap().name == "OrRd"
    assert ax.get_xlabel() == "horizon (days)"
    assert [x.get_text() for x in ax.get_xticklabels()] == ["1", "7"]
    want = t.groupby(["spot", "horizon"])["es99"].max().unstack("horizon").to_numpy()
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), want)


def test_heatmap_large_grid_not_annotated():
    x = np.linspace(-0.5, 0.5, 13)
    t = pd.DataFrame({"spot": np.repeat(x, 2), "vol": np.tile([0.0, 0.1], 13)})
    t["pnl_usd"] = 1_000 * t["spot"] - 500 * t["vol"]
    fig = pnl_heatmap(t, "spot", "vol", "pnl_usd")
    assert np.asarray(fig.axes[0].images[0].get_array()).shape == (2, 13)
    assert not fig.axes[0].texts


def test_unknown_dimension_or_metric_names_available(path_table):
    with pytest.raises(ValueError, match=r"unknown dimension 'skew'.*spot, vol, horizon"):
        pnl_heatmap(path_table, "skew", "vol", "mean")
    with pytest.raises(ValueError, match=r"unknown metric 'es999'.*es99"):
        pnl_heatmap(path_table, "spot", "vol", "es999")
    with pytest.raises(ValueError, match="unknown dimension 'mean'"):
        pnl_heatmap(path_table, "mean", "vol", "es99")  # a metric is not a dimension
    with pytest.raises(ValueError, match="unknown metric"):
        worst_scenarios(path_table, 3, metric="pnl_usd")
    with pytest.raises(ValueError, match="different"):
        pnl_heatmap(path_table, "spot", "spot", "mean")


def test_worst_scenarios_order_and_drivers(path_table):
    t = path_table
    w = worst_scenarios(t, 5)
    assert w.attrs["metric"] == "es99"
    assert list(w["scenario"]) == list(t["es99"].sort_values(ascending=False).index[:5])
    assert np.all(np.diff(w["es99"]) <= 0)
    assert {"spot", "vol", "horizon", "es99", "mean", "drivers"} <= set(w.columns)
    # drivers: the three most negative pnl.<label>, largest loss first
    for _, r in w.iterrows():
        row = t.loc[r["scenario"]]
        losers = sorted((v, k[4:]) for k, v in row.items() if k.startswith("pnl.") and v < 0)
        want = "; ".join(f"{k} {v:,.0f}" for v, k in losers[:3]) or "-"
        assert r["drivers"] == want

    row = {"pnl.a": -1234.4, "pnl.b": 50.0, "pnl.c": -20_000.0, "pnl.d": -3.0, "pnl.e": -7.0,
           "mean": -5.0}
    assert drivers(row) == "c -20,000; a -1,234; e -7"
    assert drivers({"pnl.a": 1.0}) == "-"

    inst = _instant_table()
    wi = worst_scenarios(inst, 3)
    assert wi.attrs["metric"] == "pnl_usd"
    assert list(wi["pnl_usd"]) == sorted(inst["pnl_usd"])[:3]
    assert worst_scenarios(t, 2, metric="mean")["mean"].iloc[0] == t["mean"].min()


def test_es_contributions(path_table):
    t = path_table
    c = es_contribution_table(t)
    worst = t["es99"].idxmax()
    assert c.attrs["scenario"] == worst
    assert c["es_contrib"].sum() == pytest.approx(t.loc[worst, "es99"])
    assert c.attrs["es"] == pytest.approx(t.loc[worst, "es99"])
    assert c["share"].sum() == pytest.approx(1.0)
    assert list(c["position"]) == ["call_80k", "put_60k", "perp"]
    assert np.all(np.diff(c["es_contrib"]) <= 0)
    np.testing.assert_allclose(c["share"], [0.5, 0.3, 0.2])
    assert c.loc[0, "pnl"] == t.loc[worst, "pnl.call_80k"]
    c3 = es_contribution_table(t, 3)
    assert c3.attrs["scenario"] == 3
    assert c3["es_contrib"].sum() == pytest.approx(t.loc[3, "es99"])
    fig = es_contribution_figure(t, 3)
    assert len(fig.axes[0].patches) == 3
    with pytest.raises(ValueError, match="not in the table"):
        es_contribution_table(t, 999)
    with pytest.raises(ValueError, match="es_contrib"):
        es_contribution_table(_instant_table())


def _linked_pngs(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+\.png)"', html)


def test_sweep_report_files_and_links(tmp_path, path_table):
    t = path_table
    res = SimpleNamespace(table=t, manifest=_manifest(2_000, t))
    paths = sweep_report(res, tmp_path / "path")
    for name in ("worst.csv", "es_contributions.csv", "es_contributions.png", "results.csv",
                 "report.html"):
        assert paths[name].exists(), name
    heat = [n for n in paths if n.startswith("heatmap_")]
    assert len(heat) == 6  # 3 pairs x (mean, es99)
    html = paths["report.html"].read_text()
    linked = _linked_pngs(html)
    assert set(linked) == {n for n in paths if n.endswith(".png")}
    assert all((tmp_path / "path" / p).exists() for p in linked)
    for fact in ("demo-book", "Heston: v0 0.36, kappa 2", "2,000 per scenario",
                 "common random numbers", "95%, 99%", "PRNG key data</dt><dd>0, 42",
                 "scenarios</dt><dd>18", "spot 60,000.00 USD"):
        assert fact in html, fact
    worst = pd.read_csv(paths["worst.csv"])
    assert len(worst) == 10 and worst["scenario"].iloc[0] == t["es99"].idxmax()
    assert pd.read_csv(paths["results.csv"])["index"].tolist() == list(range(len(t)))

    # chosen pairs; instantaneous sweep: no contributions; results.csv kept when present
    inst = _instant_table()
    out = tmp_path / "inst"
    out.mkdir()
    (out / "results.csv").write_text("kept\n")
    p2 = sweep_report(SimpleNamespace(table=inst, manifest=_manifest(0, inst)), out,
                      pairs=[("vol", "spot")], title="Instant <sweep>")
    assert [n for n in p2 if n.endswith(".png")] == ["heatmap_pnl_usd_vol_spot.png"]
    assert "es_contributions.csv" not in p2
    assert (out / "results.csv").read_text() == "kept\n"
    html = p2["report.html"].read_text()
    assert "Instant &lt;sweep&gt;" in html and "instantaneous" in html
    assert all((out / p).exists() for p in _linked_pngs(html))
    with pytest.raises(ValueError, match="unknown dimension 'rate'"):
        sweep_report(SimpleNamespace(table=inst, manifest={}), out, pairs=[("rate", "spot")])


def test_clamped_column_is_a_note_not_a_dimension(tmp_path):
    t = _instant_table()
    t["clamped"] = ""
    assert clamped_summary(t) is None
    t.loc[[1, 4], "clamped"] = ["kappa 0 clamped to 0.001", "kappa -98 clamped to 0.001"]
    assert dimensions(t) == ["spot", "vol"]
    assert clamped_summary(t) == (
        "2 of 6 scenarios moved a model parameter out of the model's domain; it was clamped "
        "to the domain's edge (column 'clamped'), e.g. scenario 1: kappa 0 clamped to 0.001.")
    worst = worst_scenarios(t, 6)
    assert worst.set_index("scenario").loc[4, "clamped"] == "kappa -98 clamped to 0.001"
    paths = sweep_report(SimpleNamespace(table=t, manifest=_manifest(0, t)), tmp_path)
    assert [n for n in paths if n.endswith(".png")] == ["heatmap_pnl_usd_spot_vol.png"]
    html = paths["report.html"].read_text()
    assert "2 of 6 scenarios moved a model parameter" in html
    assert "kappa -98 clamped to 0.001" in html


def _stress_rows() -> pd.DataFrame:
    return pd.DataFrame({
        "name": ["crash", "vol_spike", "mc_week"],
        "kind": ["instant", "instant", "path"],
        "description": ["spot -30%", "vol +20 pts", "7 days"],
        "pnl_usd": [-1_234_567.891, 45_000.5, -2_000.0],
        "pnl_coin": [-20.576131, 0.75, -0.0333333],
        "cost": [1_500.0, 200.0, 50.0],
        "var99": [np.nan, np.nan, 12_345.678],
        "es99": [np.nan, np.nan, 15_000.0],
    })


def test_stress_table_format():
    text = stress_table(_stress_rows())
    lines = text.splitlines()
    assert lines[0].split() == ["name", "kind", "description", "pnl_usd", "pnl_coin", "cost",
                                "var99", "es99"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    crash = lines[2]
    assert "-1,234,567.89" in crash and "-20.5761" in crash and "1,500.00" in crash
    assert crash.split()[-2:] == ["-", "-"]  # NaN VaR/ES
    assert "12,345.68" in lines[4] and "-0.0333" in lines[4]
    assert len({len(line) for line in lines[2:]}) <= 2  # fixed width (trailing strip aside)
    assert lines[2].index("-1,234,567.89") + len("-1,234,567.89") == \
        lines[3].index("45,000.50") + len("45,000.50")  # numbers right-aligned


def test_stress_report_files(tmp_path):
    rows = _stress_rows()
    positions = pd.DataFrame({"call": [-1_000_000.0, 30_000.0, -1_500.0],
                              "put": [-234_567.891, 15_000.5, -500.0]},
                             index=rows["name"].to_list())
    paths = stress_report(rows, positions, tmp_path, title="Named scenarios",
                          meta={"book": "demo-book", "model": "Heston(v0=0.36)", "seed": 42})
    assert set(paths) == set(STRESS_FILES) and "report.html" in paths
    assert all(p.exists() for p in paths.values())
    assert sorted(p.name for p in tmp_path.glob("*.html")) == ["report.html"]
    html = paths["report.html"].read_text()
    linked = _linked_pngs(html)
    assert set(linked) == {"stress_pnl.png", "stress_positions.png"}
    assert all((tmp_path / p).exists() for p in linked)
    for fact in ("demo-book", "Heston(v0=0.36)", "42", "-1,234,568", "crash"):
        assert fact in html, fact
    back = pd.read_csv(paths["positions.csv"], index_col=0)
    np.testing.assert_allclose(back.to_numpy(), positions.to_numpy())
    assert pd.read_csv(paths["stress.csv"])["name"].tolist() == ["crash", "vol_spike",
                                                                  "mc_week"]


# ------------------------------------------------------------------------------------------
# what a reader sees


SPOT_GRID = ["-40%", "-35%", "-30%", "-25%", "-20%", "-15%", "-10%", "-5%", "0%", "+5%",
             "+10%", "+15%", "+20%"]


def test_ticks_are_rounded_to_the_grid_and_carry_units():
    # the README's --dim spot=-0.4:0.2:13 leaves 5.55e-17 where 0 is meant
    grid = np.linspace(-0.4, 0.2, 13)
    assert abs(grid[8]) > 0  # the case being tested
    assert dim_ticks("spot", grid) == SPOT_GRID
    assert dim_tick("spot", grid[8]) == "0%"
    assert dim_ticks("spot", [-0.025, 0.0, 0.025]) == ["-2.5%", "0%", "+2.5%"]
    assert dim_ticks("vol", np.linspace(-0.1, 0.3, 9)) == [
        "-10", "-5", "0", "+5", "+10", "+15", "+20", "+25", "+30"]
    assert dim_ticks("horizon", [1 / 365, 7 / 365, 14 / 365]) == ["1", "7", "14"]
    assert dim_ticks("scale.xi", [1.0, 1.5, 2.0]) == ["x1.0", "x1.5", "x2.0"]  # one format
    assert dim_tick("horizon", 7 / 365) == "7" and dim_tick("scale.lam", 2.0) == "x2"
    # labels: vol shifts in vol points (Shock.vol: 0.10 = +10 vol points), not %
    assert dim_label("vol") == "vol shift (vol points)" and "%" not in dim_label("vol")
    assert dim_label("spot") == "spot move (%)" and dim_label("horizon") == "horizon (days)"
    assert "multiplier" in dim_label("scale.xi") and "shift" in dim_label("shift.mu_j")
    # a heatmap over the README's grid
    x, y = np.meshgrid(grid, np.linspace(-0.1, 0.3, 9))
    t = pd.DataFrame({"spot": x.ravel(), "vol": y.ravel()})
    t["pnl_usd"] = -400_000 * t["spot"] + 50_000 * t["vol"]
    t.index.name = "index"
    ax = pnl_heatmap(t, "spot", "vol", "pnl_usd").axes[0]
    xt = [lab.get_text() for lab in ax.get_xticklabels()]
    yt = [lab.get_text() for lab in ax.get_yticklabels()]
    assert xt == SPOT_GRID and "0" in yt and "+30" in yt
    assert not any(re.search(r"e[-+]?\d", lab) for lab in xt + yt)
    assert ax.get_ylabel() == "vol shift (vol points)"


def _uniform_table(noise: float) -> pd.DataFrame:
    t = pd.DataFrame(list(itertools.product([-0.2, 0.0, 0.2], [0.0, 0.1])),
                     columns=["spot", "vol"])
    t["pnl_usd"] = noise * np.arange(len(t))  # revaluation noise only
    t.index.name = "index"
    return t


def test_a_heatmap_of_equal_cells_says_so(tmp_path):
    fig = pnl_heatmap(_uniform_table(1.4e-11), "spot", "vol", "pnl_usd")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 1 and texts[0].startswith("all 6 cells equal: 0 USD")
    assert len(fig.axes) == 1  # no colour bar for one colour
    # cells that differ are annotated one by one, with a colour bar, and noise prints as 0
    t = _uniform_table(1.4e-11)
    t.loc[5, "pnl_usd"] = 2_500.0
    fig = pnl_heatmap(t, "spot", "vol", "pnl_usd")
    texts = [x.get_text() for x in fig.axes[0].texts]
    assert len(texts) == 6 and texts.count("0") == 5 and "2.5k" in texts
    assert len(fig.axes) == 2
    # the page says it too
    res = SimpleNamespace(table=_uniform_table(1.4e-11), manifest={"gross_usd": 1e6})
    html = sweep_report(res, tmp_path)["report.html"].read_text()
    assert "all 6 cells equal: 0 USD" in html


def _meta() -> dict:
    """``StressRun.meta`` as ``stress`` writes it: unrounded floats, dicts, a key."""
    return {"book": "BTC stress book", "currency": "BTC",
            "model": {"type": "Heston", "v0": 0.3621345678901, "kappa": 2.0133333333,
                      "theta": 0.36, "xi": 1.0, "rho": -0.2512345},
            "market": {"spot": 60_000.0, "rate": 0.04, "div": 0.0123456},
            "base_value_usd": 124064.80238987193, "gross_usd": 7_025_294.123, "key": [0, 7],
            "levels": [0.95, 0.99, 0.999], "seed": 7, "n_paths": 10_000,
            "model_file": "scenarios/models/btc_heston.toml",
            "snapshot": pd.Timestamp("2026-01-05 08:00", tz="UTC")}


def _named_rows() -> pd.DataFrame:
    long = ("A long description of a scenario that a reader should see wrapped in the "
            "table rather than stretching it across the page; " * 3)
    return pd.DataFrame({
        "name": ["calm", "crash", "bleed", "replay"],
        "kind": ["instant", "instant", "path", "historical"],
        "description": ["nothing happens", long, "14 days of selling", "a real episode"],
        "source": ["-", "https://example.org/a/very/long/source/address/" * 3, "", ""],
        "dates": ["", "2022-11-07 to 2022-11-09", "", "2022-11-08 to 2022-11-09"],
        "status": ["ok"] * 4,
        "shock": ["none", "spot -20%, vol +25.0 vp", "vol +10.0 vp, horizon 14d",
                  "replay 2022-11-08..2022-11-09: spot -22.7%, vol +54.5 vp"],
        "horizon_days": [0.0, 0.0, 14.0, 2.0],
        "spot_after": [60_000.0, 48_000.0, np.nan, 46_397.09],
        "pnl_usd": [1.38e-11, -274_278.93, 80_059.66, 197_551.27],
        "pnl_coin": [-2.3e-16, -4.0706, 2.0135, 4.8641],
        "cost": [0.0, 54_947.35, 0.0, 0.0],
        "worst": [np.nan, np.nan, -418_243.9, 90_777.05],
        "worst_at": [None, None, None, "2022-11-09"],
        "n_paths": [np.nan, np.nan, 10_000, np.nan],
        "steps": [np.nan, np.nan, 14, np.nan],
        "seed": [np.nan, np.nan, 2052075159, np.nan],
        "var99": [np.nan, np.nan, 148_554.84, np.nan],
        "var99_se": [np.nan, np.nan, 22_649.73, np.nan],
        "es99": [np.nan, np.nan, 232_247.15, np.nan],
        "es99_se": [np.nan, np.nan, 24_283.93, np.nan],
        "hist_es99": [np.nan, np.nan, 465_039.7, np.nan],
        "notes": [None, None, "levels [0.999] need >= 10 tail samples", None],
    })


def _cells(row_html: str) -> list[str]:
    return [_html.unescape(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row_html)]


def test_stress_report_reads_well(tmp_path):
    rows = _named_rows()
    positions = pd.DataFrame({"call": [1.0e-11, -200_000.0, 50_000.0, 90_000.0],
                              "spot": [-3.0e-12, -74_278.93, 30_059.66, 107_551.27]},
                             index=rows["name"].to_list())
    html = stress_report(rows, positions, tmp_path, meta=_meta())["report.html"].read_text()
    # the header: formatted facts, no raw dicts, lists or scientific notation
    header = _html.unescape(re.search(r'<dl class="kv">(.*?)</dl>', html, re.S).group(1))
    facts = dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", header))
    for bad in ("{", "}", "[", "'"):
        assert bad not in header, bad
    assert not re.search(r"\de[-+]?\d", header)
    assert facts["model"] == "Heston: v0 0.3621, kappa 2.013, theta 0.36, xi 1, rho -0.2512"
    assert facts["market"] == "spot 60,000.00 USD, USD rate 4.00%, funding (div) 1.23%"
    assert facts["book"] == "BTC stress book (BTC)"
    assert facts["book value"] == "124,064.80 USD"
    assert facts["paths per path scenario"] == "10,000"
    assert facts["VaR/ES levels"] == "95%, 99%, 99.9%"
    assert facts["seed"] == "7" and facts["snapshot"] == "2026-01-05 08:00"
    # the scenario table: P&L columns first, the descriptive ones after
    table = html[html.index("<h2>Scenarios</h2>"):]
    table = table[:table.index("</table>")]
    head = _cells(re.search(r"<thead>(.*?)</thead>", table, re.S).group(1))
    assert head[:6] == ["scenario", "P&L (USD)", "P&L (BTC)", "liquidity cost (USD)",
                        "VaR 99% (USD)", "ES 99% (USD)"]
    assert head.index("worst (USD)") < head.index("kind") < head.index("shock")
    assert "description" not in head and "source" not in head  # in their own table
    body = {r[0]: dict(zip(head, r, strict=True)) for r in
            (_cells(x) for x in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1]))}
    # noise as 0, whole dollars, spot with separators, never scientific notation
    assert body["calm"]["P&L (USD)"] == "0" and body["calm"]["P&L (BTC)"] == "0.0000"
    assert body["crash"]["P&L (USD)"] == "-274,279"
    assert body["calm"]["spot after (USD)"] == "60,000.00"
    assert body["bleed"]["ES 99% (USD)"] == "232,247"
    assert body["replay"]["worst (USD)"] == "90,777"
    text = _html.unescape(re.sub(r"<style>.*?</style>", "", html, flags=re.S))
    assert not re.search(r"\de[-+]\d", text)
    cells = [_html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", html)]
    assert not [c for c in cells if re.fullmatch(r"-0(\.0+)?", c)]  # never a negative zero
    # path risk: VaR/ES with standard errors, counts in full
    assert "148,555 ± 22,650" in text and "232,247 ± 24,284" in text
    assert "<td class=num>10,000</td>" in html
    # long text wraps; the worst column is defined
    assert re.search(r"<td class=text>A long description", html)
    assert "left out" in text and "anchor" in text
    # the position table in whole dollars, noise as 0
    pos = html[html.index("P&amp;L per position"):]
    assert "<td class=num>0</td>" in pos and "-200,000" in pos


def test_stress_facts_of_other_entries():
    f = stress_facts({"model": "a named model", "rescale_factor": 1.0432101,
                      "thresholds": {"a": 1e-20, "b": 123456.7}, "flag": True,
                      "model_source": "Bates calibrated to Deribit"})
    assert f == {"model": "a named model", "strike and entry rescale factor": "1.043",
                 "thresholds": "a 1.000e-20, b 123,500", "flag": "yes",
                 "model source": "Bates calibrated to Deribit"}


def test_zero_threshold():
    assert zero_threshold(None) == 0.01 and zero_threshold(1e6) == 0.01
    assert zero_threshold(5e10) == pytest.approx(50.0)  # 1e-9 of the gross exposure
    assert zero_threshold(float("nan")) == 0.01


def test_stress_table_never_prints_scientific_notation():
    rows = _named_rows().set_index("name")[
        ["kind", "horizon_days", "spot_after", "pnl_usd", "worst", "n_paths", "hist_es99"]]
    text = stress_table(rows)
    assert not re.search(r"\de[-+]\d", text)
    lines = {ln.split()[0]: ln for ln in text.splitlines()[2:]}
    assert lines["calm"].split()[3:5] == ["60,000.00", "0.00"]  # noise 1.38e-11 as 0.00
    assert "465,039.70" in lines["bleed"] and "10,000" in lines["bleed"]
    out = io.StringIO()
    print_stress_table(rows, stream=out)  # not a terminal: the same text
    assert out.getvalue() == text + "\n"


# ------------------------------------------------------------------------------------------
# the demo's index page


def _demo_summary() -> dict:
    """A small demo summary with every sub-report (the fields ``_write_report`` reads)."""
    mc = {"strike": 60_000.0, "expiry_days": 90, "type": "call", "scheme": "exact",
          "n_paths": 1000, "n_steps": 1, "value": 1.0, "stderr": 0.1, "fourier": 1.0,
          "z_score": 0.0, "within_4_stderr": True, "seconds": 0.1}
    fit = {"report": "calibration/heston/report.html", "params": {"v0": 0.3}, "rmse_iv": 0.5,
           "inside_band": 0.9, "iterations": 5, "converged": True, "reason": "",
           "wall_time": 1.0}
    market = {"spot": 60_000.0, "rate": 0.04, "div": 0.0}
    return {
        "seed": 3, "config": {"quick": True}, "wall_seconds": 1.0, "market": market,
        "data_dir": {"path": "/nowhere", "present": False},
        "calibration": {"n_quotes": 10, "source": "synthetic", "truth": None,
                        "fits": {"Heston": fit, "Bates": dict(
                            fit, report="calibration/bates/report.html")}},
        "models": {"GBM": {"sigma": 0.6}}, "n_options_per_model": 1,
        "fourier": {"GBM": {"cos_terms": 64, "cos_seconds": 0.1, "lewis_seconds": 0.1,
                            "max_abs_diff": 1e-9, "max_rel_diff_to_spot": 1e-14,
                            "min_price": 1.0}},
        "monte_carlo": {"GBM": mc},
        "sensitivities": {"report": "sensitivities/report.html", "book": "b",
                          "n_positions": 2, "model": "Heston",
                          "totals": {"value_usd": 1.0, "delta_coin": 0.1, "delta_usd": 1.0,
                                     "vega_usd_vol_pt": 1.0, "theta_usd_day": -1.0},
                          "largest": {"input": "spot", "move": "+-10%",
                                      "first_order_down": -1.0, "first_order_up": 1.0}},
        "stress": {"report": "stress/report.html", "market": market, "book": "b",
                   "n_positions": 2, "n_scenarios": 3, "model_source": "Heston",
                   "book_reference_spot": 60_000.0, "rescale_factor": 1.0, "n_paths": 100,
                   "seed": 3, "base_value_usd": 1.0, "n_ok": 3, "n_failed": 0,
                   "model": "Heston", "failed": {},
                   "worst": [{"scenario": "crash", "kind": "instant", "pnl_usd": -5.0}]},
        "sweep": {"report": "sweep/report.html", "n_scenarios": 2, "grid": {"spot": [0, 1]},
                  "horizon_days": 7, "n_paths": 100, "wall_seconds": 1.0,
                  "worst": {"index": 1, "spot": 0.1, "es99": 1.0, "var99": 1.0, "mean": 0.0}},
        "versions": {"qmr_jax": "0"}, "files": ["report.html"],
    }


def test_demo_index_opens_with_links_to_every_report(tmp_path):
    from qmr_jax.demo import _write_report, report_links

    summary = _demo_summary()
    prices = pd.DataFrame({"model": ["GBM"], "expiry_days": [7], "strike": [60_000.0],
                           "log_moneyness": [0.0], "type": ["call"], "price_cos": [1.0],
                           "implied_vol": [0.6], "forward": [60_000.0]})
    html = _write_report(tmp_path, summary, prices).read_text()
    want = ["calibration/heston/report.html", "calibration/bates/report.html",
            "sensitivities/report.html", "stress/report.html", "sweep/report.html"]
    assert [href for _, href in report_links(summary)] == want
    nav = re.search(r'<nav class="reports">(.*?)</nav>', html, re.S)
    assert nav is not None
    assert re.findall(r'href="([^"]+)"', nav.group(1)) == want
    assert nav.start() < html.index("<table") and nav.start() < html.index("<h2>")
    assert "stress/stress.html" not in html
