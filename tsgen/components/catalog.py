"""Every registered emission and transition with the flags the models rely on (the docs' components table).

The flags come from the components themselves, so the table cannot drift
from the code: ``factorizes`` and ``exact_log_prob`` are the emission's
class flags (:class:`~tsgen.components.heads.DistributionHead`),
``exact_log_prob`` and ``has_rsample`` the transition's
(:class:`~tsgen.components.transitions.TransitionComponent`). An emission
declares no ``has_rsample``: whether its draws are reparameterised depends
on the distribution it builds (a per-dimension mixture's are not, a
flow's are), so it is read off the distribution a small instance returns.
"""
from __future__ import annotations

import dataclasses
import inspect

import torch

from tsgen.components.heads import EMISSIONS, make_head
from tsgen.components.transitions import TRANSITIONS

__all__ = ["ComponentInfo", "component_catalog"]

#: the sizes of the probe instances that report ``has_rsample``
_PROBE_FEATURES, _PROBE_DIM = 3, 2


@dataclasses.dataclass(frozen=True)
class ComponentInfo:
    """One registered component and its flags.

    Attributes
    ----------
    kind : {"emission", "transition"}
        The constructor argument that takes ``name``.
    name : str
        The registered name.
    cls : type
        The class the name resolves to.
    factorizes : bool or None
        Whether the emission is a product over the ``D`` dimensions (partially
        observed vectors are then scored on their observed components); None
        for transitions.
    exact_log_prob : bool
        Whether ``log_prob`` is the exact density (False: an unbiased or
        importance-sampled estimate).
    has_rsample : bool
        Whether draws are reparameterised (the ELBO and the likelihood-free
        fits differentiate through them).
    summary : str
        The first line of the class docstring.
    """

    kind: str
    name: str
    cls: type
    factorizes: bool | None
    exact_log_prob: bool
    has_rsample: bool
    summary: str


def _summary(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.split("\n\n")[0].replace("\n", " ").strip()


def component_catalog() -> list[ComponentInfo]:
    """Every registered emission, then every transition, each sorted by name (imports the family modules).

    Returns
    -------
    list of ComponentInfo
    """
    rows = []
    # probes are built and called without touching the caller's random stream
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        for name in EMISSIONS.names():
            cls = EMISSIONS.get(name)
            distribution = make_head(name, _PROBE_FEATURES, _PROBE_DIM)(torch.zeros(1, _PROBE_FEATURES))
            rows.append(ComponentInfo("emission", name, cls, bool(cls.factorizes), bool(cls.exact_log_prob),
                                      bool(distribution.has_rsample), _summary(cls)))
        for name in TRANSITIONS.names():
            cls = TRANSITIONS.get(name)
            # the class flag is what the ELBO reads; tests check it against an instance's distribution
            rows.append(ComponentInfo("transition", name, cls, None, bool(cls.exact_log_prob),
                                      bool(cls.has_rsample), _summary(cls)))
    return rows
