"""Regressions found by probing tsgen as a statsmodels / statsforecast user would (stop 12 QA)."""
import numpy as np
import pandas as pd
import pytest

import tsgen


def _monthly(values, start="2020-01-01"):
    return pd.Series(values, index=pd.date_range(start, periods=len(values), freq="MS"))


def test_theta_on_a_constant_seasonal_series_forecasts_the_constant():
    # the seasonality test divided by the series' zero variance (ZeroDivisionError); statsmodels' test
    # finds no season there, and the forecast is the constant
    y = _monthly(np.full(48, 5.0))
    model = tsgen.Theta().fit(y)
    assert model.seasonal_ is None
    np.testing.assert_allclose(model.predict(3)["mean"].to_numpy(), 5.0)


@pytest.mark.parametrize("convert", [lambda s: s.astype(object), lambda s: s.astype(str)])
def test_numbers_held_as_objects_are_refused_naming_the_dtype_and_the_conversion(convert):
    # the message said "non-numeric column(s) ['y']: expected real numbers" about a column of numbers
    y = _monthly(np.arange(24.0)).rename("y")
    with pytest.raises(TypeError, match=r"\['y'\] of dtype (object|str).*pd\.to_numeric"):
        tsgen.Naive().fit(convert(y))
    X = pd.DataFrame({"a": np.arange(24.0)}, index=y.index)
    with pytest.raises(TypeError, match=r"`X` has non-numeric column\(s\) \['a'\] of dtype object"):
        tsgen.ARIMA(order=(1, 0, 0)).fit(y, X=X.astype(object))


@pytest.mark.parametrize("freq, period", [
    ("BME", 12), ("BMS", 12), ("BQS", 4), ("BQE-MAR", 4), ("BYS", 1), ("B", 5), ("C", 5),
    ("ME", 12), ("QS-NOV", 4), ("W-WED", 52), ("h", 24), ("D", 7), ("min", 1), ("bh", 1),
])
def test_seasonal_period_of_business_calendar_frequencies(freq, period):
    # business month/quarter/year ends were read as business days (period 5) by their leading "B"
    y = pd.Series(np.arange(60.0) % 5, index=pd.date_range("2021-01-04", periods=60, freq=freq))
    assert tsgen.SeasonalNaive().fit(y).period_ == period


def _sliced_past_a_repeat(n=40):
    """A regular series cut from a longer one with a repeated timestamp before the cut (NAB's
    ec2_request_latency read with read_csv, then its last rows): under pandas 2 the slice's index
    inherits the parent's 'has duplicates' flag."""
    stamps = pd.date_range("2014-03-07", periods=n + 10, freq="5min")
    stamps = stamps.insert(3, stamps[3])
    full = pd.Series(np.sin(np.arange(len(stamps)) / 3.0) + 10, index=stamps)
    assert full.index.has_duplicates
    return full.iloc[-n:]


def test_a_series_sliced_past_a_repeated_timestamp_is_accepted():
    # it raised IndexError ('index 0 is out of bounds') looking for the first duplicate of a unique index
    y = _sliced_past_a_repeat()
    forecast = tsgen.Naive().fit(y).predict(2)
    assert forecast.index[0] == y.index[-1] + pd.Timedelta("5min")
    np.testing.assert_allclose(forecast["mean"], y.iloc[-1])
    assert tsgen.data.regularize(y).index.equals(y.index)


def test_the_anomaly_stream_keeps_the_frequency_of_a_series_sliced_past_a_repeated_timestamp():
    # frequency_of trusted index.is_unique, which a pandas 2 slice inherits: the stream lost its frequency
    from tsgen.anomaly._stream import frequency_of, stream_view

    y = _sliced_past_a_repeat()
    assert frequency_of(y.index) == "5min"
    view, rows = stream_view(y, None)
    assert rows is None and view.index.equals(y.index)


def test_a_jump_on_a_flat_line_is_flagged_under_a_point_mass_model():
    # Naive on a flat line scores every calibration step -inf: the threshold was NaN and nothing was flagged
    flat = pd.Series(45.0, index=pd.date_range("2020-01-01", periods=60, freq="D"))
    jumped = flat.where(np.arange(60) != 30, 80.0)
    with pytest.warns(UserWarning, match="finite calibration scores are too few"):
        detector = tsgen.AnomalyDetector(tsgen.Naive()).fit(flat)
    assert not np.isnan(detector.threshold_)
    flags = detector.predict(jumped)
    assert bool(flags.iloc[30])
    assert not flags.iloc[:30].any()


