r"""The Deep Markov Model (Krishnan, Shalit & Sontag, AAAI 2017).

Generative model, with a learned ``z_0``::

    z_t | z_{t-1} ~ N(mu(z_{t-1}), diag sigma^2(z_{t-1}))     (gated transition, t = 1..T)
    x_t | z_t     ~ g(. | MLP(z_t))                            (any distribution head)

Guide (inference network, see :mod:`tsgen.components.inference_networks`)::

    q(z_{1:T} | x_{1:T}) = prod_t q(z_t | z_{t-1}, h_t(x))

Training maximises the ELBO with the KL in closed form given the sampled
``z_{t-1}`` (:mod:`tsgen.inference.elbo`). Only the guide's draw of
``z_{1:T}`` is sequential; the transition, the emission and the KL of all
steps then run as single batched calls, which is where the speed over a
step-by-step Pyro model/guide comes from.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from tsgen.components.heads import make_head, masked_log_prob
from tsgen.components.inference_networks import GuideSample, StructuredInferenceNetwork
from tsgen.components.mlp import MLP
from tsgen.components.transitions import GatedTransition
from tsgen.inference.elbo import gaussian_kl, iwae_bound, per_step_iwae, sequence_elbo, valid_steps
from tsgen.models.base import SequentialModel

__all__ = ["DeepMarkovModule", "Emitter"]


class Emitter(nn.Module):
    """``g(x_t | z_t)``: an MLP of ``z_t`` (ReLU hidden layers) fed to a distribution head.

    Pyro's DMM emitter is this with two hidden layers of ``emission_dim`` and
    a Bernoulli head.
    """

    def __init__(self, latent_dim: int, data_dim: int, emission_dim: int, emission="normal", n_hidden: int = 2):
        super().__init__()
        self.features = MLP(latent_dim, [emission_dim] * (n_hidden - 1), emission_dim, final_activation=nn.ReLU)
        self.head = make_head(emission, emission_dim, data_dim)

    def forward(self, z: Tensor) -> Distribution:
        return self.head(self.features(z))


def _randn(shape, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normal noise from a local generator, on ``like``'s device and dtype."""
    if generator is not None and generator.device != like.device:
        return torch.randn(shape, generator=generator, dtype=like.dtype).to(like.device)
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)


