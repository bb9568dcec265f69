"""Shared helpers of the benchmark scripts: timing, peak memory, environment, result files.

Timing: the first call of a function (tracing, compilation, first run) is measured and reported
separately; then the function is run ``repeats`` times and the best and the median wall time are
reported, each call ending with ``jax.block_until_ready`` on its result so asynchronous dispatch
is not mistaken for speed.

Peak memory: the measured case runs in a fresh Python subprocess; its peak resident set size is
read from ``os.wait4`` (``ru_maxrss`` of exactly that child) and, from inside the child, from
``VmHWM`` in ``/proc/self/status``. The peak of a child that only imports JAX (and qmr_jax) is
measured the same way and reported as the baseline.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO_ROOT))


class MissingModule(SystemExit):
    """Raised (as a clean exit with a message) when a module a benchmark needs is absent."""


def require(module: str, what: str = ""):
    """Import ``module`` or exit with a message saying which benchmark needs it and why."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        need = f" ({what})" if what else ""
        raise MissingModule(
            f"benchmark needs the module '{module}'{need}, which could not be imported: {exc}"
        ) from exc


# ------------------------------------------------------------------------------------------
# command line and result files


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="small smoke-test sizes; results go to results/quick/")
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (default benchmarks/results, or results/quick)")
    return p


def results_dir(args) -> Path:
    out = args.out if args.out is not None else (
        RESULTS_DIR / "quick" if args.quick else RESULTS_DIR
    )
    out.mkdir(parents=True, exist_ok=True)
    return out


def _jsonable(x):
    import numpy as np

    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float) and not np.isfinite(x):
        return str(x)
    if isinstance(x, Path):
        return str(x)
    return x


