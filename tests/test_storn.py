"""tsgen.STORN (Bayer & Osendorfer 2014) on the protocol: SMC against the IWAE bound, causal per-step scores for
both recognition models, bounds ordered, training by ELBO/IWAE/FIVO, forecasts against the naive forecast, missing
values, save/load, bad arguments."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from test_deep_robustness import _assert_earlier_steps_unchanged, _unscored_steps

import tsgen
from tsgen.inference.smc.filter import particle_filter
from tsgen.models.storn import STORNModule
from tsgen.training import SequenceBatch

TINY = dict(latent_dim=2, hidden_dim=8, feature_dim=8, max_epochs=2, batch_size=8, window_length=16,
            progress=False, random_state=0)


def seasonal(n=120, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = 10 + 2 * np.sin(2 * np.pi * t / 12) + 0.3 * rng.normal(size=n)
    return pd.Series(values, index=pd.period_range("2010-01", periods=n, freq="M"))


@pytest.fixture(scope="module")
def trained():
    """A small STORN trained by the ELBO on the first 108 months of a noisy sine (period 12)."""
    y = seasonal()
    model = tsgen.STORN(latent_dim=2, hidden_dim=16, feature_dim=16, learning_rate=3e-3, max_epochs=30,
                        batch_size=8, window_length=24, progress=False, random_state=1)
    return model.fit(y[:-12]), y


def test_forecasts_of_a_trained_storn_beat_the_naive_forecast(trained):
    model, y = trained
    test = y[-12:].to_numpy()
    frame = model.predict(12)
    assert frame.index.equals(y.index[-12:])
    mae = np.abs(frame["mean"].to_numpy() - test).mean()
    naive = np.abs(test - y.iloc[-13]).mean()
    assert mae < 0.75 * naive, (mae, naive)
    inside = (frame["q0.05"].to_numpy() <= test) & (test <= frame["q0.95"].to_numpy())
    assert inside.mean() >= 0.5


def test_smc_log_likelihood_is_within_monte_carlo_error_of_the_iwae_bound(trained):
    model, y = trained
    module = model.module_
    values = torch.tensor(y[:20].to_numpy(), dtype=torch.float32)[None, :, None]
    mask = torch.ones_like(values, dtype=torch.bool)
    torch.manual_seed(0)
    with torch.no_grad():
        smc = torch.stack([particle_filter(module, values, mask, n_particles=1000, proposal="guided").log_evidence[0]
                           for _ in range(20)]).double()
        iwae = {K: torch.stack([module.log_likelihood(values, mask, "iwae", K).sum() for _ in range(10)]).double()
                for K in (100, 1000)}
        elbo = torch.stack([module.log_likelihood(values, mask, "elbo", 100).sum() for _ in range(10)]).double()
    # the filter steps through transition/commit/emission/proposal, the bounds through the batched rollout: the
    # SMC estimate is the log of an unbiased estimate (low by about var/2), IWAE_K is low by O(1/K), which the
    # gap between K = 100 and K = 1000 bounds
    se = math.sqrt(smc.var() / 20 + iwae[1000].var() / 10)
    gap = (iwae[1000].mean() - iwae[100].mean()).abs()
    assert (smc.mean() + smc.var() / 2 - iwae[1000].mean()).abs() <= 4 * se + gap + 1e-3, (smc, iwae)
    # ELBO <= IWAE_100 <= IWAE_1000 on average (bounds ordered)
    se_elbo = math.sqrt(elbo.var() / 10 + iwae[100].var() / 10)
    assert elbo.mean() <= iwae[100].mean() + 4 * se_elbo
    assert elbo.mean() < iwae[1000].mean()


@pytest.mark.parametrize("method", ["smc", "iwae", "elbo"])
def test_per_step_values_read_only_the_past(trained, method):
    model, y = trained
    y = y[:40].copy()
    y.iloc[7] = np.nan  # a missing step scores NaN and moves by the prior
    options = {"n_particles": 200} if method == "smc" else {"method": method, "n_samples": 16}
    _assert_earlier_steps_unchanged(model, y, **options)
    per_step = model.log_likelihood(y, per_step=True, **options)
    assert np.isnan(per_step.iloc[7]) and per_step.isna().equals(_unscored_steps(model, y))


@pytest.mark.parametrize("method", ["smc", "iwae", "elbo"])
def test_the_smoothing_recognition_model_still_scores_causally(method):
    """``q(z_t | x_1:T)`` reads ahead: SMC proposes from the prior, the bounds rerun ``q`` on each prefix."""
    y = seasonal(30)
    y.iloc[5] = np.nan
    model = tsgen.STORN(**{**TINY, "inference": "smoothing"}).fit(y)
    assert model.module_.causal_proposal == "bootstrap"
    options = {"n_particles": 100} if method == "smc" else {"method": method, "n_samples": 8}
    _assert_earlier_steps_unchanged(model, y, **options)
    # the guided filter (reading ahead) still estimates the same evidence as the bootstrap one
    values = torch.tensor(y.to_numpy(), dtype=torch.float32)[None, :, None]
    mask = ~torch.isnan(values)
    torch.manual_seed(0)
    with torch.no_grad():
        runs = {p: torch.stack([particle_filter(model.module_, values, mask, n_particles=500, proposal=p)
                                .log_evidence[0] for _ in range(8)]).double() for p in ("bootstrap", "guided")}
    means = {p: r.mean() + r.var() / 2 for p, r in runs.items()}
    se = math.sqrt(sum(r.var() / 8 for r in runs.values()))
    assert abs(means["bootstrap"] - means["guided"]) <= 4 * se + 0.05, runs


@pytest.mark.parametrize("objective", ["elbo", "iwae", "fivo"])
def test_training_lowers_the_loss_on_a_sine(objective):
    y = seasonal(60)
    model = tsgen.STORN(**{**TINY, "max_epochs": 6, "learning_rate": 5e-3, "objective": objective,
                           "n_particles": 4}).fit(y)
    losses = [h["train_loss"] for h in model.training_history_]
    assert losses[-1] < losses[0], losses


def test_fivo_gradients_reach_the_generative_model_and_the_recognition_model():
    module = STORNModule(1, 2, 6, 6)
    values = torch.tensor(seasonal(12).to_numpy(), dtype=torch.float32)[None, :, None].expand(3, 12, 1).contiguous()
    loss = module.loss(SequenceBatch(values=values, mask=torch.ones_like(values, dtype=torch.bool)),
                       objective="fivo", n_particles=4)
    loss.backward()
    for name in ("recognition", "posterior", "decoder", "rnn", "phi_x", "phi_z", "head"):
        grads = [p.grad for p in getattr(module, name).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
    assert any(g.abs().sum() > 0 for g in (p.grad for p in module.recognition.parameters()))


def test_the_recurrence_reads_the_latent_before_the_emission():
    """``commit`` runs the RNN on ``(x_{t-1}, z_t)``: the emission at ``t`` depends on ``z_t``."""
    module = STORNModule(1, 2, 6, 6)
    values = torch.randn(1, 3, 1)
    context = module.prepare(values, torch.ones_like(values, dtype=torch.bool))
    with torch.no_grad():
        state, prior = module.transition(module.init_state(context, (2,)), None, context.at(0))
        assert torch.equal(prior.mean, torch.zeros(2, 1, 2)) and torch.equal(prior.stddev, torch.ones(2, 1, 2))
        z = torch.tensor([[[0.0, 0.0]], [[3.0, -3.0]]])
        means = module.emission(module.commit(state, z, context.at(0)), context.at(0)).mean
    assert means.shape == (2, 1, 1) and means[0, 0, 0] != means[1, 0, 0]


def test_nothing_observed_moves_by_the_prior_with_no_likelihood_or_kl():
    module = STORNModule(2, 2, 6, 6)
    values = torch.randn(2, 5, 2)
    mask = torch.ones_like(values, dtype=torch.bool)
    mask[0, 2] = False
    mask[1, 3, 0] = False
    with torch.no_grad():
        log_lik, log_ratio, kl = module.rollout(values, mask, n_samples=3)
    assert log_lik.shape == log_ratio.shape == kl.shape == (3, 2, 5)
    for term in (log_lik, log_ratio, kl):
        assert torch.all(term[:, 0, 2] == 0)
    assert torch.all(kl[:, 1, 3] > 0) and torch.all(log_lik[:, 1, 3] != 0)


def test_missing_values_in_training_data_and_ragged_histories():
    y = seasonal(60)
    y.iloc[[0, 10, 11, 30, 59]] = np.nan
    model = tsgen.STORN(**TINY).fit(y)
    assert np.isfinite(model.training_history_[-1]["train_loss"])
    frame = model.predict(4)
    assert np.isfinite(frame.to_numpy()).all()
    per_step = model.log_likelihood(y, per_step=True, n_particles=100)
    assert per_step.isna().equals(_unscored_steps(model, y)) and np.isfinite(per_step.dropna()).all()
    # series of different lengths: each forecast starts after its own last step
    short, long_ = seasonal(30, seed=1), seasonal(50, seed=2)
    draws = model.sample(3, n_samples=5, y=[short, long_])
    assert [d.shape for d in draws] == [(5, 3, 1), (5, 3, 1)]
    # a multivariate series with one component missing at a step: its observed part is weighted
    frame = pd.DataFrame({"a": seasonal(40).to_numpy(), "b": seasonal(40, seed=3).to_numpy()})
    frame.iloc[5, 1] = np.nan
    two = tsgen.STORN(**{**TINY, "inference": "smoothing"}).fit(frame)
    assert np.isfinite(two.log_likelihood(frame, n_particles=50))
    assert np.isfinite(two.log_likelihood(frame, method="iwae", n_samples=4))


def test_save_load_round_trip_gives_the_same_log_likelihood_and_forecasts(tmp_path):
    y = seasonal(48)
    model = tsgen.STORN(**{**TINY, "cell": "lstm", "inference": "smoothing"}).fit(y)
    model.save(tmp_path / "storn")
    loaded = tsgen.load(tmp_path / "storn")
    assert type(loaded) is tsgen.STORN and loaded.inference == "smoothing"
    assert loaded.log_likelihood(y, n_particles=100) == model.log_likelihood(y, n_particles=100)
    assert loaded.log_likelihood(y, method="iwae", n_samples=8) == model.log_likelihood(y, method="iwae", n_samples=8)
    np.testing.assert_array_equal(loaded.sample(3, n_samples=4), model.sample(3, n_samples=4))


@pytest.mark.parametrize("argument, value", [("latent_dim", 0), ("hidden_dim", -1), ("feature_dim", 2.5),
                                             ("cell", "rnn"), ("inference", "bidirectional"), ("scaling", "yes"),
                                             ("objective", "vi"), ("n_particles", 0), ("emission", "gamma")])
def test_bad_constructor_arguments_are_named(argument, value):
    with pytest.raises(ValueError, match=argument):
        tsgen.STORN(**{**TINY, argument: value}).fit(seasonal(30))


def test_bad_scoring_arguments_are_named():
    y = seasonal(30)
    model = tsgen.STORN(**{**TINY, "max_epochs": 1}).fit(y)
    for options, name in (({"method": "exact"}, "method"), ({"n_samples": 0}, "n_samples"),
                          ({"n_particles": 1}, "n_particles"), ({"proposal": "prior"}, "proposal"),
                          ({"method": "iwae", "n_particles": 10}, "n_particles"), ({"batch_size": 0}, "batch_size")):
        with pytest.raises(ValueError, match=name):
            model.log_likelihood(y, **options)


def test_filter_frames_and_smooth_is_refused_for_a_latent_that_is_not_markov(trained):
    model, y = trained
    frame = model.filter(y[:30], n_particles=100)
    assert frame.index.equals(y.index[:30])
    assert list(frame.columns.get_level_values(0).unique()) == ["z0", "z1"]
    assert np.isfinite(frame.to_numpy()).all()
    assert (frame[("z0", "q0.05")] <= frame[("z0", "q0.95")]).all()
    pd.testing.assert_frame_equal(frame, model.filter(y[:30], n_particles=100))  # seeded by random_state
    with pytest.raises(ValueError, match="Markov"):
        model.smooth(y[:30])


@pytest.mark.parametrize("inference", ["filtering", "smoothing"])
def test_anomaly_detector_scores_a_storn_by_the_particle_filter(inference):
    y = seasonal(60)
    y.iloc[45] += 8.0  # far outside the noise
    detector = tsgen.AnomalyDetector(tsgen.STORN(**{**TINY, "max_epochs": 3, "inference": inference}),
                                     method="quantile", false_alarm_rate=0.05, n_particles=100).fit(y)
    scores = detector.score(y)
    assert scores.index.equals(y.index) and np.isfinite(scores.dropna()).all()
    assert scores.isna().equals(_unscored_steps(detector.model_, y))  # the model's unscored first step
    assert scores.iloc[45] == scores.max()
