"""Heston Fourier pricing of a 10 x 20 surface: ``qmr_jax.fourier_price`` against QuantLib.

A BTC-like Heston model (spot 60000, v0 0.36, kappa 2, theta 0.4, xi 1.0, rho -0.4, rate 3%)
and a surface of 10 expiries (1 week .. 2 years, whole days on Actual/365 so both libraries see
the same year fractions) x 20 strikes spanning +-2 standard deviations ``sqrt(v0 T)`` of the log
forward moneyness; out-of-the-money calls above the forward, puts below.

Prices per second, in the same process (float64, x64 enabled):

* ``qmr_jax.fourier_price``, COS and Lewis, with the default ``n_terms`` and with an explicit
  one: as a public call (argument checks, and for COS with the default the automatic choice of
  terms, included) and wrapped in ``jax.jit`` over the model (how calibration calls it);
  expiries passed as a ``[10, 1]`` column (the characteristic function is evaluated once per
  expiry) and, for comparison, as the full ``[10, 20]`` grid;
* ``qmr_jax.fourier_pricer`` (Lewis): planned once by the library at a requested ``tol``
  (the number of nodes chosen automatically, no scan), then called with the model - the
  compiled path of calibration and sensitivities; the call includes parameter validation and
  the per-call Lewis period;
* QuantLib ``AnalyticHestonEngine``: the default constructor (Gauss-Laguerre, integration
  order 144) and the adaptive ``(relTolerance, maxEvaluations)`` constructor.

Agreement: maximum absolute and relative difference against QuantLib's adaptive engine at
``relTolerance = 1e-12``; an option agrees when it is within 1e-8 relative or 1e-10 absolute
(the criterion of the QuantLib oracle tests), and the goal is every option agreeing. Speed
ratio: QuantLib default time / our time (goal >= 30). An ``n_terms`` scan finds the
smallest ``n_terms`` (COS terms, Lewis nodes) that still agrees, and times them; a
strike-count scan separates the per-expiry cost (characteristic function, range) from the
per-strike cost.

Run: ``python benchmarks/bench_fourier_surface.py [--quick]``; writes
``results/fourier_surface.json`` and ``.md``.
"""

from __future__ import annotations

import _util
import numpy as np

NAME = "fourier_surface"

PARAMS = dict(v0=0.36, kappa=2.0, theta=0.4, xi=1.0, rho=-0.4)
SPOT, RATE, DIV = 60000.0, 0.03, 0.0
DAYS = np.array([7, 14, 30, 60, 91, 182, 273, 365, 548, 730])
N_STRIKES = 20
GOAL_DIFF = 1e-8
GOAL_ABS = 1e-10  # agreement as in the QuantLib oracle tests: 1e-8 relative or 1e-10 absolute
GOAL_RATIO = 30.0

COS_SCAN = [64, 80, 96, 112, 128, 144, 160, 192, 224, 256, 320, 384, 512, 768, 1024, 2048]
LEWIS_SCAN = [32, 48, 64, 80, 96, 112, 128, 160, 192, 256, 384, 512, 1024]
PRICER_TOLS = (None, 1e-12, 1e-10)
TRACED_DEFAULT = {"cos": 1024, "lewis": 512}  # fourier_price's n_terms under jit

FULL = dict(repeats=30, min_time=1.0, ql_repeats=10, scan_repeats=15, scan_min_time=0.5,
            cos_scan=COS_SCAN, lewis_scan=LEWIS_SCAN, strike_counts=(1, 5, 20, 80))
QUICK = dict(repeats=3, min_time=0.0, ql_repeats=2, scan_repeats=3, scan_min_time=0.0,
             cos_scan=[128, 256], lewis_scan=[64, 128], strike_counts=(1, 20))


def surface():
    expiries = DAYS / 365.0
    fwd = SPOT * np.exp((RATE - DIV) * expiries)
    z = np.linspace(-2.0, 2.0, N_STRIKES)
    strikes = fwd[:, None] * np.exp(z[None, :] * np.sqrt(PARAMS["v0"] * expiries)[:, None])
    is_call = strikes >= fwd[:, None]
    return expiries, strikes, is_call


# ------------------------------------------------------------------------------------------
# QuantLib


