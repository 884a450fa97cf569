"""The shipped WTI daily series loads as datasets/README.md says and is internally consistent."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DATASETS = Path(__file__).resolve().parents[1] / "datasets"


def test_wti_daily_loads_as_documented():
    frame = pd.read_csv(DATASETS / "wti_daily.csv", index_col="date", parse_dates=True)
    assert list(frame.columns) == ["price", "log_return"]
    assert len(frame) == 3520
    assert frame.index[0] == pd.Timestamp("2005-01-03") and frame.index[-1] == pd.Timestamp("2018-12-28")
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    assert (frame.index.dayofweek < 5).all()  # trading days only: holidays were dropped, not filled
    assert (frame["price"] > 0).all()
    returns = frame["log_return"]
    assert np.isnan(returns.iloc[0]) and returns.iloc[1:].notna().all()
    expected = 100 * np.diff(np.log(frame["price"].to_numpy()))
    np.testing.assert_allclose(returns.iloc[1:].to_numpy(), expected, atol=1e-6)


def test_wti_daily_has_its_source_and_licence():
    readme = (DATASETS / "README.md").read_text()
    assert "wti_daily.csv" in readme and "DCOILWTICO" in readme and "Public domain" in readme
