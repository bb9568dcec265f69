"""Book sensitivities by autodiff against one valuation and against bump-and-revalue.

A 200-option BTC-like book (10 expiries, 1 week .. 2 years, x 20 strikes over +-2 standard
deviations of log-moneyness, out-of-the-money calls above the forward and puts below, random
long/short quantities, half of them inverse), priced by one ``fourier_pricer`` (Lewis, terms
planned automatically) through ``qmr_jax.Book.bind``, under Heston and under Bates. Timed, each
jitted over ``(model, market)``, compilation excluded, all in this process and alternately
(A B A B ...) so machine load hits them alike:

* ``value``: one valuation, ``[200]`` values per position;
* ``reverse``: the gradient of the book's total with respect to spot, rate, div and every model
  parameter, by reverse mode (``parameter_sensitivities(..., mode="reverse")``);
* ``forward``: the trader's first-order Greeks per position (delta, vega, rho, theta: the
  Jacobian of the per-position values in (spot, vol, rate, time)) by forward mode;
* ``all first order``: both in one jitted function - the headline, goal < 5 valuations;
* ``second order``: ``sensitivities.greeks`` per position (adds gamma, vanna, volga; forward over
  forward), reported separately;
* ``per-position parameters``: forward-mode derivatives of every position w.r.t. spot, rate,
  div and every model parameter (what bump-and-revalue also gives), reported separately;
* ``bump and revalue``: ``2n + 1`` valuations for the same ``n`` first-order inputs (spot,
  vol, rate, time, div and the model parameters; central differences give every position's
  derivative), as a loop of jitted valuations and as one ``vmap``-ed batch.

The AD gradient is checked against the central differences (largest relative difference per
input, finite-difference steps chosen for float64).

Run: ``python benchmarks/bench_book_sensitivities.py [--quick]``; writes
``results/book_sensitivities.json`` and ``.md``.
"""

from __future__ import annotations

import _util
import numpy as np

NAME = "book_sensitivities"

SPOT, RATE, DIV = 60000.0, 0.03, 0.0
DAYS = np.array([7, 14, 30, 60, 91, 182, 273, 365, 548, 730])
N_STRIKES = 20
MODELS = {
    "Heston": dict(v0=0.36, kappa=2.0, theta=0.4, xi=1.0, rho=-0.4),
    "Bates": dict(v0=0.30, kappa=2.0, theta=0.30, xi=0.9, rho=-0.2, lam=3.0, mu_j=-0.04,
                  sigma_j=0.14),
}
GOAL_RATIO = 5.0
# finite-difference steps (absolute) per input; spot relative
FD_STEPS = {"spot": 1e-4, "vol": 1e-5, "rate": 1e-5, "time": 1e-6, "div": 1e-5}
FD_PARAM_STEP = 1e-5

FULL = dict(repeats=200)
QUICK = dict(repeats=15)


def build_book(qmr, book_mod):
    expiries = DAYS / 365.0
    fwd = SPOT * np.exp((RATE - DIV) * expiries)
    z = np.linspace(-2.0, 2.0, N_STRIKES)
    strikes = fwd[:, None] * np.exp(z[None, :] * np.sqrt(0.36 * expiries)[:, None])
    strikes = np.round(strikes, -1)
    rng = np.random.default_rng(7)
    qty = rng.choice([-1.0, 1.0], size=strikes.shape) * rng.integers(1, 21, size=strikes.shape)
    positions = []
    for e, t in enumerate(expiries):
        for j in range(N_STRIKES):
            positions.append(book_mod.Position.european(
                float(strikes[e, j]), float(t), bool(strikes[e, j] >= fwd[e]),
                float(qty[e, j]), settlement="inverse" if (e + j) % 2 else "usd"))
    return book_mod.Book("benchmark book (200 options)", "BTC", tuple(positions))


