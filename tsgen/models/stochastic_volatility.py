r"""The stochastic-volatility model (Kim, Shephard & Chib 1998), on the state-space base.

Generative model for a (demeaned) return series ``y_t``::

    h_1 ~ N(mu, sigma^2 / (1 - phi^2))                (the stationary law)
    h_t = mu + phi (h_{t-1} - mu) + sigma eta_t,      eta_t ~ N(0, 1)
    y_t = exp(h_t / 2) eps_t,                         eps_t ~ N(0, 1)

``h_t`` is the log-variance of ``y_t``; ``|phi| < 1`` and ``sigma > 0``.
Priors (for PMMH): ``mu ~ N(0, 10^2)``, ``phi ~ U(-1, 1)``,
``sigma ~ HalfCauchy(1)``.
"""
from __future__ import annotations

import math

import torch
from torch.distributions import HalfCauchy, Normal, Uniform, constraints

from tsgen.models.state_space import StateSpaceModel, _StateSpaceEstimator

__all__ = ["StochasticVolatility", "StochasticVolatilityModel"]


class StochasticVolatilityModel(StateSpaceModel):
    """The stochastic-volatility model as a :class:`~tsgen.models.state_space.StateSpaceModel` (module docstring)."""

    latent_names = ("log_variance",)

    def __init__(self, mu: float = 0.0, phi: float = 0.95, sigma: float = 0.2):
        super().__init__()
        self.register_constrained("mu", mu, constraints.real, prior=Normal(0.0, 10.0))
        self.register_constrained("phi", phi, constraints.interval(-1.0, 1.0), prior=Uniform(-1.0, 1.0))
        self.register_constrained("sigma", sigma, constraints.positive, prior=HalfCauchy(1.0))

    def initial(self, context):
        phi = self.phi
        return Normal(self.mu, self.sigma / torch.sqrt(1 - phi * phi))

    def transition(self, h_prev, context):
        mu = self.mu
        return Normal(mu + self.phi * (h_prev - mu), self.sigma)

    def emission(self, h, context):
        return Normal(torch.zeros_like(h), torch.exp(0.5 * h))


class StochasticVolatility(_StateSpaceEstimator):
    r"""Stochastic-volatility model of a return series, fitted by particle EM, PMMH or FIVO.

    ``h_t = mu + phi (h_{t-1} - mu) + sigma eta_t`` (stationary start),
    ``y_t = exp(h_t / 2) eps_t`` (Kim, Shephard & Chib 1998). ``filter`` and
    ``smooth`` give the log-variance ``h_t``; forecasts are draws of future
    returns; ``log_likelihood(y, per_step=True)`` gives one-step predictive
    densities for anomaly detection.

    Parameters
    ----------
    mu, phi, sigma : float or None
        Starting values (``max_iter=0``: the values used). None starts from
        moment estimates on ``log y_t^2 = h_t + log eps_t^2`` (Harvey, Ruiz &
        Shephard 1994): EM moves slowly along the likelihood's ridge in
        ``(phi, sigma)``, so a start near it saves many iterations.
    method, max_iter, n_particles, n_trajectories, proposal, resampling,
    learning_rate, m_step_iter, burn_in, device, random_state
        As in :class:`tsgen.StateSpaceForecaster`.

    Notes
    -----
    The model has no mean: pass demeaned returns (e.g. ``100 * log-returns``
    minus their mean). ``y`` must be univariate; fitted values are
    ``mu_``, ``phi_``, ``sigma_``.
    """

    _supports_covariates = False  # its equations read no inputs

    def __init__(
        self,
        mu=None,
        phi=None,
        sigma=None,
        method="particle_em",
        max_iter=20,
        n_particles=500,
        n_trajectories=100,
        proposal="bootstrap",
        resampling="systematic",
        learning_rate=0.01,
        m_step_iter=20,
        burn_in=0.2,
        device="cpu",
        random_state=None,
    ):
        self.mu = mu
        self.phi = phi
        self.sigma = sigma
        self.method = method
        self.max_iter = max_iter
        self.n_particles = n_particles
        self.n_trajectories = n_trajectories
        self.proposal = proposal
        self.resampling = resampling
        self.learning_rate = learning_rate
        self.m_step_iter = m_step_iter
        self.burn_in = burn_in
        self.device = device
        self.random_state = random_state

    @classmethod
    def get_test_params(cls):
        return [
            {"max_iter": 2, "n_particles": 64, "n_trajectories": 16},
            {"method": "pmmh", "max_iter": 6, "n_particles": 32},
        ]

    def _build_model(self, data):
        if data is not None and data.n_dims != 1:
            raise ValueError(f"`y` must be univariate for StochasticVolatility; got {data.n_dims} variables.")
        given = {name: getattr(self, name) for name in ("mu", "phi", "sigma")}
        for name, value in given.items():
            if value is not None:
                given[name] = _real(name, value)
        if given["phi"] is not None and not -1 < given["phi"] < 1:
            raise ValueError(f"`phi` must lie strictly between -1 and 1; got {self.phi!r}.")
        if given["sigma"] is not None and given["sigma"] <= 0:
            raise ValueError(f"`sigma` must be positive; got {self.sigma!r}.")
        start = {"mu": 0.0, "phi": 0.95, "sigma": 0.2} if data is None else _moment_start(data)
        return StochasticVolatilityModel(**{k: start[k] if v is None else v for k, v in given.items()})

    def _fit(self, data, covariates):
        if data.n_dims != 1:
            raise ValueError(f"`y` must be univariate for StochasticVolatility; got {data.n_dims} variables.")
        super()._fit(data, covariates)
        self._set_fitted_values()

    def _load_fitted_state(self, meta, tensors):
        super()._load_fitted_state(meta, tensors)
        self._set_fitted_values()

    def _set_fitted_values(self):
        for name, value in self.module_.constrained_parameters().items():
            setattr(self, f"{name}_", float(value.detach()))


