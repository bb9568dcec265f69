"""Heston QE Monte Carlo throughput: ``qmr_jax.simulate`` against NumPy, same scheme, same process.

Measures path-steps per second of the Andersen (2008) quadratic-exponential scheme
(``psi_c = 1.5``, ``gamma1 = gamma2 = 1/2``, martingale correction ``K0*``) in float32 and
float64:

* ``jax``: ``qmr_jax.simulate.simulate(..., record="summary")`` (final, max, min and average of
  the spot over the step dates; O(n_paths) memory), jitted, compilation excluded;
* ``numpy``: the same scheme written below with vectorised NumPy in the same dtype, two
  ``numpy.random.Generator.standard_normal`` draws per path and step, ``U = Phi(Zv)`` for the
  exponential branch (as the simulator does), the same per-step summary, paths processed in
  cache-sized chunks.

Both run in this process, alternately (A B A B ...), so machine load hits both alike; the
ratio ``numpy time / jax time`` is printed for wall time and for process CPU time (all threads;
on a shared machine the CPU time is the steadier measure). Goal: ratio >= 2.

Honesty check: both implementations price an at-the-money call from their final spots; the two
estimates must agree within 4 combined standard errors (each is also compared with the COS
price, which differs from both by the QE discretisation bias plus noise).

Diagnostics (where the time goes), at a smaller size:

* RNG alone (the simulator's key derivation and normal draws, consumed trivially), arithmetic
  alone (the library's QE variance step fed pre-drawn normals), and the full step, for JAX and
  NumPy; the simulator with antithetic pairs (half the draws) for comparison;
* a probe: the same QE step written here in JAX, once with ``1 - U = Phi(-Zv)`` computed from
  ``Zv`` (with the simulator's own function for it when it has one) and once with ``1 - U``
  taken from the uniform that ``jax.random.normal`` turns into ``Zv`` (identical numbers, no
  normal-CDF evaluation), and once more with the uniforms and normals drawn in float32 and
  cast (for float64 runs: what the random numbers cost at float32 resolution);
* PRNG implementations: threefry2x32 (default), rbg, unsafe_rbg (typed keys, same process);
* XLA CPU flags, each in a fresh subprocess, and the default flags pinned to one core;
* the main comparison again in a fresh process with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (both cores as JAX devices, one
  simulation chunk on each, as the command-line tool sets it up)
  (these last three items are skipped with ``--quick``).

Run: ``python benchmarks/bench_heston_qe.py [--quick]``; writes
``results/heston_qe.json`` and ``results/heston_qe.md``.
"""

from __future__ import annotations

import functools
import json
import math

import _util
import numpy as np

NAME = "heston_qe"

PARAMS = dict(v0=0.36, kappa=2.0, theta=0.4, xi=1.0, rho=-0.4)
SPOT, RATE, DIV = 60000.0, 0.02, 0.0
EXPIRY = 1.0
PSI_C = 1.5
BLOCK = 512  # paths per block in the JAX diagnostics (the simulator's BLOCK_SIZE)

FULL = dict(n_paths=200_000, n_steps=252, repeats=3, prof_paths=65_536, prof_steps=64,
            np_chunk=16_384)
QUICK = dict(n_paths=16_384, n_steps=32, repeats=1, prof_paths=8_192, prof_steps=16,
             np_chunk=8_192)

TWO_DEVICES = "--xla_force_host_platform_device_count=2"
XLA_FLAG_SETS = [
    "",
    "--xla_cpu_enable_fast_math=true",
    "--xla_cpu_prefer_vector_width=512",
    "--xla_cpu_multi_thread_eigen=false",
    "--xla_cpu_use_fusion_emitters=false",
    TWO_DEVICES,
    TWO_DEVICES + " --xla_cpu_prefer_vector_width=512",
]


# ------------------------------------------------------------------------------------------
# NumPy implementation of the same scheme


