"""Name registries of the emission and transition components, filled lazily by the family modules.

The built-in components (the factorised heads, the Gaussian transitions)
are registered when their module is imported. The deep generative families
(autoregressive, flows, mixtures, energy-based, latent-variable, implicit)
live in modules of their own that import Pyro and register their names with
``register_emission`` / ``register_transition`` when imported. ``import tsgen``
must stay fast, so a name that is not registered yet imports the family
modules (once) before it is declared unknown.
"""
from __future__ import annotations

import copy as _copy
import importlib
from typing import Callable, Generic, TypeVar

__all__ = ["FAMILY_MODULES", "ComponentRegistry"]

#: the modules that register component families; a module that does not exist (yet) is skipped
FAMILY_MODULES: tuple[str, ...] = (
    "tsgen.components.autoregressive",
    "tsgen.components.flows",
    "tsgen.components.mixtures",
    "tsgen.components.energy",
    "tsgen.components.latent_emission",
    "tsgen.components.implicit",
)

T = TypeVar("T", bound=type)


def _import_families() -> None:
    for module in FAMILY_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            # only a family module that is absent is skipped; a missing dependency inside one is an error
            if error.name != module:
                raise


class ComponentRegistry(Generic[T]):
    """Lower-case name -> component class, one per kind (``"emission"``, ``"transition"``).

    Parameters
    ----------
    argument : str
        The constructor argument that takes these names (for error messages).
    base : type
        The class every registered component subclasses.
    """

    def __init__(self, argument: str, base: type):
        self.argument = argument
        self.base = base
        self._classes: dict[str, type] = {}
        self._builtin: set[str] = set()

    def register(self, cls: T, builtin: bool = False) -> T:
        """Add ``cls`` under ``cls.name`` (usable as a class decorator); a name maps to one class.

        ``builtin`` marks the components of tsgen's own modules, listed first in error messages.
        """
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"register a {self.base.__name__} subclass; got {cls!r}.")
        name = getattr(cls, "name", "")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{cls.__name__} needs a non-empty class attribute `name` to be registered.")
        key = name.lower()
        known = self._classes.get(key)
        # re-registering the same class (a module reloaded) is harmless; two classes under one name are not
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(f"{self.argument} name {name!r} is taken by {known.__qualname__}.")
        self._classes[key] = cls
        if builtin:
            self._builtin.add(key)
        return cls

    def get(self, name: str) -> type | None:
        """The class registered under ``name`` (any case), importing the family modules on a miss."""
        key = name.lower()
        if key not in self._classes:
            _import_families()
        return self._classes.get(key)

    def names(self) -> list[str]:
        """Every registered name, sorted (imports the family modules)."""
        _import_families()
        return sorted(self._classes)

    def resolve(self, spec, build: Callable[[type], object], check: Callable[[object], None], copy: bool = False):
        """A component from a name, a class, an instance or a factory.

        ``build(cls)`` instantiates a class with the model's sizes; an
        instance (``isinstance(spec, base)``) goes through ``check`` and is
        returned as is, or as a deep copy with ``copy`` (models train their
        own copy: the caller's object is never modified); any other callable
        (e.g. ``functools.partial(cls, option=...)``) is treated like a class
        and its product checked.
        """
        if isinstance(spec, self.base):
            check(spec)
            return _copy.deepcopy(spec) if copy else spec
        if isinstance(spec, type) and issubclass(spec, self.base):
            return build(spec)
        if isinstance(spec, str):
            cls = self.get(spec)
            if cls is not None:
                return build(cls)
        elif callable(spec):
            component = build(spec)
            if not isinstance(component, self.base):
                raise TypeError(
                    f"`{self.argument}` factory {spec!r} returned a {type(component).__name__}; expected a "
                    f"{self.base.__name__}."
                )
            return component
        families = [name for name in self.names() if name not in self._builtin]
        raise ValueError(
            f"`{self.argument}` must be one of {sorted(self._builtin)}, a family component {families}, a "
            f"{self.base.__name__} (class or instance) or a factory such as functools.partial(SomeClass, ...); "
            f"got {spec!r}."
        )