def _real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number; got {value!r}.")
    return float(value)


#: E[log eps^2] for eps ~ N(0, 1): -(Euler's gamma + log 2)
_LOG_CHI2_MEAN = -1.2703628454614782


def _moment_start(data, max_lag: int = 5) -> dict[str, float]:
    r"""Starting values from the autocovariances of ``x_t = log y_t^2 = h_t + log eps_t^2``.

    ``x_t - E x_t`` is ``h_t - mu`` plus white noise, so its autocovariances at
    lags ``k >= 1`` are ``Var(h) phi^k``: ``phi`` is their ratio over lags
    ``2..K`` against ``1..K-1`` and ``Var(h)`` follows. Falls back to
    ``phi = 0.95``, ``sigma = 0.2`` where the moments are not informative.
    """
    values, mask = data.values[..., 0], data.mask[..., 0]
    usable = mask & (values != 0)  # log 0 is -inf: exact zeros carry no scale information
    x = torch.where(usable, torch.log(torch.where(usable, values, torch.ones((), dtype=values.dtype)) ** 2),
                    torch.zeros((), dtype=values.dtype))
    count = int(usable.sum())
    if count < 2:
        return {"mu": 0.0, "phi": 0.95, "sigma": 0.2}
    mean = float(x.sum()) / count
    centred = torch.where(usable, x - mean, torch.zeros((), dtype=values.dtype))
    acov = []
    for k in range(1, max_lag + 1):
        pairs = usable[:, k:] & usable[:, :-k]
        n = int(pairs.sum())
        acov.append(float((centred[:, k:] * centred[:, :-k]).sum()) / n if n else math.nan)
    phi, sigma = 0.95, 0.2
    head, tail = sum(acov[:-1]), sum(acov[1:])
    if math.isfinite(head + tail) and head > 0 and tail > 0:
        phi = min(tail / head, 0.99)
        var_h = head / sum(phi**k for k in range(1, max_lag))
        sigma = min(max(math.sqrt(var_h * (1 - phi**2)), 0.01), 2.0)
    return {"mu": mean - _LOG_CHI2_MEAN, "phi": phi, "sigma": sigma}

