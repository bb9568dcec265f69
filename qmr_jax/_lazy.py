"""Lazy package attributes (PEP 562), shared by ``qmr_jax``, ``qmr_jax.calibration`` and
``qmr_jax.report``: a public name is imported on first use, so importing a package does not
import JAX, optax or matplotlib until a name that needs them is used."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Mapping
from importlib import import_module


def lazy_package(package: str, names: Mapping[str, tuple[str, str | None]]
                 ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """Make ``names`` (public name -> (module relative to ``package``, attribute, or ``None``
    for the module itself)) lazy attributes of the package ``package``; returns its
    ``__getattr__`` and ``__dir__``.

    The import system binds a submodule as an attribute of its package when it is imported,
    so ``qmr_jax.simulate`` (the module) would hide ``qmr_jax.simulate`` (the function): the
    package's module type keeps a public name that is not a module from being replaced by
    one.
    """
    module = sys.modules[package]

    class _Package(types.ModuleType):
        def __setattr__(self, name, value):
            target = names.get(name)
            if target is not None and target[1] is not None and \
                    isinstance(value, types.ModuleType):
                return
            super().__setattr__(name, value)

    module.__class__ = _Package

    def __getattr__(name: str):
        try:
            where, attr = names[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = import_module(where, package)
        if attr is not None:
            value = getattr(value, attr)
        vars(module)[name] = value  # later look-ups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(names))

    return __getattr__, __dir__
