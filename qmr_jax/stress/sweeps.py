"""Scenario sweeps: thousands of shocks, vmapped in chunks, streamed to Parquet, resumable.

``sweep(engine, design, out=..., key=..., n_paths=..., steps=...)`` revalues the book of a
``StressEngine`` under every scenario of a ``SweepDesign`` (a full grid or a random design
over shock dimensions) and writes one row per scenario:

* the design's dimensions and the scenario ``index``;
* instantaneous sweeps (``n_paths=0``): total P&L in USD and coin, liquidity cost, and the
  P&L of every position (``pnl.<label>``);
* path sweeps: over ``n_paths`` horizon paths per scenario, the mean, standard deviation,
  worst and best total P&L, VaR and ES at each level with their Monte Carlo standard errors
  (``qmr_jax.stress.risk``), the mean P&L of every position (``pnl.<label>``) and its
  contribution to the ES at ``contrib_level`` (``es_contrib.<label>``, summing to the ES).

Randomness: scenario ``i`` has the key ``jax.random.fold_in(key, i)``; with common random
numbers (``crn=True``, the default) every scenario's paths use the same draws (those of
``key``), so differences between scenarios are the shocks' and not noise. Either way any slice
of a sweep rerun alone gives the same numbers.

Chunks: scenarios go through one jitted, vmapped function ``chunk`` at a time, the chunk size
set by ``memory_budget`` (bytes); the last chunk is padded to the same size, so every call
runs the same compiled program. Each finished chunk is written atomically as a Parquet part
(``parts/part-<first>-<last>.parquet``, via a temporary file and ``os.replace``) next to a
``manifest.json`` describing the sweep. Rerunning the same command on the same folder skips the
finished parts (a run killed at any moment, ``kill -9`` included, continues where it stopped);
at the end the parts are joined into ``results.parquet`` with every scenario exactly once. A
folder holding a different sweep is refused. The manifest records the SHA-256 of every part
(and of ``results.parquet``); on a rerun a part whose checksum is missing or different (an
edited, truncated or empty file) is not trusted: it is computed again, and listed in
``SweepResult.recomputed`` and on the progress stream.

Progress (``progress=``, stderr by default; ``qmr_jax.progress``): the compilation of the
chunk function as it runs, then a bar with the scenarios done (resumed ones included and
shown), the rate and the ETA on a terminal, or a plain line every few seconds in a log.

Domain and overflow: shocked parameters are clamped into the model's shock domain
(``shocks.shock_model``), and the ``clamped`` column says where (empty elsewhere); a scenario
whose results are non-finite or absurd (beyond ``StressEngine.pnl_limit``) stops the sweep
with ``NonFiniteResult`` naming the scenario, before its chunk is written.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .. import progress as _progress
from ..progress import Progress
from . import risk
from .revalue import DEFAULT_GRID, StressEngine
from .shocks import NUMERIC_FIELDS, Shock, check_shock, domain_notes

DEFAULT_LEVELS = (0.95, 0.99, 0.999)
DEFAULT_MEMORY_BUDGET = 512 * 2**20
_PART = re.compile(r"^part-(\d{8})-(\d{8})\.parquet$")
NOTE_COLUMN = "clamped"


class NonFiniteResult(FloatingPointError, ValueError):
    """A scenario whose revaluation is non-finite or absurd: the sweep stops before writing
    its chunk (the finished parts stay, so a rerun resumes)."""


# ------------------------------------------------------------------------------------------
# designs


def _dimension(name: str) -> tuple[str, str | None]:
    """``(kind, field)``: ``("shock", "spot")``, ``("scale", "lam")``, ``("shift", "mu_j")``."""
    if name in NUMERIC_FIELDS:
        return "shock", name
    for kind in ("scale", "shift"):
        if name.startswith(kind + "."):
            return kind, name[len(kind) + 1:]
    raise ValueError(f"unknown sweep dimension {name!r}; use a shock field "
                     f"({', '.join(NUMERIC_FIELDS)}) or scale.<model field> / "
                     "shift.<model field> (e.g. scale.lam)")


@dataclass(frozen=True)
class SweepDesign:
    """Values of each dimension for every scenario: ``columns[name][i]``.

    Build with ``SweepDesign.grid(spot=[...], vol=[...], ...)`` (full factorial, the last
    dimension varying fastest) or ``SweepDesign.random(n, {"spot": (-0.5, 0.3), ...}, seed)``
    (independent uniform draws). ``base`` holds the fixed values of the other shock fields
    (e.g. ``Shock(horizon=7/365)``).
    """

    columns: Mapping[str, np.ndarray]
    base: Shock = Shock()
    kind: str = "grid"
    seed: int | None = None

    def __post_init__(self):
        if not self.columns:
            raise ValueError("a sweep design needs at least one dimension")
        sizes = {len(np.atleast_1d(v)) for v in self.columns.values()}
        if len(sizes) != 1:
            raise ValueError(f"design columns have different lengths: {sorted(sizes)}")
        for name, v in self.columns.items():
            _dimension(name)
            arr = np.asarray(v, np.float64)
            if arr.ndim != 1 or not np.all(np.isfinite(arr)):
                raise ValueError(f"dimension {name!r}: values must be finite numbers")

    @classmethod
    def grid(cls, base: Shock | None = None, **axes: Sequence[float]) -> SweepDesign:
        if not axes:
            raise ValueError("SweepDesign.grid needs at least one dimension")
        names = list(axes)
        values = [np.atleast_1d(np.asarray(axes[n], np.float64)) for n in names]
        for n, v in zip(names, values, strict=True):
            if v.size == 0:
                raise ValueError(f"dimension {n!r} has no values")
        mesh = list(itertools.product(*values))
        cols = {n: np.array([m[j] for m in mesh]) for j, n in enumerate(names)}
        return cls(cols, base or Shock(), "grid")

    @classmethod
    def random(cls, n: int, ranges: Mapping[str, tuple[float, float]], seed: int = 0,
               base: Shock | None = None) -> SweepDesign:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer; got {n!r}")
        rng = np.random.default_rng(seed)
        cols = {}
        for name, lohi in ranges.items():
            lo, hi = (float(x) for x in lohi)
            if not hi >= lo:
                raise ValueError(f"dimension {name!r}: range ({lo}, {hi}) has hi < lo")
            cols[name] = rng.uniform(lo, hi, n)
        return cls(cols, base or Shock(), "random", seed)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    @property
    def dims(self) -> list[str]:
        return list(self.columns)

    def shocks(self, start: int, stop: int) -> Shock:
        """Stacked ``Shock`` of scenarios ``start .. stop - 1``."""
        n = stop - start
        vals = {f: np.full(n, float(getattr(self.base, f))) for f in NUMERIC_FIELDS}
        scale = {k: np.full(n, float(v)) for k, v in self.base.scale.items()}
        shift = {k: np.full(n, float(v)) for k, v in self.base.shift.items()}
        for name, col in self.columns.items():
            kind, f = _dimension(name)
            x = np.asarray(col, np.float64)[start:stop]
            if kind == "shock":
                vals[f] = x
            elif kind == "scale":
                scale[f] = x
            else:
                shift[f] = x
        return Shock(**vals, scale=scale, shift=shift)

    def table(self) -> pd.DataFrame:
        df = pd.DataFrame({k: np.asarray(v, np.float64) for k, v in self.columns.items()})
        df.index.name = "index"
        return df

    def describe(self) -> dict:
        return {"kind": self.kind, "seed": self.seed, "n": len(self),
                "dims": {k: [float(np.min(v)), float(np.max(v)), int(np.unique(v).size)]
                         for k, v in self.columns.items()},
                "base": {f: float(getattr(self.base, f)) for f in NUMERIC_FIELDS}
                | {"scale": {k: float(v) for k, v in self.base.scale.items()},
                   "shift": {k: float(v) for k, v in self.base.shift.items()}}}

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for k in sorted(self.columns):
            h.update(k.encode())
            h.update(np.ascontiguousarray(np.asarray(self.columns[k], np.float64)).tobytes())
        h.update(json.dumps(self.describe()["base"], sort_keys=True).encode())
        return h.hexdigest()[:16]


def design_from_dims(dims: Sequence[tuple[str, Any]], *, random: int | None = None,
                     seed: int = 0, base: Shock | None = None,
                     what: str = "--dim") -> SweepDesign:
    """A design from ``[(name, values), ...]`` in the order given (a grid of value lists, or
    ``random`` draws over ``(lo, hi)`` ranges). A dimension named twice is refused (naming
    it), never silently dropped."""
    seen: dict[str, int] = {}
    for j, (name, _) in enumerate(dims):
        _dimension(name)
        if name in seen:
            raise ValueError(f"{what} {name!r} is given twice (dimensions {seen[name] + 1} and "
                             f"{j + 1}); give each dimension once, with all its values")
        seen[name] = j
    table = dict(dims)
    if random is not None:
        return SweepDesign.random(random, table, seed=seed, base=base)
    return SweepDesign.grid(base=base, **table)


def prepare_out(out) -> Path:
    """Create the output folder of a sweep (and its ``parts``) and check that it is
    writable, before anything is compiled; ``ValueError`` naming it otherwise."""
    d = Path(out)
    if d.exists() and not d.is_dir():
        raise ValueError(f"output folder {d}: exists and is not a folder")
    try:
        (d / "parts").mkdir(parents=True, exist_ok=True)
        probe = d / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"output folder {d}: not writable ({exc.strerror or exc})") from None
    return d


# ------------------------------------------------------------------------------------------
# the chunk function


def _metric_names(labels, levels, n_paths):
    if n_paths == 0:
        return (["pnl_usd", "pnl_coin", "cost"] + [f"pnl.{x}" for x in labels])
    names = ["mean", "std", "worst", "best", "cost"]
    for a in levels:
        tag = _tag(a)
        names += [f"var{tag}", f"var{tag}_se", f"es{tag}", f"es{tag}_se"]
    names += [f"pnl.{x}" for x in labels] + [f"es_contrib.{x}" for x in labels]
    return names


def _tag(a: float) -> str:
    return f"{100 * a:g}".replace(".", "")


def scenario_metrics(engine: StressEngine, shock: Shock, key, *, n_paths: int, steps: int,
                     levels=DEFAULT_LEVELS, contrib_level: float = 0.99, revalue="grid",
                     grid=DEFAULT_GRID):
    """The metric vector of one scenario (pure; see ``_metric_names`` for the order)."""
    if n_paths == 0:
        r = engine.instant(shock)
        return jnp.concatenate([jnp.stack([jnp.sum(r.pnl_usd), jnp.sum(r.pnl_coin),
                                           jnp.sum(r.cost)]), r.pnl_usd])
    p = engine.path_pnl(shock, key, n_paths, steps, revalue=revalue, grid=grid)
    # materialise the P&L once: XLA would otherwise fuse (and so repeat) the interpolation
    # into each of its consumers below, tripling the cost of a scenario
    pnl = jax.lax.optimization_barrier(p.pnl_usd)
    total = jnp.sum(pnl, axis=-1)
    est, contrib, _ = risk.tail_risk_core(pnl, levels, contrib_level)
    parts = [jnp.stack([est.mean, est.std, jnp.min(total), jnp.max(total), jnp.sum(p.cost)])]
    per_level = jnp.stack([est.var, est.var_stderr, est.es, est.es_stderr], axis=-1)
    parts += [per_level.reshape(-1), jnp.mean(pnl, axis=0), contrib]
    return jnp.concatenate(parts)


def make_chunk_fn(engine: StressEngine, *, n_paths: int, steps: int, crn: bool,
                  levels=DEFAULT_LEVELS, contrib_level: float = 0.99, revalue="grid",
                  grid=DEFAULT_GRID) -> Callable:
    """``chunk(shocks, indices, key) -> [n_chunk, n_metrics]``, jitted and vmapped."""

    def one(shock, index, key):
        k = key if crn else jax.random.fold_in(key, index)
        return scenario_metrics(engine, shock, k, n_paths=n_paths, steps=steps,
                                levels=levels, contrib_level=contrib_level, revalue=revalue,
                                grid=grid)

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None)))


def check_sweep(design: SweepDesign, model, *, n_paths: int, levels=DEFAULT_LEVELS,
                contrib_level: float = 0.99) -> Shock:
    """Everything about a sweep that can be checked before building an engine or compiling
    anything: the path count, every scenario's shock against ``model`` (its fields, the
    shock bounds), horizons of path sweeps and the tail sizes of the VaR/ES levels. Returns
    the stacked shocks of the whole design; raises ``ValueError`` naming what is wrong."""
    if isinstance(n_paths, bool) or not isinstance(n_paths, int | np.integer) or n_paths < 0 \
            or n_paths == 1:
        raise ValueError(f"n_paths must be 0 (instantaneous) or an integer >= 2; got "
                         f"{n_paths!r}")
    all_shocks = design.shocks(0, len(design))
    check_shock(all_shocks, model, where="sweep design")
    if n_paths > 0:
        horizons = np.asarray(all_shocks.horizon, np.float64)
        if not np.all(horizons > 0):
            i = int(np.flatnonzero(~(horizons > 0))[0])
            raise ValueError(f"sweep design: scenario {i} has horizon 0; path sweeps need a "
                             "horizon > 0 in every scenario (n_paths=0 for instantaneous "
                             "sweeps)")
        lv = tuple(float(a) for a in levels)
        risk._check_static_n(int(n_paths), lv + (float(contrib_level),), risk.MIN_TAIL,
                             "paths per scenario")
    return all_shocks


def bytes_per_scenario(engine: StressEngine, n_paths: int, grid=DEFAULT_GRID) -> int:
    """A first estimate of the working memory of one scenario inside a chunk (bytes).

    Per path: about a dozen ``[n_paths, n_positions]`` float64 arrays (interpolation weights
    and values, P&L) plus the path state. Per grid: the batched Fourier valuation of the
    options at every vol x spot node with its tangent. ``sweep`` replaces this estimate by
    XLA's own count for the compiled chunk (``chunk_memory``) when it can.
    """
    n_pos = engine.n_positions
    if n_paths == 0:
        return 64 * n_pos * 8 + 4096
    nx, ns = grid
    ns = ns if engine.sv else 1
    n_opt = 0 if engine.valuer.pricer is None else int(np.prod(np.broadcast_shapes(
        *(np.shape(x) for x in (engine.valuer.pricer.strikes, engine.valuer.pricer.expiries,
                                engine.valuer.pricer.is_call)))))
    inner = math.isqrt(max(engine.n_terms or 1, 1)) + 1
    grid_b = 12 * 8 * ns * nx * (n_opt + 1) * inner + 64 * 8 * nx * ns * n_pos
    return int(8 * n_paths * (12 * n_pos + 24) + grid_b + 65536)


def plan_chunk(engine: StressEngine, n_paths: int, memory_budget: int, n_total: int,
               grid=DEFAULT_GRID, per_scenario: int | None = None) -> int:
    """Scenarios per chunk: as many as ``memory_budget`` holds (at most 4096 and the total)."""
    per = per_scenario if per_scenario else bytes_per_scenario(engine, n_paths, grid)
    return int(max(1, min(n_total, memory_budget // max(per, 1), 4096)))


def chunk_memory(compiled, chunk: int) -> int | None:
    """Bytes per scenario of a compiled chunk function (temporaries, arguments and outputs,
    from XLA's memory analysis), or None where the backend does not report it."""
    try:
        m = compiled.memory_analysis()
        total = (m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)
    except Exception:  # noqa: BLE001 - not every backend reports memory
        return None
    return int(math.ceil(total / chunk)) if total > 0 else None


def compiled_chunk_fn(engine: StressEngine, shocks: Shock, key, *, chunk: int, n_paths: int,
                      steps: int, crn: bool, levels=DEFAULT_LEVELS, contrib_level: float = 0.99,
                      revalue="grid", grid=DEFAULT_GRID, progress=None):
    """The chunk function compiled for ``chunk`` scenarios shaped like ``shocks`` (one
    scenario's worth of leaves), cached on the engine: repeated sweeps of the same shape
    (resumes, slices, reruns) compile once. Returns ``(compiled, bytes per scenario)``.
    ``progress``: a text stream that hears of a compilation while it runs
    (``qmr_jax.progress.activity``), or ``None``."""
    dtype = engine.dtype
    example = jax.tree_util.tree_map(lambda x: jnp.zeros((chunk,), dtype), shocks)
    treedef = jax.tree_util.tree_structure(example)
    name = ("sweep", chunk, n_paths, steps, crn, tuple(levels), float(contrib_level), revalue,
            tuple(grid), treedef, str(jax.random.key_data(key).dtype))
    hit = engine._jit.get(name)
    if hit is None:
        fn = make_chunk_fn(engine, n_paths=n_paths, steps=steps, crn=crn, levels=levels,
                           contrib_level=contrib_level, revalue=revalue, grid=grid)
        with _progress.activity(f"sweep: compiling the chunk function ({chunk} scenarios "
                                f"per call)", progress):
            compiled = fn.lower(example, jnp.zeros((chunk,), jnp.int32), key).compile()
        hit = engine._jit[name] = (compiled, chunk_memory(compiled, chunk))
    return hit


# ------------------------------------------------------------------------------------------
# the driver


@dataclass
class SweepResult:
    """What ``sweep`` returns: the results table (one row per scenario, indexed by
    ``index``), the output folder and run facts."""

    table: pd.DataFrame
    out: Path | None
    manifest: dict
    wall_time: float
    resumed_scenarios: int
    computed_scenarios: int
    recomputed: list[str] = field(default_factory=list)  # parts not trusted, and why


def _manifest(engine, design, *, n_paths, steps, crn, levels, contrib_level, chunk, revalue,
              grid, key_data, metrics):
    return {
        "format": 1,
        "design": design.describe(),
        "design_fingerprint": design.fingerprint(),
        "book": {"name": engine.book.name, "currency": engine.book.currency,
                 "positions": list(engine.labels)},
        "model": {"type": type(engine.model).__name__,
                  **{k: float(v) for k, v in engine.model._asdict().items()}},
        "market": {k: float(v) for k, v in engine.market._asdict().items()},
        "n_paths": n_paths, "steps": steps, "crn": crn, "levels": list(levels),
        "contrib_level": contrib_level, "chunk": chunk, "revalue": revalue,
        "grid": list(grid), "key": key_data, "metrics": metrics, "n_scenarios": len(design),
        "n_terms": engine.n_terms, "dtype": str(engine.dtype),
    }


def engine_gross_usd(engine: StressEngine) -> float:
    """The book's gross exposure in USD: the sum of the absolute base values plus the
    absolute quantities times spot (the scale of ``StressEngine.pnl_limit``)."""
    return float(np.sum(np.abs(engine.base_values))
                 + np.sum(np.abs(engine.qty)) * float(engine.market.spot))


def _same_sweep(a: dict, b: dict) -> list[str]:
    keys = ("design_fingerprint", "book", "model", "market", "n_paths", "steps", "crn",
            "levels", "contrib_level", "chunk", "revalue", "grid", "key", "metrics",
            "n_scenarios", "dtype")
    return [k for k in keys if a.get(k) != b.get(k)]


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_manifest(path: Path, manifest: dict) -> None:
    _write_atomic(path, lambda p: p.write_text(json.dumps(manifest, indent=2)))


def _trusted_parts(parts_dir: Path, chunk: int, n: int, sums: dict, metrics, dims):
    """``({first: frame}, [reason, ...])``: the finished parts whose SHA-256 matches the
    manifest and whose rows are the scenarios their name says; every other part file is
    removed (it is computed again) with the reason."""
    done: dict[int, pd.DataFrame] = {}
    dropped: list[str] = []
    if not parts_dir.is_dir():
        return done, dropped
    columns = ["index", *dims, *metrics, NOTE_COLUMN]
    for p in sorted(parts_dir.iterdir()):
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)  # a write interrupted by a kill
            continue
        m = _PART.match(p.name)
        if not m:
            continue
        first, last = int(m.group(1)), int(m.group(2))
        if not (first % chunk == 0 and last == min(first + chunk, n) - 1):
            continue
        why = None
        recorded = sums.get(p.name)
        if recorded is None:
            why = "no checksum in the manifest (written before a kill, or not by this sweep)"
        elif _sha256(p) != recorded:
            why = "SHA-256 differs from the manifest (the file was edited or corrupted)"
        else:
            try:
                df = pd.read_parquet(p)
            except Exception as exc:  # noqa: BLE001 - any unreadable file is recomputed
                why = f"unreadable ({type(exc).__name__})"
            else:
                if list(df.columns) != columns or len(df) != last - first + 1 or \
                        not np.array_equal(df["index"].to_numpy(), np.arange(first, last + 1)):
                    why = (f"{len(df)} rows / columns that are not scenarios {first}..{last} "
                           "of this sweep")
        if why is None:
            done[first] = df
        else:
            dropped.append(f"{p}: {why}")
            sums.pop(p.name, None)
            p.unlink(missing_ok=True)
    return done, dropped


