"""Many series fitted and forecast by partitions, serially, on joblib workers and on a Dask cluster:
every result equals the serial run's (tsgen.config_context, tsgen/_partition.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import tsgen
from tsgen._partition import merge_states, select_series, split_state
from tsgen.data import to_series_batch

N_SERIES = 7
PARTITION = 3  # 7 series: partitions of 3, 3 and 1


def _panel():
    rng = np.random.default_rng(0)
    index = pd.period_range("2001-01", periods=48, freq="M")
    season = 8 * np.sin(np.arange(48) * 2 * np.pi / 12)
    out = []
    for i in range(N_SERIES):
        n = 48 - 3 * (i % 3)  # unequal lengths: partitions are cut to their own longest series
        y = 200 + 3 * i + rng.normal(size=48).cumsum() + (i % 2) * season
        out.append(pd.Series(y[:n], index=index[:n], name=f"s{i}"))
    return out


MODELS = [
    pytest.param(lambda: tsgen.ARIMA(order=(1, 1, 0), random_state=0), id="arima-fixed"),
    pytest.param(lambda: tsgen.ARIMA(order="auto", random_state=0), id="arima-auto"),
    pytest.param(lambda: tsgen.ETS(random_state=0), id="ets-auto"),
    pytest.param(lambda: tsgen.ETS(error="mul", trend="add", random_state=0), id="ets-mul"),
    pytest.param(lambda: tsgen.Theta(random_state=0), id="theta"),
    pytest.param(lambda: tsgen.SeasonalNaive(random_state=0), id="snaive"),
    pytest.param(lambda: tsgen.Drift(random_state=0), id="drift"),
]


def _outputs(make, panel):
    model = make().fit(panel)
    fitted = {k: v for k, v in vars(model).items() if k.endswith("_") and not k.startswith("_")
              and k not in ("history_", "covariates_")}
    return {
        "fitted": fitted,
        "predict": pd.concat(model.predict(5, quantiles=(0.1, 0.9))),
        "sample": np.stack(model.sample(4, n_samples=3)),
        "llf": model.log_likelihood(panel),
        "per_step": pd.concat(model.log_likelihood(panel, per_step=True)),
        "new_history": pd.concat(model.predict(3, y=[s.iloc[:-2] for s in panel])),
    }


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if key == "fitted":
            assert a[key].keys() == b[key].keys()
            for name in a[key]:
                assert repr(a[key][name]) == repr(b[key][name]), name
        elif isinstance(a[key], (pd.DataFrame, pd.Series)):
            assert a[key].equals(b[key]), key
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("make", MODELS)
def test_partitions_on_joblib_workers_equal_the_serial_run(make):
    panel = _panel()
    with tsgen.config_context(partition_size=PARTITION):
        serial = _outputs(make, panel)
    with tsgen.config_context(partition_size=PARTITION, n_jobs=2):
        parallel = _outputs(make, panel)
    _assert_same(serial, parallel)


@pytest.mark.parametrize("make", MODELS)
def test_partitioned_fit_equals_the_one_batch_fit(make):
    # a series' fit does not depend on its batch mates: partitions change no fit and no closed-form forecast
    panel = _panel()
    whole = make().fit(panel)
    with tsgen.config_context(partition_size=PARTITION):
        parts = make().fit(panel)
    # the chosen models are the same; numbers agree to rounding (a batch's reductions run in another order)
    for name in ("model_", "order_", "seasonal_order_", "method_"):
        if hasattr(whole, name):
            assert repr(getattr(whole, name)) == repr(getattr(parts, name)), name
    for name in ("llf_", "aicc_", "sigma_", "sigma2_"):
        if hasattr(whole, name):
            np.testing.assert_allclose(getattr(whole, name), getattr(parts, name), rtol=1e-9, err_msg=name)
    np.testing.assert_allclose(pd.concat(whole.predict(4)).to_numpy(), pd.concat(parts.predict(4)).to_numpy(),
                               rtol=1e-12, atol=1e-9)
    assert whole.log_likelihood(panel) == pytest.approx(parts.log_likelihood(panel), rel=1e-12)


def test_dask_local_cluster_equals_the_serial_run():
    distributed = pytest.importorskip("dask.distributed")
    panel = _panel()
    make = MODELS[2].values[0]  # ETS auto: mixed forms per series
    with tsgen.config_context(partition_size=PARTITION):
        serial = _outputs(make, panel)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        with tsgen.config_context(partition_size=PARTITION, backend="dask", client=client):
            on_dask = _outputs(make, panel)
        # a scheduler address works as well as a Client
        with tsgen.config_context(partition_size=PARTITION, backend="dask", client=cluster.scheduler_address):
            by_address = make().fit(panel).predict(5, quantiles=(0.1, 0.9))
    _assert_same(serial, on_dask)
    assert pd.concat(by_address).equals(serial["predict"])


def test_partitioned_model_saves_and_loads(tmp_path):
    panel = _panel()
    with tsgen.config_context(partition_size=PARTITION):
        model = tsgen.ETS(random_state=0).fit(panel)
    model.save(tmp_path / "m.tsgen")
    loaded = tsgen.load(tmp_path / "m.tsgen")
    assert pd.concat(loaded.predict(4)).equals(pd.concat(model.predict(4)))


def test_sample_paths_follow_the_partition_seed_not_the_workers():
    panel = _panel()
    with tsgen.config_context(partition_size=PARTITION):
        first = np.stack(tsgen.Naive(random_state=3).fit(panel).sample(4, n_samples=2))
        again = np.stack(tsgen.Naive(random_state=3).fit(panel).sample(4, n_samples=2))
        other = np.stack(tsgen.Naive(random_state=4).fit(panel).sample(4, n_samples=2))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_state_split_and_merge_are_inverse():
    panel = _panel()
    model = tsgen.ARIMA(order=(1, 0, 0)).fit(panel)
    meta, tensors = model._fitted_state()
    rows = [slice(0, 3), slice(3, 6), slice(6, 7)]
    parts = [split_state(meta, tensors, N_SERIES, r) for r in rows]
    merged_meta, merged = merge_states(parts, [3, 3, 1])
    assert merged_meta == meta
    assert merged.keys() == tensors.keys()
    for name in tensors:
        assert merged[name].equal(tensors[name])
    batch = to_series_batch(panel)
    piece = select_series(batch, slice(3, 6))
    assert piece.n_series == 3 and piece.indexes == batch.indexes[3:6]
    assert piece.values.shape[1] == int(batch.lengths[3:6].max())


def test_settings_are_checked():
    with pytest.raises(ValueError, match="partition_size"):
        tsgen.set_config(partition_size=0)
    with pytest.raises(ValueError, match="backend"):
        tsgen.set_config(backend="spark")
    with pytest.raises(ValueError, match="n_jobs"):
        tsgen.set_config(n_jobs=0)
    with pytest.raises(TypeError, match="unknown tsgen setting"):
        tsgen.set_config(jobs=2)
    with pytest.raises(ValueError, match="client"):
        with tsgen.config_context(partition_size=PARTITION, client="tcp://127.0.0.1:1"):
            tsgen.Naive().fit(_panel())
