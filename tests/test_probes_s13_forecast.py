"""Regressions found by probing tsgen as a statsmodels / statsforecast user would (stop 13 QA, forecasting)."""
import numpy as np
import pandas as pd
import pytest

import tsgen


def _nile() -> pd.Series:
    from statsmodels.datasets import nile

    volume = nile.load_pandas().data["volume"].to_numpy()
    return pd.Series(volume, index=pd.period_range("1871", periods=len(volume), freq="Y"))


def _flat_then_moving(n_flat=20, n=40):
    """A daily series that sits at 0 (a product not yet sold, a sensor at rest), then moves."""
    rng = np.random.default_rng(0)
    values = np.r_[np.zeros(n_flat), 3.0 + rng.normal(size=n - n_flat).cumsum()]
    return pd.Series(values, index=pd.date_range("2020-01-01", periods=n, freq="D"))


@pytest.mark.parametrize("model", [tsgen.Naive(), tsgen.Drift(), tsgen.Mean()], ids=lambda m: type(m).__name__)
def test_backtest_of_a_baseline_on_a_flat_history_scores_its_point_mass(model):
    # a baseline fitted on a constant window predicts a point mass (log density +inf on it); the backtest's
    # log score refused it ('`log_densities` must be < +inf') and no metric at all came back
    y = _flat_then_moving()
    result = tsgen.backtest(model, y, horizon=3, start=10, step=2)
    scores = result.metrics.pivot_table(index=["origin", "horizon"], columns="metric", values="value", dropna=False)
    flat = scores.loc[0]  # trained on 10 zeros, forecasting zeros: right with certainty
    assert (flat["log_score"] == -np.inf).all()
    np.testing.assert_array_equal(flat["mae"], 0.0)
    later = scores.loc[scores.index.get_level_values("origin") >= 6]  # windows that move: ordinary scores
    assert np.isfinite(later["log_score"]).all() and np.isfinite(later["crps"]).all()
    assert np.isfinite(result.summary(by="horizon")["mae"]).all()


def test_conformal_naive_fits_a_series_that_starts_flat():
    # its calibration backtest died on the same log score
    y = _flat_then_moving(n_flat=25, n=60)
    model = tsgen.ConformalForecaster(tsgen.Naive(), horizon=3, n_windows=40).fit(y)
    forecast = model.predict(3, quantiles=(0.1, 0.9))
    assert np.isfinite(forecast.to_numpy()).all()
    assert (forecast["q0.1"] <= forecast["q0.9"]).all()


def test_lds_mle_does_not_stop_on_a_plateau_of_the_likelihood():
    # L-BFGS crossed a flat stretch where one iteration gained 1.5e-7 (relative) and was declared converged
    # 3.2 log-likelihood units below the optimum it reaches when run on (-640.08 vs -636.93); EM gets -636.93
    y = _nile()
    model = tsgen.LinearGaussianSSM(n_dim_state=1, method="mle", random_state=0).fit(y)
    assert model.converged_
    assert model.log_likelihood(y) > -636.95


def test_lds_mle_still_stops_early_on_a_well_posed_problem():
    # the stricter stop must not turn an easy fit into a max_iter run: a local level with only the two
    # variances free converges in a handful of iterations
    y = _nile()
    model = tsgen.LinearGaussianSSM(
        transition_matrices=[[1.0]], observation_matrices=[[1.0]], initial_state_mean=[1120.0],
        initial_state_covariance=[[1.0]], em_vars=["transition_covariance", "observation_covariance"],
        method="mle",
    ).fit(y)
    assert model.converged_ and model.n_iter_ < 30


