"""Scenario files: a strict TOML schema, parsed into ``Scenario`` objects.

A scenario file (``scenarios/*.toml``) has a ``[scenario]`` header and, by kind, a ``[shock]``
table, a ``[paths]`` table (path scenarios), a ``[historical]`` table (historical replays)
and an optional ``[liquidity]`` table::

    [scenario]
    name = "jump-storm-7d"                # required: a short id (letters, digits, - _ .)
    kind = "path"                         # "instant", "path" or "historical"
    description = "Jump intensity x5 for a week: a cluster of gap moves."
    source = "Deribit BTC, March 2020; Bates fits with lam ~ 0.5-2 in stressed weeks"
    dates = "2020-03-09 to 2020-03-16"    # what it is modelled on
    tags = ["jumps", "crash"]             # optional

    [shock]                               # all optional; see qmr_jax.stress.shocks
    spot = -0.10                          # relative move
    vol = 0.15                            # +15 vol points
    horizon = "7d"                        # years, or "12h", "7d", "2w", "0.5y"

    [shock.scale]                         # model-parameter multipliers
    lam = 5.0
    [shock.shift]                         # model-parameter additive shifts
    mu_j = -0.05

    [paths]                               # kind = "path"
    n_paths = 20000                       # optional, default DEFAULT_PATHS
    steps = 7                             # optional: time steps over the horizon

    [liquidity]                           # optional
    spread = 4.0                          # half-spreads x4
    impact_bps = 20                       # + 20 bps of notional
    exit_fraction = 1.0                   # the whole book is closed out

    [historical]                          # kind = "historical"
    episode = "covid-2020-03"             # a name of qmr_jax.data.spot.EPISODES, or:
    start = "2020-03-12"                  # first and last day (UTC); anchored on the
                                          # close before the start
    end = "2020-03-13"
    currency = "BTC"                      # whose history (default: the book's)
    vol = "realized"                      # or a number: the vol shift at the end
    vol_beta = 0.5                        # share of the realised-vol change added to implied

Parsing is safe (``tomllib``: data only, no code) and strict: an unknown table or key, a
wrong type, a missing required key or an impossible value raises ``ScenarioError`` naming the
file, the line (for a key that is in the file) and the key (``shock.spot``). Numbers are
``int`` or ``float`` (``true`` is not a number); durations are years or strings with a unit.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from .shocks import NUMERIC_FIELDS, Shock, check_shock

KINDS = ("instant", "path", "historical")
DEFAULT_PATHS = 10_000
DEFAULT_STEPS_PER_DAY = 1
MAX_PATHS = 10_000_000
MAX_STEPS = 10_000
_DURATION_UNITS = {"h": 1.0 / (24.0 * 365.0), "d": 1.0 / 365.0, "w": 7.0 / 365.0, "y": 1.0}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

HEADER_FIELDS = {
    "name": "short id: letters, digits, '-', '_', '.'",
    "kind": "instant | path | historical",
    "description": "what happens, one or two sentences",
    "source": "where the numbers come from (data, paper, news)",
    "dates": "the dates it is modelled on (optional)",
    "tags": "list of words (optional)",
}
SHOCK_KEYS = set(NUMERIC_FIELDS) - {"spread", "impact_bps", "exit_fraction"}
LIQUIDITY_KEYS = {"spread", "impact_bps", "exit_fraction"}
PATH_KEYS = {"n_paths": "paths per scenario", "steps": "time steps over the horizon",
             "seed": "fold into the run's key (optional)"}
HISTORICAL_KEYS = {"episode", "start", "end", "currency", "source", "vol", "vol_beta",
                   "window_days"}
TABLES = {"scenario", "shock", "paths", "liquidity", "historical"}


class ScenarioError(ValueError):
    """A scenario file that cannot be used: the message names the file and the key."""


@dataclass(frozen=True)
class Scenario:
    """A parsed scenario.

    Attributes:
      name, kind, description, source, dates, tags: from the header.
      shock: the ``Shock`` (instant and path scenarios; the end-point shock of a replay once
        ``resolve_historical`` has run).
      n_paths, steps, seed: path settings (path scenarios).
      historical: the ``[historical]`` table (replays), else ``None``.
      path: the file it came from (``None`` when built in code).
    """

    name: str
    kind: str = "instant"
    description: str = ""
    source: str = ""
    dates: str = ""
    tags: tuple[str, ...] = ()
    shock: Shock = field(default_factory=Shock)
    n_paths: int = DEFAULT_PATHS
    steps: int | None = None
    seed: int | None = None
    historical: Mapping[str, Any] | None = None
    path: Path | None = None

    @property
    def horizon(self) -> float:
        return float(self.shock.horizon)

    def n_steps(self) -> int:
        """Steps over the horizon (default: one per day, at least 1)."""
        if self.steps is not None:
            return int(self.steps)
        return max(1, math.ceil(self.horizon * 365.0 * DEFAULT_STEPS_PER_DAY - 1e-9))

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else f"scenario {self.name!r}"


def parse_duration(value, where: str) -> float:
    """Years from a number or a string with a unit: ``"12h"``, ``"7d"``, ``"2w"``, ``"1y"``."""
    if isinstance(value, bool):
        raise ScenarioError(f"{where}: expected years or a duration like '7d'; got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        unit = _DURATION_UNITS.get(text[-1:]) if text else None
        try:
            return float(text[:-1] if unit is not None else text) * (unit or 1.0)
        except ValueError:
            pass
    raise ScenarioError(f"{where}: expected years or a duration like '7d'; got {value!r}")


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{where}: expected a number; got {value!r} "
                            f"({type(value).__name__})")
    if not math.isfinite(value):
        raise ScenarioError(f"{where}: expected a finite number; got {value!r}")
    return float(value)


def _integer(value, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenarioError(f"{where}: expected an integer; got {value!r}")
    if not lo <= value <= hi:
        raise ScenarioError(f"{where}: must be between {lo} and {hi}; got {value}")
    return int(value)


def _string(value, where: str, *, required: bool = True) -> str:
    if not isinstance(value, str):
        raise ScenarioError(f"{where}: expected a string; got {value!r}")
    if required and not value.strip():
        raise ScenarioError(f"{where}: must not be empty")
    return value.strip()


def _table(data: Mapping, key: str, where: str) -> Mapping:
    t = data.get(key, {})
    if not isinstance(t, Mapping):
        raise ScenarioError(f"{where}: [{key}] must be a table; got {type(t).__name__}")
    return t


def _unknown(table: Mapping, allowed: Iterable[str], where: str, prefix: str) -> None:
    extra = sorted(set(table) - set(allowed))
    if extra:
        raise ScenarioError(f"{where}: unknown key {prefix + extra[0]!r}; allowed: "
                            f"{', '.join(sorted(allowed))}")


def parse_scenario(data: Mapping[str, Any], *, source: str = "<scenario>",
                   path: Path | None = None) -> Scenario:
    """A ``Scenario`` from the TOML's dictionary; ``source`` names it in errors."""
    if not isinstance(data, Mapping):
        raise ScenarioError(f"{source}: expected a TOML table at the top level")
    _unknown(data, TABLES, source, "")
    head = _table(data, "scenario", source)
    if not head:
        raise ScenarioError(f"{source}: missing the [scenario] table (name, kind, description, "
                            "source)")
    _unknown(head, HEADER_FIELDS, source, "scenario.")
    for req in ("name", "kind", "description", "source"):
        if req not in head:
            raise ScenarioError(f"{source}: missing scenario.{req} ({HEADER_FIELDS[req]})")
    name = _string(head["name"], f"{source}: scenario.name")
    if not _NAME.match(name):
        raise ScenarioError(f"{source}: scenario.name {name!r} must use letters, digits, "
                            "'-', '_' and '.' only")
    kind = _string(head["kind"], f"{source}: scenario.kind")
    if kind not in KINDS:
        raise ScenarioError(f"{source}: scenario.kind must be one of {', '.join(KINDS)}; "
                            f"got {kind!r}")
    description = _string(head["description"], f"{source}: scenario.description")
    src = _string(head["source"], f"{source}: scenario.source")
    dates = _string(head.get("dates", ""), f"{source}: scenario.dates", required=False)
    tags = head.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ScenarioError(f"{source}: scenario.tags must be a list of strings; got {tags!r}")

    shock_t = _table(data, "shock", source)
    _unknown(shock_t, SHOCK_KEYS | {"scale", "shift"}, source, "shock.")
    values: dict[str, Any] = {}
    for k, v in shock_t.items():
        if k in ("scale", "shift"):
            if not isinstance(v, Mapping):
                raise ScenarioError(f"{source}: shock.{k} must be a table of model fields")
            values[k] = {f: _number(x, f"{source}: shock.{k}.{f}") for f, x in v.items()}
        elif k == "horizon":
            values[k] = parse_duration(v, f"{source}: shock.horizon")
        else:
            values[k] = _number(v, f"{source}: shock.{k}")
    liq = _table(data, "liquidity", source)
    _unknown(liq, LIQUIDITY_KEYS, source, "liquidity.")
    for k, v in liq.items():
        values[k] = _number(v, f"{source}: liquidity.{k}")
    if "liquidity" in data and "exit_fraction" not in liq:
        values["exit_fraction"] = 1.0  # a liquidity regime closes the book out by default
    shock = Shock(**values)
    try:
        check_shock(shock, where=source)
    except ValueError as exc:
        msg = str(exc).replace(f"{source}: ", "")
        key = msg.split(" ", 1)[0]
        table = "liquidity" if key in LIQUIDITY_KEYS else "shock"
        raise ScenarioError(f"{source}: {table}.{msg}") from None

    paths_t = _table(data, "paths", source)
    _unknown(paths_t, PATH_KEYS, source, "paths.")
    n_paths, steps, seed = DEFAULT_PATHS, None, None
    if "n_paths" in paths_t:
        n_paths = _integer(paths_t["n_paths"], f"{source}: paths.n_paths", 2, MAX_PATHS)
    if "steps" in paths_t:
        steps = _integer(paths_t["steps"], f"{source}: paths.steps", 1, MAX_STEPS)
    if "seed" in paths_t:
        seed = _integer(paths_t["seed"], f"{source}: paths.seed", 0, 2**31 - 1)

    hist_t = _table(data, "historical", source)
    _unknown(hist_t, HISTORICAL_KEYS, source, "historical.")
    historical = None
    if kind == "path":
        if paths_t == {} and "paths" not in data:
            pass  # defaults are fine
        if not float(shock.horizon) > 0:
            raise ScenarioError(f"{source}: a path scenario needs shock.horizon > 0 (e.g. "
                                "horizon = \"7d\")")
    elif "paths" in data:
        raise ScenarioError(f"{source}: [paths] is only for kind = \"path\"; this is {kind!r}")
    if kind == "historical":
        historical = _parse_historical(hist_t, source)
        if shock_t and any(k in shock_t for k in ("spot", "horizon")):
            raise ScenarioError(f"{source}: a historical replay takes its spot path and horizon "
                                "from the data; remove shock.spot / shock.horizon")
    elif "historical" in data:
        raise ScenarioError(f"{source}: [historical] is only for kind = \"historical\"; this is "
                            f"{kind!r}")
    return Scenario(name=name, kind=kind, description=description, source=src, dates=dates,
                    tags=tuple(tags), shock=shock, n_paths=n_paths, steps=steps, seed=seed,
                    historical=historical, path=path)


