"""Distribution heads: a network's features mapped to a likelihood (GluonTS' ``DistributionOutput``).

A head owns one linear projection per distribution argument, a
``domain_map`` that sends the unconstrained projections into each
argument's domain, and ``distribution`` that builds the
``torch.distributions`` object. Swapping Normal for Student-t or a count
likelihood therefore touches no network code.

Every head returns ``Independent(base, 1)``: batch shape ``(...)``, event
shape ``(dim,)``. An optional positive ``scale`` of shape broadcastable to
``(..., dim)`` applies DeepAR's mean scaling: the network works on
``x / scale`` and the distribution is over ``x`` in original units
(``loc * s``, ``sigma * s`` for continuous heads; ``rate * s`` / ``mu * s``
for counts; Bernoulli ignores it).

``DistributionHead`` is also the one base of every emission component (DESIGN
section 2). Two class flags describe what the models may assume:

- ``factorizes``: the distribution is a product over the ``D`` dimensions,
  so a partially observed vector is scored on its observed components.
  A non-factorising emission (an autoregressive MADE, a flow over the
  vector) scores fully observed vectors with its joint ``log_prob``, gives 0
  for vectors with nothing observed and refuses partially observed ones.
- ``exact_log_prob``: ``log_prob`` is the exact density; False when it is an
  unbiased (importance-sampled) estimate of the density (e.g. a
  latent-variable decoder). A particle filter stays valid with such random
  weights, but its likelihoods are then estimates of an estimate.

A family may override ``forward`` entirely (``args_dim = {}``). A head with
a non-default flag tags every distribution it returns with ``factorises``,
``exact_log_prob`` and ``fill_value`` attributes, which
:func:`tsgen.protocol.observed_log_prob` reads. Family modules add their
names with :func:`register_emission`; :func:`make_head` imports the family
modules the first time it meets a name it does not know, so ``import tsgen``
does not import them.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch.distributions import (
    Bernoulli,
    Distribution,
    Independent,
    NegativeBinomial,
    Normal,
    Poisson,
    StudentT,
)

from tsgen._validation import is_int
from tsgen.components.positive import positive
from tsgen.components.registry import ComponentRegistry
from tsgen.protocol import factorises, observed_log_prob


class DistributionHead(nn.Module):
    """Maps features ``(..., in_features)`` to a distribution with event shape ``(dim,)``.

    Subclasses set ``name``, ``args_dim`` (argument name -> width per output
    dimension), ``domain_map`` and ``distribution``.

    Parameters
    ----------
    in_features : int
        Width of the features fed to the head.
    dim : int
        Number of output variables ``D``.
    """

    name: ClassVar[str] = ""
    args_dim: ClassVar[dict[str, int]] = {}
    #: a value inside the support, written over unobserved entries before ``log_prob``
    fill_value: ClassVar[float] = 0.0
    #: whether DeepAR mean scaling makes sense for this likelihood
    scalable: ClassVar[bool] = True
    #: a location-scale family: dividing the data by a constant is a change of units
    location_scale: ClassVar[bool] = False
    #: the values the likelihood covers, in words (None: every real number)
    support: ClassVar[str | None] = None
    #: a product over the ``D`` dimensions (partially observed vectors are scored on their observed part)
    factorizes: ClassVar[bool] = True
    #: ``log_prob`` is the exact density (False: an unbiased estimate of it)
    exact_log_prob: ClassVar[bool] = True

    def __init__(self, in_features: int, dim: int):
        super().__init__()
        for arg, value in (("in_features", in_features), ("dim", dim)):
            if not is_int(value) or value < 1:
                raise ValueError(f"`{arg}` must be a positive integer; got {value!r}.")
        self.in_features = in_features
        self.dim = dim
        self.proj = nn.ModuleDict(
            {arg: nn.Linear(in_features, width * dim) for arg, width in self.args_dim.items()}
        )
        if not self.factorizes or not self.exact_log_prob:
            # the default heads return plain Independent distributions: no hook on their hot path
            self.register_forward_hook(_tag_distribution)

    def domain_map(self, **raw: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unconstrained projections ``(..., dim)`` -> arguments in their domains."""
        raise NotImplementedError

    def distribution(self, args: dict[str, torch.Tensor], scale: torch.Tensor | None = None) -> Distribution:
        """The base distribution (batch shape ``(..., dim)``) from domain-mapped arguments."""
        raise NotImplementedError

    def forward(self, features: torch.Tensor, scale: torch.Tensor | None = None) -> Distribution:
        raw = {arg: layer(features) for arg, layer in self.proj.items()}
        base = self.distribution(self.domain_map(**raw), scale)
        return Independent(base, 1)

    def outside_support(self, values: torch.Tensor) -> torch.Tensor:
        """Bool tensor: True where a value cannot be drawn from this likelihood."""
        return torch.zeros(values.shape, dtype=torch.bool, device=values.device)

    def check_support(self, values: torch.Tensor, mask: torch.Tensor, argument: str = "y") -> None:
        """Raise one clear ``ValueError`` when an observed value lies outside the support.

        Without it torch's own check fires deep in training and prints the
        whole tensor; this names the emission and a few offending values.
        """
        bad = self.outside_support(values) & mask
        if not bool(bad.any()):
            return
        offending = values[bad]
        examples = ", ".join(f"{v:g}" for v in offending.unique()[:3].tolist())
        raise ValueError(
            f"`emission={self.name!r}` models {self.support}, but `{argument}` holds {int(bad.sum())} "
            f"value(s) outside that (e.g. {examples}); use a continuous emission such as 'normal' or "
            f"'studentt' for this data."
        )

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, dim={self.dim}"


