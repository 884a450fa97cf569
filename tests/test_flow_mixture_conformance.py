"""The estimator contract (tests/test_conformance.py's CHECKS) for models built with flow and mixture
components: emissions in RNNForecaster and the Deep Markov Model, transitions in the DMM and the VRNN; and a
two-variable flow emission on a DataFrame (joint density, partially observed rows refused)."""
import numpy as np
import pandas as pd
import pytest

import tsgen
import test_conformance as conformance
from test_conformance import fitted  # noqa: F401  (the shared module-scoped fixture of fitted models)


def _case(cls, **components):
    label = "-".join(f"{k}={v}" for k, v in components.items())
    return pytest.param(cls, {**cls.get_test_params()[0], **components}, id=f"{cls.__name__}-{label}")


CASES = [
    _case(tsgen.RNNForecaster, emission="flow"),
    _case(tsgen.RNNForecaster, emission="mdn_studentt"),
    _case(tsgen.DeepMarkovModel, emission="mdn", transition="mdn"),
    _case(tsgen.VRNN, transition="flow_coupling"),
]


@pytest.mark.parametrize("check", conformance.CHECKS, ids=lambda check: check.__name__.removeprefix("test_"))
@pytest.mark.parametrize("cls, params", CASES)
def test_conformance(cls, params, check, fitted, tmp_path):  # noqa: F811
    conformance.run_check(check, cls, params, fitted, tmp_path)


def _two_variables(n=60, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 1))
    values = np.hstack([base, 0.8 * base + 0.3 * rng.normal(size=(n, 1))]) + 5
    return pd.DataFrame(values, columns=["a", "b"], index=pd.period_range("2015-01", periods=n, freq="M"))


@pytest.mark.parametrize("emission", ["flow", "flow_maf"])
def test_a_joint_flow_over_two_variables_fits_scores_and_refuses_partial_rows(emission):
    y = _two_variables()
    model = tsgen.RNNForecaster(**{**tsgen.RNNForecaster.get_test_params()[0], "emission": emission}).fit(y)
    per_step = model.log_likelihood(y, per_step=True)
    assert np.isfinite(per_step.to_numpy()).all()
    assert model.sample(4, n_samples=3).shape == (3, 4, 2)
    whole_row = y.copy()
    whole_row.iloc[30] = np.nan  # a vector with nothing observed contributes nothing: allowed
    assert np.isfinite(model.log_likelihood(whole_row))
    partial = y.copy()
    partial.iloc[30, 0] = np.nan
    with pytest.raises(ValueError, match="emission"):
        model.log_likelihood(partial)
