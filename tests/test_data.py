"""The pandas edge: validation errors, masks, padding, index continuation."""
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tsgen.data import (
    SeriesBatch,
    forecast_frames,
    future_index,
    index_from_spec,
    index_to_spec,
    per_step_series,
    to_series_batch,
    validate_horizon,
)


def monthly(values, start="2000-01"):
    return pd.Series(values, index=pd.period_range(start, periods=len(values), freq="M"), name="y")


@given(
    arrays(np.float64, st.tuples(st.integers(1, 30), st.integers(1, 4)),
           elements=st.one_of(st.floats(-1e6, 1e6), st.just(np.nan))),
)
@settings(max_examples=60, deadline=None)
def test_mask_marks_exactly_the_non_missing_values(values):
    if np.isnan(values).all():
        with pytest.raises(ValueError, match="all NaN"):
            to_series_batch(values)
        return
    batch = to_series_batch(values)
    assert batch.values.shape == (1, *values.shape)
    assert torch.equal(batch.mask[0], torch.from_numpy(~np.isnan(values)))
    np.testing.assert_array_equal(batch.values[0][batch.mask[0]].numpy(), values[~np.isnan(values)])


@given(st.lists(st.integers(1, 20), min_size=1, max_size=5), st.integers(1, 3))
@settings(max_examples=40, deadline=None)
def test_ragged_series_are_padded_at_the_end_and_masked(lengths, dims):
    series = [pd.DataFrame(np.arange(n * dims, dtype=float).reshape(n, dims) + 1) for n in lengths]
    batch = to_series_batch(series)
    assert batch.values.shape == (len(lengths), max(lengths), dims)
    assert batch.lengths.tolist() == lengths
    for i, n in enumerate(lengths):
        assert batch.mask[i, :n].all() and not batch.mask[i, n:].any()
        assert torch.isnan(batch.values[i, n:]).all()


def test_one_array_is_one_series_and_a_list_of_arrays_a_collection():
    assert not to_series_batch(np.arange(5.0)).is_collection
    assert to_series_batch([np.arange(5.0), np.arange(3.0)]).kind == "arrays"


def test_caller_objects_are_not_modified_or_aliased():
    y = monthly([1.0, np.nan, 3.0, 4.0])
    before = y.copy()
    batch = to_series_batch(y)
    batch.values[0, 0, 0] = 99.0
    pd.testing.assert_series_equal(y, before)


@pytest.mark.parametrize(
    "y, error, match",
    [
        (pd.Series([], dtype=float), ValueError, "empty"),
        (monthly([np.nan, np.nan]), ValueError, "all NaN"),
        (monthly([1.0, np.inf]), ValueError, "infinite"),
        (pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]}), TypeError, "non-numeric"),
        (pd.Series([1.0, 2.0, 3.0], index=pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-05"])), ValueError, "irregular"),
        (pd.Series([1.0, 2.0], index=pd.to_datetime(["2020-01-01", "2020-01-01"])), ValueError, "duplicated"),
        (pd.Series([1.0, 2.0], index=["a", "b"]), TypeError, "index"),
        ("not data", TypeError, "`y` must be"),
        ([], ValueError, "empty list"),
        (np.zeros((2, 2, 2)), ValueError, "shape"),
    ],
)
def test_bad_input_names_the_argument(y, error, match):
    with pytest.raises(error, match=match):
        to_series_batch(y, "y")


def test_too_short_for_the_model():
    with pytest.raises(ValueError, match="needs at least 10"):
        to_series_batch(monthly([1.0, 2.0]), "y", min_length=10)


def test_series_with_different_variables_are_rejected():
    with pytest.raises(ValueError, match="same variables"):
        to_series_batch([pd.DataFrame(np.ones((3, 2))), pd.DataFrame(np.ones((3, 1)))])


