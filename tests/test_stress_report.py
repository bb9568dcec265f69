"""Stress reports on hand-built sweep tables (no simulation): heatmap grids against a manual
groupby, worst-scenario ordering and drivers, ES contributions, files written and linked,
errors naming the available columns, the terminal table's formats."""

from __future__ import annotations

import itertools
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from qmr_jax.report.stress import (
    STRESS_FILES,
    clamped_summary,
    dimensions,
    drivers,
    es_contribution_figure,
    es_contribution_table,
    pnl_heatmap,
    stress_report,
    stress_table,
    sweep_report,
    worst_scenarios,
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
    for fact in ("demo-book", "Heston", "2,000 per scenario", "crn", "95%, 99%", "[0, 42]",
                 "n_scenarios"):
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
    assert set(paths) == set(STRESS_FILES)
    assert all(p.exists() for p in paths.values())
    html = paths["stress.html"].read_text()
    linked = _linked_pngs(html)
    assert set(linked) == {"stress_pnl.png", "stress_positions.png"}
    assert all((tmp_path / p).exists() for p in linked)
    for fact in ("demo-book", "Heston(v0=0.36)", "42", "-1,234,567.89", "crash"):
        assert fact in html, fact
    back = pd.read_csv(paths["positions.csv"], index_col=0)
    np.testing.assert_allclose(back.to_numpy(), positions.to_numpy())
    assert pd.read_csv(paths["stress.csv"])["name"].tolist() == ["crash", "vol_spike",
                                                                  "mc_week"]
