"""Compiled programs, one per shape, traced once and kept on disk with the compilation cache.

A short command spends its time building programs, not running them: tracing the
calibration solver (the implied-vol inversion inside a Levenberg-Marquardt loop) takes
seconds, and XLA's compilation of it ten times more. JAX's persistent compilation cache
(``qmr_jax._cache``) removes the second cost for a new process but not the first. Here every
program is

* built ahead of time (``jit(...).lower(...).compile()``) for its exact input shapes, kept in
  this process and reused by every later call with the same shapes and settings;
* when the persistent compilation cache is on (``qmr.enable_compilation_cache``: the command
  line, the demo and the notebooks), also kept in ``<cache folder>/programs/``: the compiled
  program itself (``jax.experimental.serialize_executable``, ``*.xla``), which a new process
  loads in tens of milliseconds without tracing, lowering or compiling, and its traced form
  (``jax.export``, ``*.jax``), from which it is lowered and compiled (through the
  compilation cache) when the compiled one cannot be loaded.

A stored program is found by a key made of the program's name and settings, its input
shapes and dtypes, the JAX and jaxlib versions, the backend, the machine (device kind, CPU
feature flags), the JAX options that change tracing, and a digest of the ``qmr_jax`` source
files: any change of the code builds the program anew (never a stale one). A program that
cannot be stored or read back is built as usual; storing programs never makes a call fail.
The folder may be deleted at any time.

Before a program is built, a line ``compiling <what>...`` goes to the caller's ``log``
function (``calibrate(..., log=print)``) or, without one, to the ``qmr_jax.compile`` logger
(level INFO); after it, ``compiled in 12.3 s (cache: hit|miss|off)``, where ``cache`` says
whether XLA's compilation came from the persistent compilation cache (``jax.monitoring``
events ``/jax/compilation_cache/cache_hits`` and ``cache_misses``).

A program's function takes arrays (any pytree of them) and returns arrays in tuples, lists or
dicts (the containers a stored program can describe).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

logger = logging.getLogger("qmr_jax.compile")

MAX_PROGRAMS = 64
"""Programs kept in this process (least recently used dropped first)."""

STORE_SUBDIR = "programs"
QUICK_COMPILE = {"xla_backend_optimization_level": 0}
"""XLA options of ``quick_compile`` programs: the calibration's planning compiles in 3.1-3.6 s
instead of 5.0-5.5 s (busy 2-core CPU) and runs in 0.5 instead of 0.4 ms."""
_HIT = "/jax/compilation_cache/cache_hits"
_MISS = "/jax/compilation_cache/cache_misses"
# JAX options whose value changes what a function traces to
_TRACE_OPTIONS = ("jax_enable_x64", "jax_default_matmul_precision", "jax_numpy_dtype_promotion",
                  "jax_numpy_rank_promotion", "jax_default_prng_impl")


@dataclasses.dataclass
class ProgramInfo:
    """How one program of this process was built.

    Attributes:
      name: the program's kind (``"calibration solver"``, ``"fourier core"``...).
      what: the description given in the log line.
      seconds: time to build it (trace or read, lower, compile or load from the cache).
      cache: ``"hit"``, ``"miss"`` (XLA compiled it and stored it in the persistent cache),
        ``"off"`` (no persistent cache) or ``"not stored"`` (compiled, too fast to store).
      source: ``"traced"`` (traced, lowered and compiled, or its compilation loaded from the
        persistent cache), ``"exported"`` (its traced form read from the program store,
        then lowered and compiled) or ``"loaded"`` (the compiled program itself read from
        the store: no tracing, lowering or compilation).
    """

    name: str
    what: str
    seconds: float
    cache: str
    source: str


_lock = threading.RLock()
_programs: OrderedDict = OrderedDict()
_built: list[ProgramInfo] = []
_events = {"hits": 0, "misses": 0}
_listening = False
_source_digest: str | None = None
_export_failed: set[str] = set()


def _on_event(event: str, **kwargs) -> None:
    del kwargs
    if event == _HIT:
        _events["hits"] += 1
    elif event == _MISS:
        _events["misses"] += 1


def _listen() -> None:
    global _listening
    if not _listening:
        jax.monitoring.register_event_listener(_on_event)
        _listening = True


def store_dir() -> Path | None:
    """Folder of stored programs: ``programs/`` in the persistent compilation cache's folder
    when ``qmr_jax`` turned that cache on (``enable_compilation_cache``), else ``None``."""
    from .. import _cache

    folder = getattr(_cache, "_enabled", None)
    return None if folder is None else Path(folder) / STORE_SUBDIR


def persistent_cache_on() -> bool:
    """Whether JAX's persistent compilation cache is configured (by anyone)."""
    return bool(jax.config.jax_compilation_cache_dir)


def source_digest() -> str:
    """SHA-256 of every ``qmr_jax`` source file (path and content), computed once."""
    global _source_digest
    if _source_digest is None:
        root = Path(__file__).resolve().parents[1]
        h = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
        _source_digest = h.hexdigest()
    return _source_digest


def _static_text(value) -> str:
    key = getattr(value, "_key", None)
    return repr(key()) if callable(key) else repr(value)


