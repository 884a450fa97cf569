"""Oracle tests for EM and direct MLE of the linear Gaussian state-space model.

Oracles:
* a brute-force E-step: the joint Gaussian of all states and observations of
  a short sequence, conditioned on the observed entries (no Kalman code);
* the Shumway-Stoffer M-step written out as plain numpy loops over time;
* the expected complete-data log-likelihood Q written directly, whose gradient
  with respect to the learned parameters must vanish after a partial M-step;
* closed-form least squares when the states are observed without noise;
* the likelihood itself: EM never decreases it, and the fit generalises.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tsgen.inference.em import EM_VARIABLES, em_step, fit_em, fit_mle
from tsgen.inference.kalman import KalmanParams, kalman_log_likelihood

DTYPE = torch.float64


# --------------------------------------------------------------------------
# Fixtures: random systems and simulated data
# --------------------------------------------------------------------------


def random_spd(rng: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
    a = rng.normal(size=(n, n))
    return scale * (a @ a.T / n + 0.3 * np.eye(n))


def random_system(rng: np.random.Generator, S: int, D: int, offsets: bool = True) -> dict:
    q, _ = np.linalg.qr(rng.normal(size=(S, S)))
    F = q @ np.diag(rng.uniform(0.5, 0.95, size=S)) @ q.T
    return dict(
        transition_matrices=F,
        observation_matrices=rng.normal(size=(D, S)),
        transition_covariance=random_spd(rng, S, 0.5),
        observation_covariance=random_spd(rng, D, 0.5),
        initial_state_mean=rng.normal(size=S),
        initial_state_covariance=random_spd(rng, S),
        transition_offsets=rng.normal(size=S) * 0.3 if offsets else None,
        observation_offsets=rng.normal(size=D) if offsets else None,
    )


def to_params(system: dict) -> KalmanParams:
    return KalmanParams(
        **{k: None if v is None else torch.tensor(v, dtype=DTYPE) for k, v in system.items()}
    )


def to_numpy(params: KalmanParams) -> dict:
    return {
        name: None if getattr(params, name) is None else getattr(params, name).numpy()
        for name in EM_VARIABLES
    }


def simulate(rng: np.random.Generator, system: dict, B: int, T: int) -> np.ndarray:
    F, H = system["transition_matrices"], system["observation_matrices"]
    S, D = H.shape[1], H.shape[0]
    c = system["transition_offsets"] if system["transition_offsets"] is not None else np.zeros(S)
    d = system["observation_offsets"] if system["observation_offsets"] is not None else np.zeros(D)
    LQ = np.linalg.cholesky(system["transition_covariance"])
    LR = np.linalg.cholesky(system["observation_covariance"])
    L0 = np.linalg.cholesky(system["initial_state_covariance"])
    x = system["initial_state_mean"] + rng.normal(size=(B, S)) @ L0.T
    y = np.empty((B, T, D))
    for t in range(T):
        y[:, t] = x @ H.T + d + rng.normal(size=(B, D)) @ LR.T
        x = x @ F.T + c + rng.normal(size=(B, S)) @ LQ.T
    return y


def punch_holes(rng: np.random.Generator, y: np.ndarray) -> np.ndarray:
    """Mask single components (20%) and whole steps (10%); leave step 0 observed."""
    mask = rng.uniform(size=y.shape) > 0.2
    mask &= (rng.uniform(size=y.shape[:2]) > 0.1)[..., None]
    mask[:, 0] = True
    return mask


# --------------------------------------------------------------------------
# Oracle: brute-force posterior moments and the Shumway-Stoffer M-step
# --------------------------------------------------------------------------


def joint_moments(system: dict, T: int):
    """Mean and covariance of z = (x_1..x_T, y_1..y_T) under the model, densely."""
    F, H = system["transition_matrices"], system["observation_matrices"]
    S, D = H.shape[1], H.shape[0]
    c = system["transition_offsets"] if system["transition_offsets"] is not None else np.zeros(S)
    d = system["observation_offsets"] if system["observation_offsets"] is not None else np.zeros(D)
    # x = A w + b with w = (x_1 - mu0, w_1, ..., w_{T-1}) independent noises
    A = np.zeros((T * S, T * S))
    b = np.zeros(T * S)
    noise = np.zeros((T * S, T * S))
    noise[:S, :S] = system["initial_state_covariance"]
    mean = system["initial_state_mean"]
    for t in range(T):
        if t > 0:
            noise[t * S:(t + 1) * S, t * S:(t + 1) * S] = system["transition_covariance"]
            mean = F @ mean + c
            A[t * S:(t + 1) * S] = F @ A[(t - 1) * S:t * S]
        A[t * S:(t + 1) * S, t * S:(t + 1) * S] += np.eye(S)
        b[t * S:(t + 1) * S] = mean
    cov_x = A @ noise @ A.T
    big_H = np.kron(np.eye(T), H)
    cov = np.block(
        [
            [cov_x, cov_x @ big_H.T],
            [big_H @ cov_x, big_H @ cov_x @ big_H.T + np.kron(np.eye(T), system["observation_covariance"])],
        ]
    )
    mu = np.concatenate([b, big_H @ b + np.tile(d, T)])
    return mu, cov


def posterior_second_moments(system: dict, y: np.ndarray, mask: np.ndarray):
    """E[z z'] given the observed entries of one sequence y (T, D), by conditioning."""
    T, D = y.shape
    S = system["transition_matrices"].shape[0]
    mu, cov = joint_moments(system, T)
    observed = np.concatenate([np.zeros(T * S, bool), mask.reshape(-1)])
    z_obs = y.reshape(-1)[mask.reshape(-1)]
    o, u = observed, ~observed
    gain = cov[np.ix_(u, o)] @ np.linalg.inv(cov[np.ix_(o, o)])
    mean = mu.copy()
    mean[o] = z_obs
    mean[u] = mu[u] + gain @ (z_obs - mu[o])
    post_cov = np.zeros_like(cov)
    post_cov[np.ix_(u, u)] = cov[np.ix_(u, u)] - gain @ cov[np.ix_(o, u)]
    log_lik = -0.5 * (
        o.sum() * np.log(2 * np.pi)
        + np.linalg.slogdet(cov[np.ix_(o, o)])[1]
        + (z_obs - mu[o]) @ np.linalg.solve(cov[np.ix_(o, o)], z_obs - mu[o])
    )
    return mean, post_cov + np.outer(mean, mean), log_lik


def block_moments(system: dict, y: np.ndarray, mask: np.ndarray):
    """Per-sequence expectations E[x_t], E[x x'], E[x_{t+1} x_t'], E[y_t], E[y y'], E[y x']."""
    B, T, D = y.shape
    S = system["transition_matrices"].shape[0]
    out = []
    total = 0.0
    for b in range(B):
        mean, second, log_lik = posterior_second_moments(system, y[b], mask[b])
        total += log_lik
        xs = [slice(t * S, (t + 1) * S) for t in range(T)]
        ys = [slice(T * S + t * D, T * S + (t + 1) * D) for t in range(T)]
        out.append(
            dict(
                x=[mean[xs[t]] for t in range(T)],
                y=[mean[ys[t]] for t in range(T)],
                xx=[second[xs[t], xs[t]] for t in range(T)],
                x1x0=[second[xs[t + 1], xs[t]] for t in range(T - 1)],
                yy=[second[ys[t], ys[t]] for t in range(T)],
                yx=[second[ys[t], xs[t]] for t in range(T)],
                # complete data: observed steps, transitions up to the last observed step
                obs_steps=[t for t in range(T) if mask[b, t].any()],
                last=max(t for t in range(T) if mask[b, t].any()),
            )
        )
    return out, total


def shumway_stoffer_all(system: dict, y: np.ndarray, mask: np.ndarray) -> dict:
    """The M-step with every parameter (offsets included) learned, as loops over time."""
    moments, _ = block_moments(system, y, mask)
    S = system["transition_matrices"].shape[0]
    D = y.shape[-1]
    # transition block: regress x_{t+1} on (x_t, 1)
    lhs = np.zeros((S, S + 1))
    gram = np.zeros((S + 1, S + 1))
    n = 0
    for m in moments:
        for t in range(m["last"]):
            z = np.append(m["x"][t], 1.0)
            zz = np.block([[m["xx"][t], m["x"][t][:, None]], [m["x"][t][None, :], np.ones((1, 1))]])
            lhs += np.hstack([m["x1x0"][t], m["x"][t + 1][:, None]])
            gram += zz
            n += 1
    Fc = lhs @ np.linalg.inv(gram)
    F, c = Fc[:, :S], Fc[:, S]
    Q = np.zeros((S, S))
    for m in moments:
        for t in range(m["last"]):
            Ex1x1 = m["xx"][t + 1]
            Ex1z = np.hstack([m["x1x0"][t], m["x"][t + 1][:, None]])
            Ezz = np.block([[m["xx"][t], m["x"][t][:, None]], [m["x"][t][None, :], np.ones((1, 1))]])
            Q += Ex1x1 - Fc @ Ex1z.T - Ex1z @ Fc.T + Fc @ Ezz @ Fc.T
    Q /= n
    # observation block: regress y_t on (x_t, 1)
    lhs = np.zeros((D, S + 1))
    gram = np.zeros((S + 1, S + 1))
    n = 0
    for m in moments:
        for t in m["obs_steps"]:
            lhs += np.hstack([m["yx"][t], m["y"][t][:, None]])
            gram += np.block([[m["xx"][t], m["x"][t][:, None]], [m["x"][t][None, :], np.ones((1, 1))]])
            n += 1
    Hd = lhs @ np.linalg.inv(gram)
    R = np.zeros((D, D))
    for m in moments:
        for t in m["obs_steps"]:
            Eyz = np.hstack([m["yx"][t], m["y"][t][:, None]])
            Ezz = np.block([[m["xx"][t], m["x"][t][:, None]], [m["x"][t][None, :], np.ones((1, 1))]])
            R += m["yy"][t] - Hd @ Eyz.T - Eyz @ Hd.T + Hd @ Ezz @ Hd.T
    R /= n
    mu0 = np.mean([m["x"][0] for m in moments], axis=0)
    P0 = np.mean([m["xx"][0] - np.outer(m["x"][0], mu0) - np.outer(mu0, m["x"][0]) + np.outer(mu0, mu0)
                  for m in moments], axis=0)
    return dict(
        transition_matrices=F, transition_offsets=c, transition_covariance=Q,
        observation_matrices=Hd[:, :S], observation_offsets=Hd[:, S], observation_covariance=R,
        initial_state_mean=mu0, initial_state_covariance=P0,
    )


def expected_complete_log_likelihood(moments, params: dict) -> torch.Tensor:
    """Q(theta) = E[log p(x, y_complete; theta) | data, theta_old], up to a constant."""

    def gaussian_term(E_uu, E_uv, E_vv, E_u, E_v, A, a, cov):
        # E[(u - A v - a)(u - A v - a)']
        outer = (
            E_uu - A @ E_uv.T - E_uv @ A.T + A @ E_vv @ A.T
            - torch.outer(E_u - A @ E_v, a) - torch.outer(a, E_u - A @ E_v) + torch.outer(a, a)
        )
        return -0.5 * (torch.logdet(cov) + torch.trace(torch.linalg.solve(cov, outer)))

    t_ = lambda v: torch.as_tensor(v, dtype=DTYPE)  # noqa: E731
    S = params["transition_matrices"].shape[0]
    D = params["observation_matrices"].shape[0]
    c, d = params["transition_offsets"], params["observation_offsets"]
    c = torch.zeros(S, dtype=DTYPE) if c is None else c
    d = torch.zeros(D, dtype=DTYPE) if d is None else d
    total = torch.zeros((), dtype=DTYPE)
    zero_S = torch.zeros(S, S, dtype=DTYPE)
    for m in moments:
        total = total + gaussian_term(
            t_(m["xx"][0]), zero_S, zero_S, t_(m["x"][0]), torch.zeros(S, dtype=DTYPE),
            zero_S, params["initial_state_mean"], params["initial_state_covariance"],
        )
        for t in range(m["last"]):
            total = total + gaussian_term(
                t_(m["xx"][t + 1]), t_(m["x1x0"][t]), t_(m["xx"][t]), t_(m["x"][t + 1]), t_(m["x"][t]),
                params["transition_matrices"], c, params["transition_covariance"],
            )
        for t in m["obs_steps"]:
            total = total + gaussian_term(
                t_(m["yy"][t]), t_(m["yx"][t]), t_(m["xx"][t]), t_(m["y"][t]), t_(m["x"][t]),
                params["observation_matrices"], d, params["observation_covariance"],
            )
    return total


# --------------------------------------------------------------------------
# M-step against the oracles
# --------------------------------------------------------------------------


@pytest.mark.parametrize("missing", [False, True])
def test_em_step_matches_shumway_stoffer_oracle(missing):
    rng = np.random.default_rng(1)
    system = random_system(rng, S=2, D=3)
    y = simulate(rng, system, B=3, T=7)
    mask = punch_holes(rng, y) if missing else np.ones(y.shape, bool)
    mask[2, 5:] = False  # ragged: the last sequence is padded after step 5
    y_input = np.where(mask, y, np.nan)

    new, log_lik = em_step(torch.tensor(y_input), torch.tensor(mask), to_params(system), "all")

    expected = shumway_stoffer_all(system, np.where(mask, y, 0.0), mask)
    _, expected_log_lik = block_moments(system, np.where(mask, y, 0.0), mask)
    assert log_lik == pytest.approx(expected_log_lik, rel=1e-10)
    for name in EM_VARIABLES:
        np.testing.assert_allclose(getattr(new, name).numpy(), expected[name], rtol=1e-8, atol=1e-10,
                                   err_msg=name)


SUBSETS = [
    {"transition_matrices"},
    {"transition_offsets"},
    {"transition_matrices", "transition_covariance"},
    {"observation_matrices", "observation_covariance"},
    {"observation_offsets", "observation_covariance"},
    {"observation_covariance"},
    {"initial_state_covariance"},
    {"transition_matrices", "observation_offsets", "initial_state_mean"},
]


@pytest.mark.parametrize("em_vars", SUBSETS, ids=lambda s: "+".join(sorted(s)))
def test_partial_m_step_maximises_expected_complete_log_likelihood(em_vars):
    """The learned parameters are a stationary point of Q given the fixed ones, and Q rises."""
    rng = np.random.default_rng(2)
    system = random_system(rng, S=2, D=3)
    y = simulate(rng, system, B=3, T=6)
    mask = punch_holes(rng, y)
    mask[1, 4:] = False
    y0 = np.where(mask, y, 0.0)
    moments, _ = block_moments(system, y0, mask)

    new, _ = em_step(torch.tensor(y0), torch.tensor(mask), to_params(system), em_vars)

    new_values = {
        name: getattr(new, name).clone().requires_grad_(name in em_vars)
        if getattr(new, name) is not None else None
        for name in EM_VARIABLES
    }
    q_new = expected_complete_log_likelihood(moments, new_values)
    q_new.backward()
    for name in em_vars:
        grad = new_values[name].grad
        np.testing.assert_allclose(grad.numpy(), 0.0, atol=1e-8, err_msg=name)
    for name in set(EM_VARIABLES) - em_vars:  # the fixed ones are untouched
        old = system[name]
        if old is None:
            assert getattr(new, name) is None
        else:
            np.testing.assert_array_equal(getattr(new, name).numpy(), old)
    old_values = {k: None if v is None else torch.tensor(v, dtype=DTYPE) for k, v in system.items()}
    assert float(q_new.detach()) >= float(expected_complete_log_likelihood(moments, old_values))


def test_filter_methods_give_the_same_em_step():
    rng = np.random.default_rng(14)
    system = random_system(rng, S=3, D=2)
    y = simulate(rng, system, B=2, T=40)
    mask = torch.tensor(punch_holes(rng, y))
    y = torch.tensor(y)
    scan, ll_scan = em_step(y, mask, to_params(system), filter_method="scan")
    sequential, ll_seq = em_step(y, mask, to_params(system), filter_method="sequential")
    assert ll_scan == pytest.approx(ll_seq, rel=1e-10)
    for name in EM_VARIABLES:
        np.testing.assert_allclose(getattr(scan, name).numpy(), getattr(sequential, name).numpy(),
                                   rtol=1e-8, atol=1e-10, err_msg=name)


def test_noise_free_states_give_least_squares():
    """H = I, R ~ 0: the smoothed states are the data, and F, c, Q are OLS on them."""
    rng = np.random.default_rng(3)
    system = random_system(rng, S=2, D=2)
    system["observation_matrices"] = np.eye(2)
    system["observation_covariance"] = 1e-10 * np.eye(2)
    system["observation_offsets"] = np.zeros(2)
    y = simulate(rng, system, B=2, T=300)
    new, _ = em_step(torch.tensor(y), None, to_params(system),
                     {"transition_matrices", "transition_offsets", "transition_covariance"})

    x0 = y[:, :-1].reshape(-1, 2)
    x1 = y[:, 1:].reshape(-1, 2)
    design = np.hstack([x0, np.ones((len(x0), 1))])
    coef, *_ = np.linalg.lstsq(design, x1, rcond=None)
    residual = x1 - design @ coef
    np.testing.assert_allclose(new.transition_matrices.numpy(), coef[:2].T, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(new.transition_offsets.numpy(), coef[2], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(new.transition_covariance.numpy(), residual.T @ residual / len(x0),
                               rtol=1e-6, atol=1e-7)


def test_initial_state_update_is_mean_over_sequences():
    """With R ~ 0 and H = I the first state is seen exactly: mu0 = mean y_1, P0 = their spread."""
    rng = np.random.default_rng(4)
    system = random_system(rng, S=2, D=2, offsets=False)
    system["observation_matrices"] = np.eye(2)
    system["observation_covariance"] = 1e-10 * np.eye(2)
    y = simulate(rng, system, B=50, T=3)
    new, _ = em_step(torch.tensor(y), None, to_params(system),
                     ["initial_state_mean", "initial_state_covariance"])
    first = y[:, 0]
    np.testing.assert_allclose(new.initial_state_mean.numpy(), first.mean(0), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(new.initial_state_covariance.numpy(), np.cov(first.T, bias=True),
                               rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------
# The EM iteration
# --------------------------------------------------------------------------

MONOTONE_CASES = [
    ("all", "complete"),
    ("all", "holes"),
    (["transition_covariance", "observation_covariance", "initial_state_mean",
      "initial_state_covariance"], "holes"),
    (["transition_matrices"], "holes"),  # c fixed and non-zero
    (["observation_matrices", "observation_offsets"], "holes"),
    (["observation_covariance"], "holes"),  # full R, partly observed vectors
    (["transition_matrices", "transition_offsets", "transition_covariance"], "ragged"),
]


@pytest.mark.parametrize("em_vars,pattern", MONOTONE_CASES, ids=lambda v: str(v)[:40])
def test_em_log_likelihood_never_decreases(em_vars, pattern):
    rng = np.random.default_rng(5)
    truth = random_system(rng, S=2, D=3)
    y = simulate(rng, truth, B=3, T=60)
    mask = np.ones(y.shape, bool)
    if pattern == "holes":
        mask = punch_holes(rng, y)
    elif pattern == "ragged":
        mask[0, 40:] = False
        mask[2, 25:] = False
    start = random_system(np.random.default_rng(6), S=2, D=3)
    result = fit_em(torch.tensor(np.where(mask, y, np.nan)), torch.tensor(mask), to_params(start),
                    em_vars=em_vars, max_iter=15, tol=0.0)
    lls = np.array(result.log_likelihoods)
    assert result.n_iter == 15 and len(lls) == 16
    assert np.all(np.diff(lls) >= -1e-9 * np.abs(lls[:-1])), np.diff(lls)
    assert lls[-1] > lls[0]
    final = kalman_log_likelihood(torch.tensor(np.where(mask, y, 0.0)), torch.tensor(mask),
                                  result.params).sum()
    assert float(final) == pytest.approx(lls[-1], rel=1e-10)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    state_dim=st.integers(1, 3),
    obs_dim=st.integers(1, 3),
    em_vars=st.sets(st.sampled_from(EM_VARIABLES), min_size=1),
    missing_rate=st.sampled_from([0.0, 0.3, 0.7]),
)
def test_any_em_step_does_not_decrease_the_log_likelihood(seed, state_dim, obs_dim, em_vars, missing_rate):
    rng = np.random.default_rng(seed)
    truth = random_system(rng, S=state_dim, D=obs_dim, offsets=bool(rng.integers(2)))
    start = random_system(rng, S=state_dim, D=obs_dim, offsets=bool(rng.integers(2)))
    y = simulate(rng, truth, B=3, T=12)
    mask = rng.uniform(size=y.shape) >= missing_rate
    mask[:, :2, 0] = True  # every sequence has a transition to learn from...
    mask[:, 1:, :] &= (np.arange(1, 12) < rng.integers(2, 13, size=3)[:, None])[..., None]  # ...and is ragged
    y_t, mask_t = torch.tensor(np.where(mask, y, np.nan)), torch.tensor(mask)
    new, before = em_step(y_t, mask_t, to_params(start), em_vars)
    after = float(kalman_log_likelihood(torch.tensor(np.where(mask, y, 0.0)), mask_t, new).sum())
    assert after >= before - 1e-9 * abs(before)


def test_fit_em_recovers_held_out_likelihood():
    """Fitted on ~2000 steps of a known LDS, the held-out log-likelihood is within 1% of the truth's."""
    rng = np.random.default_rng(7)
    truth = random_system(rng, S=2, D=2)
    # many short sequences: the same amount of data, less sequential work per E-step
    train = simulate(rng, truth, B=20, T=100)
    test = simulate(rng, truth, B=20, T=100)
    start = dict(
        transition_matrices=0.5 * np.eye(2),
        observation_matrices=rng.normal(size=(2, 2)),
        transition_covariance=np.eye(2),
        observation_covariance=np.eye(2),
        initial_state_mean=np.zeros(2),
        initial_state_covariance=np.eye(2),
        transition_offsets=np.zeros(2),
        observation_offsets=train.mean(axis=(0, 1)),
    )
    result = fit_em(torch.tensor(train), None, to_params(start), max_iter=150, tol=1e-7)
    true_ll = float(kalman_log_likelihood(torch.tensor(test), None, to_params(truth)).sum())
    fitted_ll = float(kalman_log_likelihood(torch.tensor(test), None, result.params).sum())
    assert fitted_ll >= true_ll - 0.01 * abs(true_ll)
    # and it fits the training data at least as well as the truth does
    train_true = float(kalman_log_likelihood(torch.tensor(train), None, to_params(truth)).sum())
    assert result.log_likelihoods[-1] >= train_true


def test_fit_em_stops_on_tolerance_and_callback():
    rng = np.random.default_rng(8)
    truth = random_system(rng, S=1, D=1)
    y = torch.tensor(simulate(rng, truth, B=2, T=50))
    result = fit_em(y, None, to_params(truth), em_vars="observation_covariance", max_iter=500, tol=1e-4)
    assert result.converged and result.n_iter < 500
    rel = abs(result.log_likelihoods[-1] - result.log_likelihoods[-2]) / abs(result.log_likelihoods[-2])
    assert rel <= 1e-4
    seen = []
    stopped = fit_em(y, None, to_params(truth), max_iter=50, tol=0.0,
                     callback=lambda k, p, ll: seen.append(k) or k == 3)
    assert seen == [0, 1, 2, 3] and stopped.n_iter == 3 and not stopped.converged


def test_singular_covariance_update_is_lifted_to_positive_definite():
    """A constant, unexplained data column makes the raw R update singular; it is floored."""
    rng = np.random.default_rng(15)
    system = random_system(rng, S=1, D=2, offsets=False)
    system["observation_matrices"] = np.array([[1.0], [0.0]])
    system["observation_covariance"] = np.diag([0.5, 0.3])
    y = simulate(rng, system, B=2, T=30)
    y[..., 1] = 0.0  # the second column carries no noise at all
    new, _ = em_step(torch.tensor(y), None, to_params(system), ["observation_covariance"])
    R = new.observation_covariance
    assert torch.equal(R, R.T)
    eigenvalues = torch.linalg.eigvalsh(R)
    assert float(eigenvalues[0]) > 0 and float(eigenvalues[0]) <= 1e-11 * float(eigenvalues[-1])
    result = fit_em(torch.tensor(y), None, new, em_vars=["observation_covariance"], max_iter=3)
    assert np.all(np.isfinite(result.log_likelihoods))


def test_offsets_none_stay_none_unless_learned():
    rng = np.random.default_rng(9)
    system = random_system(rng, S=2, D=2, offsets=False)
    y = torch.tensor(simulate(rng, system, B=1, T=30))
    new, _ = em_step(y, None, to_params(system), "transition_matrices")
    assert new.transition_offsets is None and new.observation_offsets is None
    new, _ = em_step(y, None, to_params(system), ["observation_offsets"])
    assert new.observation_offsets.shape == (2,) and new.transition_offsets is None


def test_inputs_are_not_modified():
    rng = np.random.default_rng(10)
    system = random_system(rng, S=2, D=2)
    params = to_params(system)
    copies = {k: v.clone() for k, v in params._asdict().items() if isinstance(v, torch.Tensor)}
    y = torch.tensor(simulate(rng, system, B=2, T=20))
    y[0, 3, 1] = float("nan")
    y_copy = y.clone()
    fit_em(y, None, params, max_iter=2)
    fit_mle(y, None, params, learn=["observation_covariance"], max_iter=2)
    assert torch.equal(torch.isnan(y), torch.isnan(y_copy))
    assert torch.equal(torch.nan_to_num(y), torch.nan_to_num(y_copy))
    for name, value in copies.items():
        assert torch.equal(getattr(params, name), value), name


def test_bad_input_is_rejected_with_named_argument():
    rng = np.random.default_rng(11)
    params = to_params(random_system(rng, S=2, D=2))
    y = torch.zeros(1, 5, 2, dtype=DTYPE)
    with pytest.raises(ValueError, match="em_vars"):
        em_step(y, None, params, ["transition_matrix"])
    with pytest.raises(TypeError, match="em_vars"):
        em_step(y, None, params, 3)
    with pytest.raises(ValueError, match="learn"):
        fit_mle(y, None, params, learn=["bogus"])
    with pytest.raises(ValueError, match="`y`"):
        em_step(torch.zeros(1, 5, 3, dtype=DTYPE), None, params)
    with pytest.raises(ValueError, match="`mask`"):
        em_step(y, torch.ones(1, 4, 2, dtype=torch.bool), params)
    with pytest.raises(ValueError, match="`mask`"):
        em_step(y, torch.zeros(1, 5, 2, dtype=torch.bool), params)
    with pytest.raises(ValueError, match="time-invariant"):
        em_step(y, None, params._replace(
            transition_matrices=params.transition_matrices.expand(5, 2, 2),
            time_varying=frozenset({"transition_matrices"})))
    with pytest.raises(ValueError, match="filter_method"):
        fit_em(y, None, params, filter_method="fast")
    with pytest.raises(ValueError, match="max_iter"):
        fit_em(y, None, params, max_iter=-1)
    with pytest.raises(ValueError, match="two steps"):
        em_step(torch.zeros(3, 1, 2, dtype=DTYPE), None, params, "transition_matrices")


# --------------------------------------------------------------------------
# Direct maximum likelihood
# --------------------------------------------------------------------------


def test_fit_mle_reaches_at_least_the_em_likelihood():
    # A well-conditioned system with H known, so that F, Q, R are identifiable
    # and the maximiser is interior (small samples of random systems often put
    # it on the boundary, a singular Q or R, where the gradient need not vanish).
    truth = dict(
        transition_matrices=np.array([[0.8, 0.2], [-0.1, 0.7]]),
        observation_matrices=np.array([[1.0, 0.5], [0.0, 1.0]]),
        transition_covariance=np.array([[1.0, 0.3], [0.3, 0.8]]),
        observation_covariance=np.array([[0.5, 0.1], [0.1, 0.4]]),
        initial_state_mean=np.zeros(2),
        initial_state_covariance=2.0 * np.eye(2),
        transition_offsets=None,
        observation_offsets=None,
    )
    rng = np.random.default_rng(13)
    y = simulate(rng, truth, B=6, T=40)
    mask = punch_holes(rng, y)
    y_t, mask_t = torch.tensor(np.where(mask, y, np.nan)), torch.tensor(mask)
    start = to_params(dict(truth, transition_matrices=0.5 * np.eye(2),
                           transition_covariance=0.5 * np.eye(2), observation_covariance=np.eye(2)))
    learn = ["transition_matrices", "transition_covariance", "observation_covariance"]
    em = fit_em(y_t, mask_t, start, em_vars=learn, max_iter=100, tol=1e-10)
    mle = fit_mle(y_t, mask_t, start, learn=learn, max_iter=200, tol=1e-12)
    ll_em, ll_mle = em.log_likelihoods[-1], mle.log_likelihoods[-1]
    assert ll_mle >= ll_em - 1e-8 * abs(ll_em)
    assert all(b >= a - 1e-9 * abs(a) for a, b in zip(mle.log_likelihoods, mle.log_likelihoods[1:]))
    for name in learn:  # both estimators find the same maximiser
        np.testing.assert_allclose(getattr(mle.params, name).numpy(), getattr(em.params, name).numpy(),
                                   atol=2e-2, err_msg=name)
    # the MLE is a stationary point of the exact log-likelihood (for the
    # covariances: in every symmetric direction)
    y0 = torch.tensor(np.where(mask, y, 0.0))
    fitted = {name: getattr(mle.params, name).clone().requires_grad_(True) for name in learn}
    ll = kalman_log_likelihood(y0, mask_t, mle.params._replace(**fitted)).sum()
    ll.backward()
    assert float(ll.detach()) == pytest.approx(ll_mle, rel=1e-10)
    for name in learn:
        grad = fitted[name].grad
        np.testing.assert_allclose((0.5 * (grad + grad.T)).numpy(), 0.0, atol=1e-3, err_msg=name)
    for name in set(EM_VARIABLES) - set(learn):
        value, fitted_value = getattr(start, name), getattr(mle.params, name)
        assert fitted_value is None if value is None else torch.equal(fitted_value, value)
