r"""Mixture density networks as emission and transition components.

Emissions (``"mdn"``, ``"mdn_studentt"``) mix ``K`` components per
dimension, as GluonTS' ``MixtureDistributionOutput`` does:

.. math::

    p(x_t \mid h) = \prod_{d=1}^{D} \sum_{k=1}^{K} \pi_{dk}(h)\,
        f\big(x_{td};\ s_d \mu_{dk}(h),\ s_d \sigma_{dk}(h)\ [,\ \nu_{dk}(h)]\big)

with ``f`` a Normal or a Student-t (``nu > 2``, finite variance) and ``s``
the DeepAR data scale (1 without one; scaling the location and scale of
every component is the change of units). The product over dimensions keeps
partially observed vectors scoreable (``factorizes`` True), and each
dimension's marginal can be multimodal or skewed. ``mean`` and ``variance``
are closed forms (``MixtureSameFamily``).

The transition (``"mdn"``) mixes whole vectors: ``z_t ~ sum_k pi_k(u)
N(mu_k(u), diag sigma_k(u)^2)``, ``u = [z_{t-1}, features]``, so the modes
are joint. The ELBO needs ``rsample``: :class:`DiagNormalMixture` is Pyro's
``MixtureOfDiagNormals`` (pathwise gradients of Jankowiak & Karaletsos,
2018) with closed-form ``mean``/``variance``, and for ``Z = 1``, which
Pyro's pathwise gradient does not cover, the implicit reparameterisation
gradient of Figurnov et al. (2018), ``dz/dtheta = -(dF/dtheta)(z) / p(z)``
through the mixture's CDF ``F``. There is no closed-form KL to a Gaussian
guide; ``kl_term`` takes the Monte Carlo difference.
"""
from __future__ import annotations

import torch
from pyro.distributions import MixtureOfDiagNormals
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal, StudentT

from tsgen._validation import is_int
from tsgen.components.heads import DistributionHead, register_emission
from tsgen.components.mlp import MLP
from tsgen.components.positive import positive
from tsgen.components.transitions import TransitionComponent, register_transition

__all__ = ["DiagNormalMixture", "MixtureEmission", "MixtureTransition", "StudentTMixtureEmission"]


def _check_components(n_components) -> int:
    if not is_int(n_components) or n_components < 1:
        raise ValueError(f"`n_components` must be a positive integer; got {n_components!r}.")
    return int(n_components)


def _spread(n_components: int) -> Tensor:
    """Standard normal quantiles at ``(k + 1/2) / K``: start locations that keep components apart."""
    probs = (torch.arange(n_components, dtype=torch.float64) + 0.5) / n_components
    return torch.special.ndtri(probs).to(torch.get_default_dtype())


@register_emission
class MixtureEmission(DistributionHead):
    """A per-dimension mixture of ``K`` Normals (module docstring).

    Parameters
    ----------
    in_features, dim : int
        Width of the features and ``D``.
    n_components : int
        ``K``.
    """

    name = "mdn"
    args_dim = {}  # the widths depend on n_components: the projections are built in __init__
    location_scale = True
    #: the per-component arguments besides the mixture logits
    component_args: tuple[str, ...] = ("loc", "scale")

    def __init__(self, in_features: int, dim: int, n_components: int = 3):
        super().__init__(in_features, dim)
        self.n_components = _check_components(n_components)
        self.proj = nn.ModuleDict(
            {arg: nn.Linear(in_features, self.n_components * dim) for arg in ("logits", *self.component_args)}
        )
        with torch.no_grad():  # distinct starting locations break the components' symmetry
            self.proj["loc"].bias.copy_(_spread(self.n_components).repeat(dim))

    def domain_map(self, logits, loc, scale):
        return {"logits": logits, "loc": loc, "scale": positive(scale)}

    def component(self, args: dict[str, Tensor], scale: Tensor | None) -> Distribution:
        """The components, batch shape ``(..., D, K)``."""
        loc, sigma = args["loc"], args["scale"]
        if scale is not None:
            loc, sigma = loc * scale.unsqueeze(-1), sigma * scale.unsqueeze(-1)
        return Normal(loc, sigma, validate_args=False)

    def forward(self, features: Tensor, scale: Tensor | None = None) -> Distribution:
        shape = (*features.shape[:-1], self.dim, self.n_components)
        raw = {arg: layer(features).reshape(shape) for arg, layer in self.proj.items()}
        args = self.domain_map(**raw)
        mixture = MixtureSameFamily(Categorical(logits=args["logits"], validate_args=False),
                                    self.component(args, scale), validate_args=False)
        return Independent(mixture, 1, validate_args=False)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, n_components={self.n_components}"