def _parse_historical(t: Mapping, source: str) -> dict:
    out: dict[str, Any] = {}
    from ..data.spot import CURRENCIES, EPISODES, PROVIDERS

    if "episode" in t:
        out["episode"] = _string(t["episode"], f"{source}: historical.episode")
        if out["episode"] not in EPISODES:
            raise ScenarioError(f"{source}: historical.episode {out['episode']!r} is not a "
                                f"known episode; known: {', '.join(sorted(EPISODES))} (or "
                                "give start and end dates)")
    for k in ("start", "end"):
        if k in t:
            v = t[k]
            if hasattr(v, "isoformat"):  # TOML dates parse to datetime.date
                v = v.isoformat()
            out[k] = _string(v, f"{source}: historical.{k}")
            try:
                out[k] = date.fromisoformat(out[k]).isoformat()
            except ValueError:
                raise ScenarioError(f"{source}: historical.{k} must be a date like 2020-03-12; "
                                    f"got {out[k]!r}") from None
    if "episode" not in out and not ("start" in out and "end" in out):
        raise ScenarioError(f"{source}: [historical] needs an episode name or start and end "
                            "dates")
    if "start" in out and "end" in out and out["end"] < out["start"]:
        raise ScenarioError(f"{source}: historical.end {out['end']} is before historical.start "
                            f"{out['start']}")
    if "currency" in t:
        out["currency"] = _string(t["currency"], f"{source}: historical.currency").upper()
        if out["currency"] not in CURRENCIES:
            raise ScenarioError(f"{source}: historical.currency must be one of "
                                f"{', '.join(CURRENCIES)}; got {out['currency']!r}")
    if "source" in t:
        out["source"] = _string(t["source"], f"{source}: historical.source")
        prov = PROVIDERS.get(out["source"])
        if prov is None:
            raise ScenarioError(f"{source}: historical.source must be one of "
                                f"{', '.join(PROVIDERS)}; got {out['source']!r}")
        if "currency" in out and out["currency"] not in prov.symbols:
            raise ScenarioError(f"{source}: historical.source {out['source']!r} has no "
                                f"{out['currency']} history (it has {', '.join(prov.symbols)})")
    vol = t.get("vol", "realized")
    if isinstance(vol, str):
        if vol != "realized":
            raise ScenarioError(f"{source}: historical.vol must be \"realized\" or a number; "
                                f"got {vol!r}")
        out["vol"] = vol
    else:
        out["vol"] = _number(vol, f"{source}: historical.vol")
        if not -1.0 < out["vol"] < 5.0:
            raise ScenarioError(f"{source}: historical.vol must be a vol shift in (-1, 5); got "
                                f"{out['vol']}")
    beta = _number(t.get("vol_beta", 0.5), f"{source}: historical.vol_beta")
    if not 0.0 <= beta <= 2.0:
        raise ScenarioError(f"{source}: historical.vol_beta must be in [0, 2]; got {beta}")
    out["vol_beta"] = beta
    out["window_days"] = _integer(t.get("window_days", 30), f"{source}: historical.window_days",
                                  2, 3650)
    return out


