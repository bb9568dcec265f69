"""The command line starts without JAX: ``qmr --help``, ``qmr COMMAND --help`` and
``qmr version`` import neither ``jax`` nor the numeric modules, and the persistent
compilation cache follows ``QMR_CACHE_DIR``."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from qmr_jax.cli import main
try:
    status = main({argv!r})
except SystemExit as exc:
    status = exc.code
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'numpy', 'pandas')
               or m.startswith('qmr_jax.') and m.split('.')[1] not in ('cli', '_cache', '_lazy'))
print('HEAVY', heavy)
sys.exit(status or 0)
"""


@pytest.mark.parametrize("argv", [["--help"], ["calibrate", "--help"], ["sweep", "--help"],
                                  ["version"]])
def test_help_and_version_do_not_import_jax(argv):
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    heavy = out.stdout.strip().splitlines()[-1]
    assert heavy == "HEAVY []", heavy


def test_lazy_package_exports_every_public_name():
    import qmr_jax

    for name in qmr_jax.__all__:
        assert getattr(qmr_jax, name) is not None, name
    assert set(qmr_jax.__all__) <= set(dir(qmr_jax))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        qmr_jax.nope  # noqa: B018


def test_cache_dir_setting(monkeypatch, tmp_path):
    from qmr_jax import _cache

    monkeypatch.setenv("QMR_CACHE_DIR", "off")
    assert _cache.default_cache_dir() is None
    assert _cache.enable_compilation_cache() is None
    monkeypatch.setenv("QMR_CACHE_DIR", str(tmp_path / "c"))
    assert _cache.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("QMR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _cache.default_cache_dir() == tmp_path / "xdg" / "qmr_jax" / "jax"


def test_public_function_named_like_its_module_stays_a_function():
    # ``qmr_jax.simulate`` is the function even after its module ``qmr_jax/simulate.py`` is
    # imported (the import system binds submodules as attributes of the package)
    code = ("import inspect, qmr_jax, qmr_jax.simulate, qmr_jax.stress.sweeps\n"
            "from qmr_jax.simulate import time_grid\n"
            "assert inspect.isfunction(qmr_jax.simulate), qmr_jax.simulate\n"
            "assert qmr_jax.time_grid is time_grid\n"
            "assert inspect.ismodule(qmr_jax.stress) and inspect.ismodule(qmr_jax.data)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