def _np_constants(p, dt, dtype):
    c = np.dtype(dtype).type
    kappa, theta, xi, rho = p["kappa"], p["theta"], p["xi"], p["rho"]
    ekt = math.exp(-kappa * dt)
    one_m = -math.expm1(-kappa * dt)
    half_c = 0.5 * dt * (kappa * rho / xi - 0.5)
    k1 = half_c - rho / xi
    k2 = half_c + rho / xi
    k3 = 0.5 * dt * (1.0 - rho * rho)
    return dict(
        ekt=c(ekt),
        theta_one_m=c(theta * one_m),
        s2_v=c(xi**2 * ekt / kappa * one_m),
        s2_c=c(theta * xi**2 / (2.0 * kappa) * one_m**2),
        k1=c(k1), k2=c(k2), k3=c(k3), big_a=c(k2 + 0.5 * k3), k13=c(k1 + 0.5 * k3),
        k0_plain=c(-rho * kappa * theta / xi * dt),
        one=c(1.0), zero=c(0.0), two=c(2.0), half=c(0.5), psi_c=c(PSI_C),
    )


def np_qe_step(v, zv, z, k, ndtr):
    """One QE step on NumPy arrays: returns ``(v_next, dy)`` (``dy`` the log-forward increment).

    Same formulas, branch rules and fallbacks as ``qmr_jax.simulate._qe_variance``.
    """
    m = k["theta_one_m"] + v * k["ekt"]
    s2 = v * k["s2_v"] + k["s2_c"]
    psi = s2 / (m * m)
    quad = psi <= k["psi_c"]
    inv = k["two"] / np.where(quad, psi, k["one"])
    b2 = inv - k["one"] + np.sqrt(inv) * np.sqrt(np.maximum(inv - k["one"], k["zero"]))
    a = m / (k["one"] + b2)
    v_quad = a * (np.sqrt(b2) + zv) ** 2
    psi_e = np.where(quad, k["two"], psi)
    p = (psi_e - k["one"]) / (psi_e + k["one"])
    beta = (k["one"] - p) / m
    one_m_u = ndtr(-zv)
    with np.errstate(divide="ignore", invalid="ignore"):
        v_exp = np.where(k["one"] - one_m_u <= p, k["zero"],
                         np.log((k["one"] - p) / one_m_u) / beta)
    v_next = np.where(quad, v_quad, v_exp)
    big_a = k["big_a"]
    one_m_2aa = k["one"] - k["two"] * big_a * a
    ok_q = one_m_2aa > 0
    safe_q = np.where(ok_q, one_m_2aa, k["one"])
    k0_q = -big_a * b2 * a / safe_q + k["half"] * np.log(safe_q)
    ok_e = beta > big_a
    safe_e = np.where(ok_e, beta - big_a, k["one"])
    k0_e = -np.log(p + beta * (k["one"] - p) / safe_e)
    k0 = np.where(quad, np.where(ok_q, k0_q - k["k13"] * v, k["k0_plain"]),
                  np.where(ok_e, k0_e - k["k13"] * v, k["k0_plain"]))
    dy = k0 + k["k1"] * v + k["k2"] * v_next + np.sqrt(k["k3"] * (v + v_next)) * z
    return v_next, dy


def numpy_qe(n_paths, n_steps, dtype, seed, *, chunk, draws=None, arithmetic=True):
    """Simulate ``n_paths`` QE paths to ``EXPIRY`` in ``n_steps`` steps with NumPy.

    Returns the final spots (the running max/min/average are computed too, to match the work of
    the JAX ``record="summary"``). ``draws``: pre-drawn normals ``[n_steps, 2, n_paths]`` (the
    arithmetic-only diagnostic); ``arithmetic=False`` draws the normals and does nothing else
    (the RNG-only diagnostic).
    """
    from scipy.special import ndtr

    dtype = np.dtype(dtype)
    c = dtype.type
    rng = np.random.default_rng(seed)
    dt = EXPIRY / n_steps
    k = _np_constants(PARAMS, dt, dtype)
    fwd = [c(SPOT * math.exp((RATE - DIV) * dt * (i + 1))) for i in range(n_steps)]
    finals = []
    for start in range(0, n_paths, chunk):
        n = min(chunk, n_paths - start)
        y = np.zeros(n, dtype)
        v = np.full(n, PARAMS["v0"], dtype)
        hi = np.full(n, SPOT, dtype)
        lo = hi.copy()
        total = np.zeros(n, dtype)
        s = hi
        for i in range(n_steps):
            if draws is None:
                zv = rng.standard_normal(n, dtype=dtype)
                z = rng.standard_normal(n, dtype=dtype)
            else:
                zv = draws[i, 0, start:start + n]
                z = draws[i, 1, start:start + n]
            if not arithmetic:
                y += z
                v += zv
                continue
            v, dy = np_qe_step(v, zv, z, k, ndtr)
            y += dy
            s = fwd[i] * np.exp(y)
            np.maximum(hi, s, out=hi)
            np.minimum(lo, s, out=lo)
            total += s
        finals.append(s if arithmetic else y)
    return np.concatenate(finals)


