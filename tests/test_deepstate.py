"""tsgen.DeepState (Rangapuram et al. 2018): its likelihood is the Kalman filter's on the emitted parameters
(checked against an independent float64 filter), causal per-step values, forecasts against the naive
forecast, covariates, ragged histories, save/load, bad arguments."""
import copy

import numpy as np
import pandas as pd
import pytest
import torch
from test_deep_robustness import _assert_earlier_steps_unchanged

import tsgen
from tsgen.inference.kalman import kalman_filter, kalman_smoother
from tsgen.models.deepstate import DeepState


def seasonal(n=120, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = 10 + 2 * np.sin(2 * np.pi * t / 12) + 0.3 * rng.normal(size=n)
    return pd.Series(values, index=pd.period_range("2010-01", periods=n, freq="M"))


@pytest.fixture(scope="module")
def trained():
    y = seasonal()
    # the Kalman identities hold on the modelled scale: no Box-Cox here (tests/test_target_transform.py
    # checks the transformed density against the log-scale one)
    model = DeepState(season_length=12, hidden_dim=8, window_length=24, max_epochs=15, batch_size=16,
                      target_transform=None, progress=False, random_state=0)
    return model.fit(y[:-12]), y


def _numpy_kalman(y, F, H, Q, R, d, m1, P1):
    """Textbook Kalman filter in numpy: log p(y_t | y_<t) per step (0 where y_t is NaN)."""
    a, P, out = m1, P1, []
    for t in range(len(y)):
        if np.isnan(y[t]):
            m, C, value = a, P, 0.0
        else:
            S = H[t] @ P @ H[t].T + R[t]
            v = y[t] - H[t] @ a - d[t]
            K = P @ H[t].T @ np.linalg.inv(S)
            m, C = a + K @ v, P - K @ S @ K.T
            value = float(-0.5 * (np.log(2 * np.pi) + np.log(np.linalg.det(S)) + v @ np.linalg.solve(S, v)))
        out.append(value)
        a, P = F @ m, F @ C @ F.T + Q[t]
    return np.array(out)


def test_the_likelihood_is_the_kalman_filter_of_the_emitted_parameters(trained):
    model, y = trained
    y = y[:60].copy()
    y.iloc[[5, 30]] = np.nan
    per_step = model.log_likelihood(y, per_step=True)
    values = torch.tensor(y.to_numpy(), dtype=torch.float32)[None, :, None]
    mask = ~torch.isnan(values)
    with torch.no_grad():
        params = model.module_.kalman_params(values)
        # in float64 the module's exact route and the textbook filter agree to round-off
        double = copy.deepcopy(model.module_).double()
        exact64 = double.log_likelihood(values.double(), mask)[0].numpy()
        params64 = double.kalman_params(values.double())
    array = {name: getattr(params, name).double().numpy() for name in params._fields[:-1]
             if getattr(params, name) is not None}
    exact = _numpy_kalman(y.to_numpy(), array["transition_matrices"], array["observation_matrices"][0],
                          array["transition_covariance"][0], array["observation_covariance"][0],
                          array["observation_offsets"][0], array["initial_state_mean"][0],
                          array["initial_state_covariance"][0])
    found = per_step.to_numpy()
    assert np.isnan(found[[5, 30]]).all()
    observed = ~np.isnan(y.to_numpy())
    np.testing.assert_allclose(found[observed], exact[observed], rtol=1e-4, atol=1e-4)
    array = {name: getattr(params64, name).numpy() for name in params64._fields[:-1]
             if getattr(params64, name) is not None}
    rounded = values[0, :, 0].double().numpy()  # the float32 data the model saw
    textbook = _numpy_kalman(rounded, array["transition_matrices"], array["observation_matrices"][0],
                             array["transition_covariance"][0], array["observation_covariance"][0],
                             array["observation_offsets"][0], array["initial_state_mean"][0],
                             array["initial_state_covariance"][0])
    np.testing.assert_allclose(exact64, textbook, rtol=1e-9, atol=1e-9)
    assert model.log_likelihood(y) == pytest.approx(exact.sum(), rel=1e-5)


def test_per_step_values_read_only_the_past(trained):
    model, y = trained
    _assert_earlier_steps_unchanged(model, y[:40])


def test_forecasts_beat_the_naive_forecast(trained):
    model, y = trained
    test = y[-12:].to_numpy()
    frame = model.predict(12)
    assert frame.index.equals(y.index[-12:])
    mae = np.abs(frame["mean"].to_numpy() - test).mean()
    naive = np.abs(test - y.iloc[-13]).mean()
    assert mae < 0.75 * naive, (mae, naive)
    inside = (frame["q0.05"].to_numpy() <= test) & (test <= frame["q0.95"].to_numpy())
    assert inside.mean() >= 0.5


def test_training_raises_the_exact_likelihood(trained):
    model, _ = trained
    history = [record["train_loss"] for record in model.training_history_]
    # noise and innovations start in units of the series' changes (c_0), not of its level, so the first epoch
    # is already near the data's scale (a level-sized start began above 3 nats a step) and training still
    # lowers the loss from there
    assert history[0] < 3
    assert history[-1] < history[0] - 0.1


def test_covariates_drive_the_parameters_and_forecasts_take_future_ones():
    y = seasonal(60)
    X = pd.DataFrame({"promo": (np.arange(72) % 5 == 0).astype(float)}, index=pd.period_range("2010-01", periods=72,
                                                                                            freq="M"))
    model = DeepState(**DeepState.get_test_params()[0]).fit(y, X=X.iloc[:60])
    frame = model.predict(12, X=X)
    assert frame.shape == (12, 4) and np.isfinite(frame.to_numpy()).all()
    other = X.iloc[:60].assign(promo=1.0)
    assert model.log_likelihood(y, X=X.iloc[:60]) != model.log_likelihood(y, X=other)


def test_ragged_histories_forecast_from_each_series_end():
    y = seasonal(60)
    model = DeepState(**DeepState.get_test_params()[1]).fit([y, y[:45]])
    first, second = model.predict(6)
    assert first.index[0] == y.index[-1] + 1 and second.index[0] == y.index[45]
    assert np.isfinite(first.to_numpy()).all() and np.isfinite(second.to_numpy()).all()


def test_save_load_round_trip(tmp_path):
    y = seasonal(48)
    model = DeepState(**DeepState.get_test_params()[1]).fit(y)
    model.save(tmp_path / "deepstate")
    loaded = tsgen.load(tmp_path / "deepstate")
    assert type(loaded) is DeepState
    assert loaded.log_likelihood(y) == model.log_likelihood(y)
    np.testing.assert_array_equal(loaded.sample(3, n_samples=4), model.sample(3, n_samples=4))


@pytest.mark.parametrize("argument, value", [("season_length", 1), ("hidden_dim", 0)])
def test_bad_arguments_are_named(argument, value):
    with pytest.raises(ValueError, match=argument):
        DeepState(**{**DeepState.get_test_params()[0], argument: value}).fit(seasonal(40))


def test_several_variables_are_refused():
    frame = pd.DataFrame({"a": np.arange(30.0), "b": np.arange(30.0)})
    with pytest.raises(ValueError, match="one variable"):
        DeepState(**DeepState.get_test_params()[0]).fit(frame)


def _direct(model, y):
    """The Kalman filter and RTS smoother called directly on the parameters the module emits for ``y``."""
    values = torch.tensor(y.to_numpy(), dtype=torch.float32)[None, :, None]
    mask = ~torch.isnan(values)
    with torch.no_grad():
        params = model.module_.kalman_params(values)
        filtered = kalman_filter(values, mask, params)
        smoothed = kalman_smoother(values, mask, params)
    return filtered, smoothed


def test_filter_and_smooth_are_the_kalman_recursions_on_the_emitted_parameters(trained):
    model, y = trained
    y = y[:60].copy()
    y.iloc[[7, 31]] = np.nan
    filtered, smoothed = _direct(model, y)
    f, s = model.filter(y), model.smooth(y)
    names = ["level", "trend"] + [f"season_{k}" for k in range(12)]
    for estimate, means, covs in [(f, filtered.filtered_means, filtered.filtered_covariances),
                                  (s, smoothed.smoothed_means, smoothed.smoothed_covariances)]:
        assert isinstance(estimate.means, pd.DataFrame) and list(estimate.means.columns) == names
        assert estimate.means.index.equals(y.index)
        assert estimate.covariances.shape == (60, 14, 14)
        np.testing.assert_allclose(estimate.means.to_numpy(), means[0].double().numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(estimate.covariances, covs[0].double().numpy(), rtol=1e-6, atol=1e-6)
        assert np.isfinite(estimate.means.to_numpy()).all()
    # the last step conditions on the same data in both; a missing step's filtered state is the prediction
    np.testing.assert_allclose(f.means.iloc[-1], s.means.iloc[-1], rtol=1e-5, atol=1e-5)
    predicted = filtered.predicted_means[0, 7].double().numpy()
    np.testing.assert_allclose(f.means.iloc[7].to_numpy(), predicted, rtol=1e-6, atol=1e-6)
    assert not np.allclose(f.means.iloc[:-1].to_numpy(), s.means.iloc[:-1].to_numpy())


def test_states_of_several_series_and_covariates():
    y = seasonal(60)
    X = pd.DataFrame({"promo": (np.arange(60) % 5 == 0).astype(float)}, index=y.index)
    model = DeepState(**DeepState.get_test_params()[0]).fit(y, X=X)
    estimate = model.smooth([y, y[:45]], X=[X, X.iloc[:45]])
    first, second = estimate.means
    assert list(first.columns) == ["level", "trend"]
    assert first.index.equals(y.index) and second.index.equals(y.index[:45])
    assert estimate.covariances[1].shape == (45, 2, 2)
    assert not np.allclose(model.filter(y, X=X).means, model.filter(y, X=X.assign(promo=1.0)).means)


def test_states_need_a_fitted_model_and_a_valid_y(trained):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        DeepState().filter(seasonal(30))
    with pytest.raises(NotFittedError):
        DeepState().smooth(seasonal(30))
    model, y = trained
    for method in (model.filter, model.smooth, model.log_likelihood):
        with pytest.raises(ValueError, match="`y`"):
            method(pd.DataFrame({"a": np.arange(30.0), "b": np.arange(30.0)}))
        with pytest.raises(TypeError, match="`y`"):
            method("not a series")