def _spec(x) -> jax.ShapeDtypeStruct:
    dtype = jax.dtypes.canonicalize_dtype(x.dtype if hasattr(x, "dtype") else np.result_type(x))
    return jax.ShapeDtypeStruct(np.shape(x), dtype)


def _is_concrete(leaves) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in leaves)


def bucket(n: int, step: int) -> int:
    """The smallest size ``>= n`` of the ladder ``step`` x (1, 2, 3, 4, 5, 6, 8, 10, 12, 16,
    20, 24, 32, ...): steps of 1.2x to 1.33x beyond ``4 step``, so padding an input to it
    costs at most a third more work and inputs of similar sizes share one program."""
    m = 1
    while m * step < n:
        if m < 4:
            m += 1
        else:
            p = 1 << (m.bit_length() - 1)  # m is p, 5p/4 or 3p/2 with p a power of two
            m = 5 * p // 4 if m == p else (3 * p // 2 if m == 5 * p // 4 else 2 * p)
    return m * step


def count(name: str | None = None) -> int:
    """Programs built in this process (of kind ``name``, or all)."""
    return sum(1 for p in _built if name is None or p.name == name)


def built() -> list[ProgramInfo]:
    """What every program built in this process cost, in order."""
    return list(_built)


def clear() -> None:
    """Forget the programs of this process (stored programs stay on disk)."""
    with _lock:
        _programs.clear()
        _built.clear()


def _say(log: Callable[[str], Any] | None, text: str) -> None:
    if log is not None:
        log(text)
    else:
        logger.info(text)


def _store_key(name, static, treedef, specs) -> str:
    import jaxlib

    parts = [name, *(_static_text(s) for s in static), str(treedef),
             *(f"{s.shape}{s.dtype}" for s in specs), jax.__version__,
             getattr(jaxlib, "__version__", ""), jax.default_backend(), _machine(),
             *(f"{o}={getattr(jax.config, o, None)}" for o in _TRACE_OPTIONS), source_digest()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:40]


def _machine() -> str:
    """The device kind and, on CPU, the processor's feature flags: a compiled program is
    only loaded on the kind of machine that compiled it."""
    import platform

    text = f"{platform.machine()} {jax.devices()[0].device_kind}"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return f"{text} {hashlib.sha256(line.encode()).hexdigest()[:16]}"
    except OSError:
        pass
    return text


def _read_stored(path: Path):
    try:
        return jax.export.deserialize(bytearray(path.read_bytes()))
    except Exception:  # unreadable or from another build: trace it again
        return None