# ------------------------------------------------------------------------------------------
# JAX pieces


def _jax_setup():
    jax = _util.require("jax", "JAX is the library's backend")
    jax.config.update("jax_enable_x64", True)  # float64 runs; float32 runs pass float32 dtypes
    sim = _util.require("qmr_jax.simulate", "the path simulator under test")
    qmr = _util.require("qmr_jax")
    return jax, sim, qmr


def jax_simulate(sim, qmr, key, n_paths, n_steps, dtype, antithetic=False):
    model = qmr.Heston(**PARAMS)
    market = qmr.Market(SPOT, RATE, DIV)
    return sim.simulate(model, market, [EXPIRY], key=key, n_paths=n_paths, n_steps=n_steps,
                        record="summary", dtype=dtype, antithetic=antithetic)


def make_jax_diagnostics(jax, sim, dtype, n_paths, n_steps):
    """Jitted RNG-only, arithmetic-only and probe scans over ``n_paths`` x ``n_steps``."""
    import jax.numpy as jnp
    from jax import lax
    from jax.scipy.special import ndtr

    nb = max(n_paths // BLOCK, 1)
    dt_f = EXPIRY / n_steps
    qe_variance = getattr(sim, "_qe_variance", None)
    upper_tail = getattr(sim, "_upper_tail", lambda z: ndtr(-z))  # 1 - Phi(z), as simulated

    def block_keys(key):
        return jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(nb, dtype=jnp.int32))

    def step_keys(bkeys, i):  # as in the simulator: split(fold_in(block_key, step), 3)[:, 0]
        return jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, i), 3))(bkeys)[:, 0]

    def draw_normals(keys):  # [nb, 2, BLOCK] -> (zv, z) each [nb, BLOCK]
        zz = jax.vmap(lambda k: jax.random.normal(k, (2, BLOCK), dtype))(keys)
        return zz[:, 0], zz[:, 1]

    def draw_with_uniform(keys, draw_dtype=dtype):
        # jax.random.normal = sqrt(2) erfinv(u), u uniform on (-1, 1): Phi(-Zv) = (1 - u) / 2.
        lo = np.nextafter(np.array(-1.0, draw_dtype), np.array(0.0, draw_dtype),
                          dtype=draw_dtype)
        u = jax.vmap(lambda k: jax.random.uniform(k, (2, BLOCK), draw_dtype, lo, 1.0))(keys)
        z = np.sqrt(2.0).astype(draw_dtype) * lax.erf_inv(u)
        u, z = u.astype(dtype), z.astype(dtype)
        return z[:, 0], z[:, 1], 0.5 * (1.0 - u[:, 0])

    shape = (nb, BLOCK)
    init = lambda: (jnp.zeros(shape, dtype), jnp.full(shape, PARAMS["v0"], dtype),
                    jnp.zeros(shape, dtype))

    @jax.jit
    def rng_only(key):
        bkeys = block_keys(key)

        def body(carry, i):
            y, v, acc = carry
            zv, z = draw_normals(step_keys(bkeys, i))
            return (y + z, v + zv, acc), None

        return lax.scan(body, init(), jnp.arange(n_steps))[0][:2]

    model = None
    if qe_variance is not None:
        import qmr_jax as qmr

        model = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), qmr.Heston(**PARAMS))

    @jax.jit
    def arith_only(draws):  # draws [n_steps, 2, nb, BLOCK]
        d = jnp.asarray(dt_f, dtype)

        def body(carry, zz):
            y, v, acc = carry
            v_next, drift, k2, k3 = qe_variance(model, v, d, zz[0])
            y = y + drift + k2 * v_next + jnp.sqrt(k3 * (v + v_next)) * zz[1]
            s = SPOT * jnp.exp(y)
            return (y, v_next, acc + s), None

        return lax.scan(body, init(), draws)[0]

    k = {name: (jnp.asarray(val, dtype) if isinstance(val, np.generic) else val)
         for name, val in _np_constants(PARAMS, dt_f, dtype).items()}

    def probe_step(v, zv, z, one_m_u):
        m = k["theta_one_m"] + v * k["ekt"]
        s2 = v * k["s2_v"] + k["s2_c"]
        psi = s2 / (m * m)
        quad = psi <= k["psi_c"]
        inv = 2.0 / jnp.where(quad, psi, 1.0)
        b2 = inv - 1.0 + jnp.sqrt(inv) * jnp.sqrt(jnp.maximum(inv - 1.0, 0.0))
        a = m / (1.0 + b2)
        v_quad = a * (jnp.sqrt(b2) + zv) ** 2
        psi_e = jnp.where(quad, 2.0, psi)
        p = (psi_e - 1.0) / (psi_e + 1.0)
        beta = (1.0 - p) / m
        v_exp = jnp.where(1.0 - one_m_u <= p, 0.0, jnp.log((1.0 - p) / one_m_u) / beta)
        v_next = jnp.where(quad, v_quad, v_exp)
        big_a = k["big_a"]
        one_m_2aa = 1.0 - 2.0 * big_a * a
        ok_q = one_m_2aa > 0
        safe_q = jnp.where(ok_q, one_m_2aa, 1.0)
        k0_q = -big_a * b2 * a / safe_q + 0.5 * jnp.log(safe_q)
        ok_e = beta > big_a
        safe_e = jnp.where(ok_e, beta - big_a, 1.0)
        k0_e = -jnp.log(p + beta * (1.0 - p) / safe_e)
        k0 = jnp.where(quad, jnp.where(ok_q, k0_q - k["k13"] * v, k["k0_plain"]),
                       jnp.where(ok_e, k0_e - k["k13"] * v, k["k0_plain"]))
        dy = k0 + k["k1"] * v + k["k2"] * v_next + jnp.sqrt(k["k3"] * (v + v_next)) * z
        return v_next, dy

    @functools.partial(jax.jit, static_argnames=("from_uniform", "f32_draws"))
    def probe(key, from_uniform, f32_draws=False):
        bkeys = block_keys(key)

        def body(carry, i):
            y, v, acc = carry
            keys = step_keys(bkeys, i)
            if from_uniform:
                zv, z, one_m_u = draw_with_uniform(keys, jnp.float32 if f32_draws else dtype)
            else:
                zv, z = draw_normals(keys)
                one_m_u = upper_tail(zv)
            v, dy = probe_step(v, zv, z, one_m_u)
            y = y + dy
            s = SPOT * jnp.exp(y)
            return (y, v, acc + s), None

        return lax.scan(body, init(), jnp.arange(n_steps))[0]

    return dict(rng_only=rng_only, arith_only=arith_only if qe_variance else None,
                probe=probe, n_paths=nb * BLOCK)