def load_scenario(path) -> Scenario:
    """Read and validate one scenario file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read the file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        key = _key_at(raw.decode("utf-8", errors="replace").splitlines(), line)
        raise ScenarioError(f"{p}: line {line}, column {col}{key}: byte "
                            f"0x{raw[exc.start]:02x} is not UTF-8; a scenario file must be "
                            "UTF-8 text (save it as UTF-8)") from None
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte-order mark some editors write
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{p}: not valid TOML: {exc}") from None
    try:
        return parse_scenario(data, source=str(p), path=p)
    except ScenarioError as exc:
        msg = str(exc)
        m = _DOTTED.search(msg[len(str(p)):])
        line = _line_of(text.splitlines(), m.group(1)) if m else None
        if line is None or not msg.startswith(f"{p}: "):
            raise
        raise ScenarioError(f"{p}: line {line}: {msg[len(str(p)) + 2:]}") from None


_DOTTED = re.compile(r"\b((?:scenario|shock|paths|liquidity|historical)(?:\.[A-Za-z0-9_]+)+)")


def _line_of(lines: list[str], dotted: str) -> int | None:
    """The 1-based line setting ``dotted`` (``shock.spot``, ``shock.scale.kappa``) in a
    scenario file's text, or ``None``."""
    table, _, key = dotted.rpartition(".")
    current = ""
    for i, text in enumerate(lines, 1):
        h = _HEADER_LINE.match(text)
        if h:
            current = h.group(1)
            continue
        k = _KEY_LINE.match(text)
        if k and (current, k.group(1)) in ((table, key), ("", dotted)) or (
                k and current and f"{current}.{k.group(1)}" == dotted):
            return i
    return None


