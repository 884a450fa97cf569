"""The pandas edge over many series: the vectorised path gives what one-by-one conversion gives."""
import numpy as np
import pandas as pd
import pytest
import torch

from tsgen.data import to_series_batch, validate_index


def many_series(n=30, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(5, 40))
        values = rng.normal(size=length)
        values[rng.random(length) < 0.1] = np.nan
        values[0] = 1.0
        out.append(pd.Series(values, index=pd.date_range("2001-01-01", periods=length, freq="D"), name=f"s{i}"))
    return out


def test_a_list_converts_like_each_series_alone():
    series = many_series()
    batch = to_series_batch(series)
    assert batch.kind == "list" and batch.columns == ("s0",)
    for i, s in enumerate(series):
        alone = to_series_batch(s)
        n = len(s)
        assert int(batch.lengths[i]) == n
        torch.testing.assert_close(batch.values[i, :n], alone.values[0], equal_nan=True)
        assert torch.equal(batch.mask[i, :n], alone.mask[0])
        assert not batch.mask[i, n:].any() and torch.isnan(batch.values[i, n:]).all()
        assert batch.indexes[i].equals(s.index) and batch.indexes[i].freq == s.index.freq


def test_errors_name_the_offending_series():
    series = many_series(6)
    bad = list(series)
    bad[3] = bad[3] * np.nan
    with pytest.raises(ValueError, match=r"`y\[3\]` is all NaN"):
        to_series_batch(bad)
    bad = list(series)
    bad[4] = bad[4].where(bad[4].index != bad[4].index[2], np.inf)
    with pytest.raises(ValueError, match=r"`y\[4\]` contains infinite values"):
        to_series_batch(bad)
    bad = list(series)
    bad[2] = bad[2].iloc[:2]
    with pytest.raises(ValueError, match=r"`y\[2\]` has 2 time steps; this model needs at least 3"):
        to_series_batch(bad, min_length=3)
    bad = list(series)
    bad[5] = bad[5].iloc[[0, 1, 3, 4, 5]]
    with pytest.raises(ValueError, match=r"`y\[5\]` has an irregular DatetimeIndex"):
        to_series_batch(bad)
    bad = list(series)
    bad[1] = bad[1].iloc[::-1]
    with pytest.raises(ValueError, match=r"`y\[1\]` must have an increasing time index"):
        to_series_batch(bad)


def test_nullable_and_integer_dtypes():
    nullable = pd.Series(pd.array([1.0, None, 3.0], dtype="Float64"), index=pd.period_range("2000", periods=3, freq="Y"))
    batch = to_series_batch([nullable, pd.Series([1, 2, 3], index=nullable.index)])
    assert batch.mask[0, :, 0].tolist() == [True, False, True]
    assert batch.values.dtype == torch.float64 and batch.values[1, :, 0].tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(TypeError, match=r"`y\[1\]` has non-numeric"):
        to_series_batch([nullable, pd.Series([True, False, True], index=nullable.index)])
    with pytest.raises(TypeError, match="non-numeric"):
        to_series_batch(np.array([1 + 2j, 3j]))


def test_a_shared_index_and_the_callers_data():
    index = pd.date_range("2020-01-01", periods=12, freq="MS")
    frame = pd.DataFrame({"a": np.arange(12.0), "b": np.ones(12)}, index=index)
    series = [frame["a"], frame["b"]]
    batch = to_series_batch(series)
    batch.values[:] = 0.0
    assert frame["a"].tolist() == list(range(12))  # copied, not aliased
    # one index object shared by several series is validated once and shared
    # (series built on it; pandas 3 gives each column of a frame its own index object)
    shared = to_series_batch([pd.Series(np.arange(12.0), index=index), pd.Series(np.ones(12), index=index)])
    assert shared.indexes[0] is shared.indexes[1]


@pytest.mark.parametrize("index", [
    pd.date_range("2000-01-31", periods=7, freq="ME"),
    pd.date_range("2000-01-03", periods=9, freq="B"),
    pd.date_range("2000", periods=9, freq="2h", tz="Europe/Paris"),
    pd.period_range("2000-01", periods=6, freq="2M"),
    pd.period_range("2000Q1", periods=1, freq="Q"),
])
def test_regular_indexes_are_accepted_as_they_are(index):
    assert validate_index(index, "y").equals(index)


def test_irregular_period_index_is_refused():
    index = pd.PeriodIndex([pd.Period("2000-01", "M"), pd.Period("2000-02", "M"), pd.Period("2000-04", "M")])
    with pytest.raises(ValueError, match="irregular PeriodIndex"):
        validate_index(index, "y")
    with pytest.raises(ValueError, match="duplicated"):
        validate_index(index[[0, 1, 1]], "y")


def test_forecast_frames_of_many_series_are_independent():
    from tsgen import ARIMA

    series = [s.fillna(0.0) for s in many_series(5)]
    series.insert(1, series[0] * 2 + 1)  # ends with series[0]: the two forecasts have equal indexes
    model = ARIMA(order=(1, 0, 0), trend="c").fit(series)
    frames = model.predict(3)
    for s, frame in zip(series, frames):
        expected = pd.date_range(s.index[-1], periods=4, freq="D")[1:]
        assert frame.index.equals(expected) and frame.index.freq == expected.freq
        alone = ARIMA(order=(1, 0, 0), trend="c").fit(s).predict(3)
        pd.testing.assert_frame_equal(frame, alone, rtol=1e-6)
    frames[0].index.name = "renamed"
    frames[0].iloc[0, 0] = -1.0
    assert frames[1].index.name is None and frames[1].iloc[0, 0] != -1.0
