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
