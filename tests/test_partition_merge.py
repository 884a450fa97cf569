"""Merging a partitioned ARIMA fit redoes no work: the partitions' fitted states carry their
log-likelihoods, so the caller runs no Kalman filter (tsgen/_partition.py, ARIMA._load_fitted_state)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import tsgen
import tsgen.models.arima as arima_module

N_SERIES, PARTITION = 7, 3


def _panel():
    rng = np.random.default_rng(1)
    index = pd.period_range("2001-01", periods=40, freq="M")
    return [pd.Series(100 + rng.normal(size=40).cumsum(), index=index, name=f"s{i}") for i in range(N_SERIES)]


@pytest.fixture
def filter_calls(monkeypatch):
    calls = []
    original = arima_module.filter_history

    def counted(*args, **kwargs):
        calls.append(args[2].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(arima_module, "filter_history", counted)
    return calls


@pytest.mark.parametrize("order", [(1, 1, 0), "auto"])
def test_partitioned_fit_runs_no_kalman_filter_and_keeps_the_fits_llf(order, filter_calls):
    panel = _panel()
    with tsgen.config_context(partition_size=PARTITION):
        model = tsgen.ARIMA(order=order).fit(panel)
    assert filter_calls == []  # neither the partitions' fits nor the caller's merge filtered
    # the carried log-likelihoods are those of the merged parameters: the filter on them agrees
    refiltered = tsgen.ARIMA._from_payload(*_payload_without_llf(model))
    np.testing.assert_allclose(model.llf_, refiltered.llf_, rtol=1e-8)
    aicc = np.asarray(model.aicc_)
    assert np.isfinite(aicc).all()


def test_save_and_load_keep_the_fitted_statistics_without_filtering(tmp_path, filter_calls):
    panel = _panel()
    model = tsgen.ARIMA(order=(1, 1, 1)).fit(panel)
    model.save(tmp_path / "arima.tsgen")
    loaded = tsgen.load(tmp_path / "arima.tsgen")
    assert filter_calls == []
    for name in ("llf_", "aic_", "aicc_", "bic_", "sigma2_", "params_", "converged_"):
        assert repr(getattr(loaded, name)) == repr(getattr(model, name)), name


def _payload_without_llf(model):
    meta, tensors = model._to_payload()
    return meta, {k: v for k, v in tensors.items() if k != "model.llf"}


def test_a_state_without_log_likelihoods_is_loaded_by_filtering(filter_calls):
    # files saved before the fit's log-likelihoods were stored still load: the filter recomputes them
    model = tsgen.ARIMA(order=(1, 1, 1)).fit(_panel())
    loaded = tsgen.ARIMA._from_payload(*_payload_without_llf(model))
    assert sum(filter_calls) == N_SERIES
    np.testing.assert_allclose(loaded.llf_, model.llf_, rtol=1e-8)
    assert loaded.order_ == model.order_


def test_stored_log_likelihoods_of_the_wrong_shape_are_refused():
    model = tsgen.ARIMA(order=(1, 1, 0)).fit(_panel())
    meta, tensors = model._to_payload()
    tensors["model.llf"] = tensors["model.llf"][:-1]
    with pytest.raises(ValueError, match=r"stored log-likelihoods have shape \(6,\).*expected \(7,\)"):
        tsgen.ARIMA._from_payload(meta, tensors)
    tensors["model.llf"] = torch.zeros(N_SERIES, dtype=torch.float32)
    with pytest.raises(ValueError, match="float64"):
        tsgen.ARIMA._from_payload(meta, tensors)


@pytest.mark.parametrize(("block", "value", "message"), [
    ("ar", 1.5, "stored parameters 4 have a non-stationary AR part"),
    ("sigma2", -1.0, "stored parameters 4 are not finite with a positive sigma2"),
    ("ar", float("nan"), "stored parameters 4 are not finite"),
])
def test_the_batched_parameter_check_names_the_bad_series(block, value, message):
    # the stored parameters are checked one batch per spec; a bad series is still named by its position
    model = tsgen.ARIMA(order=(1, 1, 0)).fit(_panel())
    meta, tensors = model._to_payload()
    spec = model._specs[4]
    bad = tensors["model.params.4"].clone()
    bad[spec.blocks[block]] = value
    tensors["model.params.4"] = bad
    with pytest.raises(ValueError, match=message):
        tsgen.ARIMA._from_payload(meta, tensors)


def test_the_batched_parameter_check_accepts_mixed_specs():
    # an automatic fit stores several specs; each group is checked on its own rows
    rng = np.random.default_rng(2)
    index = pd.period_range("2001-01", periods=60, freq="M")
    ar = np.zeros(60)
    for t in range(1, 60):
        ar[t] = 0.8 * ar[t - 1] + rng.normal()
    panel = [pd.Series(rng.normal(size=60).cumsum(), index=index, name="walk"),
             pd.Series(10 + ar, index=index, name="ar1"),
             pd.Series(rng.normal(size=60), index=index, name="noise")]
    model = tsgen.ARIMA(order="auto").fit(panel)
    assert len(set(model._specs)) > 1
    loaded = tsgen.ARIMA._from_payload(*model._to_payload())
    assert repr(loaded.aicc_) == repr(model.aicc_)
