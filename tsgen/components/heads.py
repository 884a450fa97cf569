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


HEADS: dict[str, type[DistributionHead]] = {
    head.name: head for head in (NormalHead, StudentTHead, BernoulliHead, PoissonHead, NegativeBinomialHead)
}


def make_head(emission, in_features: int, dim: int) -> DistributionHead:
    """A head from a name in :data:`HEADS`, a :class:`DistributionHead` subclass, or an instance.

    An instance is used as is (its ``in_features``/``dim`` must match).
    """
    if isinstance(emission, DistributionHead):
        if emission.in_features != in_features or emission.dim != dim:
            raise ValueError(
                f"`emission` head maps {emission.in_features} features to {emission.dim} variables; "
                f"expected {in_features} -> {dim}."
            )
        return emission
    if isinstance(emission, type) and issubclass(emission, DistributionHead):
        return emission(in_features, dim)
    if isinstance(emission, str) and emission.lower() in HEADS:
        return HEADS[emission.lower()](in_features, dim)
    raise ValueError(
        f"`emission` must be one of {sorted(HEADS)} or a DistributionHead; got {emission!r}."
    )


def element_log_prob(distribution: Distribution, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-variable log densities ``(..., dim)``, exactly 0 where ``mask`` is False.

    Unobserved entries (NaN or padding garbage) are overwritten with a value
    inside every head's support before evaluating, so neither the value nor
    the gradient of the result depends on them.
    """
    base = distribution.base_dist if isinstance(distribution, Independent) else distribution
    safe = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return torch.where(mask, base.log_prob(safe), torch.zeros((), dtype=x.dtype, device=x.device))


def masked_log_prob(distribution: Distribution, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``log p(x_obs)`` summed over the observed variables of each event: shape ``(...)``."""
    return element_log_prob(distribution, x, mask).sum(-1)
