"""tsgen.SRNN (Fraccaro et al. 2016) on the protocol: the forecast's GRU steps equal the context's deterministic
layer, SMC against the IWAE bound, causal per-step scores for both guides, bounds ordered, training by
ELBO/IWAE/FIVO, forecasts against the naive forecast, FFBSi smoothing, missing values, save/load, bad arguments."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from test_deep_robustness import _assert_earlier_steps_unchanged, _unscored_steps

import tsgen
from tsgen.inference.smc.filter import particle_filter
from tsgen.models.srnn import SRNNModule
from tsgen.protocol import map_state

TINY = dict(latent_dim=2, hidden_dim=8, feature_dim=8, max_epochs=2, batch_size=8, window_length=16,
            progress=False, random_state=0)


def seasonal(n=120, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = 10 + 2 * np.sin(2 * np.pi * t / 12) + 0.3 * rng.normal(size=n)
    return pd.Series(values, index=pd.period_range("2010-01", periods=n, freq="M"))


@pytest.fixture(scope="module")
def trained():
    """A small SRNN (smoothing guide) trained by the ELBO on the first 108 months of a noisy sine (period 12)."""
    y = seasonal()
    model = tsgen.SRNN(latent_dim=2, hidden_dim=16, feature_dim=16, learning_rate=3e-3, max_epochs=30, batch_size=8,
                       window_length=24, progress=False, random_state=1)
    return model.fit(y[:-12]), y


def test_forecasts_of_a_trained_srnn_beat_the_naive_forecast(trained):
    model, y = trained
    test = y[-12:].to_numpy()
    frame = model.predict(12)
    assert frame.index.equals(y.index[-12:])
    mae = np.abs(frame["mean"].to_numpy() - test).mean()
    naive = np.abs(test - y.iloc[-13]).mean()
    assert mae < 0.75 * naive, (mae, naive)
    inside = (frame["q0.05"].to_numpy() <= test) & (test <= frame["q0.95"].to_numpy())
    assert inside.mean() >= 0.5


@pytest.mark.parametrize("scaling", [True, False])
def test_transitions_without_the_context_run_the_same_deterministic_layer(scaling):
    """Forecasting runs the GRU on the drawn x_(t-1) from the state's d; on the data it must give the context's d_t
    (and the same prior), so filtering and forecasting are one model."""
    torch.manual_seed(0)
    module = SRNNModule(2, 3, 5, 6, scaling=scaling)
    values = torch.randn(3, 9, 2) + 4.0
    mask = torch.rand(3, 9, 2) > 0.2
    values = torch.where(mask, values, torch.full_like(values, float("nan")))
    with torch.no_grad():
        context = module.prepare(torch.nan_to_num(values), mask)
        given = module.init_state(context, (4,))
        alone = given
        if scaling:  # the forecast state's own scale, from the first step on
            window, scale = module.scaler.at(torch.nan_to_num(values), mask, torch.zeros(3, dtype=torch.long))
            window = map_state(window, lambda t: t.expand(4, *t.shape))
            alone = type(given)(given.d, given.z, scale.expand(4, 3, 2), window)
        z = torch.randn(9, 4, 3, 3)
        for t in range(9):
            x_prev = None if t == 0 else values[:, t - 1].expand(4, 3, 2)
            given, prior_given = module.transition(given, x_prev, context.at(t))
            alone, prior_alone = module.transition(alone, x_prev, {})
            torch.testing.assert_close(alone.d, given.d, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(alone.d[0], context.steps["d"][:, t], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(prior_alone.mean, prior_given.mean, rtol=1e-5, atol=1e-5)
            given, alone = module.commit(given, z[t], {}), module.commit(alone, z[t], {})


def test_smc_log_likelihood_is_within_monte_carlo_error_of_the_iwae_bound(trained):
    model, y = trained
    module = model.module_
    values = torch.tensor(y[:20].to_numpy(), dtype=torch.float32)[None, :, None]
    mask = torch.ones_like(values, dtype=torch.bool)
    torch.manual_seed(0)
    with torch.no_grad():
        smc = {proposal: torch.stack([particle_filter(module, values, mask, n_particles=1000,
                                                      proposal=proposal).log_evidence[0]
                                      for _ in range(15)]).double()
               for proposal in ("guided", "bootstrap")}
        iwae = {K: torch.stack([module.log_likelihood(values, mask, "iwae", K, causal=False).sum()
                                for _ in range(10)]).double() for K in (100, 1000)}
        elbo = torch.stack([module.log_likelihood(values, mask, "elbo", 100, causal=False).sum()
                            for _ in range(10)]).double()
    # the SMC estimate is the log of an unbiased estimate (low by about var/2), IWAE_K is low by O(1/K): with
    # K = 1000 that gap is below the gap between K = 100 and K = 1000, which the tolerance includes
    gap = (iwae[1000].mean() - iwae[100].mean()).abs()
    for proposal, runs in smc.items():
        se = math.sqrt(runs.var() / len(runs) + iwae[1000].var() / 10)
        assert (runs.mean() + runs.var() / 2 - iwae[1000].mean()).abs() <= 4 * se + gap + 1e-3, (proposal, runs, iwae)
    # ELBO <= IWAE_100 <= IWAE_1000 on average (bounds ordered)
    se_elbo = math.sqrt(elbo.var() / 10 + iwae[100].var() / 10)
    assert elbo.mean() <= iwae[100].mean() + 4 * se_elbo
    assert elbo.mean() < iwae[1000].mean()


@pytest.mark.parametrize("inference", ["smoothing", "filtering"])
@pytest.mark.parametrize("method", ["smc", "iwae", "elbo"])
def test_per_step_values_read_only_the_past(trained, inference, method):
    model, y = trained
    if inference == "filtering":
        model = tsgen.SRNN(**{**TINY, "inference": "filtering"}).fit(y[:60])
    y = y[:30].copy()
    y.iloc[7] = np.nan  # a missing step scores NaN and moves by the prior
    options = {"n_particles": 200} if method == "smc" else {"method": method, "n_samples": 16}
    _assert_earlier_steps_unchanged(model, y, **options)
    per_step = model.log_likelihood(y, per_step=True, **options)
    assert np.isnan(per_step.iloc[7]) and per_step.isna().equals(_unscored_steps(model, y))


def test_the_smoothing_guide_reads_ahead_and_the_filtering_guide_does_not():
    values = torch.randn(1, 8, 1)
    later = values.clone()
    later[0, -1] += 5.0
    mask = torch.ones_like(values, dtype=torch.bool)
    for inference, reads_ahead in (("smoothing", True), ("filtering", False)):
        module = SRNNModule(1, 2, 4, 4, inference=inference)
        with torch.no_grad():
            a, b = (module.prepare(v, mask).steps["guide"][:, 0] for v in (values, later))
        assert (not torch.equal(a, b)) == reads_ahead, inference
    assert SRNNModule(1, 2, 4, 4).causal_proposal == "bootstrap"
    assert SRNNModule(1, 2, 4, 4, inference="filtering").causal_proposal == "guided"


@pytest.mark.parametrize("objective", ["elbo", "iwae", "fivo"])
def test_training_lowers_the_loss_on_a_sine(objective):
    y = seasonal(60)
    model = tsgen.SRNN(**{**TINY, "max_epochs": 6, "learning_rate": 5e-3, "objective": objective,
                          "n_particles": 4}).fit(y)
    losses = [h["train_loss"] for h in model.training_history_]
    assert losses[-1] < losses[0], losses


def test_smooth_by_ffbsi_and_filter_frames(trained):
    model, y = trained
    assert model.module_.markov_latent
    smoothed = model.smooth(y[:30], n_particles=100, n_trajectories=50)
    filtered = model.filter(y[:30], n_particles=100)
    for frame in (smoothed, filtered):
        assert frame.index.equals(y.index[:30])
        assert list(frame.columns.get_level_values(0).unique()) == ["z0", "z1"]
        assert np.isfinite(frame.to_numpy()).all()
        assert (frame[("z0", "q0.05")] <= frame[("z0", "q0.95")]).all()
    # both end at the same law p(z_T | y): their last means agree within the particles' spread
    spread = (smoothed[("z0", "q0.95")] - smoothed[("z0", "q0.05")]).iloc[-1]
    assert abs(smoothed[("z0", "mean")].iloc[-1] - filtered[("z0", "mean")].iloc[-1]) < 0.5 * spread
    pd.testing.assert_frame_equal(smoothed, model.smooth(y[:30], n_particles=100, n_trajectories=50))


def test_missing_values_in_training_data_and_ragged_histories():
    y = seasonal(60)
    y.iloc[[0, 10, 11, 30, 59]] = np.nan
    model = tsgen.SRNN(**TINY).fit(y)
    assert np.isfinite(model.training_history_[-1]["train_loss"])
    frame = model.predict(4)
    assert np.isfinite(frame.to_numpy()).all()
    per_step = model.log_likelihood(y, per_step=True, n_particles=100)
    assert per_step.isna().equals(_unscored_steps(model, y)) and np.isfinite(per_step.dropna()).all()
    # series of different lengths: each forecast starts after its own last step
    draws = model.sample(3, n_samples=5, y=[seasonal(30, seed=1), seasonal(50, seed=2)])
    assert [d.shape for d in draws] == [(5, 3, 1), (5, 3, 1)]
    # a multivariate series with one component missing at a step: its observed part is weighted
    frame = pd.DataFrame({"a": seasonal(40).to_numpy(), "b": seasonal(40, seed=3).to_numpy()})
    frame.iloc[5, 1] = np.nan
    two = tsgen.SRNN(**TINY).fit(frame)
    assert np.isfinite(two.log_likelihood(frame, n_particles=50))
    assert np.isfinite(two.log_likelihood(frame, method="iwae", n_samples=4))


def test_nothing_observed_moves_by_the_prior_with_no_likelihood_or_kl():
    module = SRNNModule(2, 2, 6, 6)
    values = torch.randn(2, 5, 2)
    mask = torch.ones_like(values, dtype=torch.bool)
    mask[0, 2] = False
    mask[1, 3, 0] = False
    with torch.no_grad():
        log_lik, log_ratio, kl, z = module.rollout(values, mask, n_samples=3)
    assert log_lik.shape == (3, 2, 5) and z.shape == (3, 2, 5, 2)
    for term in (log_lik, log_ratio, kl):
        assert torch.all(term[:, 0, 2] == 0)
    assert torch.all(kl[:, 1, 3] > 0) and torch.all(log_lik[:, 1, 3] != 0)


def test_save_load_round_trip_gives_the_same_log_likelihood_and_forecasts(tmp_path):
    y = seasonal(48)
    model = tsgen.SRNN(**{**TINY, "inference": "filtering"}).fit(y)
    model.save(tmp_path / "srnn")
    loaded = tsgen.load(tmp_path / "srnn")
    assert type(loaded) is tsgen.SRNN
    assert loaded.log_likelihood(y, n_particles=100) == model.log_likelihood(y, n_particles=100)
    assert loaded.log_likelihood(y, method="iwae", n_samples=8) == model.log_likelihood(y, method="iwae", n_samples=8)
    np.testing.assert_array_equal(loaded.sample(3, n_samples=4), model.sample(3, n_samples=4))


@pytest.mark.parametrize("argument, value", [("latent_dim", 0), ("hidden_dim", -1), ("feature_dim", 2.5),
                                             ("inference", "mean-field"), ("scaling", "yes"), ("objective", "vi"),
                                             ("n_particles", 0), ("emission", "gamma"), ("z_forcing", -1.0)])
def test_bad_constructor_arguments_are_named(argument, value):
    with pytest.raises(ValueError, match=argument):
        tsgen.SRNN(**{**TINY, argument: value}).fit(seasonal(30))


def test_bad_scoring_arguments_are_named():
    y = seasonal(30)
    model = tsgen.SRNN(**{**TINY, "max_epochs": 1}).fit(y)
    for options, name in (({"method": "exact"}, "method"), ({"n_samples": 0}, "n_samples"),
                          ({"n_particles": 1}, "n_particles"), ({"proposal": "prior"}, "proposal"),
                          ({"method": "iwae", "n_particles": 10}, "n_particles"), ({"batch_size": 0}, "batch_size")):
        with pytest.raises(ValueError, match=name):
            model.log_likelihood(y, **options)