def _tag_distribution(head: DistributionHead, inputs, distribution: Distribution) -> Distribution:
    distribution.factorises = head.factorizes
    distribution.exact_log_prob = head.exact_log_prob
    distribution.fill_value = head.fill_value
    return distribution


def is_exact(distribution: Distribution) -> bool:
    """Whether an emission's ``log_prob`` is its exact density (False: an unbiased estimate)."""
    return bool(getattr(distribution, "exact_log_prob", True))


class NormalHead(DistributionHead):
    """Diagonal Gaussian: ``x_d ~ N(s mu_d, (s sigma_d)^2)`` with ``sigma = softplus(.)``."""

    name = "normal"
    args_dim = {"loc": 1, "scale": 1}
    location_scale = True

    def domain_map(self, loc, scale):
        return {"loc": loc, "scale": positive(scale)}

    def distribution(self, args, scale=None):
        loc, sigma = args["loc"], args["scale"]
        if scale is not None:
            loc, sigma = loc * scale, sigma * scale
        return Normal(loc, sigma)


class StudentTHead(DistributionHead):
    """Student-t per variable: ``x_d = s (mu_d + sigma_d eps)``, ``eps ~ t_nu`` with ``nu = 2 + softplus(.)``.

    ``nu > 2`` keeps the variance finite, so forecast means and intervals exist.
    """

    name = "studentt"
    args_dim = {"df": 1, "loc": 1, "scale": 1}
    location_scale = True

    def domain_map(self, df, loc, scale):
        return {"df": 2.0 + positive(df), "loc": loc, "scale": positive(scale)}

    def distribution(self, args, scale=None):
        df, loc, sigma = args["df"], args["loc"], args["scale"]
        if scale is not None:
            loc, sigma = loc * scale, sigma * scale
        return StudentT(df, loc, sigma)


class BernoulliHead(DistributionHead):
    """Independent Bernoulli per variable (e.g. piano keys): ``x_d ~ Bernoulli(sigmoid(l_d))``."""

    name = "bernoulli"
    args_dim = {"logits": 1}
    scalable = False
    support = "binary values (0 or 1)"

    def outside_support(self, values):
        return (values != 0) & (values != 1)

    def domain_map(self, logits):
        return {"logits": logits}

    def distribution(self, args, scale=None):
        return Bernoulli(logits=args["logits"])


def _not_a_count(values: torch.Tensor) -> torch.Tensor:
    return ~torch.isfinite(values) | (values < 0) | (values != torch.round(values))


