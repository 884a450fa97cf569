"""LinearGaussianSSM(device=...): the particle filter and smoother of method="smc" run where `device` says
(the tensors that reach the filter are checked on the CPU, so nothing is skipped without a GPU), give the same
numbers as the default on the CPU, come back as CPU results, and a bad device is refused naming `device`."""
import numpy as np
import pandas as pd
import pytest
import torch

import tsgen.inference.smc.filter as smc_filter
from test_lds import PARAMS
from tsgen import LinearGaussianSSM

def series(n=40):
    rng = np.random.default_rng(3)
    state, draws = np.zeros(2), []
    for _ in range(n):
        state = np.array([[0.8, 0.1], [0.0, 0.6]]) @ state + rng.normal(scale=0.5, size=2)
        draws.append(state @ [1.0, 0.5] + rng.normal(scale=0.6))
    return pd.Series(draws, index=pd.date_range("2021-01-01", periods=n, freq="D"))


def test_the_smc_paths_run_on_the_given_device_and_return_cpu_results(monkeypatch):
    seen = []
    original = smc_filter.particle_filter

    def recording(model, values, mask, *args, **kwargs):
        seen.append((values.device, mask.device, model.F.device, values.dtype))
        return original(model, values, mask, *args, **kwargs)

    monkeypatch.setattr(smc_filter, "particle_filter", recording)
    y = series()
    default = LinearGaussianSSM.from_params(**PARAMS, random_state=0)
    for device in ("cpu", torch.device("cpu")):
        model = LinearGaussianSSM.from_params(**PARAMS, random_state=0, device=device)
        assert model.log_likelihood(y, method="smc", n_particles=200) == default.log_likelihood(
            y, method="smc", n_particles=200)
        per_step = model.log_likelihood(y, method="smc", per_step=True, n_particles=200)
        assert isinstance(per_step, pd.Series) and per_step.notna().all()
        filtered, smoothed = model.filter(y, method="smc", n_particles=200), model.smooth(
            y, method="smc", n_particles=200, n_trajectories=20)
        pd.testing.assert_frame_equal(filtered.means, default.filter(y, method="smc", n_particles=200).means)
        assert np.isfinite(smoothed.means.to_numpy()).all()
    assert len(seen) == 2 * 6  # every call of both loops went through the filter
    assert all(device == torch.device("cpu") for record in seen for device in record[:3])
    assert all(record[3] == torch.float64 for record in seen)


# every device this machine has: the CPU always (so CI runs it), CUDA where a GPU session has one
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_the_smc_log_likelihood_on_the_device_agrees_with_the_kalman_filter(device):
    y = series(200)
    model = LinearGaussianSSM.from_params(**PARAMS, random_state=0, device=device)
    exact = model.log_likelihood(y)
    runs = [LinearGaussianSSM.from_params(**PARAMS, random_state=seed, device=device).log_likelihood(
        y, method="smc", n_particles=2000) for seed in range(8)]
    se = np.std(runs, ddof=1) / np.sqrt(len(runs))
    assert abs(np.mean(runs) - exact) < 4 * se + 0.05, (runs, exact)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", 3])
def test_a_bad_device_is_refused_naming_it(device):
    y = series()
    with pytest.raises((ValueError, TypeError), match="device"):
        LinearGaussianSSM(n_dim_state=1, max_iter=2, device=device).fit(y)
    with pytest.raises((ValueError, TypeError), match="device"):
        LinearGaussianSSM.from_params(**PARAMS, device=device).log_likelihood(y, method="smc", n_particles=10)