class QuantLibSurface:
    def __init__(self, ql, strikes, is_call):
        self.ql = ql
        today = ql.Date(2, 1, 2025)
        ql.Settings.instance().evaluationDate = today
        dc = ql.Actual365Fixed()
        spot = ql.QuoteHandle(ql.SimpleQuote(SPOT))
        rts = ql.YieldTermStructureHandle(ql.FlatForward(today, RATE, dc))
        dts = ql.YieldTermStructureHandle(ql.FlatForward(today, DIV, dc))
        p = PARAMS
        process = ql.HestonProcess(rts, dts, spot, p["v0"], p["kappa"], p["theta"], p["xi"],
                                   p["rho"])
        self.model = ql.HestonModel(process)
        self.shape = strikes.shape
        self.options = []
        for i, d in enumerate(DAYS):
            exercise = ql.EuropeanExercise(today + int(d))
            for j in range(strikes.shape[1]):
                kind = ql.Option.Call if is_call[i, j] else ql.Option.Put
                payoff = ql.PlainVanillaPayoff(kind, float(strikes[i, j]))
                self.options.append(ql.VanillaOption(payoff, exercise))

    def engine(self, *args):
        return self.ql.AnalyticHestonEngine(self.model, *args)

    def price(self, engine):
        """Set the engine (which invalidates cached results) and compute every NPV."""
        out = np.empty(len(self.options))
        for i, o in enumerate(self.options):
            o.setPricingEngine(engine)
            out[i] = o.NPV()
        return out.reshape(self.shape)


# ------------------------------------------------------------------------------------------


def auto_terms(fourier, model, market, method):
    """The n_terms ``fourier_price`` picks by itself for this surface (None if not exposed)."""
    expiries, strikes, _ = surface()
    try:
        import jax.numpy as jnp

        dtype = np.float64
        m = type(model)(*(jnp.asarray(v, dtype) for v in model))
        mk = type(market)(*(jnp.asarray(v, dtype) for v in market))
        _, need = fourier._plan(m, mk, strikes, expiries[:, None], np.asarray(16.0, dtype),
                                np.asarray(fourier._log_tol(None, dtype), dtype), method)
        return int(fourier._round_terms(need, fourier._MIN_TERMS[method]))
    except Exception:  # internal helpers changed: the label then just says "auto"
        return None


def diff_stats(prices, ref):
    err = np.abs(np.asarray(prices, np.float64) - ref)
    rel = err / np.abs(ref)
    i = np.unravel_index(np.argmax(rel), ref.shape)
    return dict(max_abs=float(err.max()), max_rel=float(rel.max()),
                worst_rel_at=dict(expiry_days=int(DAYS[i[0]]), strike_index=int(i[1])),
                meets_goal=bool(np.all((rel <= GOAL_DIFF) | (err <= GOAL_ABS))))


