"""Deep models (RNNForecaster, DeepMarkovModel): causal per-step scores, missing values at the ends,
learned scales that cannot underflow, units, and data outside a count emission's support."""
import numpy as np
import pandas as pd
import pytest
import torch

import tsgen
from tsgen.components import MIN_POSITIVE, positive
from tsgen.components.heads import make_head
from tsgen.components.inference_networks import INFERENCE_NETWORKS, StructuredInferenceNetwork
from tsgen.components.scaling import CausalScale
from tsgen.components.transitions import GatedTransition

TINY_RNN = dict(hidden_dim=6, num_layers=1, max_epochs=2, batch_size=8, window_length=16, progress=False,
                random_state=0)
TINY_DMM = dict(latent_dim=3, hidden_dim=6, emission_dim=6, transition_dim=6, max_epochs=2, batch_size=8,
                window_length=16, progress=False, random_state=0)


def series(n=40, seed=0, level=10.0):
    rng = np.random.default_rng(seed)
    values = level + np.sin(np.arange(n) / 3.0) + 0.3 * rng.normal(size=n)
    return pd.Series(values, index=pd.date_range("2020-01-01", periods=n, freq="D"))


# ------------------------------------------------------------------ §1.6 per-step scores read only the past
def _unscored_steps(model, y):
    """Where ``model``'s per-step scores of ``y`` are NaN: missing steps, and (as ARIMA's first d steps) steps whose
    differencing lag is missing or before the start, which training and the forecast context mask too."""
    differencing = getattr(model, "differencing_", None)
    return y.isna() | (y.shift(differencing.lag).isna() if differencing is not None else False)


def _assert_earlier_steps_unchanged(model, y, **options):
    spiked = y.copy()
    spiked.iloc[-1] += 1000.0
    before = model.log_likelihood(y, per_step=True, **options).to_numpy()
    after = model.log_likelihood(spiked, per_step=True, **options).to_numpy()
    np.testing.assert_allclose(after[:-1], before[:-1], rtol=0, atol=1e-5)
    assert abs(after[-1] - before[-1]) > 1.0  # the spike itself is scored
    # and the per-step values still add up to the total
    assert model.log_likelihood(y, **options) == pytest.approx(np.nansum(before), rel=1e-5)


@pytest.mark.parametrize("settings", [{}, {"cell": "gru", "lags": (1, 3)}, {"scaling": False},
                                      {"emission": "studentt"}])
def test_rnn_per_step_scores_ignore_later_values(settings):
    y = series()
    model = tsgen.RNNForecaster(**{**TINY_RNN, **settings}).fit(y)
    _assert_earlier_steps_unchanged(model, y)


@pytest.mark.parametrize("inference", sorted(INFERENCE_NETWORKS))
@pytest.mark.parametrize("method", ["iwae", "elbo"])
def test_dmm_per_step_scores_ignore_later_values_for_every_guide(inference, method):
    y = series(30)
    y.iloc[7] = np.nan  # a gap: the guide reads the mask and the step scores NaN
    model = tsgen.DeepMarkovModel(**TINY_DMM, inference=inference).fit(y)
    _assert_earlier_steps_unchanged(model, y, method=method, n_samples=8)
    assert np.isnan(model.log_likelihood(y, per_step=True, n_samples=8).iloc[7])


def test_dmm_per_step_scores_with_flows_and_unscaled_emission_ignore_later_values():
    y = series(24)
    model = tsgen.DeepMarkovModel(**{**TINY_DMM, "iafs": 1, "iaf_dim": 4, "scaling": False}).fit(y)
    _assert_earlier_steps_unchanged(model, y, n_samples=4)


def test_causal_scale_reads_only_earlier_steps_and_matches_its_stepwise_form():
    scaler = CausalScale(2, window=3).double()
    values = torch.tensor([[[1.0, -2.0], [3.0, np.nan], [np.nan, 4.0], [5.0, 6.0], [7.0, 8.0]]],
                          dtype=torch.float64)
    mask = ~torch.isnan(values)
    scaler.fit_prior(values, mask)
    prior = scaler.prior
    expected = torch.stack([
        prior,
        (prior + torch.tensor([1.0, 2.0])) / torch.tensor([2.0, 2.0]),
        (prior + torch.tensor([4.0, 2.0])) / torch.tensor([3.0, 2.0]),
        (prior + torch.tensor([4.0, 6.0])) / torch.tensor([3.0, 3.0]),
        (prior + torch.tensor([8.0, 10.0])) / torch.tensor([3.0, 3.0]),  # x_0 left the 3-step window
    ])
    torch.testing.assert_close(scaler.sequence(values, mask)[0], expected)
    window, scale = scaler.start((1,), values)
    for t in range(5):
        torch.testing.assert_close(scale[0], expected[t])
        at_window, at_scale = scaler.at(values, mask, torch.tensor([t]))
        torch.testing.assert_close(at_scale, scale)
        window, scale = scaler.advance(window, scale, values[:, t])