def main(argv=None):
    args = _util.parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = QUICK if args.quick else FULL
    out_dir = _util.results_dir(args)
    jax = _util.require("jax", "JAX is the library's backend")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    qmr = _util.require("qmr_jax")
    book_mod = _util.require("qmr_jax.book", "the Book")
    sens_mod = _util.require("qmr_jax.sensitivities", "greeks, parameter_sensitivities")
    env = _util.environment()
    print(_util.env_line(env))

    book = build_book(qmr, book_mod)
    market = qmr.Market(jnp.float64(SPOT), jnp.float64(RATE), jnp.float64(DIV))
    results = {}
    for model_name, params in MODELS.items():
        model = getattr(qmr, model_name)(**{k: jnp.float64(v) for k, v in params.items()})
        valuer = book.bind(model, market)
        print(f"\n{model_name}: {len(book)} options, {valuer.pricer!r}, layout {valuer.layout}")
        results[model_name] = run_model(jax, jnp, sens_mod, valuer, model, market, cfg)

    headline = []
    for model_name, r in results.items():
        headline.append(dict(
            metric=f"{model_name}: all first-order sensitivities (reverse-mode gradient of the "
                   "total + forward-mode Greeks per position) / one valuation",
            value=round(r["ratios"]["all_first_order"], 2), goal=f"< {GOAL_RATIO:g}",
            met=r["ratios"]["all_first_order"] < GOAL_RATIO))
        headline.append(dict(
            metric=f"{model_name}: bump-and-revalue ({r['n_bump_valuations']} valuations, "
                   "loop) / all first-order sensitivities by AD",
            value=round(r["ratios"]["bump_loop_vs_ad"], 2), goal="-", met=None))
    data = dict(name=NAME, quick=args.quick, environment=env, config=cfg,
                market=dict(spot=SPOT, rate=RATE, div=DIV), expiry_days=DAYS.tolist(),
                n_options=len(book), models=MODELS, results=results, headline=headline)
    js, md = _util.write_results(out_dir, NAME, data, markdown)
    print(f"\nwrote {js} and {md}")
    return data


def run_model(jax, jnp, sens_mod, valuer, model, market, cfg):
    Market = type(market)
    fields = model._fields
    names = ("spot", "vol", "rate", "time", "div", *fields)
    x0 = jnp.stack([market.spot, jnp.zeros(()), market.rate, jnp.zeros(()), market.div,
                    *model])

    def values_at(x):
        """Per-position values at the input vector ``x`` (names above)."""
        m = type(model)(*(x[5 + i] for i in range(len(fields))))
        m = sens_mod.shift_vol(m, x[1])
        return valuer(m, Market(x[0], x[2], x[4]), x[3])

    value = jax.jit(lambda m, mk: valuer(m, mk))

    def reverse(m, mk):
        return sens_mod.parameter_sensitivities(valuer.total, m, mk, second_order=False,
                                                mode="reverse").gradient

    def forward(m, mk):
        f = valuer.risk_fn(m, mk, total=False)
        return jax.jacfwd(f)(valuer.risk_point(mk))  # [n, 4]: delta, vega, rho, theta

    def both(m, mk):
        return reverse(m, mk), forward(m, mk)

    def second(m, mk):
        return sens_mod.greeks(valuer, m, mk)

    def per_position_params(m, mk):
        return sens_mod.parameter_sensitivities(valuer, m, mk, second_order=False,
                                                mode="forward").gradient

    n_in = len(names)
    steps = np.array([FD_STEPS.get(n, FD_PARAM_STEP) for n in names])
    steps[0] *= float(market.spot)
    bumps = np.zeros((2 * n_in + 1, n_in))
    for i in range(n_in):
        bumps[1 + 2 * i, i] = steps[i]
        bumps[2 + 2 * i, i] = -steps[i]
    xs = jnp.asarray(np.asarray(x0)[None, :] + bumps)
    batch = jax.jit(jax.vmap(values_at))
    single = jax.jit(values_at)
    rows = [xs[k] for k in range(xs.shape[0])]

    def bump_loop():
        return [single(r) for r in rows]

    fns = {
        "value": lambda: value(model, market),
        "reverse": jax.jit(reverse),
        "forward": jax.jit(forward),
        "all_first_order": jax.jit(both),
        "second_order": jax.jit(second),
        "per_position_params": jax.jit(per_position_params),
    }
    calls = {k: (f if k == "value" else (lambda f=f: f(model, market)))
             for k, f in fns.items()}
    calls["bump_loop"] = bump_loop
    calls["bump_vmap"] = lambda: batch(xs)
    timing = _util.time_interleaved(calls, repeats=cfg["repeats"], warmup=1)
    t_value = timing["value"]["best_s"]
    for k, t in timing.items():
        print(f"  {k:22s} best {t['best_s'] * 1e3:8.3f} ms  median {t['median_s'] * 1e3:8.3f}"
              f" ms  (x{t['best_s'] / t_value:6.2f} one valuation; first call "
              f"{t['first_s']:.2f} s)")

    # accuracy: AD against central differences on the same function
    vals = np.asarray(timing["bump_vmap"]["result"], np.float64)
    fd = np.stack([(vals[1 + 2 * i] - vals[2 + 2 * i]) / (2 * steps[i]) for i in range(n_in)],
                  axis=-1)  # [n_pos, n_in]
    rev = np.asarray(timing["reverse"]["result"], np.float64)  # spot, rate, div, params
    fwd = np.asarray(timing["forward"]["result"], np.float64)  # [n, 4]
    ad_total = dict(zip(("spot", "rate", "div", *fields), rev, strict=True))
    ad_total["vol"] = float(fwd[:, 1].sum())
    ad_total["time"] = float(fwd[:, 3].sum())
    agreement = {}
    for i, n in enumerate(names):
        a, b = ad_total[n], float(fd[:, i].sum())
        agreement[n] = dict(ad=a, bump=b, rel_diff=abs(a - b) / max(abs(a), 1e-300))
    worst = max(agreement.values(), key=lambda d: d["rel_diff"])["rel_diff"]
    print(f"  AD vs central differences (book totals): worst relative difference {worst:.1e}")

    ratios = {k: t["best_s"] / t_value for k, t in timing.items()}
    ratios["bump_loop_vs_ad"] = timing["bump_loop"]["best_s"] / timing["all_first_order"][
        "best_s"]
    ratios["bump_vmap_vs_ad"] = timing["bump_vmap"]["best_s"] / timing["all_first_order"][
        "best_s"]
    print(f"  all first-order sensitivities = {ratios['all_first_order']:.2f} valuations "
          f"(goal < {GOAL_RATIO:g}); bump-and-revalue ({2 * n_in + 1} valuations) "
          f"{ratios['bump_loop_vs_ad']:.1f}x slower in a loop, "
          f"{ratios['bump_vmap_vs_ad']:.1f}x as one vmapped batch")
    return dict(
        model=type(model).__name__, n_terms=valuer.pricer.n_terms, layout=valuer.layout,
        inputs=list(names), n_bump_valuations=2 * n_in + 1,
        timing={k: _util.timing_summary(t) for k, t in timing.items()}, ratios=ratios,
        ad_vs_bump=agreement, worst_rel_diff=worst,
    )


