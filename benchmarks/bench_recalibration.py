"""Recalibration as the market moves: cold vs warm starts over consecutive real snapshots,
the fit of stale parameters on new quotes, and batched calibration throughput.

Over consecutive BTC snapshots of the shared Deribit data (about four a day), for Heston and
Bates, every snapshot is calibrated twice:

* ``cold``: from the data-driven default start (``calibration.initial_guess`` of that chain);
* ``warm``: from the previous snapshot's calibrated parameters.

For each snapshot the table records wall time and iterations of both, their RMSE (vol points),
and the RMSE on this snapshot's quotes of the parameters calibrated one snapshot earlier and
about one day (4 snapshots) earlier, without refitting: what not recalibrating costs in fit.
Calls that compiled (a new grid size or node count) are counted and left out of the time
statistics; the first snapshot is a warm-up.

Batched throughput: one day of snapshots (4) calibrated in one ``calibrate_batch`` call
(``vmap`` over padded chains) against the same four one after the other, snapshots per second,
compilation excluded.

Run: ``python benchmarks/bench_recalibration.py [--quick]``; writes ``results/recalibration.json``,
``.md`` and ``.png``. Needs ../shared/data (or ``QMR_DATA_DIR``).
"""

from __future__ import annotations

import time

import _util
import numpy as np

NAME = "recalibration"
FULL = dict(n_snapshots=25, models=("heston", "bates"), batch_repeats=3)
QUICK = dict(n_snapshots=6, models=("heston",), batch_repeats=1)


def load_snapshots(qmr, n):
    data = qmr.data
    raw = data.read_deribit_raw(currency="BTC")
    stamps = sorted(raw["timestamp"].unique())[-n:]
    chains = []
    for ts in stamps:
        chain = data.clean_chain(data.normalise_deribit(raw[raw["timestamp"] == ts]))
        chains.append(chain[0] if isinstance(chain, tuple) else chain)
    return chains


def compiled_count():
    from qmr_jax.calibration.calibrate import _solve_batch

    return _solve_batch._cache_size()


def run_model(qmr, name, chains):
    from qmr_jax.calibration import calibrate, initial_guess, model_iv_surface

    rows, prev_fits = [], []
    for i, chain in enumerate(chains):
        row = {"snapshot": str(chain["snapshot"].iloc[0]), "n_quotes": len(chain)}
        for kind in ("cold", "warm"):
            start = initial_guess(name, chain) if (kind == "cold" or not prev_fits) \
                else prev_fits[-1].params
            before = compiled_count()
            t0 = time.perf_counter()
            fit = calibrate(start, chain)
            wall = time.perf_counter() - t0
            row.update({f"{kind}_time": wall, f"{kind}_iterations": fit.iterations,
                        f"{kind}_rmse": fit.rmse_iv, f"{kind}_converged": fit.converged,
                        f"{kind}_compiled": compiled_count() > before})
            if kind == "warm":
                warm_fit = fit
        for lag, label in ((1, "stale_1"), (4, "stale_day")):
            if len(prev_fits) >= lag:
                ivs = model_iv_surface(prev_fits[-lag], chain)
                row[f"{label}_rmse"] = float(100 * np.sqrt(np.mean((ivs - chain["mid_iv"]) ** 2)))
        prev_fits.append(warm_fit)
        rows.append(row)
        print(f"  {name} {i + 1}/{len(chains)} {row['snapshot'][:16]}: cold {row['cold_time']:.2f}s"
              f"/{row['cold_iterations']} it, warm {row['warm_time']:.2f}s/"
              f"{row['warm_iterations']} it, RMSE {row['warm_rmse']:.3f}, stale-1 "
              f"{row.get('stale_1_rmse', float('nan')):.3f}", flush=True)
    return rows


def summarise(rows):
    use = [r for r in rows[1:] if not (r["cold_compiled"] or r["warm_compiled"])]
    out = {"n_timed": len(use), "n_compiled": sum(r["cold_compiled"] or r["warm_compiled"]
                                                  for r in rows[1:])}
    for kind in ("cold", "warm"):
        t = [r[f"{kind}_time"] for r in use]
        it = [r[f"{kind}_iterations"] for r in rows[1:]]
        out[f"{kind}_time_median"] = float(np.median(t)) if t else None
        out[f"{kind}_iterations_median"] = float(np.median(it))
        out[f"{kind}_rmse_median"] = float(np.median([r[f"{kind}_rmse"] for r in rows[1:]]))
        out[f"{kind}_converged"] = int(sum(r[f"{kind}_converged"] for r in rows))
    for label in ("stale_1", "stale_day"):
        vals = [r[f"{label}_rmse"] for r in rows if f"{label}_rmse" in r]
        out[f"{label}_rmse_median"] = float(np.median(vals)) if vals else None
        fresh = [r["warm_rmse"] for r in rows if f"{label}_rmse" in r]
        out[f"{label}_excess_median"] = float(np.median(np.subtract(vals, fresh))) if vals \
            else None
    if out["cold_time_median"] and out["warm_time_median"]:
        out["warm_speedup"] = out["cold_time_median"] / out["warm_time_median"]
    return out


