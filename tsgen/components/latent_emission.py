"""A latent-variable (VAE-style) emission: a local latent per step decoded to the observation.

Given the model's features ``h`` at step ``t``,

    u_t ~ N(0, I_L),    x_t | u_t ~ g(x_t | u_t, h),

with ``g`` any factorised head (Normal by default, Bernoulli for binary
data) fed by an MLP of ``(u_t, h)``. The marginal ``p(x_t | h)`` couples the
dimensions (the emission does not factorise) and has no closed form, so
``log_prob`` is the importance-weighted estimate with an amortised encoder
``q(u | x, h)`` (a diagonal Gaussian MLP of ``(x, mask, h)``) as proposal:

    log p^(x) = log (1/K) sum_k g(x | u_k, h) N(u_k; 0, I) / q(u_k | x, h),   u_k ~ q(. | x, h).

``exp(log p^)`` is an unbiased estimate of ``p(x | h)``, so a particle filter
that weights with it stays exact in expectation (``exact_log_prob =
False``), and ``E log p^`` is the IWAE bound (Burda et al. 2016), tight as
``K`` grows. The ``u_k`` are reparameterised, so the models' ordinary
training loss ``-log_prob`` trains decoder and encoder together: per step
it is the negative IWAE bound, and a sequence model's loss becomes a sum of
per-step IWAE bounds under the model's own treatment of its state.

Because ``g`` factorises given ``u``, a partially observed vector has an
exact marginal ``E_u g(x_obs | u)``: :meth:`LatentVariableDistribution.observed_log_prob`
estimates it the same way (the encoder sees the mask; unobserved components
are not scored), and :func:`tsgen.protocol.observed_log_prob` calls it, so
models with this emission take partially observed vectors (which they refuse
for the other non-factorised emissions).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, constraints
from torch.distributions.utils import lazy_property

from tsgen._validation import is_int
from tsgen.components.heads import DistributionHead, make_head, register_emission
from tsgen.components.mlp import ConditionalMLP
from tsgen.components.positive import positive
from tsgen.protocol import observed_log_prob

__all__ = ["LatentVariableDistribution", "LatentVariableEmission"]


class LatentVariableDistribution(Distribution):
    """``p(x) = int g(x | u) p(u) du`` with an importance-sampled ``log_prob``.

    Event shape ``(D,)``, batch shape that of ``prior``.

    Parameters
    ----------
    prior : Distribution
        ``p(u)``, batch shape ``(...)``, event shape ``(L,)``.
    decoder : callable
        ``u`` ``(*sample, ..., L)`` -> ``g(x | u)``, a factorised distribution with batch shape
        ``(*sample, ...)`` and event shape ``(D,)``.
    encoder : callable
        ``(x, mask)`` both ``(*sample, ..., D)`` -> ``q(u | x)`` with batch shape ``(*sample, ...)`` and
        event shape ``(L,)``; ``rsample`` gives reparameterised draws.
    event_shape : torch.Size
        ``(D,)``.
    n_samples : int
        ``K``, the importance draws per scored vector (and the prior draws behind ``mean``/``variance``).
    reparameterised : bool
        Whether the decoder's distribution has ``rsample`` (then so has this one).
    """

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, prior: Distribution, decoder: Callable[[Tensor], Distribution],
                 encoder: Callable[[Tensor, Tensor], Distribution], event_shape, n_samples: int = 16,
                 reparameterised: bool = True, validate_args=None):
        if not is_int(n_samples) or n_samples < 1:
            raise ValueError(f"`n_samples` must be a positive integer; got {n_samples!r}.")
        self.prior, self.decoder, self.encoder = prior, decoder, encoder
        self.n_samples = int(n_samples)
        self.has_rsample = bool(reparameterised)
        super().__init__(prior.batch_shape, torch.Size(event_shape), validate_args=validate_args)

    def _log_weights(self, value: Tensor, mask: Tensor) -> Tensor:
        """``log g(x_obs | u_k) + log p(u_k) - log q(u_k | x)`` ``(K, *sample, ...)``, ``u_k ~ q``."""
        shape = torch.broadcast_shapes(value.shape, mask.shape, self.batch_shape + self.event_shape)
        value, mask = value.expand(shape), mask.expand(shape)
        # unobserved entries are never read: the encoder sees them as 0 beside the mask, the decoder skips them
        filled = torch.where(mask, value, torch.zeros((), dtype=value.dtype, device=value.device))
        proposal = self.encoder(filled, mask)
        u = proposal.rsample((self.n_samples,))
        log_likelihood = observed_log_prob(self.decoder(u), value, mask)
        return log_likelihood + self.prior.log_prob(u) - proposal.log_prob(u)

    def log_prob(self, value: Tensor) -> Tensor:
        """The importance-weighted estimate of ``log p(x)`` ``(*sample, ...)`` (see the module docstring)."""
        mask = torch.ones((), dtype=torch.bool, device=value.device).expand(value.shape)
        return torch.logsumexp(self._log_weights(value, mask), dim=0) - math.log(self.n_samples)

    def observed_log_prob(self, value: Tensor, mask: Tensor) -> Tensor:
        """The estimate of ``log p(x_obs)``, the marginal of the observed components (0 where none is)."""
        if mask.dtype != torch.bool:
            raise TypeError(f"`mask` must be a bool tensor; got dtype {mask.dtype}.")
        estimate = torch.logsumexp(self._log_weights(value, mask), dim=0) - math.log(self.n_samples)
        return torch.where(mask.any(-1), estimate, torch.zeros((), dtype=estimate.dtype, device=estimate.device))

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        if not self.has_rsample:
            raise NotImplementedError("this decoder's distribution has no rsample (e.g. Bernoulli); use sample.")
        return self.decoder(self.prior.rsample(sample_shape)).rsample()

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.decoder(self.prior.sample(sample_shape)).sample()

    @lazy_property
    def _moments(self) -> tuple[Tensor, Tensor]:
        """Monte Carlo ``E x = E_u E[x | u]`` and ``Var x = E_u Var[x | u] + Var_u E[x | u]`` from ``K`` prior draws."""
        conditional = self.decoder(self.prior.sample((self.n_samples,)))
        means = conditional.mean
        mean = means.mean(0)
        return mean, conditional.variance.mean(0) + ((means - mean) ** 2).mean(0)

    @property
    def mean(self) -> Tensor:
        return self._moments[0]

    @property
    def variance(self) -> Tensor:
        return self._moments[1]


class LatentVariableEmission(DistributionHead):
    """``"vae"``: a per-step latent ``u ~ N(0, I)`` decoded by a factorised head (module docstring).

    Parameters
    ----------
    in_features, dim : int
    latent_dim : int
        ``L``.
    hidden : int
        Width of the decoder's and the encoder's hidden layer.
    n_samples : int
        ``K``, importance draws per scored step (the IWAE bound's ``K`` in training).
    decoder : str or DistributionHead class
        The factorised head of ``x | u`` (``"normal"``, ``"studentt"``, ``"bernoulli"``, ...). Its
        support, DeepAR scaling and fill value are this emission's.
    """

    name = "vae"
    args_dim: dict = {}
    factorizes = False
    exact_log_prob = False

    def __init__(self, in_features: int, dim: int, latent_dim: int = 4, hidden: int = 32, n_samples: int = 16,
                 decoder="normal"):
        super().__init__(in_features, dim)
        for arg, value in (("latent_dim", latent_dim), ("hidden", hidden), ("n_samples", n_samples)):
            if not is_int(value) or value < 1:
                raise ValueError(f"`{arg}` must be a positive integer; got {value!r}.")
        self.latent_dim, self.hidden, self.n_samples = int(latent_dim), int(hidden), int(n_samples)
        self.decoder_net = ConditionalMLP(latent_dim, in_features, [hidden], hidden, nn.SiLU, nn.SiLU)
        self.decoder = make_head(decoder, hidden, dim)
        if not getattr(self.decoder, "factorizes", True):
            raise ValueError(f"`decoder` must be a factorised head (normal, studentt, bernoulli, ...); "
                             f"got {self.decoder.name!r}.")
        self.encoder_net = ConditionalMLP(2 * dim, in_features, [hidden], 2 * latent_dim, nn.SiLU)
        # what the data may hold and how it is scaled is the decoder's business
        self.support, self.fill_value = self.decoder.support, self.decoder.fill_value
        self.scalable, self.location_scale = self.decoder.scalable, self.decoder.location_scale

    def outside_support(self, values: Tensor) -> Tensor:
        return self.decoder.outside_support(values)

    def forward(self, features: Tensor, scale: Tensor | None = None) -> Distribution:
        decoder_context = self.decoder_net.condition(features)
        encoder_context = self.encoder_net.condition(features)
        zeros = torch.zeros((*features.shape[:-1], self.latent_dim), dtype=features.dtype, device=features.device)
        prior = Independent(Normal(zeros, torch.ones_like(zeros), validate_args=False), 1)

        def decoder(u: Tensor) -> Distribution:
            return self.decoder(self.decoder_net(u, decoder_context), scale)

        def encoder(x: Tensor, mask: Tensor) -> Distribution:
            if scale is not None and self.decoder.scalable:
                x = x / scale
            loc, raw = self.encoder_net(torch.cat([x, mask.to(x.dtype)], dim=-1), encoder_context).chunk(2, -1)
            return Independent(Normal(loc, positive(raw), validate_args=False), 1)

        reparameterised = bool(getattr(self.decoder, "location_scale", False))
        return LatentVariableDistribution(prior, decoder, encoder, (self.dim,), self.n_samples, reparameterised,
                                          validate_args=False)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, latent_dim={self.latent_dim}, hidden={self.hidden}, "
                f"n_samples={self.n_samples}, decoder={self.decoder.name!r}")


register_emission(LatentVariableEmission)
