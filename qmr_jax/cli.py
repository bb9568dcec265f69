"""The ``qmr`` command line (also ``python -m qmr_jax.cli``).

Subcommands:

* ``qmr demo --out DIR [--seed N] [--quick]`` - the BTC-like end-to-end demo and HTML report.
* ``qmr price --model heston --params v0=0.36,kappa=2,theta=0.36,xi=1,rho=-0.3
  --spot 60000 --strikes 50000,60000,70000 --expiries 30d,0.25 [--method cos|lewis]`` -
  European prices (and Black implied vols) as a table, CSV or JSON.
* ``qmr sensitivities --book FILE --model FILE [--out DIR] [--seed N] [--paths N]`` - the
  gradient sensitivity report of a book (Greeks per position, tornado, P&L ladders) as CSV,
  JSON and HTML.
* ``qmr calibrate [--chain FILE | --synthetic] [--currency BTC|ETH] [--model heston]
  [--snapshot TIME|first|last|INDEX] [--out DIR] [--loss iv|price_vega|price_spread]
  [--weights uniform|spread|vega] [--method lm|lbfgs] [--starts N] [--feller-penalty W]
  [--initial FILE] [--max-iter N] [--seed N]`` - calibrate a model to one option-chain
  snapshot and write the calibration report (CSV, JSON, HTML); exit status 1 when the solver
  did not converge.
* ``qmr version`` - package and runtime versions.

This is the only place that reads argv. Numeric subcommands switch JAX to float64 before
doing any work (the library itself never changes global configuration). Bad user input
(unknown model or parameter, a missing parameter, a malformed number, parameters outside
their domain or beyond physically meaningful ranges, a bad book, model or scenario file, an
``--out`` folder that cannot be written) is reported as one ``qmr <command>: error: ...`` line
on stderr with exit status 2, never a traceback. ``--out`` is checked first
(``check_out_dir``), before anything is loaded or compiled.

Adding a subcommand: write ``_configure_x(parser)`` and ``_run_x(args) -> int`` and append a
``Command`` to ``COMMANDS``; parsing helpers (``parse_model``, ``parse_floats``,
``parse_expiries``) raise ``UsageError`` for the user-facing messages.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input; printed as one line and exit status 2."""


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, argument set-up and action.

    Attributes:
      name: the subcommand word.
      help: one-line description for ``qmr --help``.
      configure: adds the subcommand's arguments to its parser.
      run: performs it; returns the exit status.
      numeric: switch JAX to float64 before ``run``.
      epilog: extra text at the end of ``qmr NAME --help`` (examples).
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    numeric: bool = True
    epilog: str | None = None


# --------------------------------------------------------------------------------------------
# parsing helpers


def model_types() -> dict[str, type]:
    """Lower-case model name -> parameter container class."""
    from .models import MODELS

    return {cls.__name__.lower(): cls for cls in MODELS}


