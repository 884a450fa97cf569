"""Public names imported on first use (PEP 562), so that ``import tsgen`` stays cheap.

torch, numba, scikit-learn and matplotlib take seconds to import; a package
``__init__`` that imported its estimators eagerly made ``import tsgen`` and
``tsgen --help`` pay for all of them. Each package instead lists where its
public names live and imports one only when it is first looked up; a
``TYPE_CHECKING`` block beside the list keeps IDEs and type checkers exact.
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping


def attach(
    package: str, attributes: Mapping[str, str], submodules: Iterable[str] = ()
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` for ``package``.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    attributes : mapping
        Public name -> absolute name of the module that defines it.
    submodules : iterable of str
        Names of submodules exposed as attributes (``tsgen.metrics``).
    """
    where = dict(attributes)
    submodules = frozenset(submodules)

    def __getattr__(name: str) -> object:
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        # cached on the package, so later lookups are plain attribute reads
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where) | submodules)

    return __getattr__, __dir__
