"""Heston and Bates calibration on real BTC snapshots: qmr_jax against QuantLib, and
Levenberg-Marquardt against L-BFGS.

For each snapshot (the last of the shared Deribit data; more in the full run) the cleaned
BTC chain is snapped to whole-day expiries (``_quantlib_calibration.snap_to_days``: QuantLib
dates have day resolution) and both libraries calibrate to that same chain, from the same
start (``calibration.initial_guess``), in this process:

* qmr_jax: ``qmr.calibrate`` (IV-space loss, Levenberg-Marquardt on the autodiff Jacobian,
  whole loop compiled); timed after a first (compiling) call, best of ``repeats``;
* QuantLib: ``HestonModelHelper`` per quote with ``ImpliedVolError`` (the same IV-space
  residual), ``AnalyticHestonEngine`` / ``BatesEngine`` (Gauss-Laguerre 192),
  ``LevenbergMarquardt`` with finite-difference Jacobians; timed once (its ``calibrate`` call
  only).

Both fits are scored by the same IV RMSE against the mid IVs (vol points): ours with our
pricer, QuantLib's with QuantLib's engine (and cross-priced by ours, which agree to ~1e-9 in
vol). Goal: at least 10x faster with RMSE no worse than QuantLib's + 0.05 vol points.

The same snapshots are also calibrated by ``method="lbfgs"`` (optax L-BFGS with zoom line
search) to choose the default solver: iterations, wall time, final RMSE.

Run: ``python benchmarks/bench_calibration.py [--quick]``; writes ``results/calibration.json``
and ``.md``. Needs ../shared/data and QuantLib.
"""

from __future__ import annotations

import time

import _util
import numpy as np

NAME = "calibration"
GOAL_SPEEDUP = 10.0
GOAL_RMSE_SLACK = 0.05
FULL = dict(snapshots=(-1, -9, -33), models=("heston", "bates"), repeats=3)
QUICK = dict(snapshots=(-1,), models=("heston",), repeats=1)


