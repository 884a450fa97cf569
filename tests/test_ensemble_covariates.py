"""Ensemble passes X / X_future / static to its members, and refuses members that take none (issue 14 leftovers)."""
import numpy as np
import pandas as pd
import pytest

import tsgen


def _regression(n=80, seed=0):
    """y driven by a future-known regressor x (and an AR(1) error); x runs 6 steps past y for X_future."""
    rng = np.random.default_rng(seed)
    index = pd.period_range("2010-01", periods=n + 6, freq="M")
    x = pd.DataFrame({"x": rng.normal(size=n + 6)}, index=index)
    error = np.zeros(n)
    for t in range(1, n):
        error[t] = 0.5 * error[t - 1] + rng.normal(scale=0.3)
    y = pd.Series(2.0 + 3.0 * x["x"].to_numpy()[:n] + error, index=index[:n], name="y")
    return y, x


MEMBERS = [tsgen.ARIMA(order=(1, 0, 0)), tsgen.ARIMA(order=(0, 0, 1))]


def test_covariates_reach_every_member_as_if_fitted_alone():
    y, x = _regression()
    X, X_future = x.iloc[: len(y)], x.iloc[len(y):]
    ensemble = tsgen.Ensemble(MEMBERS, weights=[0.25, 0.75], random_state=0).fit(y, X=X)
    alone = [tsgen.ARIMA(**m.get_params()).fit(y, X=X) for m in MEMBERS]
    for member, reference in zip(ensemble.models_, alone):
        assert member.params_.keys() == reference.params_.keys() and "x.x" in member.params_
        np.testing.assert_allclose(list(member.params_.values()), list(reference.params_.values()), rtol=1e-8)
    frame = ensemble.predict(6, X_future=X_future, quantiles=(0.5,))
    means = [m.predict(6, X_future=X_future)["mean"].to_numpy() for m in alone]
    np.testing.assert_allclose(frame["mean"], 0.25 * means[0] + 0.75 * means[1], rtol=1e-8)
    # the regressor matters: forecasts follow 2 + 3 x, far from the flat forecast without it
    assert np.corrcoef(frame["mean"], X_future["x"])[0, 1] > 0.95
    paths = ensemble.sample(6, n_samples=4000, X_future=X_future)[:, :, 0]
    sd = np.sqrt(paths.var(0) / len(paths))
    assert np.all(np.abs(paths.mean(0) - frame["mean"].to_numpy()) < 4 * sd)
    per_step = ensemble.log_likelihood(y, per_step=True, X=X)
    members = np.stack([m.log_likelihood(y, per_step=True, X=X).to_numpy() for m in alone])
    np.testing.assert_allclose(per_step.to_numpy(), np.log(0.25 * np.exp(members[0]) + 0.75 * np.exp(members[1])),
                               rtol=1e-8)
    with pytest.raises(ValueError, match="X"):
        ensemble.predict(6)  # the future-known regressor is required, as by each member


def test_crps_weights_are_learned_with_the_covariates():
    y, x = _regression(seed=1)
    X = x.iloc[: len(y)]
    with_x = tsgen.Ensemble([tsgen.ARIMA(order=(1, 0, 0)), tsgen.ARIMA(order=(1, 0, 0), trend="c")],
                            weights="crps", horizon=3, n_windows=6, random_state=0).fit(y, X=X)
    assert with_x.crps_.shape == (2,) and np.isfinite(with_x.crps_).all()
    # with x in the backtest the CRPS is that of the regression's errors (sd ~0.35), not of y (sd ~3)
    assert with_x.crps_.max() < 0.6


def test_static_covariates_and_panel_input_pass_through():
    rng = np.random.default_rng(2)
    index = pd.period_range("2015-01", periods=40, freq="M")
    long = pd.concat([pd.DataFrame({"unique_id": key, "ds": index.to_timestamp(),
                                    "y": level + rng.normal(size=40).cumsum() * 0.1})
                      for key, level in (("a", 1.0), ("b", 5.0))], ignore_index=True)
    static = pd.DataFrame({"level": [1.0, 5.0]}, index=pd.Index(["a", "b"], name="unique_id"))
    ensemble = tsgen.Ensemble([tsgen.ARIMA(order=(1, 0, 0)), tsgen.ARIMA(order=(0, 0, 1))]).fit(long, static=static)
    assert all(m.static_names_ == ("level",) for m in ensemble.models_)
    out = ensemble.predict(2)
    assert list(out["unique_id"]) == ["a", "a", "b", "b"]


@pytest.mark.parametrize("argument", ["X", "static"])
def test_members_without_covariates_are_refused_by_name(argument):
    y, x = _regression()
    given = {"X": x.iloc[: len(y)]} if argument == "X" else {"static": pd.DataFrame({"s": [1.0]})}
    ensemble = tsgen.Ensemble([tsgen.ARIMA(order=(1, 0, 0)), tsgen.Naive()])
    with pytest.raises(ValueError, match=rf"`{argument}` was given but the ensemble's member `models\[1\]` \(Naive\)"):
        ensemble.fit(y, **given)
    assert not hasattr(ensemble, "models_") and not hasattr(ensemble, "_member_inputs")
    tsgen.Ensemble([tsgen.ARIMA(order=(1, 0, 0)), tsgen.Naive()]).fit(y)  # without covariates: as before