# ------------------------------------------------------------------------------------------
# statistics


def call_stats(finals, strike):
    x = np.exp(-RATE * EXPIRY) * np.maximum(np.asarray(finals, np.float64) - strike, 0.0)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


def fourier_call(qmr, strike):
    try:
        return float(qmr.fourier_price(qmr.Heston(**PARAMS), qmr.Market(SPOT, RATE, DIV),
                                       strike, EXPIRY, True))
    except Exception as exc:  # the comparison still stands without it
        print(f"  (COS reference unavailable: {exc})")
        return None


# ------------------------------------------------------------------------------------------
# XLA flag children


CHILD = _util.CHILD_PRELUDE + """
import os, time
if {pin}:
    os.sched_setaffinity(0, {{0}})
import jax
jax.config.update("jax_enable_x64", True)
import bench_heston_qe as b
jax_, sim, qmr = b._jax_setup()
out = {{}}
for name in ("float32", "float64"):
    dtype = getattr(jax.numpy, name)
    key = jax.random.key(0)
    f = lambda: b.jax_simulate(sim, qmr, key, {n_paths}, {n_steps}, dtype)
    t = b._util.time_call(f, repeats={repeats})
    n = {n_paths} * {n_steps}
    out[name] = dict(wall_ns=t["best_s"] / n * 1e9, cpu_ns=t["cpu_best_s"] / n * 1e9,
                     first_s=t["first_s"])
_report(**out)
"""


DEVICES_CHILD = _util.CHILD_PRELUDE + """
import jax
jax.config.update("jax_enable_x64", True)
import bench_heston_qe as b
jax_, sim, qmr = b._jax_setup()
cfg = json.loads({cfg!r})
ref = b.fourier_call(qmr, b.SPOT)
out = dict(devices=[str(d) for d in jax.devices()])
for name in ("float32", "float64"):
    print("== " + name, flush=True)
    d = b.compare(jax, sim, qmr, getattr(jax.numpy, name), cfg, ref)
    out[name] = {{k: v for k, v in d.items() if not isinstance(v, dict)}}
_report(**out)
"""


