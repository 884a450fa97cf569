"""The forecasting path whose interval width issue 11's calibration goal depends on.

Checked while diagnosing the too-narrow 80% intervals of the default VRNN,
STORN and SRNN on the airline series (24-month hold-out): the differencing
inversion adds each path's own sampled differences cumulatively, and the
future steps of a latent model's forecast draw their latent from the prior
(the inference network reads ``x_t``, which the future does not have).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

import tsgen
from tsgen.components.scaling import LagDifference


def test_inversion_adds_each_paths_own_differences_cumulatively():
    generator = torch.Generator().manual_seed(0)
    lag, horizon = 3, 8
    values = torch.randn(2, 10, 1, generator=generator, dtype=torch.float64).cumsum(1)
    mask = torch.ones_like(values, dtype=torch.bool)
    lengths = torch.tensor([10, 7])
    differencing = LagDifference.fit(values, mask, lag)
    draws = torch.randn(2, 5, horizon, 1, generator=generator, dtype=torch.float64)
    paths = differencing.invert(draws, values, mask, lengths)
    scale = differencing.scale
    for row, length in enumerate(lengths.tolist()):
        full = torch.cat([values[row, :length].expand(5, length, 1), paths[row]], dim=1)  # (S, L + H, 1)
        # x_{n+h} = x_{n+h-p} + c z_{n+h}, the lagged value from the history or from the same path
        torch.testing.assert_close(full[:, length:] - full[:, length - lag:length - lag + horizon],
                                   scale * draws[row])


def test_future_latents_come_from_the_prior_not_the_guide():
    index = pd.date_range("2000-01-01", periods=120, freq="MS")
    y = pd.Series(np.random.default_rng(1).normal(size=120).cumsum() + 50, index=index)
    model = tsgen.VRNN(latent_dim=2, hidden_dim=8, feature_dim=8, max_epochs=1, random_state=0,
                       progress=False).fit(y)
    module = model.module_
    calls = []
    guide = module.proposal

    def counted(*args, **kwargs):
        calls.append(1)
        return guide(*args, **kwargs)

    module.proposal = counted
    try:
        counts = []
        for horizon in (1, 12):
            calls.clear()
            model.sample(horizon, n_samples=3)
            counts.append(len(calls))
    finally:
        del module.proposal
    # the guide conditions on the history (the particle filter) and nothing more: 11 more future steps, no calls
    assert counts[0] > 0 and counts[0] == counts[1]
