"""Packages whose public names are imported on first use (PEP 562), so importing the package
costs nothing until a name is used (``proj status`` does not pay for Celery or the pipelines).

A public name that is also a module of the package (``proj.app``, ``proj.batch.submit``) needs
more: importing that module makes Python bind the module to the package's attribute, shadowing
the name. Such names are ``shadowed``: a property of the package answers for them (and ignores
that binding). Pure: imports nothing of proj.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any


def install(
    package: str,
    public: Mapping[str, str],
    *,
    shadowed: Mapping[str, str] | None = None,
    first: str | None = None,
) -> Callable[[str], Any]:
    """Make ``package`` import each name of ``public`` (name -> module) on first use, and
    answer each name of ``shadowed`` (name -> module) from its module every time. ``first``:
    a module imported before any name is. Returns the package's ``__getattr__``."""

    def load(module: str) -> Any:
        if first is not None:
            importlib.import_module(first)
        return importlib.import_module(module)

    def answer(name: str, module: str) -> property:
        return property(lambda _: getattr(load(module), name), lambda _, value: None)

    members = {name: answer(name, module) for name, module in (shadowed or {}).items()}
    sys.modules[package].__class__ = type("LazyPackage", (types.ModuleType,), members)

    def __getattr__(name: str) -> Any:
        module = public.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(load(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
