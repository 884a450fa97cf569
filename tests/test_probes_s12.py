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