def _check_finite(vals, index, metrics, design, limit) -> None:
    """Raise ``NonFiniteResult`` for the first scenario with a non-finite metric or one
    beyond ``limit`` in absolute value (a P&L no book of this size can have)."""
    bad = ~np.isfinite(vals) | (np.abs(np.nan_to_num(vals, nan=0.0)) > limit)
    rows = np.flatnonzero(bad.any(axis=1))
    if rows.size == 0:
        return
    r = int(rows[0])
    i = int(index[r])
    col = int(np.flatnonzero(bad[r])[0])
    at = ", ".join(f"{d}={float(design.columns[d][i]):g}" for d in design.dims)
    what = "non-finite" if not np.isfinite(vals[r, col]) else f"absurd (|x| > {limit:.3g})"
    raise NonFiniteResult(f"sweep scenario {i} ({at}): {metrics[col]} is {what} "
                          f"({float(vals[r, col]):.4g}); nothing was written for its chunk "
                          "(earlier parts are kept)")


def sweep(engine: StressEngine, design: SweepDesign, *, key, out=None, n_paths: int = 10_000,
          steps: int | None = None, crn: bool = True, levels=DEFAULT_LEVELS,
          contrib_level: float = 0.99, memory_budget: int = DEFAULT_MEMORY_BUDGET,
          chunk: int | None = None, revalue: str = "grid", grid=DEFAULT_GRID,
          progress=sys.stderr, start: int = 0, stop: int | None = None) -> SweepResult:
    """Run a sweep (see the module docstring).

    Args:
      engine: a ``StressEngine`` (book, base model and market).
      design: a ``SweepDesign``.
      key: the sweep's PRNG key (recorded in the manifest).
      out: output folder (created); ``None`` keeps the results in memory only.
      n_paths: horizon paths per scenario; 0 for instantaneous revaluation only.
      steps: time steps over each horizon (default: daily over the longest horizon).
      crn: common random numbers across scenarios.
      levels, contrib_level: VaR/ES levels and the ES level of the per-position contributions.
      memory_budget, chunk: scenarios per jitted call (``chunk`` overrides the budget).
      revalue, grid: horizon revaluation method (``StressEngine.path_pnl``).
      progress: where the progress goes (``qmr_jax.progress.Progress``): a text stream
        (default ``sys.stderr``: a bar on a terminal, a plain line every few seconds
        elsewhere) or ``True`` for stderr; ``None`` or ``False`` for none. Scenarios resumed
        from earlier parts are counted as done and shown, not counted in the rate.
      start, stop: run only scenarios ``start .. stop - 1`` (in memory; ``out`` must be None).

    Returns:
      ``SweepResult``.
    """
    t0 = time.perf_counter()
    stream = (None if progress is None or progress is False
              else sys.stderr if progress is True else progress)
    n = len(design)
    all_shocks = check_sweep(design, engine.model, n_paths=n_paths, levels=levels,
                             contrib_level=contrib_level)
    if out is not None:
        prepare_out(out)
    engine.check(all_shocks, where="sweep design", paths=n_paths > 0)
    notes = np.broadcast_to(domain_notes(engine.model, all_shocks), (n,))
    horizons = np.asarray(all_shocks.horizon, np.float64)
    if n_paths > 0:
        if steps is None:
            steps = max(1, math.ceil(float(horizons.max()) * 365.0 - 1e-9))
    else:
        steps = 0
    levels = tuple(float(a) for a in levels)
    metrics = _metric_names(engine.labels, levels, n_paths)
    compile_kw = dict(n_paths=n_paths, steps=steps, crn=crn, levels=levels,
                      contrib_level=contrib_level, revalue=revalue, grid=tuple(grid))
    one = design.shocks(0, 1)
    if chunk is None:
        # a first size from the estimate, then XLA's count for the compiled program: shrink
        # (and compile again) if the chunk would exceed the budget
        chunk = plan_chunk(engine, n_paths, memory_budget, n, grid)
        _, per = compiled_chunk_fn(engine, one, key, chunk=chunk, progress=stream,
                                   **compile_kw)
        if per is not None and per * chunk > memory_budget and chunk > 1:
            chunk = plan_chunk(engine, n_paths, memory_budget, n, grid, per_scenario=per)
    chunk = int(chunk)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1; got {chunk}")
    fn, per_scenario = compiled_chunk_fn(engine, one, key, chunk=chunk, progress=stream,
                                         **compile_kw)
    key_data = np.asarray(jax.random.key_data(key)).ravel().tolist()
    manifest = _manifest(engine, design, n_paths=n_paths, steps=steps, crn=crn, levels=levels,
                         contrib_level=contrib_level, chunk=chunk, revalue=revalue,
                         grid=tuple(grid), key_data=key_data, metrics=metrics)
    manifest["memory"] = {"budget_bytes": int(memory_budget),
                          "bytes_per_scenario": per_scenario}  # informative, not compared
    manifest["gross_usd"] = engine_gross_usd(engine)  # informative (the report's zero)
    stop = n if stop is None else int(stop)
    if not 0 <= start < stop <= n:
        raise ValueError(f"start/stop must satisfy 0 <= start < stop <= {n}; got "
                         f"{start}, {stop}")
    if out is not None and (start, stop) != (0, n):
        raise ValueError("start/stop run a slice in memory; pass out=None")

    out_dir = None if out is None else Path(out)
    done: dict[int, Path] = {}
    recomputed: list[str] = []
    if out_dir is not None:
        parts_dir = out_dir / "parts"
        mpath = out_dir / "manifest.json"
        if mpath.exists():
            try:
                old = json.loads(mpath.read_text())
                if not isinstance(old, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as exc:
                raise ValueError(f"{mpath}: unreadable manifest ({exc}); remove the folder "
                                 "or choose another --out") from None
            diff = _same_sweep(old, manifest)
            if diff:
                raise ValueError(f"{out_dir} holds a different sweep (differs in: "
                                 f"{', '.join(diff)}); choose another output folder or "
                                 "delete it")
            manifest = old
            manifest.setdefault("gross_usd", engine_gross_usd(engine))
        manifest.setdefault("parts", {})
        if not isinstance(manifest["parts"], dict):
            manifest["parts"] = {}
        manifest.pop("results_sha256", None)
        _write_manifest(mpath, manifest)
        done, recomputed = _trusted_parts(parts_dir, chunk, n, manifest["parts"], metrics,
                                          design.dims)
        for why in recomputed:
            if stream is not None:
                stream.write(f"sweep: {why}; computing it again\n")
                stream.flush()

    dtype = engine.dtype
    firsts = [f for f in range(0, n, chunk) if f + chunk > start and f < stop]
    resumed = sum(min(f + chunk, n) - f for f in firsts if f in done)
    bar = _progress.progress_for(stream, stop - start, "sweep", unit="scenario", done=resumed)
    frames = []
    computed = 0
    dims = design.table()
    limit = engine.pnl_limit
    try:
        for first in firsts:
            last = min(first + chunk, n)
            if first in done:
                frames.append(done[first])
                continue
            idx = np.arange(first, first + chunk)
            valid = idx < n
            idx_c = np.minimum(idx, n - 1)  # pad the last chunk with its last scenario
            shocks = jax.tree_util.tree_map(lambda x, ii=idx_c: jnp.asarray(x[ii], dtype),
                                            all_shocks)
            vals = np.asarray(fn(shocks, jnp.asarray(idx_c, jnp.int32), key))[valid]
            df = pd.DataFrame(vals, columns=metrics)
            df.insert(0, "index", idx[valid])
            for j, d in enumerate(design.dims):
                df.insert(1 + j, d, dims[d].to_numpy()[idx[valid]])
            df[NOTE_COLUMN] = notes[idx[valid]].astype(str)
            _check_finite(vals, idx[valid], metrics, design, limit)
            if out_dir is not None:
                name = f"part-{first:08d}-{last - 1:08d}.parquet"
                target = out_dir / "parts" / name
                _write_atomic(target, lambda p, d=df: d.to_parquet(p, index=False))
                manifest["parts"][name] = _sha256(target)
                _write_manifest(out_dir / "manifest.json", manifest)
            frames.append(df)
            computed += last - first
            if bar is not None:
                bar.advance(last - first)
    finally:
        if bar is not None:
            bar.close()
    table = pd.concat(frames, ignore_index=True).set_index("index").sort_index()
    table = table.loc[start:stop - 1]
    if out_dir is not None:
        if len(table) != n or not np.array_equal(table.index.to_numpy(), np.arange(n)):
            raise ValueError(f"{out_dir}: the parts do not cover every scenario exactly "
                             "once; delete the folder and run the sweep again")
        rpath = out_dir / "results.parquet"
        _write_atomic(rpath, lambda p: table.reset_index().to_parquet(p, index=False))
        table.reset_index().to_csv(out_dir / "results.csv", index=False)
        manifest["results_sha256"] = _sha256(rpath)
        _write_manifest(out_dir / "manifest.json", manifest)
    wall = time.perf_counter() - t0
    return SweepResult(table, out_dir, manifest, wall, resumed, computed, recomputed)


def load_sweep(out) -> SweepResult:
    """A finished sweep's results and manifest from its folder."""
    d = Path(out)
    mpath, rpath = d / "manifest.json", d / "results.parquet"
    for p in (mpath, rpath):
        if not p.exists():
            raise FileNotFoundError(f"{p} not found: is {d} a finished sweep folder?")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{mpath}: unreadable manifest ({exc})") from None
    want = manifest.get("results_sha256") if isinstance(manifest, dict) else None
    if want is not None and _sha256(rpath) != want:
        raise ValueError(f"{rpath}: SHA-256 differs from the one in {mpath.name} (the file was "
                         "edited or corrupted); run the sweep again on the same folder to "
                         "rebuild it")
    table = pd.read_parquet(rpath).set_index("index")
    return SweepResult(table, d, manifest, float("nan"), 0, 0)


__all__ = ["SweepDesign", "SweepResult", "sweep", "load_sweep", "scenario_metrics",
           "make_chunk_fn", "plan_chunk", "Progress", "DEFAULT_LEVELS", "check_sweep",
           "NonFiniteResult", "NOTE_COLUMN", "design_from_dims", "prepare_out",
           "engine_gross_usd"]
