"""JAX's persistent compilation cache, on by default for the command line, the demo and the
notebooks.

Almost all of a short command's time is XLA compilation (a cold ``qmr calibrate`` spends
about 95% of its time compiling). With the persistent cache a new process loads the compiled
programs from disk instead. The folder is, in order:

1. the ``path`` argument;
2. ``$QMR_CACHE_DIR``;
3. ``$XDG_CACHE_HOME/qmr_jax/jax`` or ``~/.cache/qmr_jax/jax``.

``QMR_CACHE_DIR=off`` (or ``0``, ``none``, ``false``) and the command line's ``--no-cache``
switch it off. The cache key includes the JAX and jaxlib versions, the backend and the XLA
flags, so a stale entry is never used; the folder may be deleted at any time.

The library itself never turns the cache on (importing ``qmr_jax`` changes no global JAX
configuration); the command line, ``run_demo`` and the notebooks call
:func:`enable_compilation_cache`.
"""

from __future__ import annotations

import os
from pathlib import Path

OFF_VALUES = frozenset({"off", "0", "none", "false", "no", ""})

# Cache every program that took this long to compile (XLA's default is 1 s; our calibration
# and pricing programs compile in 0.1-60 s and a command compiles a dozen of them).
MIN_COMPILE_SECONDS = 0.05

_enabled: Path | None = None


def default_cache_dir() -> Path | None:
    """The cache folder the environment asks for, or ``None`` when switched off."""
    env = os.environ.get("QMR_CACHE_DIR")
    if env is not None:
        if env.strip().lower() in OFF_VALUES:
            return None
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "qmr_jax" / "jax"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache in ``path`` (see the module docstring for
    the default); returns the folder, or ``None`` when the cache is switched off or the
    folder cannot be created (the command then compiles as usual; it never fails for this).

    Idempotent; call it before the first compilation.
    """
    global _enabled
    folder = Path(path).expanduser() if path is not None else default_cache_dir()
    if folder is None:
        return None
    if _enabled == folder:
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _enabled = folder
    return folder


def cache_status() -> str:
    """One line for reports and ``qmr version``: where the cache is, or that it is off."""
    if _enabled is None:
        return "compilation cache: off"
    n = sum(1 for _ in _enabled.glob("*")) if _enabled.exists() else 0
    return f"compilation cache: {_enabled} ({n} entries)"
