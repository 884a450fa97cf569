"""``random_state`` is checked at fit by every estimator, and numpy integers count as integers everywhere."""
import inspect

import numpy as np
import pandas as pd
import pytest
import torch

from tsgen.training.randomness import check_random_state

from test_conformance import ESTIMATORS  # every estimator tsgen exports: one list for both suites

SEEDED = [cls for cls in ESTIMATORS if "random_state" in inspect.signature(cls).parameters]
BAD = [
    pytest.param("0", id="str"),
    pytest.param(1.0, id="float"),
    pytest.param(True, id="bool"),
    pytest.param(np.bool_(True), id="numpy-bool"),
    pytest.param(-1, id="negative"),
    pytest.param(2**32, id="2**32"),
    pytest.param(2**70, id="2**70"),
    pytest.param(np.uint64(2**63), id="numpy-uint64-large"),
    pytest.param(torch.Generator(), id="torch-generator"),
    pytest.param(np.random.default_rng(0), id="numpy-generator"),
    pytest.param(np.random.RandomState(0), id="numpy-randomstate"),
    pytest.param([0], id="list"),
]


def make_series(n=60, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = 10 + 2 * np.sin(2 * np.pi * t / 12) + rng.normal(scale=0.5, size=n)
    return pd.Series(values, index=pd.period_range("2015-01", periods=n, freq="M"), name="sales")


def test_every_exported_estimator_takes_a_random_state():
    assert SEEDED and SEEDED == ESTIMATORS


@pytest.mark.parametrize("value", [None, 0, 7, 2**32 - 1, np.int64(5), np.uint32(2**32 - 1), np.int8(3)])
def test_accepted_seeds(value):
    seed = check_random_state(value)
    assert seed is None if value is None else (type(seed) is int and seed == int(value))


@pytest.mark.parametrize("value", BAD)
def test_rejected_seeds_name_random_state(value):
    with pytest.raises((TypeError, ValueError), match="`random_state`"):
        check_random_state(value)


@pytest.mark.parametrize("cls", SEEDED, ids=lambda c: c.__name__)
@pytest.mark.parametrize("value", BAD)
def test_fit_rejects_a_bad_random_state(cls, value):
    model = cls(**{**cls.get_test_params()[0], "random_state": value})
    with pytest.raises((TypeError, ValueError), match="`random_state`"):
        model.fit(make_series())
    assert model.get_params()["random_state"] is value  # stored unchanged, checked at use


def _numpy_ints(value):
    """The same argument with every Python int replaced by a numpy integer."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return np.int64(value)
    if isinstance(value, tuple):
        return tuple(_numpy_ints(v) for v in value)
    if isinstance(value, list):
        return [_numpy_ints(v) for v in value]
    return value


@pytest.mark.parametrize(
    "cls, params",
    [pytest.param(cls, params, id=f"{cls.__name__}-{i}")
     for cls in SEEDED for i, params in enumerate(cls.get_test_params())],
)
def test_numpy_integers_are_accepted_wherever_ints_are(cls, params):
    y = make_series()
    plain = cls(**{**params, "random_state": 3}).fit(y)
    numpy = cls(**{k: _numpy_ints(v) for k, v in {**params, "random_state": 3}.items()}).fit(y)
    horizon, n_samples = np.int64(4), np.int32(5)
    pd.testing.assert_frame_equal(numpy.predict(horizon), plain.predict(4))
    np.testing.assert_array_equal(numpy.sample(horizon, n_samples=n_samples), plain.sample(4, n_samples=5))