def run_two_devices_child(cfg):
    """The main comparison again in a process where XLA exposes the 2 cores as 2 devices
    (``simulate`` then runs one chunk per device concurrently, as the CLI sets it up)."""
    print(f"\n== main comparison with XLA_FLAGS={TWO_DEVICES} (fresh subprocess)")
    code = DEVICES_CHILD.format(cfg=json.dumps(cfg))
    try:
        r = _util.run_child(code, env={"XLA_FLAGS": TWO_DEVICES}, timeout=1200)
    except RuntimeError as exc:
        print(f"  failed: {exc}")
        return dict(error=str(exc)[-500:])
    print("\n".join("  " + line for line in r["output"].splitlines()
                    if not line.startswith("RESULT ")))
    return dict(flags=TWO_DEVICES, **r["child"])


def run_flag_children(n_paths, n_steps, repeats):
    rows = []
    variants = [(f, False) for f in XLA_FLAG_SETS] + [("", True)]
    for flags, pin in variants:
        label = (flags or "(default flags)") + (" pinned to 1 core" if pin else "")
        code = CHILD.format(pin=pin, n_paths=n_paths, n_steps=n_steps, repeats=repeats)
        try:
            r = _util.run_child(code, env={"XLA_FLAGS": flags}, timeout=600)
            res = r["child"]
            rows.append(dict(flags=label, **{f"{k}_{m}": v[m] for k, v in res.items()
                                            if isinstance(v, dict) for m in v}))
        except RuntimeError as exc:
            rows.append(dict(flags=label, error=str(exc).splitlines()[-1][:200]))
        print(f"  {label}: {rows[-1]}")
    return rows


# ------------------------------------------------------------------------------------------


def main(argv=None):
    args = _util.parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = QUICK if args.quick else FULL
    out_dir = _util.results_dir(args)
    jax, sim, qmr = _jax_setup()
    import jax.numpy as jnp

    _util.require("scipy.special", "ndtr for the NumPy QE implementation")
    env = _util.environment()
    print(_util.env_line(env))
    n_paths, n_steps = cfg["n_paths"], cfg["n_steps"]
    work = n_paths * n_steps
    strike = SPOT
    ref = fourier_call(qmr, strike)
    results = dict(name=NAME, quick=args.quick, environment=env, config=cfg,
                   model=PARAMS, market=dict(spot=SPOT, rate=RATE, div=DIV), expiry=EXPIRY,
                   fourier_call=ref, dtypes={})
    headline = []

    for dname in ("float32", "float64"):
        dtype = getattr(jnp, dname)
        print(f"\n== {dname}: {n_paths} paths x {n_steps} steps ({work:.3g} path-steps)")
        d = compare(jax, sim, qmr, dtype, cfg, ref)
        ratio, cpu_ratio, z_agree = d["ratio_wall"], d["ratio_cpu"], d["agreement_z"]

        # mc_price end to end (payoff on device, float64 moments on host), for context
        try:
            mcm = _util.require("qmr_jax.pricing.montecarlo", "mc_price")
            pay = _util.require("qmr_jax.pricing.payoffs", "payoffs").european(strike, EXPIRY,
                                                                              True)
            tm = _util.time_call(
                mcm.mc_price, qmr.Heston(**PARAMS), qmr.Market(SPOT, RATE, DIV), pay,
                key=jax.random.key(7), n_paths=n_paths, n_steps=n_steps, dtype=dtype,
                repeats=1, warmup=1)
            d["mc_price"] = dict(**_util.timing_summary(tm), value=float(tm["result"].value),
                                 stderr=float(tm["result"].stderr),
                                 path_steps_per_s=work / tm["best_s"])
            print(f"  mc_price: {work / tm['best_s'] / 1e6:.2f} M path-steps/s "
                  f"({tm['best_s']:.3f} s), value {float(tm['result'].value):.2f} +- "
                  f"{float(tm['result'].stderr):.2f}")
        except SystemExit as exc:
            d["mc_price"] = dict(error=str(exc))

        d["profile"] = profile(jax, sim, qmr, dtype, dname, cfg)
        results["dtypes"][dname] = d
        headline.append(dict(metric=f"QE throughput ratio jax/numpy, {dname} (wall)",
                             value=round(ratio, 2), goal=">= 2", met=ratio >= 2.0))
        headline.append(dict(metric=f"QE throughput ratio jax/numpy, {dname} (cpu time)",
                             value=round(cpu_ratio, 2), goal=">= 2", met=cpu_ratio >= 2.0))
        headline.append(dict(metric=f"jax vs numpy ATM call, {dname} (combined se)",
                             value=round(z_agree, 2), goal="abs(z) < 4", met=abs(z_agree) < 4))

    if not args.quick:
        two = run_two_devices_child(cfg)
        results["two_host_devices"] = two
        for dname in ("float32", "float64"):
            if dname in two:
                r = two[dname]
                headline.append(dict(
                    metric=f"QE throughput ratio jax/numpy, {dname}, 2 host devices (wall)",
                    value=round(r["ratio_wall"], 2), goal=">= 2", met=r["ratio_wall"] >= 2.0))
        results["prng"] = prng_impls(jax, sim, qmr, cfg)
        print("\n== XLA CPU flags (fresh subprocess each, "
              f"{cfg['prof_paths']} paths x {cfg['prof_steps']} steps)")
        results["xla_flags"] = run_flag_children(cfg["prof_paths"], cfg["prof_steps"], 3)
    results["headline"] = headline
    js, md = _util.write_results(out_dir, NAME, results, markdown)
    print(f"\nwrote {js} and {md}")
    return results