# ------------------------------------------------------------------ §1.7 missing values at the ends
@pytest.mark.parametrize("values", [
    np.r_[np.arange(35.0), np.nan],                       # the reproduction
    np.r_[np.arange(30.0), [np.nan] * 6],                 # several trailing
    np.r_[[np.nan] * 5, np.arange(30.0)],                 # leading
    np.r_[[np.nan] * 17, 3.0, [np.nan] * 18],             # all but one
], ids=["one-trailing", "trailing", "leading", "all-but-one"])
@pytest.mark.parametrize("estimator", ["dmm", "rnn"])
def test_fit_score_and_forecast_with_missing_values_at_the_ends(values, estimator):
    y = pd.Series(values)
    if estimator == "dmm":
        model = tsgen.DeepMarkovModel(max_epochs=1, progress=False, random_state=0).fit(y)
        per_step = model.log_likelihood(y, per_step=True, n_samples=4)
    else:
        model = tsgen.RNNForecaster(max_epochs=1, progress=False, random_state=0).fit(y)
        per_step = model.log_likelihood(y, per_step=True)
    assert per_step.isna().equals(_unscored_steps(model, y))
    assert np.isfinite(per_step.dropna()).all()
    assert np.isfinite(model.predict(3)["mean"]).all()


def test_guide_backward_pass_when_every_sequence_ends_before_the_padded_length():
    torch.manual_seed(0)
    net = StructuredInferenceNetwork(2, 3, 5, inference="dks")
    values = torch.randn(2, 6, 2)
    mask = torch.ones(2, 6, 2, dtype=torch.bool)
    mask[:, 4:] = False  # both sequences end two steps before the tensor does
    draw = net(values, mask, mask.any(-1), torch.randn(1, 2, 6, 3))
    (draw.z.sum() + draw.scale.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


# ------------------------------------------------------------------ §1.8 learned scales cannot underflow
def test_positive_has_a_floor_and_the_softplus_gradient():
    raw = torch.tensor([-200.0, -30.0, 0.0, 30.0], requires_grad=True)  # float32: softplus(-200) is 0
    out = positive(raw)
    assert (out >= MIN_POSITIVE).all()
    out.sum().backward()
    torch.testing.assert_close(raw.grad, torch.sigmoid(raw.detach()))
    assert raw.grad[1] > 0  # below where a clamp would have cut the gradient


def test_every_learned_scale_stays_positive_when_its_pre_activation_is_hugely_negative():
    torch.manual_seed(0)
    transition = GatedTransition(4, 5)
    net = StructuredInferenceNetwork(3, 4, 5, inference="st-lr")
    with torch.no_grad():
        transition.scale_out.bias.fill_(-500.0)
        net.combiner.hidden_to_params.bias[4:].fill_(-500.0)
    _, scale = transition(torch.randn(7, 4))
    assert (scale >= MIN_POSITIVE).all()
    draw = net(torch.randn(2, 6, 3), torch.ones(2, 6, 3, dtype=torch.bool), torch.ones(2, 6, dtype=torch.bool),
               torch.randn(1, 2, 6, 4))
    assert (draw.scale >= MIN_POSITIVE).all() and torch.isfinite(draw.z).all()
    for name in ("normal", "studentt", "poisson", "negbin"):
        head = make_head(name, 3, 2)
        with torch.no_grad():
            for layer in head.proj.values():
                layer.bias.fill_(-500.0)
        head(torch.randn(4, 3))  # torch validates the arguments: a zero scale or rate would raise


def piano_rolls(n_sequences, length, seed=0):
    """Sparse 88-key binary rolls with held notes: the shape and density of JSB Chorales."""
    rng = np.random.default_rng(seed)
    rolls = []
    for k in range(n_sequences):
        notes = rng.choice(np.arange(30, 60), size=(length // 4 + 1, 4))
        roll = np.zeros((length, 88))
        for t in range(length):
            roll[t, notes[t // 4]] = 1.0  # a four-note chord held for four steps
        rolls.append(roll[: length - (k % 3)])  # ragged lengths
    return rolls


def test_dmm_trains_at_the_benchmark_sizes_on_piano_rolls():
    # benchmarks/dmm_speed.py (Pyro's DMM sizes): z 100, emission 100, transition 200, guide RNN 600, batch 20
    model = tsgen.DeepMarkovModel(emission="bernoulli", latent_dim=100, emission_dim=100, transition_dim=200,
                                  hidden_dim=600, max_epochs=2, batch_size=20, learning_rate=5e-4,
                                  progress=False, random_state=0)
    rolls = piano_rolls(24, 12)
    model.fit(rolls)
    losses = [h["train_loss"] for h in model.training_history_]
    assert len(losses) == 2 and np.isfinite(losses).all()
    assert np.isfinite(model.log_likelihood(rolls[:3], n_samples=2))


def test_dmm_training_step_survives_a_transition_scale_that_underflows():
    # the failure: in float32 softplus of a very negative pre-activation is exactly 0
    model = tsgen.DeepMarkovModel(emission="bernoulli", latent_dim=8, hidden_dim=16, emission_dim=8,
                                  transition_dim=8, max_epochs=1, progress=False, random_state=0)
    original = model._initialise

    def push_scales_down(module, batch):
        original(module, batch)
        module.transition_net.scale_out.bias.fill_(-500.0)

    model._initialise = push_scales_down
    model.fit(piano_rolls(4, 10))
    assert np.isfinite(model.training_history_[0]["train_loss"])


def test_rnn_trains_at_the_sizes_its_tests_and_benchmarks_use_on_piano_rolls():
    model = tsgen.RNNForecaster(cell="gru", hidden_dim=32, num_layers=1, emission="bernoulli", max_epochs=2,
                                batch_size=8, learning_rate=1e-2, dropout=0.0, progress=False, random_state=0)
    rolls = piano_rolls(16, 12)
    model.fit(rolls)
    assert np.isfinite([h["train_loss"] for h in model.training_history_]).all()


# ------------------------------------------------------------------ §2 units
@pytest.mark.parametrize("estimator, settings", [
    (tsgen.RNNForecaster, TINY_RNN),
    (tsgen.RNNForecaster, {**TINY_RNN, "scaling": False}),
    (tsgen.DeepMarkovModel, TINY_DMM),
    (tsgen.DeepMarkovModel, {**TINY_DMM, "scaling": False}),
], ids=["rnn", "rnn-unscaled", "dmm", "dmm-unscaled"])
def test_results_do_not_depend_on_the_data_units(estimator, settings):
    y = series(48)
    tiny_units = y * 1e-11
    big = estimator(**settings).fit(y)
    small = estimator(**settings).fit(tiny_units)
    forecast, expected = small.predict(4).to_numpy() / 1e-11, big.predict(4).to_numpy()
    if estimator is tsgen.DeepMarkovModel:
        # DMM forecasts condition on the history by a particle filter: parameters trained in the two units
        # agree to ~1e-7, which moves a few resampling decisions, so the forecasts (500 draws) agree within
        # Monte Carlo error, not to rounding: 4 standard errors of a 5% quantile, 0.4 predictive sd
        sd = (expected[:, 3] - expected[:, 1]) / (2 * 1.645)
        assert np.all(np.abs(forecast - expected) <= 0.4 * sd[:, None]), (forecast, expected)
    else:
        np.testing.assert_allclose(forecast, expected, rtol=1e-3)
    # a change of units moves each log-density by log(1e-11), nothing else
    options = {"n_samples": 4} if estimator is tsgen.DeepMarkovModel else {}
    np.testing.assert_allclose(small.log_likelihood(tiny_units, per_step=True, **options).to_numpy(),
                               big.log_likelihood(y, per_step=True, **options).to_numpy() - np.log(1e-11),
                               rtol=1e-4, atol=1e-3)


# ------------------------------------------------------------------ §2 count emissions on non-count data
@pytest.mark.parametrize("emission, expected", [("poisson", "non-negative integer counts"),
                                                ("negbin", "non-negative integer counts"),
                                                ("bernoulli", "binary values")])
@pytest.mark.parametrize("estimator", [tsgen.RNNForecaster, tsgen.DeepMarkovModel])
def test_count_emission_on_non_count_data_says_so_in_one_sentence(estimator, emission, expected):
    y = pd.Series([0.0, 1.0, 2.5, 1.0, 0.0, 1.0] * 4)
    with pytest.raises(ValueError, match=rf"`emission='{emission}'` models {expected}.*\(e\.g\. 2\.5\)") as info:
        estimator(emission=emission, max_epochs=1, progress=False).fit(y)
    assert "tensor(" not in str(info.value) and "\n" not in str(info.value)


def test_count_emission_scoring_non_count_data_raises_the_same_sentence():
    counts = pd.Series([0.0, 1.0, 3.0, 1.0, 0.0, 2.0] * 4)
    model = tsgen.RNNForecaster(emission="poisson", max_epochs=1, progress=False, random_state=0).fit(counts)
    with pytest.raises(ValueError, match=r"`emission='poisson'`.*\(e\.g\. -1\)"):
        model.log_likelihood(counts - 1)