_HEADER_LINE = re.compile(r"^\s*\[+\s*([A-Za-z0-9_.\-]+)\s*\]+")
_KEY_LINE = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*=")


def _key_at(lines: list[str], line: int) -> str:
    """``" (key shock.spot)"``: the dotted key set on a 1-based line, or ``""``."""
    m = _KEY_LINE.match(lines[line - 1]) if 0 < line <= len(lines) else None
    if not m:
        return ""
    table = ""
    for text in lines[:line - 1]:
        h = _HEADER_LINE.match(text)
        if h:
            table = h.group(1) + "."
    return f" (key {table}{m.group(1)})"


def load_scenarios(paths) -> list[Scenario]:
    """Scenarios from files and folders (every ``*.toml`` directly inside, sorted by name).
    Names must be unique."""
    if isinstance(paths, str | Path):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.toml"))
            if not found:
                raise ScenarioError(f"{p}: no *.toml scenario files in this folder")
            files += found
        else:
            files.append(p)
    out = [load_scenario(f) for f in files]
    seen: dict[str, Path | None] = {}
    for s in out:
        if s.name in seen:
            raise ScenarioError(f"{s.where}: scenario name {s.name!r} is also used by "
                                f"{seen[s.name]}")
        seen[s.name] = s.path
    return out


def default_scenario_dir() -> Path:
    """The shipped scenario library (``scenarios/library`` at the repository root)."""
    return Path(__file__).resolve().parents[2] / "scenarios" / "library"


__all__ = ["Scenario", "ScenarioError", "KINDS", "parse_scenario", "load_scenario",
           "load_scenarios", "parse_duration", "default_scenario_dir", "DEFAULT_PATHS"]