@register_emission
class StudentTMixtureEmission(MixtureEmission):
    """A per-dimension mixture of ``K`` Student-t components with ``nu_dk = 2 + softplus(.) > 2``."""

    name = "mdn_studentt"
    component_args = ("df", "loc", "scale")

    def domain_map(self, logits, df, loc, scale):
        return {"logits": logits, "df": 2.0 + positive(df), "loc": loc, "scale": positive(scale)}

    def component(self, args, scale):
        loc, sigma = args["loc"], args["scale"]
        if scale is not None:
            loc, sigma = loc * scale.unsqueeze(-1), sigma * scale.unsqueeze(-1)
        return StudentT(args["df"], loc, sigma, validate_args=False)


class DiagNormalMixture(MixtureOfDiagNormals):
    """Pyro's ``MixtureOfDiagNormals`` (``locs``/``coord_scale`` ``(..., K, Z)``, ``component_logits``
    ``(..., K)``) with closed-form moments and a pathwise ``rsample`` for ``Z = 1`` too."""

    @property
    def mean(self) -> Tensor:
        return (self.probs.unsqueeze(-1) * self.locs).sum(-2)

    @property
    def variance(self) -> Tensor:
        second = (self.probs.unsqueeze(-1) * (self.locs ** 2 + self.coord_scale ** 2)).sum(-2)
        return second - self.mean ** 2

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        if self.dim > 1:
            sample_shape = torch.Size(sample_shape)
            if sample_shape and self.batch_shape:
                # pyro's batched pathwise sampler indexes the parameters without broadcasting a sample shape
                return self.expand(sample_shape + self.batch_shape).rsample()
            return super().rsample(sample_shape)
        with torch.no_grad():
            which = self.categorical.sample(sample_shape).unsqueeze(-1)
            locs, scales = self.locs.squeeze(-1), self.coord_scale.squeeze(-1)
            shape = which.shape
            loc = torch.gather(locs.expand(shape[:-1] + locs.shape[-1:]), -1, which)
            sigma = torch.gather(scales.expand(shape[:-1] + scales.shape[-1:]), -1, which)
            z = loc + sigma * torch.randn_like(loc)  # (*sample_shape, *batch, 1)
        # implicit reparameterisation: the value is z, the gradient -(dF/dtheta) / p at z
        cdf = (self.probs * Normal(self.locs.squeeze(-1), self.coord_scale.squeeze(-1)).cdf(z)).sum(-1)
        density = self.log_prob(z).exp()
        return z + (-(cdf - cdf.detach()) / density.detach()).unsqueeze(-1)


@register_transition
class MixtureTransition(TransitionComponent):
    """``z_t ~ sum_k pi_k(u) N(mu_k(u), diag sigma_k(u)^2)`` from an MLP of ``u = [z_{t-1}, features]``.

    Parameters
    ----------
    latent_dim, feature_dim, hidden_dim, use_previous
        As :class:`~tsgen.components.transitions.TransitionComponent`.
    n_components : int
        ``K``.
    """

    name = "mdn"

    def __init__(self, latent_dim, feature_dim=0, hidden_dim=64, use_previous=True, n_components: int = 3):
        super().__init__(latent_dim, feature_dim, hidden_dim, use_previous)
        self.n_components = _check_components(n_components)
        K, Z = self.n_components, self.latent_dim
        self.net = MLP(self.in_features, [self.hidden_dim], K + 2 * K * Z)
        with torch.no_grad():  # distinct starting locations break the components' symmetry
            self.net.net[-1].bias[K:K + K * Z] = _spread(K).repeat_interleave(Z)

    def forward(self, z_prev, features=None):
        K, Z = self.n_components, self.latent_dim
        out = self.net(self.inputs(z_prev, features))
        logits, locs, raw = out.split([K, K * Z, K * Z], dim=-1)
        shape = (*out.shape[:-1], K, Z)
        return DiagNormalMixture(locs.reshape(shape), positive(raw).reshape(shape), logits)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, n_components={self.n_components}"