def best_time(fn, repeats):
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    args = _util.parser(__doc__.splitlines()[0]).parse_args()
    cfg = QUICK if args.quick else FULL
    import jax

    jax.config.update("jax_enable_x64", True)
    import qmr_jax as qmr

    qlc = _util.require("_quantlib_calibration", "QuantLib calibration baseline")
    from qmr_jax.calibration import calibrate, initial_guess

    if not qmr.data.default_data_dir().is_dir():
        raise _util.MissingModule(f"market data not found at {qmr.data.default_data_dir()}")
    out = _util.results_dir(args)
    snaps = qmr.data.list_snapshots(currency="BTC")
    rows, solver_rows = [], []
    for s in cfg["snapshots"]:
        when = snaps["snapshot"].iloc[s]
        chain = qlc.snap_to_days(qmr.data.load_deribit(currency="BTC", snapshot=s))
        for name in cfg["models"]:
            start = initial_guess(name, chain)
            calibrate(start, chain)  # compile
            ours_t, fit = best_time(lambda c=chain, st=start: calibrate(st, c), cfg["repeats"])
            start_d = {f: float(v) for f, v in start._asdict().items()}
            ql = qlc.ql_calibrate(chain, name, start_d)
            ql_rmse = qlc.iv_rmse(chain, qlc.ql_model_ivs(chain, name, ql["params"]))
            ours_by_ql = qlc.iv_rmse(chain, qlc.ql_model_ivs(chain, name, fit.params_dict()))
            row = {
                "snapshot": str(when), "model": name, "n_quotes": len(chain),
                "ours_time": ours_t, "ours_iterations": fit.iterations,
                "ours_rmse": fit.rmse_iv, "ours_rmse_quantlib_priced": ours_by_ql,
                "ours_converged": fit.converged, "ours_reason": fit.reason,
                "ql_time": ql["wall_time"], "ql_setup_time": ql["setup_time"],
                "ql_evaluations": ql.get("function_evaluations"),
                "ql_end": ql.get("end_criteria"), "ql_rmse": ql_rmse,
                "speedup": ql["wall_time"] / ours_t,
                "rmse_gap": fit.rmse_iv - ql_rmse,
                "ours_params": fit.params_dict(), "ql_params": ql["params"], "start": start_d,
            }
            row["meets_goal"] = bool(row["speedup"] >= GOAL_SPEEDUP
                                     and row["rmse_gap"] <= GOAL_RMSE_SLACK)
            rows.append(row)
            print(f"{row['snapshot'][:16]} {name}: ours {ours_t:.3f}s RMSE {fit.rmse_iv:.3f} "
                  f"({fit.iterations} it) | QuantLib {ql['wall_time']:.2f}s RMSE {ql_rmse:.3f} "
                  f"({ql.get('function_evaluations')} evals, {ql.get('end_criteria')}) | "
                  f"{row['speedup']:.1f}x", flush=True)
            calibrate(start, chain, method="lbfgs")  # compile
            lb_t, lb = best_time(lambda c=chain, st=start: calibrate(st, c, method="lbfgs"),
                                 cfg["repeats"])
            solver_rows.append({
                "snapshot": str(when), "model": name, "lm_time": ours_t,
                "lm_iterations": fit.iterations, "lm_evaluations": fit.evaluations,
                "lm_rmse": fit.rmse_iv, "lm_converged": fit.converged, "lbfgs_time": lb_t,
                "lbfgs_iterations": lb.iterations, "lbfgs_evaluations": lb.evaluations,
                "lbfgs_rmse": lb.rmse_iv, "lbfgs_converged": lb.converged,
            })
            print(f"    L-BFGS {lb_t:.3f}s RMSE {lb.rmse_iv:.3f} ({lb.iterations} it, "
                  f"{lb.evaluations} evals)", flush=True)

    results = {"environment": _util.environment(), "config": dict(cfg), "rows": rows,
               "solvers": solver_rows, "goal": {"speedup": GOAL_SPEEDUP,
                                                "rmse_slack": GOAL_RMSE_SLACK}}

    def markdown(d):
        lines = ["# Calibration: qmr_jax vs QuantLib (real BTC snapshots)", "",
                 _util.env_line(d["environment"]), "",
                 "Same snapped chain, same start, IV-space residuals on both sides. RMSE in vol "
                 "points against mid IVs; QuantLib's fit scored by its own engine. Goal: "
                 f">= {GOAL_SPEEDUP:.0f}x faster, RMSE <= QuantLib's + {GOAL_RMSE_SLACK}.", ""]
        head = ["snapshot", "model", "quotes", "qmr_jax (s)", "QuantLib (s)", "speed-up",
                "qmr_jax RMSE", "QuantLib RMSE", "gap", "qmr_jax it", "QuantLib evals",
                "goal met"]
        lines.append(_util.md_table(head, [[
            r["snapshot"][:16], r["model"], r["n_quotes"], _util.fmt(r["ours_time"]),
            _util.fmt(r["ql_time"]), _util.fmt(r["speedup"], ".1f"),
            _util.fmt(r["ours_rmse"], ".3f"), _util.fmt(r["ql_rmse"], ".3f"),
            _util.fmt(r["rmse_gap"], "+.3f"), r["ours_iterations"], r["ql_evaluations"],
            r["meets_goal"]] for r in d["rows"]]))
        lines += ["", "## Solver choice: Levenberg-Marquardt vs L-BFGS (qmr_jax)", ""]
        lines.append(_util.md_table(
            ["snapshot", "model", "LM (s)", "LM it", "LM RMSE", "L-BFGS (s)", "L-BFGS it",
             "L-BFGS evals", "L-BFGS RMSE"],
            [[r["snapshot"][:16], r["model"], _util.fmt(r["lm_time"]), r["lm_iterations"],
              _util.fmt(r["lm_rmse"], ".4f"), _util.fmt(r["lbfgs_time"]), r["lbfgs_iterations"],
              r["lbfgs_evaluations"], _util.fmt(r["lbfgs_rmse"], ".4f")]
             for r in d["solvers"]]))
        return "\n".join(lines)

    js, md = _util.write_results(out, NAME, results, markdown)
    print(md.read_text())


if __name__ == "__main__":
    _util.run_main(main)
