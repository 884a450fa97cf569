"""The pandas edge on long lists of same-shaped series (the stacking fast path):
the same batch as one-by-one conversion, the same checks, the same error names."""
import numpy as np
import pandas as pd
import pytest
import torch

import tsgen
from tsgen.data import to_series_batch


def same_shaped(n=40, length=25, seed=0, dtypes=("float64",)):
    """``n`` series of equal length, each on its own (equal) index object, NaN here and there."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2010-01-01", periods=length, freq="D")
    out = []
    for i in range(n):
        dtype = np.dtype(dtypes[i % len(dtypes)])
        if dtype.kind == "f":
            values = rng.normal(size=length).astype(dtype)
            values[rng.random(length) < 0.1] = np.nan
            values[0] = 1.0
        else:
            values = rng.integers(0, 50, size=length).astype(dtype)
        out.append(pd.Series(values, index=index.copy(), name=f"s{i}"))
    return out


def assert_converts_like_each_alone(items, batch):
    for i, item in enumerate(items):
        alone = to_series_batch(item)
        n = int(alone.lengths[0])
        assert int(batch.lengths[i]) == n
        torch.testing.assert_close(batch.values[i, :n], alone.values[0], equal_nan=True, rtol=0, atol=0)
        assert torch.equal(batch.mask[i, :n], alone.mask[0])
        assert not batch.mask[i, n:].any() and torch.isnan(batch.values[i, n:]).all()
        assert batch.indexes[i].equals(alone.indexes[0])
        assert getattr(batch.indexes[i], "freq", None) == getattr(alone.indexes[0], "freq", None)


@pytest.mark.parametrize("dtypes", [("float64",), ("float32", "int64", "uint8", "float64", ">f8")])
def test_equal_length_series_convert_like_each_alone(dtypes):
    series = same_shaped(dtypes=dtypes)
    before = [s.copy() for s in series]
    batch = to_series_batch(series)
    assert batch.kind == "list" and batch.columns == ("s0",) and batch.values.dtype == torch.float64
    assert batch.values.shape == (40, 25, 1) and batch.values.is_contiguous()
    assert_converts_like_each_alone(series, batch)
    batch.values[:] = 0.0  # a copy: the caller's series are neither aliased nor modified
    for s, b in zip(series, before):
        pd.testing.assert_series_equal(s, b)


def test_equal_length_mixed_items_and_frames_convert_like_each_alone():
    index = pd.period_range("2000-01", periods=12, freq="M")
    rng = np.random.default_rng(1)
    mixed = [
        pd.Series(rng.normal(size=12), index=index),
        pd.DataFrame({"a": rng.normal(size=12)}, index=index.copy()),
        pd.Series(pd.array(rng.integers(0, 9, size=12), dtype="Int64"), index=index),  # extension dtype
        pd.Series(rng.normal(size=12), index=index),
    ]
    assert_converts_like_each_alone(mixed, to_series_batch(mixed))
    frames = [pd.DataFrame(rng.normal(size=(12, 3)), index=index, columns=list("abc")) for _ in range(5)]
    batch = to_series_batch(frames)
    assert batch.values.shape == (5, 12, 3) and batch.columns == ("a", "b", "c")
    assert_converts_like_each_alone(frames, batch)
    arrays = [rng.normal(size=12) for _ in range(4)] + [rng.normal(size=(12, 1))]
    batch = to_series_batch(arrays)
    assert batch.kind == "arrays"
    assert_converts_like_each_alone(arrays, batch)


def test_unequal_lengths_still_pad_at_the_end():
    series = same_shaped(n=6) + [same_shaped(n=1, length=9, seed=3)[0]]
    batch = to_series_batch(series)
    assert batch.values.shape == (7, 25, 1) and batch.lengths.tolist() == [25] * 6 + [9]
    assert_converts_like_each_alone(series, batch)


@pytest.mark.parametrize("make_bad, error, message", [
    (lambda s: s.astype(bool), TypeError, r"`y\[27\]` has non-numeric"),
    (lambda s: s.astype(object), TypeError, r"`y\[27\]` has non-numeric"),
    (lambda s: pd.Series(pd.date_range("2000", periods=len(s)), index=s.index), TypeError, r"`y\[27\]` has non-numeric"),
    (lambda s: s.where(s.index != s.index[3], np.inf), ValueError, r"`y\[27\]` contains infinite values"),
    (lambda s: s * np.nan, ValueError, r"`y\[27\]` is all NaN"),
    (lambda s: s.iloc[:0], ValueError, r"`y\[27\]` is empty"),
    (lambda s: s.iloc[[0, 1, 3, 4, 5]], ValueError, r"`y\[27\]` has an irregular DatetimeIndex"),
    (lambda s: s.iloc[::-1], ValueError, r"`y\[27\]` must have an increasing time index"),
    (lambda s: pd.concat([s, s]), ValueError, r"`y\[27\]` has duplicated timestamps"),
    (lambda s: s.to_frame().assign(b=1.0), ValueError, r"`y\[27\]` has 2 variables but `y\[0\]` has 1"),
    (lambda s: "not a series", TypeError, r"`y\[27\]` must be a pandas Series"),
])
def test_one_bad_series_in_a_long_list_is_named(make_bad, error, message):
    series = same_shaped()
    series[27] = make_bad(series[27])
    with pytest.raises(error, match=message):
        to_series_batch(series)


def test_a_frequency_less_but_regular_index_is_inferred_per_series():
    series = same_shaped(n=5)
    series[2] = pd.Series(series[2].to_numpy(), index=pd.DatetimeIndex(list(series[2].index)))
    assert series[2].index.freq is None
    batch = to_series_batch(series)
    assert batch.indexes[2].freqstr == "D" and series[2].index.freq is None  # the caller's index untouched
    assert_converts_like_each_alone(series, batch)


def test_lds_log_likelihood_of_many_series_is_the_sum_of_each_alone():
    # 300 series: more than one group of the steady part, and a part block at the end
    rng = np.random.default_rng(7)
    model = tsgen.LinearGaussianSSM.from_params(
        transition_matrices=np.array([[0.9, 0.1], [0.0, 0.7]]),
        observation_matrices=np.array([[1.0, 0.5]]),
        transition_covariance=np.eye(2) * 0.2,
        observation_covariance=np.eye(1) * 0.3,
        initial_state_mean=np.zeros(2),
        initial_state_covariance=np.eye(2),
    )
    index = pd.date_range("2000-01-01", periods=61, freq="W")
    series = [pd.Series(rng.normal(size=61).cumsum() * 0.3, index=index.copy()) for _ in range(300)]
    total = model.log_likelihood(series)
    alone = np.array([model.log_likelihood(s) for s in series])
    assert total == pytest.approx(alone.sum(), rel=1e-12)
    per_step = model.log_likelihood(series, per_step=True)
    assert len(per_step) == 300 and per_step[5].index.equals(index)
    np.testing.assert_allclose([p.sum() for p in per_step], alone, rtol=1e-10)
