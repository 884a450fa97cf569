"""Many series: series fitted per second, serial vs n_jobs=2 vs a Dask LocalCluster, next to statsforecast.

Data: the M3 dev subset's Quarterly training series (756, period 4;
``../shared/datasets/m3_dev/``) replicated under new ids up to ``--series``
series (default 10,000; series ``k`` is series ``k mod 756``), as one long
frame ``unique_id, ds, y`` with quarterly timestamps. Both libraries get
that same frame through their public API:

- tsgen: ``model.fit(long_frame)`` under ``tsgen.config_context(...)``:
  serial, ``n_jobs=2`` (loky), and ``backend="dask"`` on a
  ``LocalCluster(n_workers=2, threads_per_worker=1)`` (worker processes);
  the partitions are ``partition_size=min(500, ceil(N / 4))`` series (500
  is the library's default; fewer series get at least 4 partitions, so
  that two workers have something to share), the same in every
  configuration;
- statsforecast: ``StatsForecast(models=[...], freq="QS", n_jobs=1 | 2).fit(long_frame)``.

Models: ARIMA(1,1,1) (fixed order; statsforecast's ``ARIMA(order=(1,1,1))``,
with its ``fallback_model=Naive()`` for the ~1 in 8 series where it raises),
automatic ARIMA (tsgen ``ARIMA(order="auto", seasonal_order="auto",
trend="auto")``, statsforecast ``AutoARIMA(season_length=4)``) and
automatic ETS (tsgen ``ETS(model="ZZZ")``, statsforecast
``AutoETS(season_length=4)``).

Every configuration is warmed up once untimed on 16 series in 4 partitions,
so worker pools exist and numba kernels are compiled in the workers
(statsforecast's pool is its own: it starts one per call, so its start-up
is part of its time). Wall seconds on a shared 2-core machine: compare
figures measured in the same run only. The fitted models of every tsgen
configuration are checked to be identical (AICc of every series) -- the
partition layout, not the backend, decides the result.

Run from the repository root: ``python benchmarks/panel.py`` (``--series
2000`` for a quicker run, ``--models ets`` for one model, ``--no-dask`` to
skip the cluster).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ets import load  # noqa: E402  (the M3 dev subset reader of benchmarks/ets.py)

MODELS = ("arima", "auto_arima", "ets")


def long_frame(n_series: int) -> pd.DataFrame:
    """``n_series`` series: the Quarterly training series repeated under new ids, as one long frame."""
    base = load("Quarterly", None)
    pieces = []
    for k in range(n_series):
        s = base[k % len(base)]
        ds = pd.date_range("1990-01-01", periods=len(s), freq="QS")
        pieces.append(pd.DataFrame({"unique_id": f"{s.name}_{k // len(base)}", "ds": ds, "y": s.to_numpy()}))
    return pd.concat(pieces, ignore_index=True)


def tsgen_model(name: str):
    import tsgen

    if name == "arima":
        return tsgen.ARIMA(order=(1, 1, 1))
    if name == "auto_arima":
        return tsgen.ARIMA(order="auto", seasonal_order="auto", trend="auto")
    return tsgen.ETS(model="ZZZ")


def statsforecast_model(name: str):
    from statsforecast.models import ARIMA, AutoARIMA, AutoETS

    if name == "arima":
        return ARIMA(order=(1, 1, 1))
    if name == "auto_arima":
        return AutoARIMA(season_length=4)
    return AutoETS(season_length=4)


def time_tsgen(name: str, frame: pd.DataFrame, settings: dict):
    import tsgen

    with tsgen.config_context(**settings):
        start = time.perf_counter()
        model = tsgen_model(name).fit(frame)
        seconds = time.perf_counter() - start
    return seconds, np.asarray(model.aicc_, dtype=float)


def time_statsforecast(name: str, frame: pd.DataFrame, n_jobs: int) -> float:
    from statsforecast import StatsForecast

    from statsforecast.models import Naive

    # statsforecast 2.1's ARIMA(1,1,1) raises on about 1 in 8 M3 quarterly series (all residuals NaN);
    # its fallback model keeps the run going (those series then cost a Naive fit)
    fallback = Naive() if name == "arima" else None
    forecaster = StatsForecast(models=[statsforecast_model(name)], freq="QS", n_jobs=n_jobs, fallback_model=fallback)
    start = time.perf_counter()
    forecaster.fit(frame)
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000, help="number of series (default 10000)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask LocalCluster")
    parser.add_argument("--no-peer", action="store_true", help="skip statsforecast")
    parser.add_argument("--partition-size", type=int, default=None,
                        help="series per partition (default: min(500, ceil(N / 4)))")
    args = parser.parse_args(argv)

    frame = long_frame(args.series)
    warm = long_frame(16)
    n = args.series
    size = args.partition_size or min(500, -(-n // 4))
    configs = {"serial": {"n_jobs": 1}, "n_jobs=2": {"n_jobs": 2}}
    cluster = client = None
    if not args.no_dask:
        from dask.distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        configs["dask (2 workers)"] = {"backend": "dask", "client": client}
    for settings in configs.values():
        settings["partition_size"] = size
    print(f"M3 dev subset, Quarterly training series replicated to {n} series "
          f"({len(frame)} rows) in partitions of {size}, series fitted per second (higher is better)")
    try:
        for name in args.models:
            print(f"\n{name}:")
            rates, reference = {}, None
            for label, settings in configs.items():
                time_tsgen(name, warm, {**settings, "partition_size": 4})  # untimed: workers start, compile
                seconds, aicc = time_tsgen(name, frame, settings)
                rates[f"tsgen {label}"] = n / seconds
                if reference is None:
                    reference = aicc
                same = np.array_equal(aicc, reference, equal_nan=True)
                print(f"  tsgen {label:<18} {seconds:8.1f} s  {n / seconds:8.1f} series/s"
                      f"{'' if same else '  (AICc differ from the serial run!)'}")
            if not args.no_peer:
                for n_jobs in (1, 2):
                    time_statsforecast(name, long_frame(4), n_jobs)  # untimed: numba compilation
                    seconds = time_statsforecast(name, frame, n_jobs)
                    rates[f"statsforecast n_jobs={n_jobs}"] = n / seconds
                    print(f"  statsforecast n_jobs={n_jobs:<4}      {seconds:8.1f} s  {n / seconds:8.1f} series/s")
                for label in configs:
                    peer = "statsforecast n_jobs=1" if label == "serial" else "statsforecast n_jobs=2"
                    print(f"  tsgen {label} / {peer}: {rates[f'tsgen {label}'] / rates[peer]:.2f}x series/s")
    finally:
        if client is not None:
            client.close()
            cluster.close()


if __name__ == "__main__":
    main()
