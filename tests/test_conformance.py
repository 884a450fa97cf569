"""The estimator contract (DESIGN §3), checked for every public estimator.

Each estimator offers ``get_test_params()``: small constructor arguments
that fit in about a second. Every check runs on every (estimator, params).
"""
import inspect

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError

import tsgen
from tsgen.base import BaseForecaster

ESTIMATORS = sorted(
    (
        obj
        for name in tsgen.__all__
        if inspect.isclass(obj := getattr(tsgen, name))
        and issubclass(obj, BaseForecaster)
        and obj is not BaseForecaster
    ),
    key=lambda cls: cls.__name__,
)
CASES = [
    pytest.param(cls, params, id=f"{cls.__name__}-{i}")
    for cls in ESTIMATORS
    for i, params in enumerate(cls.get_test_params())
]
HORIZON = 6


def make_series(n=72, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = 10 + 0.05 * t + 2 * np.sin(2 * np.pi * t / 12) + rng.normal(scale=0.5, size=n)
    return pd.Series(values, index=pd.period_range("2015-01", periods=n, freq="M"), name="sales")


def build(cls, params, **extra):
    return cls(**{"random_state": 0, **params, **extra}) if "random_state" in inspect.signature(cls).parameters else cls(**params, **extra)


def test_registry_is_not_empty():
    assert ESTIMATORS, "no estimator exported from tsgen"


def _comparable(value):
    """A nested estimator (the model of ConformalForecaster, the members of Ensemble) compares by class and
    parameters: ``clone`` copies it, so it is never the same object."""
    if isinstance(value, BaseEstimator):
        return type(value), {k: _comparable(v) for k, v in value.get_params(deep=False).items()}
    if isinstance(value, (list, tuple)) and any(isinstance(v, BaseEstimator) for v in value):
        return type(value), [_comparable(v) for v in value]
    return value


@pytest.mark.parametrize("cls, params", CASES)
def test_constructor_stores_arguments_and_clone_round_trips(cls, params):
    model = build(cls, params)
    for key, value in params.items():
        assert model.get_params()[key] is value
    twin = clone(model)
    ours, theirs = ({k: _comparable(v) for k, v in m.get_params().items()} for m in (model, twin))
    assert theirs == ours or all(
        np.array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object)) for a, b in
        zip(theirs.values(), ours.values())
    )
    model.set_params(**model.get_params())
    assert not [a for a in vars(model) if a.endswith("_") and not a.startswith("_")]


@pytest.mark.parametrize("cls, params", CASES)
def test_methods_before_fit_raise_not_fitted(cls, params, tmp_path):
    model = build(cls, params)
    y = make_series()
    for call in (
        lambda: model.predict(HORIZON),
        lambda: model.sample(HORIZON),
        lambda: model.log_likelihood(y),
        lambda: model.save(tmp_path / "m"),
    ):
        with pytest.raises(NotFittedError):
            call()


@pytest.fixture(scope="module")
def fitted():
    """One fitted model per case, shared by the read-only checks."""
    cache = {}

    def get(cls, params):
        key = (cls.__name__, repr(params))
        if key not in cache:
            y = make_series()
            before = y.copy()
            model = build(cls, params)
            assert model.fit(y) is model
            pd.testing.assert_series_equal(y, before)  # caller's data untouched
            cache[key] = model
        return cache[key]

    return get


@pytest.mark.parametrize("cls, params", CASES)
def test_predict_and_sample_shapes_and_index(cls, params, fitted):
    model = fitted(cls, params)
    y = make_series()
    forecast = model.predict(HORIZON, quantiles=(0.1, 0.5, 0.9))
    assert list(forecast.columns) == ["mean", "q0.1", "q0.5", "q0.9"]
    assert list(forecast.index) == list(pd.period_range(y.index[-1] + 1, periods=HORIZON, freq="M"))
    assert np.isfinite(forecast.to_numpy()).all()
    assert (forecast["q0.1"] <= forecast["q0.9"]).all()
    draws = model.sample(HORIZON, n_samples=7)
    assert draws.shape == (7, HORIZON, 1) and np.isfinite(draws).all()
    conditioned = model.predict(HORIZON, y=y.iloc[:50])
    assert conditioned.index[0] == y.index[50]


@pytest.mark.parametrize("cls, params", CASES)
def test_log_likelihood_total_equals_sum_of_steps_and_score(cls, params, fitted):
    model = fitted(cls, params)
    y = make_series()
    total = model.log_likelihood(y)
    per_step = model.log_likelihood(y, per_step=True)
    assert isinstance(per_step, pd.Series) and per_step.index.equals(y.index)
    assert np.isfinite(total)
    assert per_step.sum() == pytest.approx(total, rel=1e-6, abs=1e-6)  # NaN: steps not scored
    assert model.score(y) == pytest.approx(total / y.notna().sum(), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("cls, params", CASES)
def test_random_state_makes_fit_and_sample_deterministic(cls, params, fitted):
    first = fitted(cls, params)
    second = build(cls, params).fit(make_series())
    np.testing.assert_array_equal(first.sample(HORIZON, n_samples=5), second.sample(HORIZON, n_samples=5))
    np.testing.assert_array_equal(first.sample(HORIZON, n_samples=5), first.sample(HORIZON, n_samples=5))


@pytest.mark.parametrize("cls, params", CASES)
def test_save_load_round_trip(cls, params, fitted, tmp_path):
    model = fitted(cls, params)
    model.save(tmp_path / "model.tsgen")
    again = tsgen.load(tmp_path / "model.tsgen")
    assert type(again) is cls
    np.testing.assert_array_equal(again.sample(HORIZON, n_samples=5), model.sample(HORIZON, n_samples=5))
    pd.testing.assert_frame_equal(again.predict(HORIZON), model.predict(HORIZON))
    y = make_series()
    assert again.log_likelihood(y) == model.log_likelihood(y)


@pytest.mark.parametrize("cls, params", CASES)
def test_bad_input_is_named(cls, params, fitted):
    model = fitted(cls, params)
    with pytest.raises(ValueError, match="horizon"):
        model.predict(0)
    with pytest.raises(ValueError, match="n_samples"):
        model.sample(3, n_samples=0)
    with pytest.raises(ValueError, match="quantiles"):
        model.predict(3, quantiles=(0.5, 1.5))
    with pytest.raises(ValueError, match="variables"):
        model.predict(3, y=pd.DataFrame({"a": np.ones(60), "b": np.ones(60)}))


def test_load_rejects_files_that_are_not_models(tmp_path):
    import torch

    torch.save({"meta": "{}", "tensors": {}}, tmp_path / "bogus")
    with pytest.raises(ValueError, match="not a tsgen model"):
        tsgen.load(tmp_path / "bogus")


#: the per-case checks above, for test files that run the contract on cases of their own (components in models)
CHECKS = [
    test_constructor_stores_arguments_and_clone_round_trips,
    test_methods_before_fit_raise_not_fitted,
    test_predict_and_sample_shapes_and_index,
    test_log_likelihood_total_equals_sum_of_steps_and_score,
    test_random_state_makes_fit_and_sample_deterministic,
    test_save_load_round_trip,
    test_bad_input_is_named,
]


def run_check(check, cls, params, fitted, tmp_path):
    """One of :data:`CHECKS` on ``(cls, params)``; the caller's module imports the ``fitted`` fixture from here."""
    available = {"fitted": fitted, "tmp_path": tmp_path}
    check(cls, params, **{name: available[name] for name in inspect.signature(check).parameters if name in available})