class DeepMarkovModule(SequentialModel):
    """The DMM's generative model and guide, implementing the model protocol.

    Parameters
    ----------
    data_dim : int
        ``D``.
    emitter : nn.Module
        Maps ``z`` ``(..., Z)`` to a distribution over ``x`` with batch
        shape ``(...)`` and event shape ``(D,)`` (an MLP plus a head).
    latent_dim, transition_dim, rnn_dim : int
        Sizes of ``z``, the gated transition's hidden layers and the guide's RNN.
    inference, rnn_type, num_layers, rnn_dropout, observe_mask, iafs, iaf_dim :
        Passed to :class:`StructuredInferenceNetwork`.
    transition : nn.Module, optional
        Replaces the gated transition: ``z_prev -> (loc, scale)``.
    """

    def __init__(
        self,
        data_dim: int,
        emitter: nn.Module,
        latent_dim: int = 100,
        transition_dim: int = 200,
        rnn_dim: int = 600,
        inference: str = "dks",
        rnn_type: str = "rnn",
        num_layers: int = 1,
        rnn_dropout: float = 0.0,
        observe_mask: bool = False,
        iafs: int = 0,
        iaf_dim: int = 100,
        transition: nn.Module | None = None,
    ):
        super().__init__()
        self.data_dim = data_dim
        self.latent_dim = latent_dim
        self.z_0 = nn.Parameter(torch.zeros(latent_dim))
        self.transition_net = transition if transition is not None else GatedTransition(latent_dim, transition_dim)
        self.emitter = emitter
        self.guide = StructuredInferenceNetwork(
            data_dim, latent_dim, rnn_dim, inference=inference, rnn_type=rnn_type, num_layers=num_layers,
            dropout=rnn_dropout, observe_mask=observe_mask, iafs=iafs, iaf_dim=iaf_dim,
        )

    # ------------------------------------------------------------ protocol
    # The state is the latent itself, a tensor ``z`` ``(*batch, Z)``: the
    # transition returns a distribution whose draw *is* the next state.
    def init_state(self, batch_shape, covariates=None) -> Tensor:
        """``z_0`` broadcast to ``(*batch_shape, Z)``."""
        return self.z_0.expand(*tuple(batch_shape), self.latent_dim)

    def transition(self, state: Tensor, x_prev=None, covariates=None) -> Distribution:
        """``f(z_t | z_{t-1})``: a diagonal Gaussian with event shape ``(Z,)``; ``x_prev`` is unused."""
        loc, scale = self.transition_net(state)
        return Independent(Normal(loc, scale), 1)

    def emission(self, state: Tensor, covariates=None) -> Distribution:
        """``g(x_t | z_t)`` with event shape ``(D,)``."""
        return self.emitter(state)

    # ----------------------------------------------------------- inference
    def sample_guide(self, values: Tensor, mask: Tensor, n_samples: int, generator=None) -> GuideSample:
        """``n_samples`` draws of ``z_{1:T}`` from the guide, shapes ``(S, B, T, ...)``."""
        step_mask = valid_steps(mask)
        summary = self.guide.summarise(values, mask, step_mask)
        shape = (n_samples, *values.shape[:-1], self.latent_dim)
        return self.guide.sample(summary, _randn(shape, generator, summary))

    def _prior_params(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(loc, scale)`` of ``f(z_t | z_{t-1})`` for all steps at once, ``z`` ``(S, B, T, Z)``."""
        z_0 = self.z_0.expand(*z.shape[:-2], 1, self.latent_dim)
        return self.transition_net(torch.cat([z_0, z[..., :-1, :]], dim=-2))

    def elbo_terms(self, values: Tensor, mask: Tensor, n_samples: int = 1, generator=None):
        """``(log_lik, kl, step_mask)``: per-step ``(S, B, T)`` terms of the ELBO.

        ``kl`` is analytic without flows and the one-sample ``log q - log f``
        with flows.
        """
        draw = self.sample_guide(values, mask, n_samples, generator)
        step_mask = valid_steps(mask)
        p_loc, p_scale = self._prior_params(draw.z)
        log_lik = masked_log_prob(self.emitter(draw.z), values, mask)
        if draw.log_det is None:
            kl = gaussian_kl(draw.loc, draw.scale, p_loc, p_scale)
        else:
            kl = draw.log_q() - Normal(p_loc, p_scale).log_prob(draw.z).sum(-1)
        return log_lik, kl, step_mask

    def elbo(self, values: Tensor, mask: Tensor, kl_weight: float = 1.0, n_samples: int = 1, generator=None) -> Tensor:
        """Per-sequence ELBO ``(S, B)`` (``kl_weight`` < 1 anneals the KL)."""
        log_lik, kl, step_mask = self.elbo_terms(values, mask, n_samples, generator)
        return sequence_elbo(log_lik, kl, step_mask, kl_weight)

    def loss(self, values: Tensor, mask: Tensor, kl_weight: float = 1.0, generator=None) -> Tensor:
        """Negative ELBO per valid time step of the minibatch (the quantity Pyro's DMM reports)."""
        steps = valid_steps(mask).sum().clamp_min(1)
        return -self.elbo(values, mask, kl_weight, 1, generator).sum() / steps

    def step_log_weights(self, values: Tensor, mask: Tensor, n_samples: int, generator=None) -> Tensor:
        """``log g(x_t|z_t) + log f(z_t|z_{t-1}) - log q(z_t|.)`` per draw and step ``(S, B, T)``.

        Zero at steps beyond each sequence's last observation.
        """
        draw = self.sample_guide(values, mask, n_samples, generator)
        step_mask = valid_steps(mask)
        p_loc, p_scale = self._prior_params(draw.z)
        log_prior = Normal(p_loc, p_scale).log_prob(draw.z).sum(-1)
        weights = masked_log_prob(self.emitter(draw.z), values, mask) + log_prior - draw.log_q()
        return torch.where(step_mask, weights, torch.zeros((), dtype=weights.dtype, device=weights.device))

    def log_likelihood(
        self,
        values: Tensor,
        mask: Tensor,
        method: str = "iwae",
        n_samples: int = 100,
        generator=None,
        max_rows: int = 200_000,
    ) -> Tensor:
        """Per-step contributions ``(B, T)`` to the log-likelihood estimate.

        ``method="iwae"``: the increments of the prefix IWAE estimates
        (:func:`tsgen.inference.elbo.per_step_iwae`), which sum to the
        ``K = n_samples`` IWAE bound of each sequence. ``method="elbo"``:
        each step's ``E_q[log g(x_t|z_t)] - KL_t``, averaged over
        ``n_samples`` draws, summing to the ELBO. Draws are processed in
        chunks of at most ``max_rows`` latent rows to bound memory.
        """
        if method not in ("iwae", "elbo"):
            raise ValueError(f"`method` must be 'iwae' or 'elbo'; got {method!r}.")
        rows_per_draw = max(1, values.shape[0] * values.shape[1])
        chunk = max(1, min(n_samples, max_rows // rows_per_draw))
        pieces = []
        for start in range(0, n_samples, chunk):
            size = min(chunk, n_samples - start)
            if method == "iwae":
                pieces.append(self.step_log_weights(values, mask, size, generator))
            else:
                log_lik, kl, step_mask = self.elbo_terms(values, mask, size, generator)
                zero = torch.zeros((), dtype=log_lik.dtype, device=log_lik.device)
                pieces.append(torch.where(step_mask, log_lik - kl, zero))
        stacked = torch.cat(pieces, dim=0)
        if method == "iwae":
            return per_step_iwae(stacked, valid_steps(mask))
        return stacked.mean(0)

    def iwae(self, values: Tensor, mask: Tensor, n_samples: int, generator=None) -> Tensor:
        """The IWAE bound per sequence ``(B,)`` with ``K = n_samples`` draws."""
        return iwae_bound(self.step_log_weights(values, mask, n_samples, generator).sum(-1), dim=0)

    def filter_state(self, values: Tensor, mask: Tensor, n_samples: int, generator=None) -> Tensor:
        """Draws of ``z`` at each sequence's last step, ``(n_samples, B, Z)``.

        The guide's marginal at the final step approximates the filtering
        posterior ``p(z_T | x_{1:T})`` for every inference network (at ``T``
        smoothing and filtering coincide), so forecasting continues from here.
        """
        draw = self.sample_guide(values, mask, n_samples, generator)
        last = (valid_steps(mask).sum(-1) - 1).clamp_min(0)
        index = last.view(1, -1, 1, 1).expand(n_samples, -1, 1, self.latent_dim)
        return torch.gather(draw.z, 2, index).squeeze(2)
