"""Scenario sweeps: per-scenario cost against NumPy, the 10,000 x 10,000 run, and scaling.

Three parts, on the 20-position book ``scenarios/books/btc_stress.toml`` (European inverse and
USD options over five expiries, a perpetual, two futures, spot):

1. **Per-scenario cost against a NumPy baseline** (same process). One path scenario of a sweep
   (Heston, 10,000 horizon paths, 7 daily steps): QE paths, the book on a 33 x 9 log-spot x
   vol grid (Lewis with a control variate), Hermite/Lagrange interpolation per path, VaR/ES
   at three levels and the Euler ES contributions. Ours: the sweep's jitted, vmapped chunk
   function over 16 scenarios, per scenario. NumPy: ``_numpy_stress.scenario``, the same
   algorithm, one scenario at a time. Accuracy: the NumPy revaluation of the paths our
   engine simulated against our per-path P&L (max difference over gross notional), and the
   two ES99 (independent paths) within 4 combined standard errors.
2. **The headline run**: ``sweep()`` over a 10 x 10 x 10 x 10 grid (spot -40%..+20%, vol
   -10..+40 vol points, jump intensity x1..x10, horizon 1..10 days) = 10,000 scenarios under
   Bates, 10,000 paths each, 10 steps, results streamed to Parquet, in a fresh process: wall
   time (compilation included) against the 5-minute goal, throughput in scenarios x paths x
   steps per second, peak RSS.
3. **Scaling**: a lighter sweep (Merton, 1-day horizon, 1,000 paths, one step) over
   100, 1,000, 10,000 and 100,000 random scenarios, each in a fresh process with a 256 MiB
   chunk budget: time per scenario (goal: constant, i.e. linear total time) and peak RSS
   (goal: flat, under the budget above the idle process). With 1,000 paths the levels are
   95% and 99% (99.9% would leave one tail sample).

Run: ``python benchmarks/bench_sweep.py [--quick] [--skip-headline] [--skip-scaling]``;
writes ``results/sweep.json`` and ``results/sweep.md``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import _util

NAME = "sweep"
BOOK = _util.REPO_ROOT / "scenarios" / "books" / "btc_stress.toml"
SPOT, RATE, DIV = 60_000.0, 0.04, 0.0
HESTON = dict(v0=0.36, kappa=2.0, theta=0.36, xi=1.0, rho=-0.25)
BATES = dict(v0=0.30, kappa=2.0, theta=0.30, xi=0.9, rho=-0.20, lam=3.0, mu_j=-0.04,
             sigma_j=0.14)
MERTON = dict(sigma=0.52, lam=4.0, mu_j=-0.04, sigma_j=0.12)
GOAL_S = 300.0

FULL = dict(paths=10_000, steps=7, chunk=16, numpy_scenarios=4,
            head=dict(n=10, paths=10_000), scaling=(100, 1_000, 10_000, 100_000),
            scaling_paths=1_000)
QUICK = dict(paths=10_000, steps=3, chunk=4, numpy_scenarios=2,
             head=dict(n=3, paths=10_000), scaling=(20, 200), scaling_paths=1_000)

HEAD_CHILD = _util.CHILD_PRELUDE + """
import time, os
t_start = time.perf_counter()
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import qmr_jax as qmr
from qmr_jax.book import load_book
from qmr_jax.stress import Shock, StressEngine, SweepDesign, sweep
book = load_book({book!r})
model = qmr.Bates(**{bates!r})
engine = StressEngine(book, model, qmr.Market({spot}, {rate}, {div}))
n = {n}
design = SweepDesign.grid(base=Shock(), spot=np.linspace(-0.4, 0.2, n),
                          vol=np.linspace(-0.1, 0.4, n), **{{"scale.lam": np.linspace(1, 10, n),
                          "horizon": np.arange(1, n + 1) / 365.0}})
t0 = time.perf_counter()
res = sweep(engine, design, key=jax.random.key(0), out={out!r}, n_paths={paths},
            steps=n, memory_budget={budget}, progress=None)
wall = time.perf_counter() - t0
_report(wall=wall, process_wall=time.perf_counter() - t_start, n=len(res.table),
        chunk=res.manifest["chunk"], steps=res.manifest["steps"],
        worst_es99=float(res.table["es99"].max()), rows=len(res.table),
        unique=int(res.table.index.nunique()))