@pytest.mark.parametrize("horizon", [0, -3, 1.5, "3", True])
def test_bad_horizon(horizon):
    with pytest.raises((ValueError, TypeError), match="horizon"):
        validate_horizon(horizon)


@pytest.mark.parametrize(
    "index",
    [
        pd.period_range("2001Q1", periods=5, freq="Q"),
        pd.date_range("2020-01-31", periods=5, freq="ME"),
        pd.date_range("2020-01-01 00:00", periods=5, freq="h"),
        pd.date_range("2020-01-06", periods=5, freq="W-MON"),
        pd.RangeIndex(10, 20, 2),
    ],
)
def test_index_continues_at_its_frequency_and_round_trips(index):
    batch = to_series_batch(pd.Series(np.arange(len(index), dtype=float), index=index))
    future = future_index(batch.indexes[0], 3)
    whole = batch.indexes[0].append(future)
    if isinstance(index, pd.RangeIndex):
        assert list(future) == [20, 22, 24]
    else:
        assert len(pd.Index(whole).unique()) == 8
        expected = (pd.period_range if isinstance(index, pd.PeriodIndex) else pd.date_range)(index[0], periods=8, freq=index.freq)
        assert list(whole) == list(expected)
    assert index_from_spec(index_to_spec(batch.indexes[0])).equals(batch.indexes[0])


def test_datetime_frequency_is_inferred_when_unset():
    index = pd.DatetimeIndex(["2020-01-01", "2020-01-02", "2020-01-03"])
    batch = to_series_batch(pd.Series([1.0, 2.0, 3.0], index=index))
    assert future_index(batch.indexes[0], 1)[0] == pd.Timestamp("2020-01-04")


def test_forecast_frames_univariate_and_multivariate_columns():
    uni = to_series_batch(monthly([1.0, 2.0, 3.0]))
    frame = forecast_frames(uni, np.zeros((1, 2, 1)), {0.1: np.ones((1, 2, 1))})[0]
    assert list(frame.columns) == ["mean", "q0.1"]
    assert str(frame.index[0]) == "2000-04"
    multi = to_series_batch(pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}))
    frame = forecast_frames(multi, np.zeros((1, 2, 2)), {0.5: np.ones((1, 2, 2))})[0]
    assert frame.columns.nlevels == 2 and frame[("b", "q0.5")].tolist() == [1.0, 1.0]


def test_per_step_series_cuts_each_series_to_its_length():
    batch = to_series_batch([monthly([1.0, 2.0, 3.0]), monthly([4.0, 5.0], start="2001-01")])
    series = per_step_series(batch, np.array([[1.0, 0.0, 2.0], [3.0, 4.0, np.nan]]))
    assert series[0].tolist() == [1.0, 0.0, 2.0] and series[1].tolist() == [3.0, 4.0]
    assert series[1].index.equals(batch.indexes[1])


def test_per_step_log_likelihood_is_nan_where_nothing_was_observed():
    from tsgen import LinearGaussianSSM

    y = monthly([1.0, 2.0, np.nan, 1.5, 2.5, 2.0])
    model = LinearGaussianSSM.from_params(
        transition_matrices=[[0.5]], observation_matrices=[[1.0]], transition_covariance=[[1.0]],
        observation_covariance=[[0.5]], initial_state_mean=[0.0], initial_state_covariance=[[1.0]],
    )
    per_step = model.log_likelihood(y, per_step=True)
    assert np.isnan(per_step.iloc[2]) and np.isfinite(per_step.drop(per_step.index[2])).all()
    assert model.log_likelihood(y) == pytest.approx(per_step.sum())


def test_spec_round_trip_preserves_batch():
    batch = to_series_batch([monthly([1.0, 2.0]), monthly([3.0, np.nan, 5.0], start="2001-01")])
    meta, tensors = batch.to_spec()
    again = SeriesBatch.from_spec(meta, tensors)
    assert torch.equal(again.mask, batch.mask) and again.indexes[1].equals(batch.indexes[1])