def markdown(res) -> str:
    f = _util.fmt
    mode = "quick" if res["quick"] else "full"
    lines = [f"# Book sensitivities: autodiff vs one valuation vs bump-and-revalue ({mode})", "",
             f"Machine: {_util.env_line(res['environment'])}", "",
             f"{res['n_options']} European options (expiries {res['expiry_days']} days x "
             f"{N_STRIKES} strikes, +-2 sd, OTM, random long/short quantities), one "
             "`fourier_pricer` (Lewis, automatic terms) via `Book.bind`; float64; best wall "
             "time of calls run alternately, compilation excluded. Ratio = time / one "
             f"valuation (goal for all first-order sensitivities: < {GOAL_RATIO:g}).", ""]
    labels = {
        "value": "one valuation (200 values)",
        "reverse": "reverse mode: gradient of the total w.r.t. spot, rate, div, all params",
        "forward": "forward mode: delta, vega, rho, theta per position",
        "all_first_order": "**all first-order sensitivities** (reverse + forward, one jit)",
        "second_order": "second order: `sensitivities.greeks` per position (+gamma, vanna, "
                        "volga)",
        "per_position_params": "forward mode: every position w.r.t. spot, rate, div, params",
        "bump_loop": "bump-and-revalue, 2n+1 jitted valuations in a loop",
        "bump_vmap": "bump-and-revalue, 2n+1 valuations as one vmapped batch",
    }
    for model, r in res["results"].items():
        lines += [f"## {model} ({r['n_terms']} Lewis terms; n = {len(r['inputs'])} inputs: "
                  f"{', '.join(r['inputs'])}; {r['n_bump_valuations']} bump valuations)", ""]
        rows = [[labels.get(k, k), f(t["best_s"] * 1e3, ".3f"), f(t["median_s"] * 1e3, ".3f"),
                 f(r["ratios"][k], ".2f"), f(t["first_s"], ".2f")]
                for k, t in r["timing"].items()]
        lines.append(_util.md_table(["case", "best ms", "median ms", "x one valuation",
                                     "first call s (compile)"], rows))
        lines += ["", f"Bump-and-revalue / AD (all first order): loop "
                  f"{f(r['ratios']['bump_loop_vs_ad'], '.2f')}x, vmapped batch "
                  f"{f(r['ratios']['bump_vmap_vs_ad'], '.2f')}x. AD against central "
                  f"differences of the book total: worst relative difference "
                  f"{f(r['worst_rel_diff'], '.1e')}.", ""]
    lines += ["## Headline", ""]
    lines.append(_util.md_table(["figure", "value", "goal", "met"], [
        [h["metric"], h["value"], h["goal"],
         "-" if h["met"] is None else ("yes" if h["met"] else "**no**")]
        for h in res["headline"]]))
    return "\n".join(lines)


if __name__ == "__main__":
    _util.run_main(main)