"""

SCALE_CHILD = _util.CHILD_PRELUDE + """
import time
import jax
jax.config.update("jax_enable_x64", True)
import qmr_jax as qmr
from qmr_jax.book import load_book
from qmr_jax.stress import Shock, StressEngine, SweepDesign, sweep
book = load_book({book!r})
engine = StressEngine(book, qmr.Merton(**{merton!r}), qmr.Market({spot}, {rate}, {div}))
design = SweepDesign.random({n}, {{"spot": (-0.4, 0.3), "vol": (-0.15, 0.4),
                                   "scale.lam": (0.5, 5.0)}}, seed=1,
                            base=Shock(horizon=1 / 365))
kw = dict(key=jax.random.key(0), n_paths={paths}, steps=1, memory_budget={budget},
          levels=(0.95, 0.99), progress=None)
t0 = time.perf_counter()
sweep(engine, design, out=None, stop=min({n}, 4), **kw)  # compiles (same chunk size)
first = time.perf_counter() - t0
t0 = time.perf_counter()
res = sweep(engine, design, out={out!r}, **kw)
wall = time.perf_counter() - t0
_report(wall=wall, first=first, n=len(res.table), chunk=res.manifest["chunk"],
        bytes_per_scenario=res.manifest["memory"]["bytes_per_scenario"])