def batch_throughput(qmr, name, chains, repeats):
    from qmr_jax.calibration import calibrate, calibrate_batch, initial_guess

    day = chains[-4:]
    starts = [initial_guess(name, c) for c in day]
    calibrate_batch(starts, day)  # compile
    for c, s in zip(day, starts, strict=True):
        calibrate(s, c)
    best_b, best_s = np.inf, np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fits = calibrate_batch(starts, day)
        best_b = min(best_b, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for c, s in zip(day, starts, strict=True):
            calibrate(s, c)
        best_s = min(best_s, time.perf_counter() - t0)
    return {"snapshots": len(day), "batched_s": best_b, "sequential_s": best_s,
            "batched_per_s": len(day) / best_b, "sequential_per_s": len(day) / best_s,
            "all_converged": all(f.converged for f in fits)}


def plot(results, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = list(results["models"])
    fig = Figure(figsize=(11, 3.2 * len(models)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(models), 2, squeeze=False)
    for i, name in enumerate(models):
        rows = results["models"][name]["rows"]
        x = np.arange(len(rows))
        ax = axes[i, 0]
        ax.plot(x, [r["cold_time"] for r in rows], "o-", label="cold start")
        ax.plot(x, [r["warm_time"] for r in rows], "s-", label="warm start")
        ax.set_yscale("log")
        ax.set_ylabel("wall time (s)")
        ax.set_title(f"{name}: recalibration time per snapshot (first = compile)")
        ax.legend()
        ax = axes[i, 1]
        ax.plot(x, [r["warm_rmse"] for r in rows], "k.-", label="recalibrated")
        for label, style in (("stale_1", "--"), ("stale_day", ":")):
            ax.plot(x, [r.get(f"{label}_rmse", np.nan) for r in rows], style,
                    label={"stale_1": "previous snapshot's params",
                           "stale_day": "params of ~1 day before"}[label])
        ax.set_ylabel("IV RMSE (vol points)")
        ax.set_title(f"{name}: fit on each snapshot's quotes")
        ax.legend()
        for a in axes[i]:
            a.set_xlabel("snapshot (consecutive, ~6 h apart)")
    fig.savefig(path, dpi=110)


def main():
    args = _util.parser(__doc__.splitlines()[0]).parse_args()
    cfg = QUICK if args.quick else FULL
    import jax

    jax.config.update("jax_enable_x64", True)
    import qmr_jax as qmr

    if not qmr.data.default_data_dir().is_dir():
        raise _util.MissingModule(f"market data not found at {qmr.data.default_data_dir()}")
    out = _util.results_dir(args)
    chains = load_snapshots(qmr, cfg["n_snapshots"])
    results = {"environment": _util.environment(), "config": dict(cfg), "models": {}}
    for name in cfg["models"]:
        rows = run_model(qmr, name, chains)
        results["models"][name] = {"rows": rows, "summary": summarise(rows),
                                   "batch": batch_throughput(qmr, name, chains,
                                                             cfg["batch_repeats"])}
    plot(results, out / f"{NAME}.png")

    def markdown(d):
        lines = [f"# Recalibration over {cfg['n_snapshots']} consecutive BTC snapshots",
                 "", _util.env_line(d["environment"]), "",
                 f"Snapshots {chains[0]['snapshot'].iloc[0]} .. {chains[-1]['snapshot'].iloc[0]}."
                 " Times are medians over snapshots whose calls did not compile; RMSE in vol"
                 " points (model IV - mid IV over the cleaned quotes).", ""]
        head = ["model", "cold time (s)", "warm time (s)", "warm speed-up", "cold it",
                "warm it", "RMSE fresh", "RMSE prev. snapshot's params",
                "RMSE ~1 day old params", "converged cold/warm"]
        rows = []
        for name, r in d["models"].items():
            s = r["summary"]
            rows.append([name, _util.fmt(s["cold_time_median"]), _util.fmt(s["warm_time_median"]),
                         _util.fmt(s.get("warm_speedup"), ".2f"),
                         _util.fmt(s["cold_iterations_median"]),
                         _util.fmt(s["warm_iterations_median"]),
                         _util.fmt(s["warm_rmse_median"], ".3f"),
                         _util.fmt(s["stale_1_rmse_median"], ".3f"),
                         _util.fmt(s["stale_day_rmse_median"], ".3f"),
                         f"{s['cold_converged']}/{s['warm_converged']} of {len(r['rows'])}"])
        lines += [_util.md_table(head, rows), "", "## Batched calibration (one day, 4 snapshots)",
                  ""]
        rows = [[name, _util.fmt(r["batch"]["batched_s"]), _util.fmt(r["batch"]["sequential_s"]),
                 _util.fmt(r["batch"]["batched_per_s"], ".2f"),
                 _util.fmt(r["batch"]["sequential_per_s"], ".2f"), r["batch"]["all_converged"]]
                for name, r in d["models"].items()]
        lines += [_util.md_table(["model", "batched (s)", "one by one (s)",
                                  "batched snapshots/s", "one by one snapshots/s",
                                  "all converged"], rows),
                  "", f"![recalibration]({NAME}.png)"]
        return "\n".join(lines)

    js, md = _util.write_results(out, NAME, results, markdown)
    print(md.read_text())


if __name__ == "__main__":
    _util.run_main(main)
