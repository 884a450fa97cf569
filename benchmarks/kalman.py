"""Exact Kalman log-likelihood through the public estimator API: tsgen versus statsmodels.

Cases (state dim 4, obs dim 1, time-invariant, fully observed, float64), each
on pandas input with a DatetimeIndex:

  (a)  one pd.Series, T=5000
  (b1) a list of 1000 pd.Series of T=500 sharing one parameter set
  (b2) a list of 1000 pd.Series of T=500, each with its own parameters
       (``from_params`` with a leading dimension of 1000 on every matrix)

tsgen: ``LinearGaussianSSM.from_params(...).log_likelihood(y)`` (total, and
``per_step=True``), the path users call, pandas conversion included.
statsmodels: its Cython filter (``KalmanFilter.loglike``) once per series
with fixed matrices, models built outside the timed region (the fastest
statsmodels route; building the models is not timed), timed in chunks of 50
series whose best times are summed. The internal kernel
``kalman_log_likelihood`` on a ready tensor is printed beside for reference.

Every case runs in a fresh process (``--case``); within it, the first call
(``first``: imports are done, nothing else is warm) and the best of several
repeats after it are reported. Run on the cores the machine has:

    python benchmarks/kalman.py [--quick]

OpenMP workers sleep instead of spin between parallel regions
(``OMP_WAIT_POLICY=PASSIVE`` unless set): on a shared machine spinning workers
steal the CPU from the main thread, which measures the load, not the code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP runtime

import numpy as np

STATE_DIM, OBS_DIM = 4, 1
#: series per timed chunk of the statsmodels loop (run_case)
SM_CHUNK = 50
CASES = {
    "a": ("(a)  1 x T=5000", 1, 5000, False),
    "b1": ("(b1) 1000 x T=500, shared params", 1000, 500, False),
    "b2": ("(b2) 1000 x T=500, own params", 1000, 500, True),
}


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


def make_case(key: str):
    """Systems (one per series, or one shared) and the pandas series of a case."""
    import pandas as pd

    _, num_series, num_times, own = CASES[key]
    rng = np.random.default_rng(0)
    systems = [random_system(rng) for _ in range(num_series if own else 1)]
    index = pd.date_range("2000-01-01", periods=num_times, freq="h" if num_times > 1000 else "D")
    values = [simulate(systems[i % len(systems)], num_times, rng)[:, 0] for i in range(num_series)]
    series = [pd.Series(v, index=index.copy(), name="y") for v in values]
    return systems, (series[0] if num_series == 1 else series)


def estimator_params(systems) -> dict[str, np.ndarray]:
    names = {
        "F": "transition_matrices", "H": "observation_matrices", "Q": "transition_covariance",
        "R": "observation_covariance", "m1": "initial_state_mean", "P1": "initial_state_covariance",
    }
    if len(systems) == 1:
        return {names[k]: systems[0][k] for k in names}
    return {names[k]: np.stack([s[k] for s in systems]) for k in names}


def statsmodels_filter(system: dict[str, np.ndarray], y: np.ndarray):
    from statsmodels.tsa.statespace.mlemodel import MLEModel

    model = MLEModel(y, k_states=STATE_DIM, k_posdef=STATE_DIM)
    model["design"] = system["H"]
    model["obs_cov"] = system["R"]
    model["transition"] = system["F"]
    model["selection"] = np.eye(STATE_DIM)
    model["state_cov"] = system["Q"]
    model.initialize_known(system["m1"], system["P1"])
    model.loglikelihood_burn = 0
    return model.ssm  # the Cython-backed KalmanFilter


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Time of the first call, best time of ``repeats`` further calls, and the result."""
    start = time.perf_counter()
    result = fn()
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return first, best, result


def run_case(key: str, repeats: int) -> dict:
    """One case, in this (fresh) process: tsgen's public API, its kernel, statsmodels."""
    import torch

    import tsgen
    from tsgen.inference.kalman import KalmanParams, kalman_log_likelihood

    systems, y = make_case(key)
    params = estimator_params(systems)
    series = y if isinstance(y, list) else [y]
    out = {}
    with torch.no_grad():
        model = tsgen.LinearGaussianSSM.from_params(**params)
        out["first"], out["tsgen"], total = timed(lambda: model.log_likelihood(y), repeats)
        _, out["tsgen_per_step"], _ = timed(lambda: model.log_likelihood(y, per_step=True), repeats)
        tensors = KalmanParams(*(torch.tensor(params[n]) for n in (
            "transition_matrices", "observation_matrices", "transition_covariance",
            "observation_covariance", "initial_state_mean", "initial_state_covariance",
        )))
        values = torch.tensor(np.stack([s.to_numpy() for s in series]))[..., None]
        _, out["kernel"], _ = timed(lambda: kalman_log_likelihood(values, None, tensors), repeats)
    filters = [statsmodels_filter(systems[i % len(systems)], s.to_numpy()) for i, s in enumerate(series)]
    # statsmodels' loop timed in chunks of series (each chunk's best of the repeats, summed): a
    # 250 ms loop is seldom left alone on a shared machine while a 10 ms call often is, which
    # would flatter the ratio; chunks of about tsgen's duration are preempted as rarely.
    sm_llf = np.array([kf.loglike() for kf in filters])
    out["statsmodels"] = sum(
        timed(lambda part=filters[lo : lo + SM_CHUNK]: [kf.loglike() for kf in part], repeats)[1]
        for lo in range(0, len(filters), SM_CHUNK)
    )
    out["rel_diff"] = float(abs(total - sm_llf.sum()) / abs(sm_llf.sum()))
    return out


def main() -> None:
    quick = "--quick" in sys.argv
    repeats = 3 if quick else 7
    if "--case" in sys.argv:
        print(json.dumps(run_case(sys.argv[sys.argv.index("--case") + 1], repeats)))
        return
    import torch

    rows = []
    for key, (label, *_rest) in CASES.items():
        argv = [sys.executable, __file__, "--case", key] + (["--quick"] if quick else [])
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        rows.append((label, json.loads(done.stdout.strip().splitlines()[-1])))
    print(
        f"torch {torch.__version__}, {os.cpu_count()} cores, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY')}; each case in a fresh process, best of {repeats} after a first call"
    )
    print(
        f"{'case':36s} {'statsmodels':>12s} {'tsgen API':>10s} {'ratio':>7s} {'speed-up':>9s}"
        f" {'per_step':>9s} {'first':>9s} {'kernel':>9s} {'rel diff':>9s}"
    )
    for label, r in rows:
        print(
            f"{label:36s} {r['statsmodels'] * 1e3:10.2f}ms {r['tsgen'] * 1e3:8.2f}ms"
            f" {r['tsgen'] / r['statsmodels']:6.2f}x {r['statsmodels'] / r['tsgen']:8.1f}x"
            f" {r['tsgen_per_step'] * 1e3:7.2f}ms {r['first'] * 1e3:7.2f}ms"
            f" {r['kernel'] * 1e3:7.2f}ms {r['rel_diff']:9.1e}"
        )
    print("ratio = tsgen time / statsmodels time (<= 1 means tsgen is as fast or faster); "
          "speed-up = statsmodels / tsgen.")


if __name__ == "__main__":
    main()