def parse_number(text: str, what: str) -> float:
    """A finite float, or ``UsageError`` naming ``what``."""
    try:
        value = float(text.strip().replace("_", ""))
    except ValueError:
        raise UsageError(f"{what}: {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise UsageError(f"{what}: {text.strip()!r} is not a finite number")
    return value


def parse_floats(text: str, what: str) -> list[float]:
    """Comma-separated numbers (``"50000,60000,70000"``)."""
    items = [s for s in text.split(",") if s.strip()]
    if not items:
        raise UsageError(f"{what}: expected comma-separated numbers; got {text!r}")
    return [parse_number(s, what) for s in items]


_EXPIRY_UNITS = {"d": 1.0 / 365.0, "w": 7.0 / 365.0, "y": 1.0}


def parse_expiries(text: str) -> list[float]:
    """Comma-separated expiries in years; a suffix ``d``, ``w`` or ``y`` gives the unit
    (``"7d,30d,0.5"`` = 7/365, 30/365 and 0.5 years; days are ACT/365)."""
    out = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        scale = _EXPIRY_UNITS.get(item[-1].lower())
        number = item[:-1] if scale is not None else item
        out.append(parse_number(number, "--expiries") * (scale or 1.0))
    if not out:
        raise UsageError(f"--expiries: expected comma-separated expiries; got {text!r}")
    return out


def parse_model(name: str, params: str):
    """Build and validate a model from ``"heston"`` and ``"v0=0.36,kappa=2,..."``.

    Raises:
      UsageError: unknown model, malformed/unknown/duplicate/missing parameter, a value that
        is not a number or breaks the model's constraints (``validate``).
    """
    types = model_types()
    cls = types.get(name.strip().lower())
    if cls is None:
        raise UsageError(f"unknown model {name!r}; choose one of: {', '.join(types)}")
    fields = cls._fields
    valid = ", ".join(fields)
    values: dict[str, float] = {}
    for item in (s.strip() for s in params.split(",")):
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise UsageError(
                f"--params: expected name=value, got {item!r}; parameters of "
                f"{cls.__name__}: {valid}"
            )
        if key not in fields:
            raise UsageError(
                f"unknown parameter {key!r} for {cls.__name__}; valid parameters: {valid}"
            )
        if key in values:
            raise UsageError(f"parameter {key!r} given twice")
        values[key] = parse_number(raw, f"parameter {key}")
    missing = [f for f in fields if f not in values]
    if missing:
        raise UsageError(
            f"missing parameter{'s' if len(missing) > 1 else ''} {', '.join(missing)} for "
            f"{cls.__name__}; give all of: {valid}"
        )
    model = cls(**values)
    try:
        model.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return model


def check_out_dir(path, flag: str = "--out") -> None:
    """Refuse an output folder that cannot be written, before any work is done.

    Refused: an empty path, an existing file, a path under a file, a place where the folder
    or a file in it cannot be created (read-only file system, permissions). The check creates
    what is missing and writes a probe file, then removes both again, so nothing is left
    behind. Used by ``main`` for every command with an ``--out`` option.

    Raises:
      UsageError: naming the flag, the path and the reason.
    """
    import os
    import tempfile
    from pathlib import Path

    text = str(path)
    if not text.strip():
        raise UsageError(f"{flag}: empty path; give an output folder")
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{flag}: {text!r} exists and is not a folder")
    created: list[Path] = []
    try:
        missing = []
        base = out.absolute()
        while not base.exists() and not base.is_symlink() and base != base.parent:
            missing.append(base)
            base = base.parent
        if base.exists() and not base.is_dir():
            raise UsageError(f"{flag}: cannot create the folder {text!r}: {str(base)!r} is a "
                             "file, not a folder")
        for d in reversed(missing):
            d.mkdir()
            created.append(d)
        fd, probe = tempfile.mkstemp(prefix=".qmr-write-check-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{flag}: cannot write to {text!r}: {exc.strerror or exc}") from None
    finally:
        for d in reversed(created):
            try:
                d.rmdir()
            except OSError:
                pass


def check_range(value: float, what: str, lo: float, hi: float, unit: str) -> float:
    """``value`` if ``lo <= value <= hi``, else ``UsageError`` naming ``what`` and the range."""
    if not (math.isfinite(value) and lo <= value <= hi):
        raise UsageError(f"{what}: {value:g} is outside [{lo:g}, {hi:g}] ({unit})")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0; got {value}")
    return value


def add_json_flag(p: argparse.ArgumentParser) -> None:
    """``--json``: the command's key results as one JSON document on stdout; its progress and
    messages go to stderr, so ``qmr ... --json | jq`` works."""
    p.add_argument("--json", action="store_true",
                   help="print the key results as JSON on stdout (messages go to stderr)")


def say(args: argparse.Namespace, *parts, **kw) -> None:
    """Print a human-readable line: to stdout, or to stderr under ``--json``."""
    stream = sys.stderr if getattr(args, "json", False) else sys.stdout
    print(*parts, file=stream, flush=True, **kw)


def _jsonable(obj):
    """``obj`` with NaN/inf as ``None``, NumPy scalars and arrays as Python values and paths
    as strings, so ``json.dumps(..., allow_nan=False)`` accepts it."""
    import numbers
    from pathlib import PurePath

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        value = float(obj)
        return value if math.isfinite(value) else None
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return str(obj)


def emit_json(obj) -> None:
    """Write ``obj`` to stdout as JSON (NaN as null)."""
    print(json.dumps(_jsonable(obj), indent=2, allow_nan=False), flush=True)


def parse_levels(text: str | None):
    """``--levels 0.95,0.99`` (or percentages ``95,99``) -> sorted unique levels in (0, 1)."""
    if text is None:
        return None
    out = []
    for value in parse_floats(text, "--levels"):
        level = round(value / 100.0, 12) if value >= 1.0 else value
        if not 0.5 <= level < 1.0:
            raise UsageError(f"--levels: {value:g} is not a confidence level in [0.5, 1) "
                             "(or [50, 100) in percent)")
        out.append(level)
    return tuple(sorted(set(out)))


def min_paths(level: float, tail: int | None = None) -> int:
    """Fewest paths whose tail at ``level`` holds ``tail`` samples (``risk.MIN_TAIL``)."""
    if tail is None:
        tail = 10  # qmr_jax.stress.risk.MIN_TAIL (not imported: --help must not load JAX)
    return math.ceil(tail / (1.0 - level) - 1e-9)


# --------------------------------------------------------------------------------------------
# demo


def _configure_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="out", metavar="DIR",
                   help="output folder for report.html, smiles.png, prices.csv, summary.json "
                        "(default: out)")
    p.add_argument("--seed", type=_nonnegative_int, default=0, metavar="N",
                   help="Monte Carlo seed (default: 0)")
    p.add_argument("--quick", action="store_true",
                   help="reduced sizes (fewer strikes and paths), for smoke tests")
    add_json_flag(p)


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    summary = run_demo(args.out, seed=args.seed, quick=args.quick,
                       log=lambda text: say(args, text), cache=not args.no_cache)
    if args.json:
        emit_json(summary)
    return 0


# --------------------------------------------------------------------------------------------
# price


_PRICE_EPILOG = """\
parameters per model (all required):
  gbm     sigma
  merton  sigma, lam, mu_j, sigma_j          (log-jump ~ N(mu_j, sigma_j^2), rate lam)
  kou     sigma, lam, p, eta1, eta2          (up-jump prob p, rates eta1 up, eta2 down)
  heston  v0, kappa, theta, xi, rho          (v0, theta variances; xi vol of variance)
  bates   v0, kappa, theta, xi, rho, lam, mu_j, sigma_j

example:
  qmr price --model heston --params v0=0.36,kappa=2,theta=0.36,xi=1,rho=-0.25 \\
      --spot 60000 --strikes 50000,60000,70000 --expiries 30d,90d
"""


