"""Exact Kalman log-likelihood: tsgen versus statsmodels.

Cases (state dim 4, obs dim 1, time-invariant, fully observed, float64):

  (a)  one series, T=5000
  (b1) 1000 series of T=500 sharing one parameter set
  (b2) 1000 series of T=500, each with its own parameters

statsmodels runs its Cython filter (``KalmanFilter.loglike``) once per
series with fixed matrices (models are built outside the timed region).
tsgen calls ``kalman_log_likelihood(method="auto")`` once on the batch.
Each figure is the best of several repeats after a warm-up.

Run: ``python benchmarks/kalman.py`` (uses all cores; add ``--quick`` for a
shorter run).

All cores are used, but OpenMP worker threads are told to sleep instead of
spin between parallel regions (``OMP_WAIT_POLICY=PASSIVE``, unless already
set): on a shared, oversubscribed machine spinning workers steal the CPU
from the main thread and every small op then costs a scheduler time slice
(~10 ms), which measures the machine's load, not the code.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP runtime

import numpy as np
import torch
from statsmodels.tsa.statespace.mlemodel import MLEModel

from tsgen.inference.kalman import KalmanParams, kalman_log_likelihood

STATE_DIM, OBS_DIM = 4, 1


def random_system(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A random stable system (spectral radius 0.95) with SPD noise covariances."""
    F = rng.normal(size=(STATE_DIM, STATE_DIM))
    F *= 0.95 / np.max(np.abs(np.linalg.eigvals(F)))
    B = rng.normal(size=(STATE_DIM, STATE_DIM))
    return {
        "F": F,
        "H": rng.normal(size=(OBS_DIM, STATE_DIM)),
        "Q": 0.1 * B @ B.T + 0.01 * np.eye(STATE_DIM),
        "R": np.eye(OBS_DIM) * 0.5,
        "m1": np.zeros(STATE_DIM),
        "P1": np.eye(STATE_DIM) * 10.0,
    }


def simulate(system: dict[str, np.ndarray], num_times: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.multivariate_normal(system["m1"], system["P1"])
    chol_q, chol_r = np.linalg.cholesky(system["Q"]), np.linalg.cholesky(system["R"])
    ys = np.empty((num_times, OBS_DIM))
    for t in range(num_times):
        ys[t] = system["H"] @ x + chol_r @ rng.normal(size=OBS_DIM)
        x = system["F"] @ x + chol_q @ rng.normal(size=STATE_DIM)
    return ys


def statsmodels_filter(system: dict[str, np.ndarray], y: np.ndarray):
    model = MLEModel(y, k_states=STATE_DIM, k_posdef=STATE_DIM)
    model["design"] = system["H"]
    model["obs_cov"] = system["R"]
    model["transition"] = system["F"]
    model["selection"] = np.eye(STATE_DIM)
    model["state_cov"] = system["Q"]
    model.initialize_known(system["m1"], system["P1"])
    model.loglikelihood_burn = 0
    return model.ssm  # the Cython-backed KalmanFilter


def to_params(systems: list[dict[str, np.ndarray]]) -> KalmanParams:
    stack = (lambda k: torch.tensor(systems[0][k])) if len(systems) == 1 else (
        lambda k: torch.tensor(np.stack([s[k] for s in systems]))
    )
    return KalmanParams(stack("F"), stack("H"), stack("Q"), stack("R"), stack("m1"), stack("P1"))


def best_time(fn, repeats: int) -> tuple[float, object]:
    result = fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def run_case(name: str, systems, ys: np.ndarray, repeats: int) -> tuple[str, float, float, float]:
    filters = [statsmodels_filter(systems[i % len(systems)], ys[i]) for i in range(len(ys))]
    sm_time, sm_llf = best_time(lambda: np.array([kf.loglike() for kf in filters]), repeats)
    params = to_params(systems)
    y_t = torch.tensor(ys)
    ts_time, ts_llf = best_time(lambda: kalman_log_likelihood(y_t, None, params), repeats)
    error = float(np.max(np.abs(ts_llf.numpy() - sm_llf) / np.abs(sm_llf)))
    return name, sm_time, ts_time, error


def main() -> None:
    quick = "--quick" in sys.argv
    repeats = 3 if quick else 7
    rng = np.random.default_rng(0)
    system = random_system(rng)
    rows = []
    with torch.no_grad():
        y_a = simulate(system, 5000, rng)[None]
        rows.append(run_case("(a)  1 x T=5000", [system], y_a, repeats))
        num_series = 1000
        y_b1 = np.stack([simulate(system, 500, rng) for _ in range(num_series)])
        rows.append(run_case("(b1) 1000 x T=500, shared params", [system], y_b1, repeats))
        systems = [random_system(rng) for _ in range(num_series)]
        y_b2 = np.stack([simulate(s, 500, rng) for s in systems])
        rows.append(run_case("(b2) 1000 x T=500, own params", systems, y_b2, repeats))
    print(
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, best of {repeats} after a warm-up"
    )
    print(f"{'case':36s} {'statsmodels':>12s} {'tsgen':>10s} {'speed-up':>9s} {'max rel diff':>13s}")
    for name, sm_time, ts_time, error in rows:
        print(f"{name:36s} {sm_time * 1e3:10.2f}ms {ts_time * 1e3:8.2f}ms {sm_time / ts_time:8.1f}x {error:13.1e}")


if __name__ == "__main__":
    main()