def test_arima_likelihood_is_statsmodels_simple_differencing_one_on_a_series_of_large_level():
    # the module docstring said statsmodels' exact-diffuse llf equals ours to 1e-6; it is lower by
    # 0.5 log(2 pi) per differencing state, and statsmodels' default (approximate diffuse) drifts from both
    # as the level grows (wine sales, level 3e4: 33 log-likelihood units); simple_differencing=True is ours
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    rng = np.random.default_rng(1)
    n = 120
    values = 30000 + 3000 * np.sin(2 * np.pi * np.arange(n) / 12) + 400 * rng.normal(size=n).cumsum()
    y = pd.Series(values, index=pd.date_range("1990-01-01", periods=n, freq="MS"))
    model = tsgen.ARIMA(order=(1, 1, 1), seasonal_order=(0, 1, 1, 12)).fit(y)
    names = SARIMAX(y, order=(1, 1, 1), seasonal_order=(0, 1, 1, 12)).param_names
    params = np.array([model.params_[name] for name in names])

    def statsmodels_llf(**options):
        return SARIMAX(y, order=(1, 1, 1), seasonal_order=(0, 1, 1, 12), **options).loglike(params)

    assert model.llf_ == pytest.approx(statsmodels_llf(simple_differencing=True), abs=1e-6)
    diffuse_states = 1 + 12
    assert model.llf_ - diffuse_states * 0.5 * np.log(2 * np.pi) == pytest.approx(
        statsmodels_llf(use_exact_diffuse=True), abs=1e-5)
    assert abs(model.llf_ - statsmodels_llf()) > 1.0


def test_automatic_arima_names_the_series_whose_first_steps_are_missing():
    # the seasonal search fits each (d, D) group apart and named the culprit by its row in the group:
    # 'series 1' for the third series (the first, too short for a seasonal difference, is in another group)
    rng = np.random.default_rng(0)
    base = 100 + rng.normal(size=60).cumsum() + 5 * np.sin(np.arange(60) * 2 * np.pi / 12)
    index = pd.date_range("2020-01-01", periods=60, freq="MS")
    late_start = pd.Series(np.r_[np.full(20, np.nan), base[20:]], index=index)
    panel = [pd.Series(base[:13], index=index[:13]), pd.Series(base, index=index), late_start]
    with pytest.raises(ValueError, match=r"`y` series 2 has a missing value among its first d \+ s\*D = 13 steps"
                                         r".*first_valid_index"):
        tsgen.ARIMA(order="auto", seasonal_order="auto").fit(panel)
    with pytest.raises(ValueError, match=r"`y` series 2 .*first_valid_index"):
        tsgen.ARIMA(order=(0, 1, 1)).fit(panel)


@pytest.mark.parametrize("form", ["MNN", "MAdN", "MAA"])
def test_ets_multiplicative_error_mean_is_the_exact_point_forecast(form):
    # with a multiplicative error but additive (or no) trend and season the states are linear in y, so the
    # conditional mean is the point forecast (Hyndman et al. 2008, class 2), statsmodels' mean; predict gave
    # the average of its 500 simulated paths instead (Nile MAdN, h=12: 825.15 against 834.91, and another
    # random_state another mean)
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    y = _nile() if form != "MAA" else _nile().set_axis(pd.period_range("1871Q1", periods=100, freq="Q"))
    means = [tsgen.ETS(model=form, random_state=seed).fit(y).predict(12)["mean"].to_numpy() for seed in (0, 1)]
    np.testing.assert_array_equal(means[0], means[1])
    model = tsgen.ETS(model=form, random_state=0).fit(y)
    reference = ETSModel(y.astype(float), error="mul", trend="add" if form != "MNN" else None,
                         damped_trend=form == "MAdN", seasonal="add" if form == "MAA" else None,
                         seasonal_periods=4 if form == "MAA" else None)
    params = np.array([model.params_[name] for name in reference.param_names])
    np.testing.assert_allclose(means[0], reference.smooth(params).forecast(12).to_numpy(), rtol=1e-9)


def test_ets_multiplicative_season_mean_is_exact_within_one_season():
    # up to h = m the seasonal factor is known at the origin, so the mean is the point forecast there too
    y = _nile().set_axis(pd.period_range("1871Q1", periods=100, freq="Q"))
    means = [tsgen.ETS(model="MAM", random_state=seed).fit(y).predict(8)["mean"].to_numpy() for seed in (0, 1)]
    np.testing.assert_array_equal(means[0][:4], means[1][:4])
    assert not np.array_equal(means[0][4:], means[1][4:])  # beyond, the mean of products is simulated