def main(argv=None):
    args = _util.parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = QUICK if args.quick else FULL
    out_dir = _util.results_dir(args)
    jax = _util.require("jax", "JAX is the library's backend")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    ql = _util.require("QuantLib", "the independent Heston pricer")
    qmr = _util.require("qmr_jax")
    fourier = _util.require("qmr_jax.pricing.fourier", "fourier_price / auto_cos_terms")
    env = _util.environment()
    env["quantlib"] = ql.__version__
    print(_util.env_line(env) + f"; QuantLib {ql.__version__}")

    expiries, strikes, is_call = surface()
    n_opt = strikes.size
    model = qmr.Heston(**PARAMS)
    market = qmr.Market(SPOT, RATE, DIV)
    t_col = expiries[:, None]
    t_grid = np.broadcast_to(t_col, strikes.shape)

    # ---- QuantLib
    qls = QuantLibSurface(ql, strikes, is_call)
    engines = {
        "QuantLib AnalyticHeston, default (Gauss-Laguerre 144)": (),
        "QuantLib AnalyticHeston, adaptive relTol 1e-8, maxEval 10000": (1e-8, 10_000),
        "QuantLib AnalyticHeston, adaptive relTol 1e-12, maxEval 1000000": (1e-12, 1_000_000),
    }
    ql_res = {}
    for name, eargs in engines.items():
        eng = qls.engine(*eargs)
        t = _util.time_call(qls.price, eng, repeats=cfg["ql_repeats"], warmup=1)
        ql_res[name] = dict(timing=_util.timing_summary(t), prices=t["result"])
        print(f"{name}: {t['best_s'] * 1e3:.2f} ms / surface "
              f"({n_opt / t['best_s']:.0f} prices/s)")
    names = list(engines)
    ql_default, ref_name = names[0], names[2]
    ref = ql_res[ref_name]["prices"]
    t_ql = ql_res[ql_default]["timing"]["best_s"]
    for name in names[:2]:
        ql_res[name]["vs_reference"] = diff_stats(ql_res[name]["prices"], ref)

    # ---- qmr_jax
    auto_n = {"cos": fourier.auto_cos_terms(model, t_col), "lewis": auto_terms(fourier, model,
                                                                              market, "lewis")}
    traced_n = dict(TRACED_DEFAULT, **getattr(fourier, "_TRACED_TERMS", {}))
    m64 = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), model)
    k_j, c_j = jnp.asarray(strikes), jnp.asarray(is_call)
    tcol_j = jnp.asarray(t_col)

    def public(method, n, expiries_arg):
        return lambda: qmr.fourier_price(model, market, strikes, expiries_arg, is_call,
                                         method=method, n_terms=n)

    jitted_cache = {}

    def jitted(method, n):
        if (method, n) not in jitted_cache:
            f = jax.jit(lambda m: qmr.fourier_price(m, market, k_j, tcol_j, c_j,
                                                    method=method, n_terms=n))
            jitted_cache[(method, n)] = f
        f = jitted_cache[(method, n)]
        return lambda: f(m64)

    # n_terms scan (jit-wrapped, column expiries)
    print("\nn_terms scan (jit-wrapped over the model, expiries as a column):")
    scan = {"cos": [], "lewis": []}
    for method, ns in (("cos", cfg["cos_scan"]), ("lewis", cfg["lewis_scan"])):
        for n in ns:
            t = _util.time_call(jitted(method, n), repeats=cfg["scan_repeats"], warmup=1,
                                min_time=cfg["scan_min_time"])
            d = diff_stats(t["result"], ref)
            scan[method].append(dict(n_terms=n, best_s=t["best_s"], median_s=t["median_s"],
                                     ratio_vs_ql_default=t_ql / t["best_s"], **d))
            print(f"  {method:5s} n={n:5d}: {t['best_s'] * 1e3:8.3f} ms, max abs "
                  f"{d['max_abs']:.2e}, max rel {d['max_rel']:.2e}, "
                  f"x{t_ql / t['best_s']:.1f} vs QL default")
    n_min = {}
    for method in scan:
        ok = [r["n_terms"] for r in scan[method] if r["meets_goal"]]
        # smallest n from which every larger scanned n also meets the goal
        good = None
        for r in reversed(scan[method]):
            if not r["meets_goal"]:
                break
            good = r["n_terms"]
        n_min[method] = good if good is not None else (min(ok) if ok else None)
    print(f"smallest n_terms meeting {GOAL_DIFF:g}: {n_min}; automatic choice: {auto_n}")

    cases = {}

    def add(label, fn, method, n_label, how, repeats=cfg["repeats"]):
        t = _util.time_call(fn, repeats=repeats, warmup=1, min_time=cfg["min_time"])
        d = diff_stats(t["result"], ref)
        cases[label] = dict(method=method, n_terms=n_label, how=how,
                            timing=_util.timing_summary(t), prices_per_s=n_opt / t["best_s"],
                            ratio_vs_ql_default=t_ql / t["best_s"], **d)
        print(f"  {label:60s} {t['best_s'] * 1e3:8.3f} ms (first {t['first_s'] * 1e3:7.1f} ms)"
              f"  x{t_ql / t['best_s']:6.2f} vs QL  max rel {d['max_rel']:.1e}")

    print("\nsurface timings:")
    full = not args.quick
    for method in ("cos", "lewis"):
        name = "COS" if method == "cos" else "Lewis"
        auto, traced = auto_n[method], traced_n[method]
        auto_label = f"auto ({auto})" if auto else "auto"
        if full:
            add(f"{name} default n_terms = {auto_label}, public call, [10,20] expiry grid",
                public(method, None, t_grid), method, auto_label, "public, grid")
        add(f"{name} default n_terms = {auto_label}, public call, [10,1] expiries",
            public(method, None, t_col), method, auto_label, "public, column")
        add(f"{name} n_terms={traced} (default under jit), jitted", jitted(method, traced),
            method, traced, "jit, column")
        for n in sorted({auto, n_min[method]} - {None, traced}):
            if full:
                add(f"{name} n_terms={n}, public call", public(method, n, t_col), method, n,
                    "public, column")
            add(f"{name} n_terms={n}, jitted", jitted(method, n), method, n, "jit, column")

    for tol in PRICER_TOLS:
        pricer = qmr.fourier_pricer(model, market, strikes, t_col, is_call, method="lewis",
                                    tol=tol)
        label = (f"fourier_pricer Lewis tol={tol if tol else 'default 1e-14'} "
                 f"(auto n_terms={pricer.n_terms}), call")
        add(label, lambda pricer=pricer: pricer(m64), "lewis", pricer.n_terms,
            "fourier_pricer")

    # ---- where the time goes: fixed per-expiry cost vs per-strike cost
    print("\nstrike-count scan (jitted, column expiries):")
    strike_scan = []
    combos = [("cos", n_min["cos"] or 256), ("cos", traced_n["cos"]),
              ("lewis", n_min["lewis"] or traced_n["lewis"])]
    for method, n in combos if not args.quick else combos[:1]:
        for ns in cfg["strike_counts"]:
            z = np.linspace(-2.0, 2.0, ns)
            fwd = SPOT * np.exp((RATE - DIV) * expiries)
            ks = fwd[:, None] * np.exp(z[None, :] * np.sqrt(PARAMS["v0"] * expiries)[:, None])
            kj, cj = jnp.asarray(ks), jnp.asarray(ks >= fwd[:, None])
            f = jax.jit(lambda m, kj=kj, cj=cj, method=method, n=n: qmr.fourier_price(
                m, market, kj, tcol_j, cj, method=method, n_terms=n))
            t = _util.time_call(f, m64, repeats=cfg["scan_repeats"], warmup=1,
                                min_time=cfg["scan_min_time"])
            strike_scan.append(dict(method=method, n_terms=n, n_strikes=ns,
                                    n_options=ks.size, best_s=t["best_s"]))
            print(f"  {method:5s} n={n:5d} strikes/expiry={ns:3d}: {t['best_s'] * 1e3:8.3f} ms")
    noop = jax.jit(lambda m: m.v0 + 1.0)
    t_noop = _util.time_call(noop, m64, repeats=200, warmup=1)["best_s"]
    print(f"  dispatch floor (trivial jitted call): {t_noop * 1e6:.1f} us")

    # ---- headline
    best_label = max((k for k, v in cases.items() if v["meets_goal"]),
                     key=lambda k: cases[k]["ratio_vs_ql_default"], default=None)
    cos_default = next(v for k, v in cases.items()
                       if k.startswith("COS default") and "[10,1]" in k)
    headline = [
        dict(metric="COS default vs QuantLib adaptive 1e-12: max rel diff",
             value=f"{cos_default['max_rel']:.1e}", goal="<= 1e-8",
             met=cos_default["max_rel"] <= GOAL_DIFF),
        dict(metric="COS default vs QuantLib adaptive 1e-12: max abs diff",
             value=f"{cos_default['max_abs']:.1e}", goal="<= 1e-8",
             met=cos_default["max_abs"] <= GOAL_DIFF),
        dict(metric="speed vs QuantLib default, COS default public call",
             value=round(cos_default["ratio_vs_ql_default"], 2), goal=">= 30",
             met=cos_default["ratio_vs_ql_default"] >= GOAL_RATIO),
    ]
    auto = {k: v for k, v in cases.items() if v["how"] == "fourier_pricer" and v["meets_goal"]}
    best_auto = max(auto, key=lambda k: auto[k]["ratio_vs_ql_default"], default=None)
    for label, tag in ((best_auto, "automatically planned"), (best_label, "any setting")):
        if label:
            headline.append(dict(metric=f"best speed meeting agreement ({tag}): {label}",
                                 value=round(cases[label]["ratio_vs_ql_default"], 2),
                                 goal=">= 30",
                                 met=cases[label]["ratio_vs_ql_default"] >= GOAL_RATIO))
    results = dict(
        name=NAME, quick=args.quick, environment=env, config=cfg, model=PARAMS,
        market=dict(spot=SPOT, rate=RATE, div=DIV), expiry_days=DAYS.tolist(),
        strikes=strikes, is_call=is_call, reference=ref_name, reference_prices=ref,
        quantlib={k: {kk: vv for kk, vv in v.items() if kk != "prices"}
                  for k, v in ql_res.items()},
        auto_n_terms=auto_n, traced_n_terms=traced_n, n_terms_min=n_min, n_terms_scan=scan,
        cases=cases, strike_scan=strike_scan, dispatch_floor_s=t_noop, headline=headline,
    )
    js, md = _util.write_results(out_dir, NAME, results, markdown)
    print(f"\nwrote {js} and {md}")
    return results