def _configure_price(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="gbm, merton, kou, heston or bates")
    p.add_argument("--params", required=True, metavar="NAME=VALUE,...",
                   help="all model parameters, comma-separated")
    p.add_argument("--spot", required=True, help="spot price")
    p.add_argument("--rate", default="0", help="continuous interest rate (default 0)")
    p.add_argument("--div", default="0",
                   help="continuous dividend / funding rate (default 0); "
                        "forward = spot * exp((rate - div) T)")
    p.add_argument("--strikes", required=True, metavar="K1,K2,...",
                   help="comma-separated strikes")
    p.add_argument("--expiries", required=True, metavar="T1,T2,...",
                   help="comma-separated expiries in years, or with a unit: 7d, 2w, 0.5y")
    p.add_argument("--method", choices=("cos", "lewis"), default="cos",
                   help="Fourier method (default cos)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   dest="fmt", help="output format (default table)")
    p.add_argument("--json", action="store_true", help="the same as --format json")


def _run_price(args: argparse.Namespace) -> int:
    import jax.numpy as jnp
    import numpy as np

    from .book import MAX_EXPIRY_YEARS, PRICE_RANGE
    from .models import Market
    from .pricing.black import IV_OK, implied_vol
    from .pricing.fourier import fourier_price
    from .report.tables import Column, text_table

    model = parse_model(args.model, args.params)
    market = Market(
        parse_number(args.spot, "--spot"),
        parse_number(args.rate, "--rate"),
        parse_number(args.div, "--div"),
    )
    try:
        market.validate()
    except ValueError as exc:
        field = str(exc).split(" ", 1)[0].split(".")[-1]
        raise UsageError(f"--{field}: {exc}") from None
    lo, hi = PRICE_RANGE
    check_range(float(market.spot), "--spot", lo, hi, "a USD price")
    strikes = np.asarray(parse_floats(args.strikes, "--strikes"))
    expiries = np.asarray(parse_expiries(args.expiries))
    if np.any(strikes <= 0):
        raise UsageError(f"--strikes must be positive; got {strikes[strikes <= 0][0]:g}")
    if np.any(expiries <= 0):
        raise UsageError(f"--expiries must be positive; got {expiries[expiries <= 0][0]:g}")
    for k_ in strikes:
        check_range(float(k_), "--strikes", lo, hi, "a USD price")
    for t_ in expiries:
        check_range(float(t_), "--expiries", 0.0, MAX_EXPIRY_YEARS, "years")

    t = np.repeat(expiries, strikes.size)
    k = np.tile(strikes, expiries.size)
    fwd = np.asarray(market.forward(jnp.asarray(t)), dtype=np.float64)
    disc = np.asarray(market.discount(jnp.asarray(t)), dtype=np.float64)
    both = np.stack([np.ones_like(k, bool), np.zeros_like(k, bool)])
    from .progress import activity

    with activity(f"pricing {k.size} calls and puts under {type(model).__name__} "
                  f"({args.method})", sys.stderr):
        prices = np.asarray(fourier_price(model, market, k, t, both, method=args.method))
    calls, puts = prices
    bad = ~(np.isfinite(calls) & np.isfinite(puts))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UsageError(f"{type(model).__name__} gives no finite price for {int(bad.sum())} "
                         f"of {bad.size} options, first at strike {k[i]:g}, expiry "
                         f"{t[i] * 365.0:g} days ({args.method}); check the parameters")
    otm_call = k >= fwd
    vols, status = implied_vol(np.where(otm_call, calls, puts), fwd, k, t, otm_call, disc,
                               return_status=True)
    iv = np.where(np.asarray(status) == IV_OK, np.asarray(vols, np.float64), np.nan)

    rows = [
        {"expiry": float(t[i]), "days": float(t[i] * 365.0), "strike": float(k[i]),
         "forward": float(fwd[i]), "call": float(calls[i]), "put": float(puts[i]),
         "iv": float(iv[i])}
        for i in range(k.size)
    ]
    if args.fmt == "json" or args.json:
        emit_json({"model": type(model).__name__, "params": model._asdict(),
                   "market": market._asdict(), "method": args.method, "rows": rows})
        return 0
    if args.fmt == "csv":
        keys = list(rows[0])
        print(",".join(keys))
        for r in rows:
            print(",".join(repr(r[key]) for key in keys))
        return 0
    cols = [Column("expiry", "expiry_y", fmt=".4f"), Column("days", fmt=".1f"),
            Column("strike", fmt=".2f"), Column("forward", fmt=".2f"),
            Column("call", fmt=".4f"), Column("put", fmt=".4f"),
            Column("iv", "iv_pct", fmt=".3f")]
    for r in rows:
        r["iv"] = 100.0 * r["iv"]
    params = ", ".join(f"{f}={float(v):g}" for f, v in model._asdict().items())
    print(f"{type(model).__name__}({params})  spot={float(market.spot):g} "
          f"rate={float(market.rate):g} div={float(market.div):g}  method={args.method}")
    print(text_table(rows, cols))
    print("iv_pct: Black implied vol (%) of the out-of-the-money option "
          "(blank where the price does not determine one)")
    return 0


# --------------------------------------------------------------------------------------------
# sensitivities


_SENS_EPILOG = """\
files:
  --book   TOML: a [book] table (name, currency, spot_source) and [[position]] entries
           (type = european, digital, asian, barrier, lookback, spot, perpetual or future;
           quantity in coins; see scenarios/books/btc_example.toml)
  --model  TOML or JSON: [model] (type and every parameter) and [market] (spot, rate, div);
           see scenarios/models/btc_heston.toml

writes to --out: report.html, tornado.png, ladders.png, positions.csv,
position_parameters.csv, parameters.csv, ladders.csv, sensitivities.json

example:
  qmr sensitivities --book scenarios/books/btc_example.toml \\
      --model scenarios/models/btc_heston.toml --out out/sensitivities --seed 0
"""


def _positive_int(text: str) -> int:
    value = _nonnegative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def _configure_sensitivities(p: argparse.ArgumentParser) -> None:
    _add_book_model(p)
    p.add_argument("--out", default="out/sensitivities", metavar="DIR",
                   help="output folder (default: out/sensitivities)")
    p.add_argument("--seed", type=_nonnegative_int, default=0, metavar="N",
                   help="Monte Carlo seed of path-dependent positions (default: 0)")
    p.add_argument("--paths", type=_positive_int, default=None, metavar="N",
                   help="Monte Carlo paths per path-dependent position (default: 20000)")
    add_json_flag(p)


def _fmt_input(name: str, value: float) -> str:
    """An input's level for a terminal line: spot with separators, rates in %, vol shifts
    in vol points."""
    if name == "spot":
        return f"{value:,.0f}"
    if name in ("rate", "div"):
        return f"{100 * value:.2f}%"
    if name == "vol":
        return f"{100 * value:+g} vol pts"
    return f"{value:.4g}"


def sensitivity_lines(tornado: list[dict], n: int = 3) -> list[str]:
    """The ``n`` largest sensitivities of a tornado, each naming the down and the up move
    and the full-revaluation P&L of each."""
    lines = ["largest sensitivities (full revaluation, USD; down move | up move):"]
    for r in tornado[:n]:
        name = r["input"]
        lines.append(
            f"  {name:<7} {r['move']:>14}: down to {_fmt_input(name, r['down_to'])} "
            f"{r['full_down']:+,.2f} | up to {_fmt_input(name, r['up_to'])} "
            f"{r['full_up']:+,.2f}")
    return lines


def _run_sensitivities(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .book import DEFAULT_MC_PATHS
    from .report.sensitivity import sensitivity_report

    book, spec = _book_and_model(args)
    n_paths = args.paths or DEFAULT_MC_PATHS
    say(args, f"book {book.name!r}: {len(book)} positions ({book.currency}); model "
              f"{spec.name}; spot {float(spec.market.spot):,.2f}; seed {args.seed}")
    try:
        summary = sensitivity_report(book, spec.model, spec.market, args.out, seed=args.seed,
                                     n_paths=n_paths, model_name=spec.name,
                                     log=lambda text: say(args, text), progress=True)
    except (ValueError, NotImplementedError) as exc:
        raise UsageError(str(exc)) from None
    t = summary["totals"]
    say(args, f"value {t['value_usd']:,.2f} USD ({t['value_coin']:,.4f} {book.currency}); "
              f"delta {t['delta_coin']:,.4f} {book.currency}; vega "
              f"{t['vega_usd_vol_pt']:,.2f} USD/vol pt; theta {t['theta_usd_day']:,.2f} USD/day")
    for line in sensitivity_lines(summary["tornado"]):
        say(args, line)
    report = (Path(args.out) / "report.html").resolve()
    say(args, f"report: {report}")
    if args.json:
        emit_json({"book": book.name, "model": spec.name, "seed": args.seed,
                   "market": summary["market"], "totals": t, "tornado": summary["tornado"],
                   "positions": summary["positions"], "report": report})
    return 0


# --------------------------------------------------------------------------------------------
# stress and sweep

_STRESS_EPILOG = """\
scenarios: files, folders of *.toml, or names of the shipped library (scenarios/library,
e.g. crash-20-vol-spike); "library" runs all of it

prints a table (P&L in USD and coin, liquidity cost, VaR/ES of path scenarios) and writes
to --out (default out/stress): report.html, stress.csv, positions.csv and figures

VaR/ES levels (--levels, default 0.95,0.99,0.999): a level a needs at least 10/(1-a) paths
(95%: 200, 99%: 1,000, 99.9%: 10,000); levels a scenario's path count cannot support are
left out of its row with a note

exit status: 0 ok (scenarios the model cannot express are listed as n/a), 1 some scenario
failed (its error is in the table), 2 bad input

example:
  qmr stress --book scenarios/books/btc_stress.toml --model scenarios/models/btc_heston.toml \\
      crash-20-vol-spike replay-ftx-2022-11 --out out/stress
"""

_SWEEP_EPILOG = """\
dimensions (--dim, repeatable): a shock field (spot, vol, term, skew, rate, basis, horizon,
drift, spread, impact_bps, exit_fraction) or scale.FIELD / shift.FIELD of the model, with
  values  NAME=v1,v2,...   or   NAME=lo:hi:n  (n evenly spaced)    grid design (default)
          NAME=lo:hi                                              with --random N
horizon: --horizon (default 1d) unless a dimension sets it; durations as 12h, 7d, 2w

VaR/ES levels (--levels, default 0.95,0.99,0.999) and the 99% ES contributions need enough
paths per scenario: a level a needs at least 10/(1-a) paths (95%: 200, 99%: 1,000, 99.9%:
10,000); too few paths are refused before anything is compiled

writes to --out: manifest.json, parts/*.parquet (as chunks finish), results.parquet,
results.csv, report.html with heatmaps, worst.csv, es_contributions.csv; rerun the same
command after an interruption to continue where it stopped (a part whose SHA-256 does not
match manifest.json is computed again); each dimension may be given once

example:
  qmr sweep --book scenarios/books/btc_stress.toml --model scenarios/models/btc_heston.toml \\
      --dim spot=-0.4:0.2:13 --dim vol=-0.1:0.3:9 --dim scale.xi=1,2 --horizon 7d \\
      --paths 10000 --out out/sweep
"""


def _scenario_args(items: list[str]):
    from pathlib import Path

    from .stress.scenarios import default_scenario_dir, load_scenarios

    paths = []
    lib = default_scenario_dir()
    for it in items:
        p = Path(it)
        if it == "library":
            paths.append(lib)
        elif p.exists():
            paths.append(p)
        elif (lib / f"{it}.toml").exists():
            paths.append(lib / f"{it}.toml")
        else:
            raise UsageError(f"scenario {it!r}: no such file, folder or library scenario "
                             f"(see {lib})")
    try:
        return load_scenarios(paths)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _book_currency(path) -> str | None:
    """The ``[book] currency`` of a book file, or ``None`` (``load_book`` reports problems)."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            value = tomllib.load(fh).get("book", {}).get("currency")
    except (OSError, ValueError, AttributeError):
        return None
    return value.upper() if isinstance(value, str) else None


def _book_and_model(args):
    """The ``--book`` and ``--model`` files; with ``--snapshot``/``--chain`` the market (and
    the book's valuation time) come from that option-chain snapshot."""
    from .book import load_book, load_model

    try:
        spec = load_model(args.model)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if getattr(args, "snapshot", None) is None and getattr(args, "chain", None) is None:
        try:
            return load_book(args.book), spec
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    from .data import load_chain, market_from_chain

    currency = _book_currency(args.book)
    snapshot = parse_snapshot(args.snapshot)
    try:
        chain = load_chain(args.chain, currency=currency, snapshot=snapshot)
        market, info = market_from_chain(chain, rate=float(spec.market.rate))
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    except (ValueError, OSError) as exc:
        raise UsageError(f"--snapshot: {exc}") from None
    try:
        book = load_book(args.book, as_of=info["snapshot"])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    say(args, f"market from {book.currency} snapshot {info['snapshot']}: spot "
              f"{float(market.spot):,.2f}, basis {100 * info['basis']:.2f}%/yr (largest "
              f"forward error {info['max_forward_error_bp']:.1f} bp)")
    return book, spec._replace(market=market)


def _add_book_model(p: argparse.ArgumentParser) -> None:
    """``--book``, ``--model`` and the market snapshot options of every book command."""
    p.add_argument("--book", required=True, metavar="FILE", help="book file (TOML)")
    p.add_argument("--model", required=True, metavar="FILE",
                   help="model and market file (TOML or JSON; `qmr calibrate` writes one, "
                        "model.toml)")
    p.add_argument("--snapshot", default=None, metavar="TIME|first|last|INDEX",
                   help="value the book at this option-chain snapshot: its spot index, its "
                        "forwards (a flat basis fitted to them) and its time (absolute "
                        "expiries of the book count from it); the model file's [market] "
                        "keeps only its rate")
    p.add_argument("--chain", default=None, metavar="FILE",
                   help="the chain of --snapshot (default: the shared Deribit data)")


def _configure_stress(p: argparse.ArgumentParser) -> None:
    _add_book_model(p)
    p.add_argument("scenarios", metavar="SCENARIO", nargs="*", default=["library"],
                   help="scenario files, folders or library names (default: library, all "
                        "shipped scenarios)")
    p.add_argument("--paths", type=_positive_int, default=None, metavar="N",
                   help="paths of path scenarios (default: each scenario's n_paths)")
    p.add_argument("--levels", default=None, metavar="A1,A2,...",
                   help="VaR/ES confidence levels (default: 0.95,0.99,0.999)")
    p.add_argument("--seed", type=_nonnegative_int, default=0, metavar="N",
                   help="PRNG seed (default: 0)")
    p.add_argument("--out", default="out/stress", metavar="DIR",
                   help="output folder (default: out/stress)")
    add_json_flag(p)


def _run_stress(args: argparse.Namespace) -> int:
    import jax

    from .report.stress import print_stress_table, stress_report
    from .stress.run import DEFAULT_LEVELS, stress

    if args.paths is not None and args.paths < 2:
        raise UsageError(f"--paths {args.paths}: path scenarios need at least 2 paths")
    levels = parse_levels(args.levels) or DEFAULT_LEVELS
    book, spec = _book_and_model(args)
    scenarios = _scenario_args(args.scenarios)
    say(args, f"book {book.name!r}: {len(book)} positions; model {spec.name}; "
              f"{len(scenarios)} scenario(s); seed {args.seed}")
    try:
        run = stress(book, spec.model, spec.market, scenarios, key=jax.random.key(args.seed),
                     n_paths=args.paths, levels=levels, progress=True)
    except ValueError as exc:
        raise UsageError(f"{args.model}: {exc}") from None
    cols = [c for c in ("kind", "horizon_days", "pnl_usd", "pnl_coin", "cost", "worst",
                        "var99", "es99", "hist_es95", "hist_es99", "status")
            if c in run.table.columns]
    print_stress_table(run.table[cols], stream=sys.stderr if args.json else sys.stdout)
    if "notes" in run.table.columns:  # clamped parameters, too few tail samples, ...
        for name, note in run.table["notes"].dropna().items():
            say(args, f"note: {name}: {note}")
    meta = dict(run.meta, seed=args.seed, model_file=str(args.model))
    rows = run.table.reset_index().rename(columns={"scenario": "name"})
    paths = stress_report(rows, run.positions, args.out, meta=meta)
    report = paths["report.html"]
    say(args, f"report: {report}")
    failed = bool(run.table["status"].str.startswith("error").any())
    if args.json:
        emit_json({"book": book.name, "model": spec.name, "seed": args.seed,
                   "levels": list(levels), "failed": failed, "report": report,
                   "scenarios": rows.to_dict(orient="records")})
    return 1 if failed else 0


def _parse_dim(text: str, random: bool):
    name, sep, spec = text.partition("=")
    if not sep or not name.strip():
        raise UsageError(f"--dim {text!r}: expected NAME=VALUES")
    name = name.strip()
    from .stress.scenarios import ScenarioError, parse_duration

    def num(x):
        try:
            return parse_duration(x.strip(), "") if name == "horizon" else float(x)
        except (ValueError, ScenarioError):
            raise UsageError(f"--dim {text!r}: {x!r} is not a number") from None

    if ":" in spec:
        bits = spec.split(":")
        if random:
            if len(bits) != 2:
                raise UsageError(f"--dim {text!r}: with --random give a range lo:hi")
            return name, (num(bits[0]), num(bits[1]))
        if len(bits) != 3:
            raise UsageError(f"--dim {text!r}: expected lo:hi:n")
        try:
            n = int(bits[2])
        except ValueError:
            raise UsageError(f"--dim {text!r}: n must be an integer") from None
        if n < 1:
            raise UsageError(f"--dim {text!r}: n must be >= 1")
        lo, hi = num(bits[0]), num(bits[1])
        return name, [lo + (hi - lo) * i / max(n - 1, 1) for i in range(n)]
    if random:
        raise UsageError(f"--dim {text!r}: with --random give a range lo:hi")
    return name, [num(x) for x in spec.split(",") if x.strip()]


def _configure_sweep(p: argparse.ArgumentParser) -> None:
    _add_book_model(p)
    p.add_argument("--dim", action="append", required=True, metavar="NAME=VALUES",
                   help="a sweep dimension (repeatable)")
    p.add_argument("--random", type=_positive_int, default=None, metavar="N",
                   help="N random scenarios (uniform over the ranges) instead of a grid")
    p.add_argument("--horizon", default="1d", metavar="DURATION",
                   help="horizon of every scenario (default: 1d)")
    p.add_argument("--paths", type=_nonnegative_int, default=10_000, metavar="N",
                   help="paths per scenario; 0: instantaneous revaluation (default: 10000; "
                        "at least 10/(1-a) for each level a: 1,000 for 99%%, 10,000 for "
                        "99.9%%)")
    p.add_argument("--levels", default=None, metavar="A1,A2,...",
                   help="VaR/ES confidence levels (default: 0.95,0.99,0.999)")
    p.add_argument("--steps", type=_positive_int, default=None, metavar="N",
                   help="time steps over the horizon (default: daily)")
    p.add_argument("--seed", type=_nonnegative_int, default=0, metavar="N",
                   help="PRNG seed (default: 0)")
    p.add_argument("--no-crn", action="store_true",
                   help="independent draws per scenario (default: common random numbers)")
    p.add_argument("--memory", type=_positive_int, default=512, metavar="MIB",
                   help="memory budget of one chunk, MiB (default: 512)")
    p.add_argument("--out", default="out/sweep", metavar="DIR",
                   help="output folder (default: out/sweep)")
    add_json_flag(p)


def _run_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    import jax

    from .report.stress import sweep_report
    from .stress import Shock, StressEngine, sweep
    from .stress.scenarios import ScenarioError, parse_duration
    from .stress.sweeps import DEFAULT_LEVELS, check_sweep, design_from_dims

    dims = [_parse_dim(d, args.random is not None) for d in args.dim]
    levels = parse_levels(args.levels) or DEFAULT_LEVELS
    if args.paths >= 2:  # 1 path is refused by check_sweep
        need = max(min_paths(a) for a in (*levels, 0.99))
        if args.paths < need:
            worst = max(levels + (0.99,))
            raise UsageError(
                f"--paths {args.paths}: too few for the {100 * worst:g}% VaR/ES "
                f"({'level' if worst in levels else 'ES contributions'}): give at least "
                f"{need:,} paths, or fewer/lower --levels (each level a needs 10/(1-a) "
                "paths; 0 paths revalues instantaneously)")
    book, spec = _book_and_model(args)
    try:
        base = Shock(horizon=parse_duration(args.horizon, "--horizon"))
        design = design_from_dims(dims, random=args.random, seed=args.seed, base=base)
        # before compiling anything
        check_sweep(design, spec.model, n_paths=args.paths, levels=levels)
    except (ValueError, ScenarioError) as exc:
        raise UsageError(str(exc)) from None
    say(args, f"book {book.name!r}: {len(book)} positions; model {spec.name}; {len(design):,} "
              f"scenarios x {args.paths:,} paths; seed {args.seed}; out {args.out}")
    try:
        engine = StressEngine(book, spec.model, spec.market,
                              key=jax.random.key(args.seed) if book.has_mc else None)
    except ValueError as exc:
        raise UsageError(f"{args.model}: {exc}") from None
    try:
        res = sweep(engine, design, key=jax.random.key(args.seed), out=args.out,
                    n_paths=args.paths, steps=args.steps, crn=not args.no_crn,
                    memory_budget=args.memory * 2**20, levels=levels)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    say(args, f"{len(res.table):,} scenarios ({res.resumed_scenarios:,} from earlier parts) in "
              f"{res.wall_time:.1f} s")
    if res.recomputed:
        say(args, f"recomputed {len(res.recomputed)} part(s) that did not match the manifest")
    paths = sweep_report(res, args.out)
    report = paths.get("report.html", args.out)
    say(args, f"report: {report}")
    if args.json:
        from .report.stress import worst_scenarios

        table = res.table
        worst = worst_scenarios(table, min(5, len(table)))
        emit_json({"book": book.name, "model": spec.name, "seed": args.seed,
                   "scenarios": len(table), "paths": args.paths, "levels": list(levels),
                   "resumed": res.resumed_scenarios, "wall_seconds": res.wall_time,
                   "worst": worst.to_dict(orient="records"), "report": report,
                   "results": str(Path(args.out) / "results.parquet")})
    return 0


# --------------------------------------------------------------------------------------------
# calibrate


EXIT_NOT_CONVERGED = 1

_CALIB_EPILOG = """\
data:
  default  the shared Deribit parquet ($QMR_DATA_DIR or ../shared/data), snapshot "last"
  --chain  a Deribit parquet, a raw snapshot CSV or a data folder, a chain in the simple
           CSV/Parquet schema (expiry, strike, type, bid, ask, forward or spot; see
           scenarios/chains/README.md) or a saved Deribit API response
           (public/get_book_summary_by_currency, JSON)
  --synthetic
           a Deribit-like chain priced by Heston(v0=0.25, kappa=2, theta=0.3, xi=1,
           rho=-0.3) (spot 60000, no noise): works without market data
  --snapshot  first, last, an index into the file's snapshots (0, -1, ...), a time (the
           latest snapshot at or before it, e.g. 2026-05-31T12:00Z) or a snapshot file name

start: --initial FILE (a model file as for `qmr sensitivities`, TOML or JSON; its [market] is
not used), else a guess from the chain's ATM vols and skew (qmr_jax.calibration.initial_guess)

parameters: --fixed rho=-0.3,kappa holds fields (at the given value, else at the start's);
--bounds kappa=0.1:10,xi=0.05:4 replaces a field's box (defaults:
qmr_jax.calibration.DEFAULT_BOUNDS); a parameter that ends on an edge of its box is warned
about on the terminal and in the report

writes to --out: model.toml (the fit and the chain's market, read by --model and --initial of
every command), report.html, smiles.png, residuals.png, convergence.png, result.json,
residuals.csv, by_expiry.csv

exit status: 0 converged, 1 not converged (the report is still written), 2 bad input

example:
  qmr calibrate --currency BTC --model heston --snapshot last --out out/calibration
"""


def synthetic_truth():
    """The Heston model priced by ``qmr calibrate --synthetic``."""
    from .models import Heston

    return Heston(v0=0.25, kappa=2.0, theta=0.3, xi=1.0, rho=-0.3)


def synthetic_calibration_chain(currency: str = "BTC"):
    """The chain of ``qmr calibrate --synthetic``: ``synthetic_chain(synthetic_truth())``
    with the default Deribit-like calendar and strikes, no noise."""
    from .data import synthetic_chain

    return synthetic_chain(synthetic_truth(), currency=currency)


def parse_snapshot(text: str | None):
    """``--snapshot``: ``None`` -> ``"last"``; an integer -> an index; else as given
    (``"first"``, ``"last"``, a time or a snapshot file name)."""
    if text is None:
        return "last"
    t = text.strip()
    if not t:
        raise UsageError("--snapshot: empty value; give first, last, an index or a time")
    try:
        return int(t)
    except ValueError:
        return t


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be finite and >= 0; got {text!r}")
    return value


def _configure_calibrate(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--chain", metavar="FILE",
                     help="option chain: Deribit parquet, snapshot CSV or data folder, the "
                          "simple CSV/Parquet schema or Deribit API JSON (default: the shared "
                          "data)")
    src.add_argument("--synthetic", action="store_true",
                     help="calibrate to a synthetic Heston chain instead of market data")
    p.add_argument("--currency", choices=("BTC", "ETH"), default="BTC",
                   help="coin (default BTC)")
    p.add_argument("--model", default=None,
                   help="heston, bates, merton, kou or gbm (default: the --initial file's "
                        "model, else heston)")
    p.add_argument("--snapshot", default=None, metavar="TIME|first|last|INDEX",
                   help="which snapshot of the file (default: last)")
    p.add_argument("--out", default="out/calibration", metavar="DIR",
                   help="output folder (default: out/calibration)")
    p.add_argument("--loss", choices=("iv", "price_vega", "price_spread"), default="iv",
                   help="residual: IV error (default), price error over vega, or price "
                        "error in bid/ask spreads")
    p.add_argument("--weights", choices=("uniform", "spread", "vega"), default="uniform",
                   help="quote weights (default uniform)")
    p.add_argument("--method", choices=("lm", "lbfgs"), default="lm",
                   help="Levenberg-Marquardt (default) or L-BFGS")
    p.add_argument("--starts", type=_positive_int, default=1, metavar="N",
                   help="starting points: the initial one and N-1 random perturbations "
                        "(default 1)")
    p.add_argument("--seed", type=_nonnegative_int, default=0, metavar="N",
                   help="seed of the perturbed starts (default 0)")
    p.add_argument("--feller-penalty", type=_nonnegative_float, default=0.0, metavar="W",
                   help="weight of the Feller-condition penalty, Heston and Bates "
                        "(default 0: off)")
    p.add_argument("--initial", metavar="FILE",
                   help="model file (TOML or JSON) with the starting parameters")
    p.add_argument("--max-iter", type=_positive_int, default=200, metavar="N",
                   help="iteration limit of the solver (default 200)")
    p.add_argument("--fixed", default=None, metavar="NAME[=VALUE],...",
                   help="fields held fixed, at VALUE or at the starting value")
    p.add_argument("--bounds", default=None, metavar="NAME=LO:HI,...",
                   help="calibration box of a field (replaces its default)")
    p.add_argument("--rate", default="0", metavar="R",
                   help="USD rate written to model.toml's [market] (default 0); div is then "
                        "fitted so the model's forwards match the chain's")
    add_json_flag(p)


def _calibration_chain(args: argparse.Namespace):
    from .data import load_chain

    if args.synthetic:
        if args.snapshot is not None:
            raise UsageError("--snapshot selects a snapshot of market data; it does not apply "
                             "to --synthetic")
        return synthetic_calibration_chain(args.currency)
    snapshot = parse_snapshot(args.snapshot)
    try:
        chain = load_chain(args.chain, currency=args.currency, snapshot=snapshot)
    except FileNotFoundError as exc:
        hint = "" if args.chain else " (or run with --synthetic)"
        raise UsageError(f"{exc}{hint}") from None
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None  # the loader's messages name the file
    if len(chain) == 0:
        raise UsageError(f"no {args.currency} quotes left in snapshot {args.snapshot or 'last'} "
                         "after cleaning")
    if "snapshot" in chain.columns and chain["snapshot"].nunique() > 1:
        raise UsageError("the chain holds several snapshots; choose one with --snapshot")
    return chain


def _model_class(args: argparse.Namespace):
    """The ``--model`` class, or ``None`` when not given."""
    from .calibration import MODELS

    if args.model is None:
        return None
    cls = MODELS.get(args.model.strip().lower())
    if cls is None:
        raise UsageError(f"--model: unknown model {args.model!r}; choose one of: "
                         f"{', '.join(MODELS)}")
    return cls


def _initial_model(args: argparse.Namespace, cls, chain):
    from .book import load_model
    from .calibration import MODELS, initial_guess

    if args.initial is None:
        return initial_guess(cls or MODELS["heston"], chain)
    try:
        spec = load_model(args.initial)
    except ValueError as exc:
        raise UsageError(f"--initial: {exc}") from None
    if cls is not None and type(spec.model) is not cls:
        raise UsageError(f"--initial {args.initial}: holds a {type(spec.model).__name__} "
                         f"model but --model is {args.model}")
    return spec.model


def parse_fixed(text: str | None, cls) -> dict[str, float | None]:
    """``--fixed rho=-0.3,kappa`` -> ``{"rho": -0.3, "kappa": None}`` (``None``: keep the
    starting value); names are checked against ``cls``'s fields."""
    if text is None:
        return {}
    out: dict[str, float | None] = {}
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        name, sep, raw = (x.strip() for x in item.partition("="))
        if name not in cls._fields:
            raise UsageError(f"--fixed: {cls.__name__} has no parameter {name!r}; its "
                             f"parameters: {', '.join(cls._fields)}")
        if name in out:
            raise UsageError(f"--fixed: {name!r} given twice")
        out[name] = parse_number(raw, f"--fixed {name}") if sep else None
    if not out:
        raise UsageError(f"--fixed: expected NAME[=VALUE],...; got {text!r}")
    return out


def parse_bounds(text: str | None, cls) -> dict[str, tuple[float, float]] | None:
    """``--bounds kappa=0.1:10,xi=0.05:4`` -> ``{"kappa": (0.1, 10.0), ...}``."""
    if text is None:
        return None
    out: dict[str, tuple[float, float]] = {}
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        name, sep, raw = (x.strip() for x in item.partition("="))
        lo, colon, hi = raw.partition(":")
        if not sep or not colon:
            raise UsageError(f"--bounds: expected NAME=LO:HI; got {item!r}")
        if name not in cls._fields:
            raise UsageError(f"--bounds: {cls.__name__} has no parameter {name!r}; its "
                             f"parameters: {', '.join(cls._fields)}")
        if name in out:
            raise UsageError(f"--bounds: {name!r} given twice")
        box = (parse_number(lo, f"--bounds {name}"), parse_number(hi, f"--bounds {name}"))
        if not box[0] < box[1]:
            raise UsageError(f"--bounds {name}: lower bound {box[0]:g} must be below the "
                             f"upper bound {box[1]:g}")
        out[name] = box
    if not out:
        raise UsageError(f"--bounds: expected NAME=LO:HI,...; got {text!r}")
    return out


def _run_calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .calibration import calibrate
    from .model_file import save_model
    from .report.calibration import calibration_report

    out = Path(args.out)
    cls = _model_class(args)
    rate = parse_number(args.rate, "--rate")
    check_range(rate, "--rate", -5.0, 5.0, "a continuous annual rate")
    if cls is not None:  # check --fixed/--bounds before loading anything
        parse_fixed(args.fixed, cls)
        parse_bounds(args.bounds, cls)
    say(args, "loading the synthetic chain" if args.synthetic else
        f"loading {args.currency} quotes from {args.chain or 'the default data'}")
    chain = _calibration_chain(args)
    n_exp = chain["expiry_years"].nunique()
    where = chain["snapshot"].iloc[0] if "snapshot" in chain.columns else "-"
    say(args, f"chain: {len(chain)} quotes in {n_exp} expiries, {args.currency} snapshot "
              f"{where}")
    initial = _initial_model(args, cls, chain)
    fixed = parse_fixed(args.fixed, type(initial))
    bounds = parse_bounds(args.bounds, type(initial))
    held = {k: v for k, v in fixed.items() if v is not None}
    if held:
        initial = initial._replace(**held)
        try:
            initial.validate()
        except ValueError as exc:
            raise UsageError(f"--fixed: {exc}") from None
    start = ", ".join(f"{k}={float(v):.4g}" for k, v in initial._asdict().items())
    say(args, f"calibrating {type(initial).__name__} from {start} ({args.method}, loss "
              f"{args.loss}, weights {args.weights}, {args.starts} start(s)"
              + (f", fixed {', '.join(fixed)}" if fixed else "") + ")")
    try:
        result = calibrate(initial, chain, loss=args.loss, weights=args.weights,
                           method=args.method, starts=args.starts, seed=args.seed,
                           feller_penalty=args.feller_penalty, max_iter=args.max_iter,
                           fixed=tuple(fixed), bounds=bounds,
                           log=lambda text: say(args, f"  {text}"))
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    say(args, result.summary())
    if (warning := result.bounds_warning()) is not None:
        print(f"qmr calibrate: warning: {warning}", file=sys.stderr, flush=True)
    paths = calibration_report(result, chain, out)
    market = _chain_market(chain, rate)
    paths["model.toml"] = save_model(
        out / "model.toml", result.params, market,
        name=f"{args.currency} {type(initial).__name__} calibrated to {where}",
        description=(f"qmr calibrate: {result.n_quotes} quotes, RMSE {result.rmse_iv:.3f} vol "
                     f"pts, {'converged' if result.converged else 'NOT converged'}"),
        source=str(args.chain) if args.chain else ("synthetic" if args.synthetic
                                                   else "default data"),
        meta={"snapshot": str(where), "currency": args.currency, "loss": args.loss,
              "method": args.method, "rmse_iv": float(result.rmse_iv),
              "inside_band": float(result.inside_band), "converged": bool(result.converged),
              "at_bounds": list(result.at_bounds), "fixed": list(fixed), "seed": args.seed,
              "market": "spot: the chain's index; div: fitted so that forward = spot * "
                        "exp((rate - div) T) matches the chain's forwards"})
    say(args, "wrote:")
    for path in paths.values():
        say(args, f"  {path}")
    say(args, f"model file: {paths['model.toml']} (use with --model or --initial)")
    say(args, f"report: {paths['report.html'].resolve()}")
    if not result.converged:
        say(args, f"calibration did NOT converge: {result.reason} after {result.iterations} "
                  "iterations (the report shows the last iterate)")
    if args.json:
        emit_json(dict(result.to_dict(), market=market._asdict(),
                       files={k: str(v) for k, v in paths.items()}))
    return 0 if result.converged else EXIT_NOT_CONVERGED


def _chain_market(chain, rate: float):
    """The chain's market for the model file: its spot index and a flat basis fitted to its
    forwards."""
    from .data import market_from_chain

    market, _ = market_from_chain(chain, rate=rate)
    return market


# --------------------------------------------------------------------------------------------
# version


def _configure_version(p: argparse.ArgumentParser) -> None:
    add_json_flag(p)


def _run_version(args: argparse.Namespace) -> int:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__
    from ._cache import default_cache_dir

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    cache = default_cache_dir()
    info = {"qmr_jax": __version__, "jax": installed("jax"), "jaxlib": installed("jaxlib"),
            "numpy": installed("numpy"), "python": platform.python_version(),
            "compilation_cache": None if cache is None else str(cache)}
    if args.json:
        emit_json(info)
        return 0
    print(f"qmr_jax {__version__}")
    print(f"jax {info['jax']}, jaxlib {info['jaxlib']}, numpy {info['numpy']}, "
          f"python {info['python']}")
    print(f"compilation cache: {cache if cache is not None else 'off (QMR_CACHE_DIR)'}")
    return 0


COMMANDS: list[Command] = [
    Command("demo", "run the BTC-like demo and write an HTML report", _configure_demo,
            _run_demo),
    Command("price", "price European options with a model's characteristic function",
            _configure_price, _run_price, epilog=_PRICE_EPILOG),
    Command("sensitivities", "Greeks, tornado and P&L ladders of a book (CSV, JSON, HTML)",
            _configure_sensitivities, _run_sensitivities, epilog=_SENS_EPILOG),
    Command("calibrate", "calibrate a model to an option chain and write a fit report",
            _configure_calibrate, _run_calibrate, epilog=_CALIB_EPILOG),
    Command("stress", "revalue a book under named scenarios (table, CSV, HTML)",
            _configure_stress, _run_stress, epilog=_STRESS_EPILOG),
    Command("sweep", "a large scenario sweep: chunked, streamed to Parquet, resumable",
            _configure_sweep, _run_sweep, epilog=_SWEEP_EPILOG),
    Command("version", "print the package and runtime versions", _configure_version,
            _run_version, numeric=False),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qmr",
        description="qmr_jax: pricing, simulation and reports for crypto options models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, epilog=cmd.epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.configure(p)
        if cmd.numeric:
            p.add_argument("--no-cache", action="store_true",
                           help="do not use the persistent compilation cache "
                                "(default: $QMR_CACHE_DIR or ~/.cache/qmr_jax/jax; "
                                "QMR_CACHE_DIR=off also switches it off)")
        p.set_defaults(_command=cmd)
    return parser


def _message(exc: BaseException) -> str:
    """One line: the message of a ``UsageError``/``ValueError``; the file and the reason of an
    ``OSError``."""
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _show_compile_lines() -> None:
    """Programs built without a ``log`` function announce themselves on the
    ``qmr_jax.compile`` logger ("compiling ...", "compiled in 3.1 s"): show them on stderr."""
    import logging

    class ToStderr(logging.Handler):  # the stderr of the moment, not the one at set-up
        def emit(self, record):
            print(f"  {record.getMessage()}", file=sys.stderr, flush=True)

    logger = logging.getLogger("qmr_jax.compile")
    if not any(type(h).__name__ == "ToStderr" for h in logger.handlers):
        logger.addHandler(ToStderr())
    logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Run the ``qmr`` command line; returns the exit status (0 ok, 2 bad input; ``calibrate``
    returns 1 when the solver did not converge)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    cmd: Command = args._command
    try:
        if getattr(args, "out", None) is not None:
            check_out_dir(args.out)
        if cmd.numeric:
            import jax

            jax.config.update("jax_enable_x64", True)
            if not args.no_cache:
                from ._cache import enable_compilation_cache

                enable_compilation_cache()
            _show_compile_lines()
        return cmd.run(args)
    except (UsageError, ValueError, OSError) as exc:
        print(f"qmr {cmd.name}: error: {_message(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"qmr {cmd.name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