def write_results(out: Path, name: str, data: dict, markdown) -> tuple[Path, Path]:
    """Write ``<out>/<name>.json`` and ``<out>/<name>.md``; return both paths.

    The load average at the end of the run is added to ``data["environment"]`` when present.
    ``markdown`` is the Markdown text, or a function of ``data`` returning it.
    """
    if isinstance(data.get("environment"), dict):
        data["environment"]["load_average_at_end"] = _loadavg()
    if callable(markdown):
        markdown = markdown(data)
    js = out / f"{name}.json"
    md = out / f"{name}.md"
    tmp = out / f"{name}.json.tmp"
    tmp.write_text(json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n")
    tmp.replace(js)
    md.write_text(markdown.rstrip() + "\n")
    return js, md


def md_table(headers, rows) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(str(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


def fmt(x, spec=".3g") -> str:
    if x is None:
        return "-"
    try:
        return format(x, spec)
    except (TypeError, ValueError):
        return str(x)


# ------------------------------------------------------------------------------------------
# timing


def _block(x):
    try:
        import jax
    except ImportError:  # NumPy-only callers
        return x
    return jax.block_until_ready(x)


def _stats(walls, cpus):
    return {
        "best_s": min(walls),
        "median_s": statistics.median(walls),
        "cpu_best_s": min(cpus),
        "cpu_median_s": statistics.median(cpus),
        "n_runs": len(walls),
        "times_s": walls if len(walls) <= 50 else None,
    }


def time_call(fn, *args, repeats: int = 5, warmup: int = 1, min_time: float = 0.0, **kwargs):
    """Time ``fn(*args, **kwargs)``.

    The first ``warmup`` calls (compilation and the first run) are timed and reported as
    ``first_s`` but excluded from the statistics. Then the function runs ``repeats`` times
    (more while the total stays below ``min_time`` seconds, for very fast functions).
    Wall time (``perf_counter``) and process CPU time (``process_time``, all threads) are both
    recorded: on a shared machine the CPU time is the steadier measure of work done.

    Returns:
      dict with ``first_s`` (None without warm-up), ``best_s``, ``median_s``, ``cpu_best_s``,
      ``cpu_median_s``, ``n_runs``, ``times_s`` and ``result`` (the last return value).
    """
    first = None
    result = None
    for i in range(warmup):
        t0 = time.perf_counter()
        result = _block(fn(*args, **kwargs))
        if i == 0:
            first = time.perf_counter() - t0
    walls, cpus = [], []
    total = 0.0
    while len(walls) < repeats or total < min_time:
        c0 = time.process_time()
        t0 = time.perf_counter()
        result = _block(fn(*args, **kwargs))
        dt = time.perf_counter() - t0
        cpus.append(time.process_time() - c0)
        walls.append(dt)
        total += dt
        if len(walls) >= 10_000:
            break
    return {"first_s": first, **_stats(walls, cpus), "result": result}


def time_interleaved(fns: dict, *, repeats: int = 3, warmup: int = 1) -> dict:
    """Time several functions in alternation (A B A B ...), so a change in machine load hits
    all of them alike; same statistics as ``time_call`` for each name."""
    out = {}
    for name, fn in fns.items():
        first = None
        for i in range(warmup):
            t0 = time.perf_counter()
            out.setdefault(name, {})["result"] = _block(fn())
            if i == 0:
                first = time.perf_counter() - t0
        out.setdefault(name, {})["first_s"] = first
    walls = {k: [] for k in fns}
    cpus = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            c0 = time.process_time()
            t0 = time.perf_counter()
            res = _block(fn())
            walls[name].append(time.perf_counter() - t0)
            cpus[name].append(time.process_time() - c0)
            out[name]["result"] = res
    for name in fns:
        out[name].update(_stats(walls[name], cpus[name]))
    return out


def timing_summary(t: dict) -> dict:
    """``time_call`` output without the result (for JSON)."""
    return {k: v for k, v in t.items() if k != "result"}


# ------------------------------------------------------------------------------------------
# memory


def vm_hwm_bytes() -> int | None:
    """Peak resident set size of this process (``VmHWM``), or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def run_child(code: str, *, env: dict | None = None, timeout: float | None = None) -> dict:
    """Run ``code`` in a fresh interpreter and measure its peak RSS.

    The child is reaped with ``os.wait4``, whose ``ru_maxrss`` is that child's own peak (KiB on
    Linux), unaffected by other children. The child may print one line ``RESULT <json>``; the
    decoded object is returned under ``"child"``. ``wall_s`` is the child's whole wall time
    (interpreter start and imports included).
    """
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), str(BENCH_DIR)] + ([full_env["PYTHONPATH"]]
                                           if full_env.get("PYTHONPATH") else [])
    )
    if env:
        full_env.update(env)
    out_path = RESULTS_DIR / f".child-{os.getpid()}-{time.monotonic_ns()}.tmp"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(out_path, "w+") as fh:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=fh,
                                stderr=subprocess.STDOUT, env=full_env)
        deadline = None if timeout is None else t0 + timeout
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                pid, status, ru = os.wait4(proc.pid, 0)
                raise RuntimeError(f"child timed out after {timeout} s")
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        fh.seek(0)
        text = fh.read()
    out_path.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed (exit {proc.returncode}); output tail:\n{text[-3000:]}")
    child = None
    for line in text.splitlines():
        if line.startswith("RESULT "):
            child = json.loads(line[len("RESULT "):])
    maxrss = ru.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"child": child, "wall_s": wall, "peak_rss_bytes": maxrss, "output": text}


CHILD_PRELUDE = """
import json, sys, time
from _util import vm_hwm_bytes
def _report(**kw):
    kw["vm_hwm_bytes"] = vm_hwm_bytes()
    print("RESULT " + json.dumps(kw), flush=True)
"""


def idle_import_rss(x64: bool = True) -> dict:
    """Peak RSS of a child that imports JAX and qmr_jax and runs one tiny jitted op."""
    code = CHILD_PRELUDE + f"""
import jax
jax.config.update("jax_enable_x64", {bool(x64)})
import jax.numpy as jnp
import qmr_jax
jax.block_until_ready(jnp.ones(4) + 1)
_report()
"""
    r = run_child(code)
    return {"peak_rss_bytes": r["peak_rss_bytes"], "vm_hwm_bytes": r["child"]["vm_hwm_bytes"]}


def gib(n) -> float:
    return None if n is None else n / 2**30


# ------------------------------------------------------------------------------------------
# environment


def environment() -> dict:
    """JAX/jaxlib/NumPy versions, devices, CPU count, XLA flags, date, git commit."""
    import numpy as np

    env = {
        "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "mem_total_gib": _mem_total_gib(),
        "numpy": np.__version__,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "load_average_at_start": _loadavg(),
    }
    try:
        import jax
        import jaxlib

        env.update(
            jax=jax.__version__,
            jaxlib=jaxlib.__version__,
            backend=jax.default_backend(),
            devices=[str(d) for d in jax.devices()],
            x64=bool(jax.config.jax_enable_x64),
            default_prng_impl=str(jax.config.jax_default_prng_impl),
        )
    except ImportError:
        env["jax"] = None
    try:
        env["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
            text=True, check=True,
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "qmr_jax"], cwd=REPO_ROOT,
                               capture_output=True, text=True).stdout.strip()
        env["git_dirty_qmr_jax"] = bool(dirty)
    except (OSError, subprocess.CalledProcessError):
        env["git_commit"] = None
    return env


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def env_line(env: dict) -> str:
    """One-line description of the machine for Markdown tables."""
    return (
        f"{env.get('cpu_count')}-core {env.get('cpu_model') or 'CPU'}, "
        f"{env.get('mem_total_gib')} GiB; JAX {env.get('jax')} ({env.get('backend')}), "
        f"NumPy {env.get('numpy')}; {env.get('date_utc')}; commit {env.get('git_commit')}"
        + (" (+ uncommitted qmr_jax changes)" if env.get("git_dirty_qmr_jax") else "")
        + f"; load average at start {env.get('load_average_at_start')}"
        + (f", at end {env['load_average_at_end']}" if env.get("load_average_at_end") else "")
    )


def run_main(main) -> None:
    """Run a benchmark's ``main``; a missing module exits with status 2 and its message."""
    try:
        main()
    except MissingModule as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