def compare(jax, sim, qmr, dtype, cfg, ref):
    """JAX simulate vs NumPy QE, interleaved, at the main size; prints and returns the figures."""
    n_paths, n_steps, reps = cfg["n_paths"], cfg["n_steps"], cfg["repeats"]
    work = n_paths * n_steps
    strike = SPOT
    seeds = iter(range(1000))
    keys = iter(jax.random.key(i) for i in range(1000))
    t = _util.time_interleaved({
        "jax": lambda: jax_simulate(sim, qmr, next(keys), n_paths, n_steps, dtype).final,
        "numpy": lambda: numpy_qe(n_paths, n_steps, dtype, next(seeds), chunk=cfg["np_chunk"]),
    }, repeats=reps, warmup=1)
    jx, nx = t["jax"], t["numpy"]
    cj, sj = call_stats(jx["result"], strike)
    cn, sn = call_stats(nx["result"], strike)
    z_agree = (cj - cn) / math.hypot(sj, sn)
    ratio = nx["best_s"] / jx["best_s"]
    cpu_ratio = nx["cpu_best_s"] / jx["cpu_best_s"]
    d = dict(
        jax={k: v for k, v in jx.items() if k != "result"},
        numpy={k: v for k, v in nx.items() if k != "result"},
        jax_path_steps_per_s=work / jx["best_s"],
        numpy_path_steps_per_s=work / nx["best_s"],
        jax_cpu_ns_per_path_step=jx["cpu_best_s"] / work * 1e9,
        numpy_cpu_ns_per_path_step=nx["cpu_best_s"] / work * 1e9,
        ratio_wall=ratio, ratio_cpu=cpu_ratio,
        call_jax=cj, stderr_jax=sj, call_numpy=cn, stderr_numpy=sn,
        agreement_z=z_agree, agree_within_4se=bool(abs(z_agree) < 4.0),
        jax_vs_cos_z=None if ref is None else (cj - ref) / sj,
        numpy_vs_cos_z=None if ref is None else (cn - ref) / sn,
    )
    print(f"  jax   : {d['jax_path_steps_per_s'] / 1e6:8.2f} M path-steps/s "
          f"(best {jx['best_s']:.3f} s, median {jx['median_s']:.3f} s, compile+first "
          f"{jx['first_s']:.2f} s, cpu {d['jax_cpu_ns_per_path_step']:.1f} ns/path-step)")
    print(f"  numpy : {d['numpy_path_steps_per_s'] / 1e6:8.2f} M path-steps/s "
          f"(best {nx['best_s']:.3f} s, median {nx['median_s']:.3f} s, "
          f"cpu {d['numpy_cpu_ns_per_path_step']:.1f} ns/path-step)")
    print(f"  ratio numpy/jax: wall {ratio:.2f}x, cpu {cpu_ratio:.2f}x (goal >= 2)")
    print(f"  ATM call: jax {cj:.2f} +- {sj:.2f}, numpy {cn:.2f} +- {sn:.2f}, "
          f"difference {z_agree:+.2f} combined se; COS {ref}")
    return d