def markdown(res) -> str:
    f = _util.fmt
    n_opt = len(res["expiry_days"]) * N_STRIKES
    mode = "quick" if res["quick"] else "full"
    lines = [f"# Heston surface pricing: qmr_jax vs QuantLib ({mode})",
             "", f"Machine: {_util.env_line(res['environment'])}; "
             f"QuantLib {res['environment'].get('quantlib')}", "",
             f"{n_opt} options (expiries {res['expiry_days']} days x {N_STRIKES} strikes, "
             "+-2 sd), float64. Differences against "
             f"{res['reference']}; ratio = QuantLib default time / our time (goal >= 30); "
             "best wall time of repeated runs, compilation excluded.", "",
             "## QuantLib", ""]
    rows = []
    for name, v in res["quantlib"].items():
        vs = v.get("vs_reference", {})
        rows.append([name, f(v["timing"]["best_s"] * 1e3, ".2f"),
                     f(n_opt / v["timing"]["best_s"], ".0f"), f(vs.get("max_abs"), ".1e"),
                     f(vs.get("max_rel"), ".1e")])
    lines.append(_util.md_table(["engine", "ms / surface", "prices/s", "max abs diff",
                                 "max rel diff"], rows))
    lines += ["", "## qmr_jax.fourier_price", ""]
    rows = [[k, f(v["timing"]["best_s"] * 1e3, ".3f"), f(v["timing"]["median_s"] * 1e3, ".3f"),
             f(v["timing"]["first_s"] * 1e3, ".0f"), f(v["prices_per_s"], ".0f"),
             f(v["ratio_vs_ql_default"], ".2f"), f(v["max_abs"], ".1e"), f(v["max_rel"], ".1e"),
             "yes" if v["meets_goal"] else "no"] for k, v in res["cases"].items()]
    lines.append(_util.md_table(["case", "ms / surface (best)", "median ms",
                                 "first call ms (compile)", "prices/s", "x QuantLib default",
                                 "max abs diff", "max rel diff", "meets 1e-8"], rows))
    lines += ["", "The first call of a jitted case reuses the compilation done by the n_terms "
              "scan when the same n_terms was scanned."]
    lines += ["", f"Automatic n_terms for this surface: {res['auto_n_terms']}; default under "
              f"jit: {res['traced_n_terms']}; smallest n_terms meeting 1e-8 (from the scan, "
              f"every larger scanned value meeting it too): {res['n_terms_min']}.", "",
              "## n_terms scan (jitted, column expiries)", ""]
    rows = []
    for method, rs in res["n_terms_scan"].items():
        for r in rs:
            rows.append([method, r["n_terms"], f(r["best_s"] * 1e3, ".3f"),
                         f(r["ratio_vs_ql_default"], ".2f"), f(r["max_abs"], ".1e"),
                         f(r["max_rel"], ".1e"), "yes" if r["meets_goal"] else "no"])
    lines.append(_util.md_table(["method", "n_terms", "ms / surface",
                                 "x QuantLib default", "max abs diff", "max rel diff",
                                 "meets 1e-8"], rows))
    lines += ["", "## Cost per expiry vs per strike (jitted, ms)", ""]
    keys = []
    for r in res["strike_scan"]:
        k = (r["method"], r["n_terms"])
        if k not in keys:
            keys.append(k)
    counts = sorted({r["n_strikes"] for r in res["strike_scan"]})
    rows = []
    for k in keys:
        by = {r["n_strikes"]: r["best_s"] for r in res["strike_scan"]
              if (r["method"], r["n_terms"]) == k}
        rows.append([f"{k[0]} n={k[1]}"] + [f(by.get(c, float("nan")) * 1e3, ".3f")
                                           for c in counts])
    lines.append(_util.md_table(["method"] + [f"{c} strikes/expiry" for c in counts], rows))
    lines += ["", f"Dispatch floor (trivial jitted call): {res['dispatch_floor_s'] * 1e6:.1f} us."]
    return "\n".join(lines)


if __name__ == "__main__":
    _util.run_main(main)