def _write_stored(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        pass


# Custom calls a stored executable may make, and how to prepare the runtime for them: they
# are normally set up while a program is lowered, which a loaded executable skips.
_RUNTIME_SETUP = {"lapack_": "initialize_lapack"}


def _read_executable(path: Path):
    """A compiled program written by ``_write_executable``, or ``None`` (none stored, an
    unreadable file, or one calling into a library this module cannot prepare)."""
    if not path.exists():
        return None
    try:
        import pickle

        from jax._src.lax import linalg
        from jax.experimental import serialize_executable

        payload, in_tree, out_tree, targets = pickle.loads(path.read_bytes())
        setups = set()
        for target in targets:
            setup = next((v for k, v in _RUNTIME_SETUP.items() if target.startswith(k)), None)
            if setup is None:
                return None
            setups.add(setup)
        for setup in sorted(setups):
            getattr(linalg, setup)()
        return serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
    except Exception:  # unreadable, or written by another build: build it again
        return None


def _write_executable(path: Path, compiled) -> None:
    """Store a compiled CPU program with the custom-call targets it uses."""
    if jax.default_backend() != "cpu":  # elsewhere the traced form (``*.jax``) serves
        return
    try:
        import pickle
        import re

        from jax.experimental import serialize_executable

        targets = sorted(set(re.findall(r'custom_call_target="([^"]+)"', compiled.as_text())))
        data = pickle.dumps((*serialize_executable.serialize(compiled), targets))
    except Exception:  # this program cannot be serialised (e.g. constants as arguments)
        return
    _write_stored(path, data)


def _lowerable(name, fn, specs, treedef, path: Path | None):
    """The function to lower for these inputs and where it came from: a stored (exported)
    program, or a trace (exported and stored at ``path`` when given)."""

    def flat(*leaves):
        return fn(*jax.tree_util.tree_unflatten(treedef, leaves))

    flat.__name__ = flat.__qualname__ = name.replace(" ", "_")
    if path is None or name in _export_failed:
        return jax.jit(flat), "traced"
    if path.exists():
        exported = _read_stored(path)
        if exported is not None:
            return jax.jit(exported.call), "exported"
    try:
        exported = jax.export.export(jax.jit(flat))(*specs)
        data = exported.serialize()
    except Exception:  # e.g. no flatbuffers (serialisation), an unexportable operation
        _export_failed.add(name)
        return jax.jit(flat), "traced"
    _write_stored(path, data)
    return jax.jit(exported.call), "traced"


def _build(name, fn, specs, treedef, static, options, *, load: bool = True):
    """The compiled program, where it came from (``ProgramInfo.source``) and the stored
    executable it was loaded from (``None`` unless ``source == "loaded"``)."""
    folder = store_dir()
    if folder is None:
        fun, source = _lowerable(name, fn, specs, treedef, None)
        return fun.lower(*specs).compile(compiler_options=options), source, None
    key = _store_key(name, (*static, tuple(sorted(options.items()))), treedef, specs)
    stem = folder / f"{name.replace(' ', '_')}-{key}"
    executable = stem.with_suffix(".xla")
    compiled = _read_executable(executable) if load else None
    if compiled is not None:
        return compiled, "loaded", executable
    fun, source = _lowerable(name, fn, specs, treedef, stem.with_suffix(".jax"))
    hits = _events["hits"]
    compiled = fun.lower(*specs).compile(compiler_options=options)
    if _events["hits"] == hits:  # compiled here: an executable that came from XLA's own
        _write_executable(executable, compiled)  # cache does not serialise completely
    return compiled, source, None


@dataclasses.dataclass
class _Entry:
    compiled: Any
    loaded_from: Path | None  # a stored executable not yet run successfully
    rebuild: Callable


def program(name: str, fn: Callable, args: tuple, *, static: tuple = (), what: str | None = None,
            log: Callable[[str], Any] | None = None, quick_compile: bool = False) -> Callable:
    """The compiled ``fn`` for inputs shaped like ``args``: ``program(...)(*args)`` runs it.

    Args:
      name: the program's kind; with ``static`` it identifies the function (``fn`` must be
        the same computation whenever ``name`` and ``static`` are equal).
      fn: ``fn(*args)``: arrays (pytrees of them) in, tuples/lists/dicts of arrays out.
      args: example inputs (concrete; only their shapes and dtypes matter).
      static: the settings ``fn`` was specialised to (hashable; a ``Bijection``'s boxes count).
      what: the description in the log line (default ``name``).
      log: ``log(text)`` receives the lines before and after a build (default: the
        ``qmr_jax.compile`` logger).
      quick_compile: compile without XLA's backend optimisations (``QUICK_COMPILE``): about
        half the compilation time, somewhat slower code; for programs whose run time does
        not matter (planning, small inputs).

    Returns:
      A function of arrays shaped like ``args`` (same pytree structure).
    """
    leaves, treedef = jax.tree_util.tree_flatten(args)
    if not _is_concrete(leaves):
        raise TypeError(f"program {name!r}: inputs must be concrete arrays, not traced")
    specs = tuple(_spec(x) for x in leaves)
    options = dict(QUICK_COMPILE) if quick_compile else {}
    key = (name, static, treedef, tuple((s.shape, s.dtype) for s in specs),
           jax.config.jax_enable_x64, store_dir(), quick_compile)
    with _lock:
        entry = _programs.get(key)
        if entry is not None:
            _programs.move_to_end(key)
            return _caller(entry, treedef)
        _listen()
        what = what or name
        _say(log, f"compiling {what}...")
        t0 = time.perf_counter()
        before = dict(_events)
        compiled, source, loaded_from = _build(name, fn, specs, treedef, static, options)
        seconds = time.perf_counter() - t0
        if source == "loaded" or _events["hits"] > before["hits"]:
            cache = "hit"
        elif _events["misses"] > before["misses"]:
            cache = "miss"
        else:
            cache = "not stored" if persistent_cache_on() else "off"
        _say(log, f"compiled in {seconds:.1f} s (cache: {cache})")
        _built.append(ProgramInfo(name, what, seconds, cache, source))
        rebuild = lambda: _build(name, fn, specs, treedef, static, options, load=False)[0]
        entry = _programs[key] = _Entry(compiled, loaded_from, rebuild)
        while len(_programs) > MAX_PROGRAMS:
            _programs.popitem(last=False)
        return _caller(entry, treedef)


def _caller(entry: _Entry, treedef):
    def run(*args):
        leaves, tree = jax.tree_util.tree_flatten(args)
        if tree != treedef:
            raise TypeError(f"program called with {tree}; built for {treedef}")
        if entry.loaded_from is None:
            return entry.compiled(*leaves)
        # the first run of a stored executable: should it fail (an incomplete file), drop
        # it and build the program again
        try:
            out = jax.block_until_ready(entry.compiled(*leaves))
        except jax.errors.JaxRuntimeError:
            entry.loaded_from.unlink(missing_ok=True)
            entry.compiled, entry.loaded_from = entry.rebuild(), None
            return entry.compiled(*leaves)
        entry.loaded_from = None
        return out

    return run


def run(name: str, fn: Callable, args: tuple, *, static: tuple = (), what: str | None = None,
        log: Callable[[str], Any] | None = None, quick_compile: bool = False):
    """``program(name, fn, args, ...)(*args)``: build (once) and run."""
    return program(name, fn, args, static=static, what=what, log=log,
                   quick_compile=quick_compile)(*args)


__all__ = ["ProgramInfo", "program", "run", "bucket", "built", "count", "clear", "store_dir",
           "source_digest", "persistent_cache_on", "MAX_PROGRAMS"]