"""


def numpy_book(engine):
    import numpy as np

    opt = np.flatnonzero(np.array([t == "european" for t in engine.types]))
    lin = np.flatnonzero(np.array([t in ("spot", "perpetual", "future") for t in engine.types]))
    if len(opt) + len(lin) != engine.n_positions:
        raise SystemExit("the benchmark book must hold European options and linear positions")
    return {
        "n": engine.n_positions, "opt_index": opt, "lin_index": lin,
        "strike": engine.strike[opt], "expiry": engine.expiry[opt],
        "call": engine.phi[opt] > 0, "qty": engine.qty[opt],
        "lin_kind": np.array([engine.types[i] for i in lin]), "lin_qty": engine.qty[lin],
        "lin_entry": engine.entry[lin],
        "lin_expiry": np.where(np.isfinite(engine.expiry[lin]), engine.expiry[lin], 0.0),
    }


def part_numpy(cfg, log):
    import _numpy_stress as nps
    import jax
    import jax.numpy as jnp
    import numpy as np

    import qmr_jax as qmr
    from qmr_jax.book import load_book
    from qmr_jax.stress import Shock, StressEngine, SweepDesign, apply_shock
    from qmr_jax.stress import sweeps as sm

    book = load_book(BOOK)
    model = qmr.Heston(**HESTON)
    market = qmr.Market(SPOT, RATE, DIV)
    engine = StressEngine(book, model, market)
    paths, steps, chunk = cfg["paths"], cfg["steps"], cfg["chunk"]
    h = steps / 365.0
    design = SweepDesign.random(chunk, {"spot": (-0.3, 0.2), "vol": (-0.1, 0.3),
                                        "scale.xi": (0.5, 2.0)}, seed=3, base=Shock(horizon=h))
    shocks = jax.tree_util.tree_map(lambda x: jnp.asarray(x), design.shocks(0, chunk))
    fn = sm.make_chunk_fn(engine, n_paths=paths, steps=steps, crn=True)
    metrics = sm._metric_names(engine.labels, sm.DEFAULT_LEVELS, paths)
    idx = jnp.arange(chunk, dtype=jnp.int32)
    key = jax.random.key(0)
    nb = numpy_book(engine)
    base = np.asarray(engine.base_values)
    rng = np.random.default_rng(0)
    n_np = cfg["numpy_scenarios"]
    args = []
    for i in range(chunk):
        sh = design.shocks(i, i + 1)
        one = Shock(**{f: float(np.asarray(getattr(sh, f))[0]) for f in Shock._fields
                       if f not in ("scale", "shift")},
                    scale={k: float(v[0]) for k, v in sh.scale.items()})
        m_s, mk_s = apply_shock(model, market, one)
        p = {k: float(v) for k, v in m_s._asdict().items()}
        args.append((one, mk_s, (p, float(mk_s.spot), float(mk_s.rate), float(mk_s.div), h)))

    def numpy_run():
        return [nps.scenario(*a[2], nb, base, paths, steps, engine.n_terms, rng,
                             grid=sm.DEFAULT_GRID) for a in args[:n_np]]

    # alternate the two (A B A B ...) so a change in machine load hits both
    t = _util.time_interleaved({"ours": lambda: fn(shocks, idx, key), "numpy": numpy_run},
                               repeats=5)
    ours_rows = np.asarray(t["ours"]["result"])
    per_ours = t["ours"]["median_s"] / chunk
    per_np = t["numpy"]["median_s"] / n_np
    cpu_ours = t["ours"]["cpu_median_s"] / chunk
    cpu_np = t["numpy"]["cpu_median_s"] / n_np
    log(f"ours: {1e3 * per_ours:.1f} ms per scenario (chunk {chunk}; first call "
        f"{t['ours']['first_s']:.1f} s); NumPy {1e3 * per_np:.1f} ms: "
        f"{per_np / per_ours:.1f}x wall, {cpu_np / cpu_ours:.1f}x CPU time")
    times = [x / n_np for x in t["numpy"]["times_s"]]
    checks = []
    for i in range(n_np):
        one, mk_s, s_args = args[i]
        r = t["numpy"]["result"][i]
        # accuracy: NumPy revaluation of our paths against our per-path P&L
        pp = engine.paths(one, key, paths, steps, revalue="grid")
        ref = nps.scenario(*s_args, nb, base, paths, steps, engine.n_terms, rng,
                           grid=sm.DEFAULT_GRID,
                           paths=(np.asarray(pp.spot), np.asarray(pp.variance)))
        gross = float(np.sum(np.abs(engine.qty)) * float(mk_s.spot))
        diff = float(np.max(np.abs(ref["pnl"] - np.asarray(pp.pnl_usd)))) / gross
        row = dict(zip(metrics, ours_rows[i], strict=True))
        z = (r["es"][1] - row["es99"]) / np.hypot(row["es99_se"], row["es99_se"])
        checks.append({"scenario": i, "max_pnl_diff_over_gross": diff,
                       "es99_numpy": float(r["es"][1]), "es99_ours": float(row["es99"]),
                       "es99_se": float(row["es99_se"]), "z": float(z)})
        log(f"numpy scenario {i}: same paths: max |P&L diff| / gross {diff:.1e}; ES99 "
            f"{r['es'][1]:,.0f} vs ours {row['es99']:,.0f} ({z:+.2f} SE)")
    return {
        "model": "Heston", "params": HESTON, "n_paths": paths, "steps": steps, "chunk": chunk,
        "grid": list(sm.DEFAULT_GRID), "n_terms": engine.n_terms,
        "ours_per_scenario_s": per_ours, "ours_first_call_s": t["ours"]["first_s"],
        "numpy_per_scenario_s": per_np, "numpy_times_s": times,
        "ours_cpu_per_scenario_s": cpu_ours, "numpy_cpu_per_scenario_s": cpu_np,
        "speedup": per_np / per_ours, "cpu_speedup": cpu_np / cpu_ours, "checks": checks,
        "path_steps_per_s_ours": paths * steps / per_ours,
        "path_steps_per_s_numpy": paths * steps / per_np,
    }


def part_headline(cfg, budget, log):
    with tempfile.TemporaryDirectory() as tmp:
        code = HEAD_CHILD.format(book=str(BOOK), bates=BATES, spot=SPOT, rate=RATE, div=DIV,
                                 n=cfg["n"], paths=cfg["paths"], out=str(Path(tmp) / "s"),
                                 budget=budget)
        r = _util.run_child(code)
    c = r["child"]
    n = c["n"]
    res = {
        "model": "Bates", "params": BATES, "n_scenarios": n, "n_paths": cfg["paths"],
        "steps": c["steps"], "chunk": c["chunk"], "memory_budget": budget,
        "sweep_wall_s": c["wall"], "process_wall_s": r["wall_s"],
        "scenarios_per_s": n / c["wall"],
        "path_steps_per_s": n * cfg["paths"] * c["steps"] / c["wall"],
        "peak_rss_bytes": r["peak_rss_bytes"], "rows": c["rows"], "unique": c["unique"],
        "worst_es99": c["worst_es99"], "goal_s": GOAL_S, "meets_goal": c["wall"] < GOAL_S,
    }
    log(f"headline: {n:,} scenarios x {cfg['paths']:,} paths x {c['steps']} steps in "
        f"{c['wall']:.1f} s ({res['scenarios_per_s']:.1f} scenarios/s, "
        f"{res['path_steps_per_s']:.3g} path-steps/s), peak RSS "
        f"{_util.gib(r['peak_rss_bytes']):.2f} GiB")
    return res


def part_scaling(sizes, paths, budget, log):
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            code = SCALE_CHILD.format(book=str(BOOK), merton=MERTON, spot=SPOT, rate=RATE,
                                      div=DIV, n=n, paths=paths, out=str(Path(tmp) / "s"),
                                      budget=budget)
            r = _util.run_child(code)
        c = r["child"]
        rows.append({"n_scenarios": n, "n_paths": paths, "steps": 1, "chunk": c["chunk"],
                     "wall_s": c["wall"], "first_call_s": c["first"],
                     "per_scenario_s": c["wall"] / n, "scenarios_per_s": n / c["wall"],
                     "path_steps_per_s": n * paths / c["wall"],
                     "chunk_bytes": (c["bytes_per_scenario"] or 0) * c["chunk"],
                     "peak_rss_bytes": r["peak_rss_bytes"]})
        log(f"scaling {n:>7,}: {c['wall']:8.1f} s, {1e3 * c['wall'] / n:.2f} ms/scenario, "
            f"peak RSS {_util.gib(r['peak_rss_bytes']):.2f} GiB (chunk {c['chunk']})")
    return rows


def main(argv=None):
    p = _util.parser(__doc__.splitlines()[0])
    p.add_argument("--skip-headline", action="store_true")
    p.add_argument("--skip-scaling", action="store_true")
    args = p.parse_args(argv)
    _util.require("jax")
    _util.require("scipy", "the NumPy baseline uses scipy.special.ndtr")
    import jax

    jax.config.update("jax_enable_x64", True)
    cfg = QUICK if args.quick else FULL
    out = _util.results_dir(args)
    log = lambda s: print(s, flush=True)  # noqa: E731
    env = _util.environment()
    res = {"environment": env, "quick": args.quick}
    res["idle"] = _util.idle_import_rss()
    res["numpy"] = part_numpy(cfg, log)
    budget = 256 * 2**20
    prev_path = out / f"{NAME}.json"
    prev = json.loads(prev_path.read_text()) if prev_path.exists() else {}
    if not args.skip_headline:
        res["big"] = part_headline(cfg["head"], 512 * 2**20, log)
    elif "big" in prev:  # keep the last measurement, marked with its date
        res["big"] = dict(prev["big"], measured=prev["big"].get("measured")
                          or prev.get("environment", {}).get("date_utc"))
    if not args.skip_scaling:
        res["scaling"] = {"memory_budget": budget,
                          "rows": part_scaling(cfg["scaling"], cfg["scaling_paths"], budget,
                                               log)}
    elif "scaling" in prev:
        res["scaling"] = dict(prev["scaling"], measured=prev["scaling"].get("measured")
                              or prev.get("environment", {}).get("date_utc"))
    res["headline"] = headline(res)
    js, md = _util.write_results(out, NAME, res, markdown)
    print(f"wrote {js} and {md}")


def headline(res) -> list[dict]:
    """The figures ``run_all.py`` summarises, with their goals."""
    out = []
    npr = res["numpy"]
    out.append({"metric": "ms per path scenario (Heston, 10k paths, 7 steps) vs NumPy",
                "value": f"{1e3 * npr['ours_per_scenario_s']:.1f} vs "
                         f"{1e3 * npr['numpy_per_scenario_s']:.1f} ms "
                         f"({npr['speedup']:.1f}x)", "goal": "-", "met": None})
    if "big" in res:
        b = res["big"]
        out.append({"metric": f"{b['n_scenarios']:,} scenarios x {b['n_paths']:,} paths, "
                              "20 positions, wall",
                    "value": f"{b['sweep_wall_s']:.0f} s", "goal": f"< {GOAL_S:.0f} s",
                    "met": bool(b["meets_goal"])})
    if "scaling" in res and len(res["scaling"]["rows"]) >= 3:
        # the largest two sizes: below ~10 s of work, fixed per-run costs (the last part's
        # Parquet write, joining the parts) and machine noise dominate the ratio
        rows = res["scaling"]["rows"][-2:]
        per = [r["per_scenario_s"] for r in rows]
        peak = [r["peak_rss_bytes"] for r in rows]
        spread = max(per) / min(per)
        grow = (max(peak) - min(peak)) / 2**20
        out.append({"metric": f"time per scenario, {rows[0]['n_scenarios']:,} to "
                              f"{rows[-1]['n_scenarios']:,} scenarios (max / min)",
                    "value": f"{spread:.2f}", "goal": "<= 1.25 (linear time)",
                    "met": spread <= 1.25})
        out.append({"metric": "peak RSS growth over the same sizes",
                    "value": f"{grow:.0f} MiB",
                    "goal": f"< {res['scaling']['memory_budget'] / 2**20:.0f} MiB (budget)",
                    "met": grow < res["scaling"]["memory_budget"] / 2**20})
    return out


def markdown(res) -> str:
    f = _util.fmt
    lines = ["# Scenario sweeps", "", _util.env_line(res["environment"]), ""]
    npr = res["numpy"]
    lines += [
        "## Per-scenario cost against NumPy (same algorithm, same process)", "",
        f"Heston, 20-position book, {npr['n_paths']:,} paths x {npr['steps']} steps, "
        f"{npr['grid'][0]} x {npr['grid'][1]} revaluation grid, {npr['n_terms']} Lewis nodes. "
        f"Ours: the sweep's jitted chunk function over {npr['chunk']} scenarios (first call, "
        f"compilation included: {npr['ours_first_call_s']:.1f} s).", "",
        "Median of 5 interleaved runs (A B A B ...); CPU time counts both cores.", "",
        _util.md_table(
            ["", "ms / scenario (wall)", "ms / scenario (CPU)", "path-steps / s", "ratio (wall)",
             "ratio (CPU)"],
            [["qmr_jax", f(1e3 * npr["ours_per_scenario_s"], ".1f"),
              f(1e3 * npr.get("ours_cpu_per_scenario_s", float("nan")), ".1f"),
              f(npr["path_steps_per_s_ours"], ".3g"), f"**{npr['speedup']:.1f}x**",
              f"{npr.get('cpu_speedup', float('nan')):.1f}x"],
             ["NumPy", f(1e3 * npr["numpy_per_scenario_s"], ".1f"),
              f(1e3 * npr.get("numpy_cpu_per_scenario_s", float("nan")), ".1f"),
              f(npr["path_steps_per_s_numpy"], ".3g"), "1", "1"]]), "",
        "Accuracy: NumPy revaluation of our simulated paths against our per-path P&L, and "
        "the ES99 of independent NumPy paths against ours:", "",
        _util.md_table(["scenario", "max |P&L diff| / gross", "ES99 NumPy", "ES99 ours",
                        "SE", "z"],
                       [[c["scenario"], f(c["max_pnl_diff_over_gross"], ".1e"),
                         f(c["es99_numpy"], ",.0f"), f(c["es99_ours"], ",.0f"),
                         f(c["es99_se"], ",.0f"), f(c["z"], "+.2f")] for c in npr["checks"]]),
        "",
    ]
    if "big" in res:
        h = res["big"]
        lines += [
            "## 10,000 scenarios x 20 positions x 10,000 paths", "",
            (f"Measured {h['measured']} (not rerun with the rest). " if h.get("measured")
             else "")
            + f"Bates, grid spot x vol x jump intensity x horizon, {h['n_scenarios']:,} "
            f"scenarios, {h['n_paths']:,} paths, {h['steps']} steps, chunks of {h['chunk']} "
            f"({h['memory_budget'] / 2**20:.0f} MiB budget), Parquet output, fresh process.",
            "",
            _util.md_table(
                ["wall (sweep, incl. compile)", "goal", "scenarios / s", "path-steps / s",
                 "peak RSS", "rows / unique"],
                [[f"**{h['sweep_wall_s']:.1f} s**", f"< {h['goal_s']:.0f} s "
                  f"({'met' if h['meets_goal'] else 'NOT met'})", f(h["scenarios_per_s"], ".1f"),
                  f(h["path_steps_per_s"], ".3g"), f"{_util.gib(h['peak_rss_bytes']):.2f} GiB",
                  f"{h['rows']:,} / {h['unique']:,}"]]), "",
        ]
    if "scaling" in res:
        sc = res["scaling"]
        idle = res["idle"]["peak_rss_bytes"]
        lines += [
            "## Scaling with the number of scenarios", "",
            (f"Measured {sc['measured']}. " if sc.get("measured") else "")
            + f"Merton, 1-day horizon, one step, {sc['rows'][0]['n_paths']:,} paths per scenario, "
            f"{sc['memory_budget'] / 2**20:.0f} MiB chunk budget; each size in a fresh process "
            f"(idle process with JAX imported: {_util.gib(idle):.2f} GiB). \"chunk working "
            "set\" is XLA's count for the compiled chunk (temporaries, arguments, outputs), "
            "which the budget bounds; the rest of the peak above the idle process is fixed "
            "(compilation of the chunk and of the engine's pricer, the engine's arrays) and "
            "does not grow with the number of scenarios.", "",
            _util.md_table(
                ["scenarios", "chunk", "chunk working set (MiB)", "wall (s)", "ms / scenario",
                 "path-steps / s", "peak RSS (GiB)", "above idle (MiB)"],
                [[f"{r['n_scenarios']:,}", r["chunk"], f(r.get("chunk_bytes", 0) / 2**20, ".0f"),
                  f(r["wall_s"], ".1f"), f(1e3 * r["per_scenario_s"], ".2f"),
                  f(r["path_steps_per_s"], ".3g"), f(_util.gib(r["peak_rss_bytes"]), ".2f"),
                  f((r["peak_rss_bytes"] - idle) / 2**20, ".0f")] for r in sc["rows"]]), "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    _util.run_main(main)
