"""Particle EM (tsgen.inference.smc.particle_em), against Kalman EM on linear-Gaussian models."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch.distributions import Normal, constraints

import tsgen
from tsgen.inference.kalman import KalmanParams
from tsgen.inference.smc.particle_em import (
    complete_data_log_likelihood,
    linear_gaussian_m_step,
    particle_em,
    transition_mask,
)
from tsgen.models._lds_protocol import LinearGaussianModule
from tsgen.models.state_space import StateSpaceProtocol
from tsgen.training import seeded_from

F, Q, R = 0.8, 1.0, 0.3
LEARN = ["transition_matrices", "transition_covariance", "observation_covariance"]
START = {"transition_matrices": [[0.3]], "transition_covariance": [[0.5]], "observation_covariance": [[1.0]]}
FIXED = {"observation_matrices": [[1.0]], "initial_state_mean": [0.0], "initial_state_covariance": [[1.0]]}


class LinearModel(tsgen.StateSpaceModel):
    """The same 1-D linear-Gaussian model, written by a user: z_1 ~ N(0, 1), z_t = f z + N(0, q), y = z + N(0, r)."""

    def __init__(self, f=0.3, q=0.5, r=1.0):
        super().__init__()
        self.f = torch.nn.Parameter(torch.tensor(f))
        self.register_constrained("q", q, constraints.positive)
        self.register_constrained("r", r, constraints.positive)

    def initial(self, context):
        return Normal(torch.zeros(()), torch.ones(()))

    def transition(self, z_prev, context):
        return Normal(self.f * z_prev, self.q.sqrt())

    def emission(self, z, context):
        return Normal(z, self.r.sqrt())


class LoopedLinearModel(LinearModel):
    vectorized_time = False  # forces the generic time loop of the complete-data log-likelihood


def simulate(rng, n_series, length):
    z = np.empty((n_series, length))
    z[:, 0] = rng.normal(size=n_series)
    for t in range(1, length):
        z[:, t] = F * z[:, t - 1] + math.sqrt(Q) * rng.normal(size=n_series)
    return z + math.sqrt(R) * rng.normal(size=z.shape), z


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    # the state noise dominates, so EM converges in tens of iterations, not hundreds
    train, _ = simulate(rng, 10, 60)
    test, _ = simulate(rng, 10, 60)
    return [pd.Series(row) for row in train], [pd.Series(row) for row in test]


def _params(values: dict) -> KalmanParams:
    merged = {**FIXED, **values}
    as_tensor = {k: torch.tensor(np.asarray(v, dtype=float), dtype=torch.float64) for k, v in merged.items()}
    return KalmanParams(
        as_tensor["transition_matrices"], as_tensor["observation_matrices"], as_tensor["transition_covariance"],
        as_tensor["observation_covariance"], as_tensor["initial_state_mean"], as_tensor["initial_state_covariance"],
        None, None,
    )


def _held_out(params: dict, test) -> float:
    return tsgen.LinearGaussianSSM.from_params(**FIXED, **params).log_likelihood(test)


@pytest.fixture(scope="module")
def kalman_em(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # converged or not, it is the reference
        model = tsgen.LinearGaussianSSM(n_dim_state=1, **FIXED, **START, em_vars=LEARN, max_iter=300, tol=1e-8)
        model.fit(data[0])
    fitted = {name: getattr(model, name + "_") for name in LEARN}
    return fitted, _held_out(fitted, data[1])


def test_closed_form_particle_em_matches_kalman_em_held_out(data, kalman_em):
    values = torch.tensor(np.stack([s.to_numpy() for s in data[0]]))[..., None]
    mask = torch.ones_like(values, dtype=torch.bool)
    params = {"current": _params(START)}

    def m_step(model, trajectories, log_weights, values_, mask_, covariates):
        params["current"] = linear_gaussian_m_step(params["current"], trajectories, log_weights, values_, mask_, LEARN)
        return LinearGaussianModule(params["current"])

    with seeded_from(torch.Generator().manual_seed(0)):
        result = particle_em(LinearGaussianModule(params["current"]), values, mask, n_iter=15, n_particles=200,
                             n_trajectories=50, m_step=m_step)
    fitted = {name: getattr(params["current"], name).numpy() for name in LEARN}
    reference, reference_ll = kalman_em
    assert abs(_held_out(fitted, data[1]) - reference_ll) < 0.01 * abs(reference_ll)
    assert result.n_iter == len(result.log_evidences) == 15
    assert result.log_evidences[-1] > result.log_evidences[0]


def test_gradient_particle_em_of_a_user_model_matches_kalman_em_held_out(data, kalman_em):
    model = tsgen.StateSpaceForecaster(LinearModel(), max_iter=10, n_particles=200, n_trajectories=50,
                                       random_state=0).fit(data[0])
    found = model.module_.constrained_parameters()
    fitted = {"transition_matrices": [[float(model.module_.f.detach())]], "transition_covariance": [[float(found["q"])]],
              "observation_covariance": [[float(found["r"])]]}
    reference, reference_ll = kalman_em
    assert abs(_held_out(fitted, data[1]) - reference_ll) < 0.01 * abs(reference_ll)
    assert abs(fitted["transition_matrices"][0][0] - reference["transition_matrices"][0, 0]) < 0.1


def test_genealogy_smoother_runs(data):
    values = torch.tensor(data[0][0].to_numpy())[None, :, None]
    adapter = StateSpaceProtocol(LinearModel().double())
    with seeded_from(torch.Generator().manual_seed(0)):
        result = particle_em(adapter, values, torch.ones_like(values, dtype=torch.bool), n_iter=3, n_particles=100,
                             smoother="genealogy")
    assert result.n_iter == 3 and float(adapter.model.f) > 0.3


# ---------------------------------------------------- complete-data likelihood
def test_complete_data_log_likelihood_vectorised_loop_and_closed_form_agree():
    rng = np.random.default_rng(1)
    values = torch.tensor(rng.normal(size=(2, 8, 1)))
    mask = torch.ones_like(values, dtype=torch.bool)
    mask[0, 3] = False  # a missing step: its latent still counts
    mask[1, 6:] = False  # a ragged end: latents after the last observation integrate out
    values = torch.where(mask, values, torch.tensor(math.nan, dtype=torch.float64))
    z = torch.tensor(rng.normal(size=(3, 2, 8, 1)))
    results = []
    for cls in (LinearModel, LoopedLinearModel):
        adapter = StateSpaceProtocol(cls(f=0.6, q=0.4, r=0.9).double())
        context = adapter.prepare(values, mask)
        results.append(complete_data_log_likelihood(adapter, z, values, mask, context))
    torch.testing.assert_close(results[0], results[1])
    zz, y, m = z[..., 0].numpy(), values[..., 0].numpy(), mask[..., 0].numpy()
    expected = stats.norm.logpdf(zz[:, :, 0], 0, 1)
    for b, last in ((0, 8), (1, 6)):
        for t in range(1, last):
            expected[:, b] += stats.norm.logpdf(zz[:, b, t], 0.6 * zz[:, b, t - 1], math.sqrt(0.4))
        for t in range(last):
            if m[b, t]:
                expected[:, b] += stats.norm.logpdf(y[b, t], zz[:, b, t], math.sqrt(0.9))
    # the module's parameters were float32 numbers (0.6 is 0.6000000238 there)
    np.testing.assert_allclose(results[0].detach().numpy(), expected, rtol=1e-6)


def test_transition_mask_stops_at_the_last_observation():
    mask = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)[..., None]
    expected = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(transition_mask(mask), expected)


def test_linear_gaussian_m_step_on_one_trajectory_is_the_complete_data_mle():
    rng = np.random.default_rng(2)
    y, z = simulate(rng, 1, 50)
    values, trajectory = torch.tensor(y)[..., None], torch.tensor(z)[None, ..., None]
    new = linear_gaussian_m_step(_params(START), trajectory, torch.zeros(1, 1), values,
                                 torch.ones_like(values, dtype=torch.bool), LEARN)
    x0, x1 = z[0, :-1], z[0, 1:]
    f = (x1 @ x0) / (x0 @ x0)
    assert float(new.transition_matrices) == pytest.approx(f, rel=1e-10)
    assert float(new.transition_covariance) == pytest.approx(np.mean((x1 - f * x0) ** 2), rel=1e-10)
    assert float(new.observation_covariance) == pytest.approx(np.mean((y - z) ** 2), rel=1e-10)
    assert float(new.observation_matrices) == 1.0  # not learned


def test_bad_input_names_the_argument():
    values = torch.zeros(1, 5, 1, dtype=torch.float64)
    mask = torch.ones_like(values, dtype=torch.bool)
    adapter = StateSpaceProtocol(LinearModel().double())
    for argument, value in (("n_iter", -1), ("n_trajectories", 0), ("smoother", "forward"), ("m_step", "newton"),
                            ("m_step_iter", 0)):
        with pytest.raises(ValueError, match=f"`{argument}`"):
            particle_em(adapter, values, mask, **{argument: value})


# ------------------------------------------------------------------ Kitagawa
def simulate_growth(rng, n_series, length, process_variance=10.0, observation_variance=1.0):
    x = np.empty((n_series, length))
    x[:, 0] = rng.normal(scale=math.sqrt(5.0), size=n_series)
    for t in range(1, length):  # x[:, t] is x_{t+1}: the cosine reads the 1-based time
        prev = x[:, t - 1]
        x[:, t] = 0.5 * prev + 25 * prev / (1 + prev**2) + 8 * math.cos(1.2 * (t + 1))
        x[:, t] += math.sqrt(process_variance) * rng.normal(size=n_series)
    return x**2 / 20 + math.sqrt(observation_variance) * rng.normal(size=x.shape)


def test_particle_em_recovers_the_nonlinear_growth_variances_roughly():
    y = [pd.Series(row) for row in simulate_growth(np.random.default_rng(0), 10, 80)]
    model = tsgen.NonlinearGrowth(max_iter=8, n_particles=200, n_trajectories=20, random_state=0).fit(y)
    # EM creeps along the ridge where either noise explains the other's share: measured on 10 x 100 series,
    # (8.4, 1.65) after 10 iterations and (8.9, 1.40) after 30 from a diffuse start, against the truth (10, 1)
    assert 10 / 1.6 < model.process_variance_ < 10 * 1.6
    assert 0.4 < model.observation_variance_ < 2.5
    assert model.log_evidences_[-1] > model.log_evidences_[0] + 100  # from the diffuse start