def test_covariates_sliced_past_a_repeated_timestamp_are_matched_by_time():
    y = _sliced_past_a_repeat(44)
    X = (y * 0 + np.arange(44.0)).to_frame("x")
    stamps = X.index.insert(0, X.index[0]).append(X.index[-1:])  # a repeat before and after the slice
    X = pd.DataFrame({"x": np.r_[0.0, X["x"].to_numpy(), 99.0]}, index=stamps).iloc[1:-1]
    model = tsgen.ARIMA(order=(1, 0, 0)).fit(y.iloc[:-4], X=X.iloc[:-4])
    assert model.predict(4, X=X.iloc[-4:]).shape == (4, 4)


def test_seasonal_naive_too_short_for_its_inferred_season_names_the_period():
    # 40 weekly values and the inferred 52-week season: the message did not say which season was meant
    y = pd.Series(np.arange(40.0), index=pd.date_range("2021-01-03", periods=40, freq="W"))
    with pytest.raises(ValueError, match=r"period=52 steps"):
        tsgen.SeasonalNaive().fit(y)
    assert tsgen.SeasonalNaive(period=4).fit(y).period_ == 4


@pytest.mark.parametrize("freq", ["MS", "h"])
def test_save_and_load_keep_a_time_zone_with_daylight_saving(tmp_path, freq):
    # load rebuilt the index from the first stamp's text ('+01:00') and the zone's name, which pandas
    # refused: "Inferred time zone not equal to passed time zone"
    index = pd.date_range("2020-01-01", periods=48, freq=freq, tz="Europe/Berlin")
    y = pd.Series(10 + np.sin(np.arange(48.0)), index=index)
    model = tsgen.Naive().fit(y)
    model.save(tmp_path / "naive.tsgen")
    loaded = tsgen.load(tmp_path / "naive.tsgen")
    pd.testing.assert_frame_equal(loaded.predict(3), model.predict(3))


@pytest.mark.parametrize("model", [tsgen.Naive, tsgen.SeasonalNaive, tsgen.Drift, tsgen.Mean])
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_baseline_fitted_on_a_constant_series_scores_a_departure_as_impossible(model):
    # sigma is 0 (a point mass): every step's log-likelihood was NaN, read as "missing", the total 0.0,
    # so a jump on a flat line scored like no data at all
    index = pd.date_range("2020-01-01", periods=60, freq="D")
    flat = pd.Series(45.0, index=index)
    jumped = flat.where(np.arange(60) != 30, 80.0)
    fitted = model().fit(flat)
    per_step = fitted.log_likelihood(jumped, per_step=True)
    assert per_step.iloc[30] == -np.inf and per_step.iloc[10] == np.inf
    assert fitted.log_likelihood(jumped) == -np.inf and fitted.score(jumped) == -np.inf
    assert fitted.log_likelihood(flat) == np.inf


def test_sample_scores_take_model_samples_of_a_univariate_series_as_they_come():
    # model.sample gives (n_samples, horizon, 1); scoring it against the test Series (horizon,) was refused
    y = pd.Series(10 + np.sin(np.arange(48.0)), index=pd.date_range("2020-01-01", periods=48, freq="MS"))
    train, test = y.iloc[:40], y.iloc[40:]
    samples = tsgen.Naive(random_state=0).fit(train).sample(8, n_samples=200)
    assert samples.shape == (200, 8, 1)
    m = tsgen.metrics
    assert m.crps_sample(test, samples) == m.crps_sample(test, samples[..., 0])
    assert m.energy_score(test, samples) == m.energy_score(test, samples[..., 0])
    assert m.variogram_score(test, samples) == m.variogram_score(test, samples[..., 0])
    assert m.sample_interval_coverage(test, samples) == m.sample_interval_coverage(test, samples[..., 0])
    with pytest.raises(ValueError, match="samples"):
        m.crps_sample(test, np.repeat(samples, 2, axis=-1))  # two variables against one: still refused
