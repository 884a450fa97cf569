r"""The nonlinear growth model (Kitagawa 1996; Gordon, Salmond & Smith 1993), on the state-space base.

Generative model::

    x_1 ~ N(0, s_0^2)
    x_t = x_{t-1} / 2 + 25 x_{t-1} / (1 + x_{t-1}^2) + 8 cos(1.2 t) + v_t,   v_t ~ N(0, sigma_v^2)
    y_t = x_t^2 / 20 + w_t,                                                   w_t ~ N(0, sigma_w^2)

with ``t`` the 1-based time step. The observation reveals ``|x_t|`` only,
so the filtering distributions are often bimodal: the standard test case
for particle filters. The variances ``sigma_v^2`` (``process_variance``)
and ``sigma_w^2`` (``observation_variance``) are learned; priors (for PMMH)
are inverse-gamma(0.01, 0.01) on both (Andrieu, Doucet & Holenstein 2010).
"""
from __future__ import annotations

import math

import torch
from torch.distributions import InverseGamma, Normal, constraints

from tsgen.models.state_space import StateSpaceModel, _StateSpaceEstimator

__all__ = ["NonlinearGrowth", "NonlinearGrowthModel"]


class NonlinearGrowthModel(StateSpaceModel):
    """The nonlinear growth model as a :class:`~tsgen.models.state_space.StateSpaceModel` (module docstring)."""

    latent_names = ("x",)

    def __init__(self, process_variance: float = 10.0, observation_variance: float = 1.0,
                 initial_variance: float = 5.0):
        super().__init__()
        self.register_constrained("process_variance", process_variance, constraints.positive,
                                  prior=InverseGamma(0.01, 0.01))
        self.register_constrained("observation_variance", observation_variance, constraints.positive,
                                  prior=InverseGamma(0.01, 0.01))
        self.register_buffer("initial_variance", torch.as_tensor(float(initial_variance)))

    def initial(self, context):
        return Normal(torch.zeros_like(self.initial_variance), self.initial_variance.sqrt())

    def transition(self, x_prev, context):
        # x/2 + 25 x / (1 + x^2) + 8 cos(1.2 t) in three passes over the particles (a filter runs it
        # on N x B of them every step; the cosine is per series)
        level = torch.add(8.0 * torch.cos(1.2 * context["t"]), x_prev, alpha=0.5)
        drift = torch.addcdiv(level, x_prev, torch.addcmul(x_prev.new_ones(()), x_prev, x_prev), value=25.0)
        return Normal(drift, self.process_variance.sqrt())

    def emission(self, x, context):
        # x^2 / 20 in one pass
        return Normal(torch.addcmul(x.new_zeros(()), x, x, value=1 / 20), self.observation_variance.sqrt())


class NonlinearGrowth(_StateSpaceEstimator):
    r"""The nonlinear growth model (Kitagawa 1996), fitted by particle EM, PMMH or FIVO.

    ``x_t = x_{t-1}/2 + 25 x_{t-1}/(1 + x_{t-1}^2) + 8 cos(1.2 t) + v_t``,
    ``y_t = x_t^2/20 + w_t``; the noise variances are learned.

    Parameters
    ----------
    process_variance, observation_variance : float or None
        Starting values of ``Var v_t`` and ``Var w_t`` (``max_iter=0``: the
        values used); None starts from a quarter of the data's variance: a
        diffuse start keeps the first E-step's particles spread over the
        data, and EM then shrinks the variances (it moves slowly along the
        ridge where one noise explains what the other does).
    initial_variance : float
        ``Var x_1`` (fixed).
    method, max_iter, n_particles, n_trajectories, proposal, resampling,
    learning_rate, m_step_iter, burn_in, device, random_state
        As in :class:`tsgen.StateSpaceForecaster`.

    Notes
    -----
    ``t`` counts from 1 at each series' first step and continues into the
    forecast horizon. Fitted values: ``process_variance_``,
    ``observation_variance_``.
    """

    _supports_covariates = False  # its equations read no inputs

    def __init__(
        self,
        process_variance=None,
        observation_variance=None,
        initial_variance=5.0,
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
        self.process_variance = process_variance
        self.observation_variance = observation_variance
        self.initial_variance = initial_variance
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
            {"method": "fivo", "max_iter": 3, "n_particles": 16},
        ]

    def _build_model(self, data):
        values = {}
        for name in ("process_variance", "observation_variance", "initial_variance"):
            value = getattr(self, name)
            if value is None:
                value = 1.0 if data is None else _diffuse_start(data)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
                raise ValueError(f"`{name}` must be a positive number; got {value!r}.")
            values[name] = float(value)
        if data is not None and data.n_dims != 1:
            raise ValueError(f"`y` must be univariate for NonlinearGrowth; got {data.n_dims} variables.")
        return NonlinearGrowthModel(**values)

    def _fit(self, data, covariates):
        super()._fit(data, covariates)
        self._set_fitted_values()

    def _load_fitted_state(self, meta, tensors):
        super()._load_fitted_state(meta, tensors)
        self._set_fitted_values()

    def _set_fitted_values(self):
        for name, value in self.module_.constrained_parameters().items():
            setattr(self, f"{name}_", float(value.detach()))


def _diffuse_start(data) -> float:
    values = data.values[data.mask]
    return float(values.var()) / 4 if values.numel() > 1 and float(values.var()) > 0 else 1.0