class PoissonHead(DistributionHead):
    """Poisson counts: ``x_d ~ Poisson(s lambda_d)``, ``lambda = softplus(.)``."""

    name = "poisson"
    args_dim = {"rate": 1}
    support = "non-negative integer counts"

    def outside_support(self, values):
        return _not_a_count(values)

    def domain_map(self, rate):
        return {"rate": positive(rate)}

    def distribution(self, args, scale=None):
        rate = args["rate"]
        if scale is not None:
            rate = rate * scale
        return Poisson(rate)


class NegativeBinomialHead(DistributionHead):
    """Negative binomial counts with mean ``m = s mu`` and dispersion ``alpha`` (DeepAR):
    ``E x = m``, ``Var x = m + alpha m^2``.

    In ``torch``'s parameterisation (successes before ``r`` failures) that is
    ``r = 1 / alpha`` and ``logits = log m - log r``. Without scaling ``s = 1``.
    """

    name = "negbin"
    args_dim = {"mu": 1, "alpha": 1}
    support = "non-negative integer counts"

    def outside_support(self, values):
        return _not_a_count(values)

    def domain_map(self, mu, alpha):
        return {"mu": positive(mu), "alpha": positive(alpha)}

    def distribution(self, args, scale=None):
        mu, alpha = args["mu"], args["alpha"]
        if scale is not None:
            mu = mu * scale
        total_count = 1.0 / alpha
        logits = torch.log(mu) - torch.log(total_count)
        return NegativeBinomial(total_count=total_count, logits=logits)


#: the built-in factorised heads by name (the emission registry holds these and every family's)
HEADS: dict[str, type[DistributionHead]] = {
    head.name: head for head in (NormalHead, StudentTHead, BernoulliHead, PoissonHead, NegativeBinomialHead)
}

#: every emission by name: the heads above and whatever the family modules register
EMISSIONS: ComponentRegistry = ComponentRegistry("emission", DistributionHead)
for _head in HEADS.values():
    EMISSIONS.register(_head, builtin=True)


def register_emission(cls: type[DistributionHead]) -> type[DistributionHead]:
    """Make ``cls`` available by ``cls.name`` wherever a model takes ``emission=`` (a class decorator)."""
    return EMISSIONS.register(cls)


def make_head(emission, in_features: int, dim: int, copy: bool = False) -> DistributionHead:
    """An emission from a registered name, a :class:`DistributionHead` subclass, an instance, or a factory.

    A class or factory (e.g. ``functools.partial(MADEEmission, hidden=...)``)
    is called as ``factory(in_features, dim)``. An instance is used as is
    (its ``in_features``/``dim`` must match), or deep-copied with ``copy``
    (what the models ask for, so the caller's object is never trained).
    """

    def check(head: DistributionHead) -> None:
        if head.in_features != in_features or head.dim != dim:
            raise ValueError(
                f"`emission` head maps {head.in_features} features to {head.dim} variables; "
                f"expected {in_features} -> {dim}. Pass its class or functools.partial(cls, ...) to let the "
                f"model choose the sizes."
            )

    return EMISSIONS.resolve(emission, lambda factory: factory(in_features, dim), check, copy)


def element_log_prob(distribution: Distribution, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-variable log densities ``(..., dim)``, exactly 0 where ``mask`` is False.

    Unobserved entries (NaN or padding garbage) are overwritten with a value
    inside every head's support before evaluating, so neither the value nor
    the gradient of the result depends on them.
    """
    if not factorises(distribution):
        raise ValueError(
            f"per-variable log densities need an `emission` that factorises over dimensions; "
            f"{type(distribution).__name__} does not (score whole vectors with masked_log_prob)."
        )
    base = distribution.base_dist if isinstance(distribution, Independent) else distribution
    safe = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return torch.where(mask, base.log_prob(safe), torch.zeros((), dtype=x.dtype, device=x.device))


def masked_log_prob(distribution: Distribution, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``log p(x_obs)`` per event: shape ``(...)`` (:func:`tsgen.protocol.observed_log_prob`).

    A factorised emission sums its observed variables; a non-factorising
    one scores fully observed vectors jointly, gives 0 where nothing is
    observed and raises ``ValueError`` on partially observed vectors.
    """
    return observed_log_prob(distribution, x, mask)