def test_a_long_frame_whose_every_series_has_a_gap_is_refused_for_its_gaps():
    # the message said no series had 'a regular run of at least 3 timestamps' of a frame whose series each
    # had runs of 5 to 24 regular days and one missing day; the frequency is inferred from a whole series
    rng = np.random.default_rng(0)
    index = pd.date_range("2020-01-01", periods=30, freq="D")
    frame = pd.concat([pd.DataFrame({"unique_id": key, "ds": index, "y": rng.normal(size=30)}).drop(5 + i)
                       for i, key in enumerate("abc")])
    with pytest.raises(ValueError, match=r"every series of `y` with 3 or more timestamps has gaps or irregular"
                                         r" steps.*regularize") as error:
        tsgen.Naive().fit(frame)
    assert "regular run" not in str(error.value)
    assert len(tsgen.Naive().fit(tsgen.data.regularize(frame)).predict(2)) == 6


def _yearly_with_covariate(n=40, extra=4):
    rng = np.random.default_rng(0)
    years = np.arange(1990, 1990 + n + extra)
    x = rng.normal(size=n + extra)
    y = pd.Series(0.8 * x[:n] + rng.normal(scale=0.3, size=n).cumsum(), index=pd.Index(years[:n]))
    return y, pd.DataFrame({"a": x}, index=pd.Index(years))


def test_covariates_of_a_series_indexed_by_integer_years_are_matched_by_year():
    # X indexed by the same years as y was matched by row: shuffled, it gave another fit (x.a -0.14 vs -0.06
    # on macro-like data), and an X_future for the years 3000-3003 was taken for 2030-2033
    y, X = _yearly_with_covariate()
    model = tsgen.ARIMA(order=(1, 0, 0)).fit(y, X=X.iloc[:40])
    shuffled = tsgen.ARIMA(order=(1, 0, 0)).fit(y, X=X.iloc[:40].sample(frac=1, random_state=0))
    assert shuffled.params_ == pytest.approx(model.params_, rel=1e-9)
    longer = tsgen.ARIMA(order=(1, 0, 0)).fit(y, X=X)  # rows beyond y's years are left for the forecast
    assert longer.params_ == pytest.approx(model.params_, rel=1e-9)
    forecast = model.predict(4, X_future=X.iloc[40:])
    np.testing.assert_allclose(model.predict(4, X_future=X.iloc[40:].iloc[::-1])["mean"], forecast["mean"])
    with pytest.raises(ValueError, match=r"`X_future` does not cover the 4 forecast steps \(2030 to 2033\)"):
        model.predict(4, X_future=X.iloc[40:].set_axis(pd.Index(np.arange(3000, 3004))))
    # an unlabelled X (numpy, or the default 0..n-1 index) is still matched by position
    np.testing.assert_allclose(model.predict(4, X_future=X.iloc[40:].to_numpy())["mean"], forecast["mean"])
    np.testing.assert_allclose(model.predict(4, X_future=X.iloc[40:].reset_index(drop=True))["mean"],
                               forecast["mean"])


def test_backtest_with_covariates_of_integer_years_matches_them_by_year():
    # the backtest slices X into RangeIndex windows, which the matching by value first refused as another
    # kind of index than y's
    y, X = _yearly_with_covariate(n=50, extra=0)
    result = tsgen.backtest(tsgen.ARIMA(order=(1, 0, 0)), y, horizon=3, X=X, start=40, step=4)
    shuffled = tsgen.backtest(tsgen.ARIMA(order=(1, 0, 0)), y, horizon=3, X=X.sample(frac=1, random_state=1),
                              start=40, step=4)
    np.testing.assert_allclose(shuffled.forecasts["mean"], result.forecasts["mean"])
    by_position = tsgen.backtest(tsgen.ARIMA(order=(1, 0, 0)), y.reset_index(drop=True), horizon=3,
                                 X=X.reset_index(drop=True), start=40, step=4)
    np.testing.assert_allclose(by_position.forecasts["mean"], result.forecasts["mean"])