def profile(jax, sim, qmr, dtype, dname, cfg):
    """RNG / arithmetic / full-step split, JAX and NumPy, ns of CPU per path-step."""
    import jax.numpy as jnp

    n_steps = cfg["prof_steps"]
    diag = make_jax_diagnostics(jax, sim, dtype, cfg["prof_paths"], n_steps)
    n_paths = diag["n_paths"]
    work = n_paths * n_steps
    key = jax.random.key(3)
    reps = cfg["repeats"]
    draws_np = np.random.default_rng(5).standard_normal((n_steps, 2, n_paths)).astype(dtype)
    draws_j = jnp.asarray(draws_np.reshape(n_steps, 2, n_paths // BLOCK, BLOCK))
    fns = {
        "jax full (simulate)": lambda: jax_simulate(sim, qmr, key, n_paths, n_steps,
                                                    dtype).final,
        "jax full (simulate, antithetic=True)": lambda: jax_simulate(
            sim, qmr, key, n_paths, n_steps, dtype, antithetic=True).final,
        "jax rng only": lambda: diag["rng_only"](key),
        "jax probe: 1-U computed from Zv (as simulator)": lambda: diag["probe"](key, False),
        "jax probe: 1-U from the uniform": lambda: diag["probe"](key, True),
        "jax probe: 1-U from the uniform, float32 draws": lambda: diag["probe"](key, True, True),
        "numpy full": lambda: numpy_qe(n_paths, n_steps, dtype, 1, chunk=cfg["np_chunk"]),
        "numpy rng only": lambda: numpy_qe(n_paths, n_steps, dtype, 1, chunk=cfg["np_chunk"],
                                           arithmetic=False),
        "numpy arithmetic only": lambda: numpy_qe(n_paths, n_steps, dtype, 1,
                                                  chunk=cfg["np_chunk"], draws=draws_np),
    }
    if diag["arith_only"] is not None:
        fns["jax arithmetic only (pre-drawn normals)"] = lambda: diag["arith_only"](draws_j)
    t = _util.time_interleaved(fns, repeats=max(reps, 3), warmup=1)
    rows = {name: dict(cpu_ns=v["cpu_best_s"] / work * 1e9, wall_ns=v["best_s"] / work * 1e9,
                       first_s=v["first_s"]) for name, v in t.items()}
    print(f"  profile ({n_paths} x {n_steps}), ns per path-step (cpu / wall):")
    for name, r in rows.items():
        print(f"    {name:50s} {r['cpu_ns']:7.1f} / {r['wall_ns']:7.1f}")
    return dict(n_paths=n_paths, n_steps=n_steps, rows=rows)


def prng_impls(jax, sim, qmr, cfg):
    import jax.numpy as jnp

    print(f"\n== PRNG implementations ({cfg['prof_paths']} paths x {cfg['prof_steps']} steps)")
    n_paths, n_steps = cfg["prof_paths"], cfg["prof_steps"]
    work = n_paths * n_steps
    out = {}
    for dname in ("float32", "float64"):
        dtype = getattr(jnp, dname)
        fns = {}
        for impl in ("threefry2x32", "rbg", "unsafe_rbg"):
            key = jax.random.key(0, impl=impl)
            diag = make_jax_diagnostics(jax, sim, dtype, n_paths, n_steps)
            fns[f"simulate [{impl}]"] = (
                lambda key=key, dtype=dtype: jax_simulate(sim, qmr, key, n_paths, n_steps,
                                                          dtype).final)
            fns[f"rng only [{impl}]"] = lambda key=key, d=diag: d["rng_only"](key)
        t = _util.time_interleaved(fns, repeats=max(cfg["repeats"], 3), warmup=1)
        out[dname] = {name: dict(cpu_ns=v["cpu_best_s"] / work * 1e9,
                                 wall_ns=v["best_s"] / work * 1e9) for name, v in t.items()}
        for name, r in out[dname].items():
            print(f"  {dname} {name:28s} cpu {r['cpu_ns']:7.1f} ns, wall {r['wall_ns']:7.1f} ns "
                  "per path-step")
    return out


def markdown(res) -> str:
    f = _util.fmt
    cfg = res["config"]
    lines = [f"# Heston QE throughput: qmr_jax vs NumPy ({'quick' if res['quick'] else 'full'})",
             "", f"Machine: {_util.env_line(res['environment'])}", "",
             f"{cfg['n_paths']} paths x {cfg['n_steps']} steps to T = {EXPIRY}; best of "
             f"{cfg['repeats']} interleaved runs, compilation excluded. Ratio = NumPy time / "
             "JAX time (goal >= 2).", ""]
    rows = []
    for dname, d in res["dtypes"].items():
        rows.append([
            dname, f(d["jax_path_steps_per_s"] / 1e6, ".2f"),
            f(d["numpy_path_steps_per_s"] / 1e6, ".2f"), f(d["ratio_wall"], ".2f"),
            f(d["jax_cpu_ns_per_path_step"], ".1f"), f(d["numpy_cpu_ns_per_path_step"], ".1f"),
            f(d["ratio_cpu"], ".2f"),
            f"{d['call_jax']:.2f} +- {d['stderr_jax']:.2f}",
            f"{d['call_numpy']:.2f} +- {d['stderr_numpy']:.2f}", f(d["agreement_z"], "+.2f"),
        ])
    lines.append(_util.md_table(
        ["dtype", "JAX M path-steps/s", "NumPy M path-steps/s", "ratio (wall)",
         "JAX cpu ns/path-step", "NumPy cpu ns/path-step", "ratio (cpu)", "JAX ATM call",
         "NumPy ATM call", "difference (se)"], rows))
    if res.get("fourier_call") is not None:
        lines += ["", f"COS price of the ATM call: {res['fourier_call']:.4f}."]
    two = res.get("two_host_devices") or {}
    if any(k in two for k in ("float32", "float64")):
        lines += ["", f"Same comparison in a fresh process with `XLA_FLAGS={two['flags']}` "
                  "(the 2 cores as 2 JAX devices; simulate runs a chunk on each):", ""]
        rows = [[d, f(r["jax_path_steps_per_s"] / 1e6, ".2f"),
                 f(r["numpy_path_steps_per_s"] / 1e6, ".2f"), f(r["ratio_wall"], ".2f"),
                 f(r["jax_cpu_ns_per_path_step"], ".1f"), f(r["ratio_cpu"], ".2f"),
                 f(r["agreement_z"], "+.2f")]
                for d, r in two.items() if d in ("float32", "float64")]
        lines.append(_util.md_table(["dtype", "JAX M path-steps/s", "NumPy M path-steps/s",
                                     "ratio (wall)", "JAX cpu ns/path-step", "ratio (cpu)",
                                     "difference (se)"], rows))
    prof = next(iter(res["dtypes"].values()))["profile"]
    lines += ["", f"## Where the time goes ({prof['n_paths']} paths x {prof['n_steps']} steps; "
              "ns per path-step, CPU / wall)", ""]
    names = []
    for d in res["dtypes"].values():
        for n in d["profile"]["rows"]:
            if n not in names:
                names.append(n)
    prow = []
    for n in names:
        row = [n]
        for d in res["dtypes"].values():
            r = d["profile"]["rows"].get(n, {})
            row.append(f"{f(r.get('cpu_ns'), '.1f')} / {f(r.get('wall_ns'), '.1f')}")
        prow.append(row)
    lines.append(_util.md_table(["piece"] + list(res["dtypes"]), prow))
    if res.get("prng"):
        lines += ["", "## PRNG implementations (CPU ns per path-step)", ""]
        names = list(next(iter(res["prng"].values())))
        lines.append(_util.md_table(
            ["variant"] + list(res["prng"]),
            [[n] + [f(res["prng"][d][n]["cpu_ns"], ".1f") for d in res["prng"]]
             for n in names]))
    if res.get("xla_flags"):
        lines += ["", "## XLA CPU flags (simulate, fresh process each; ns per path-step)", ""]
        rows = [[r["flags"], f(r.get("float32_cpu_ns"), ".1f"), f(r.get("float32_wall_ns"), ".1f"),
                 f(r.get("float64_cpu_ns"), ".1f"), f(r.get("float64_wall_ns"), ".1f"),
                 r.get("error", "")] for r in res["xla_flags"]]
        lines.append(_util.md_table(["XLA_FLAGS", "f32 cpu", "f32 wall", "f64 cpu", "f64 wall",
                                     "error"], rows))
    return "\n".join(lines)


if __name__ == "__main__":
    _util.run_main(main)
