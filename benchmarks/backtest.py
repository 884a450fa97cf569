"""Origins per second of an ARIMA backtest: tsgen serial / n_jobs=2 / Dask, against statsmodels loops.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/backtest.py [--origins 100] [--skip-dask]

Series: the airline passengers (144 months); model: ARIMA(0,1,1)(0,1,1,12);
horizon 12; one origin per month. tsgen does the full probabilistic
evaluation at every origin (mean and quantiles, 100 joint sample paths and
their CRPS, the log score); the statsmodels peer only computes the mean
forecast and 80% interval (``get_forecast``), so it does less work per origin.

- refit: each origin refits (tsgen: ARIMA fits each series of a list on its
  own, so the refit windows go to one clone's ``fit`` as a list, ``batch_size``
  windows per batched BFGS call; statsmodels: ``SARIMAX(...).fit()`` per origin).
- no refit: fit once at the first origin, then condition on each new history
  (tsgen: ``refit=False``, histories batched through the Kalman filter;
  statsmodels: ``results.apply(history)`` per origin, and ``results.append``
  one observation at a time).
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import pandas as pd

from tsgen.evaluation import backtest
from tsgen.models.arima import ARIMA

ORDER, SEASONAL, HORIZON = (0, 1, 1), (0, 1, 1, 12), 12


def airline() -> pd.Series:
    frame = pd.read_csv(Path(__file__).resolve().parents[1] / "datasets" / "airline_passengers.csv")
    return pd.Series(frame["passengers"].to_numpy(float), index=pd.PeriodIndex(frame["month"], freq="M"),
                     name="passengers")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def statsmodels_refit(y, stops):
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    for t in stops:
        res = SARIMAX(y.iloc[:t], order=ORDER, seasonal_order=SEASONAL).fit(disp=False)
        res.get_forecast(HORIZON).conf_int(alpha=0.2)


def statsmodels_apply(y, stops):
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    res = SARIMAX(y.iloc[: stops[0]], order=ORDER, seasonal_order=SEASONAL).fit(disp=False)
    for t in stops:
        res.apply(y.iloc[:t]).get_forecast(HORIZON).conf_int(alpha=0.2)


def statsmodels_append(y, stops):
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    res = SARIMAX(y.iloc[: stops[0]], order=ORDER, seasonal_order=SEASONAL).fit(disp=False)
    res.get_forecast(HORIZON).conf_int(alpha=0.2)
    for t in stops[1:]:
        res = res.append(y.iloc[t - 1 : t])
        res.get_forecast(HORIZON).conf_int(alpha=0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--origins", type=int, default=100)
    parser.add_argument("--skip-dask", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    y = airline()
    start = len(y) - HORIZON - args.origins + 1
    stops = list(range(start, start + args.origins))
    model = ARIMA(ORDER, SEASONAL)
    rows = []

    def run_tsgen(label, refit, **kwargs):
        seconds, result = timed(lambda: backtest(model, y, HORIZON, start=start, refit=refit, season=12,
                                                 random_state=0, **kwargs))
        assert result.n_origins == args.origins
        rows.append((label, seconds))
        return result

    # warm-up of joblib's reusable worker pool, so worker start-up (importing torch) is not timed;
    # batch_size=1 makes two tasks (the two refits would otherwise share one batched fit), so both workers start
    backtest(model, y, HORIZON, start=len(y) - HORIZON - 1, random_state=0, n_jobs=2, batch_size=1)
    # serial warm-up (imports, first fit) after the pool's, whose start-up otherwise slows the first timed run
    backtest(model, y, HORIZON, start=len(y) - HORIZON - 1, random_state=0)
    for refit, name in ((False, "no refit"), (True, "refit")):
        serial = run_tsgen(f"tsgen {name}, serial", refit)
        parallel = run_tsgen(f"tsgen {name}, n_jobs=2", refit, n_jobs=2)
        pd.testing.assert_frame_equal(serial.metrics, parallel.metrics)
        if not args.skip_dask:
            from dask.distributed import Client, LocalCluster

            with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
                    Client(cluster) as client:
                # warm-up of both workers (imports, loading the compiled kernels), as for joblib above
                backtest(model, y, HORIZON, start=len(y) - HORIZON - 1, backend="dask", client=client, batch_size=1)
                on_dask = run_tsgen(f"tsgen {name}, Dask LocalCluster(2)", refit, backend="dask", client=client)
            pd.testing.assert_frame_equal(serial.metrics, on_dask.metrics)
    for label, fn in (("statsmodels apply loop (no refit)", statsmodels_apply),
                      ("statsmodels append loop (no refit)", statsmodels_append),
                      ("statsmodels refit loop", statsmodels_refit)):
        rows.append((label, timed(lambda: fn(y, stops))[0]))
    print(f"ARIMA{ORDER}x{SEASONAL} backtest on airline passengers: {args.origins} origins, horizon {HORIZON}")
    print(f"{'method':<40} {'seconds':>9} {'origins/s':>10}")
    for label, seconds in rows:
        print(f"{label:<40} {seconds:9.2f} {args.origins / seconds:10.1f}")
    speed = dict(rows)
    print(f"no-refit speed-up vs statsmodels apply: "
          f"{speed['statsmodels apply loop (no refit)'] / speed['tsgen no refit, serial']:.1f}x (goal >= 10x)")
    print(f"refit time ratio statsmodels / tsgen: "
          f"{speed['statsmodels refit loop'] / speed['tsgen refit, serial']:.2f} (goal >= 1)")


if __name__ == "__main__":
    main()
