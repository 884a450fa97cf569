"""Origins per second of an ARIMA backtest: tsgen serial / n_jobs=2 / Dask, against statsmodels loops.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/backtest.py [--origins 100] [--skip-dask]

What is timed is the public API on pandas input: ``tsgen.backtest(tsgen.ARIMA(...),
pd.Series)`` against statsmodels' ``SARIMAX`` on the same ``pd.Series``. Each
library runs in its own fresh Python process (``--child``), so neither
inherits the other's imports, caches or thread pools; in tsgen's process the
first call (compiled kernels loaded, joblib workers started) is timed and
printed apart, then the timed runs follow. The ratios are measured in one run.

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
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

import tsgen

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


def tsgen_rows(y, start, args) -> list[tuple[str, float]]:
    """The tsgen timings, in this (fresh) process: first call apart, then the timed runs."""
    model = tsgen.ARIMA(ORDER, SEASONAL)
    rows = []

    def run_tsgen(label, refit, **kwargs):
        seconds, result = timed(lambda: tsgen.backtest(model, y, HORIZON, start=start, refit=refit, season=12,
                                                       random_state=0, **kwargs))
        assert result.n_origins == args.origins
        rows.append((label, seconds))
        return result

    # first call in this fresh process: loading the compiled kernels, one fit; timed, but apart from the runs
    rows.append(("tsgen first call (2 origins, fresh process)",
                 timed(lambda: tsgen.backtest(model, y, HORIZON, start=len(y) - HORIZON - 1, random_state=0))[0]))
    # warm-up of joblib's reusable worker pool, so worker start-up (importing torch) is not timed;
    # batch_size=1 makes two tasks (the two refits would otherwise share one batched fit), so both workers start
    tsgen.backtest(model, y, HORIZON, start=len(y) - HORIZON - 1, random_state=0, n_jobs=2, batch_size=1)
    # serial warm-up after the pool's, whose start-up otherwise slows the first timed run
    tsgen.backtest(model, y, HORIZON, start=len(y) - HORIZON - 1, random_state=0)
    for refit, name in ((False, "no refit"), (True, "refit")):
        serial = run_tsgen(f"tsgen {name}, serial", refit)
        parallel = run_tsgen(f"tsgen {name}, n_jobs=2", refit, n_jobs=2)
        pd.testing.assert_frame_equal(serial.metrics, parallel.metrics)
        if not args.skip_dask:
            from dask.distributed import Client, LocalCluster

            with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
                    Client(cluster) as client:
                # warm-up of both workers (imports, loading the compiled kernels), as for joblib above
                tsgen.backtest(model, y, HORIZON, start=len(y) - HORIZON - 1, backend="dask", client=client,
                               batch_size=1)
                on_dask = run_tsgen(f"tsgen {name}, Dask LocalCluster(2)", refit, backend="dask", client=client)
            pd.testing.assert_frame_equal(serial.metrics, on_dask.metrics)
    return rows


def statsmodels_rows(y, stops) -> list[tuple[str, float]]:
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    SARIMAX(y.iloc[: stops[0]], order=ORDER, seasonal_order=SEASONAL).fit(disp=False)  # imports, first-use caches
    return [(label, timed(lambda: fn(y, stops))[0])
            for label, fn in (("statsmodels apply loop (no refit)", statsmodels_apply),
                              ("statsmodels append loop (no refit)", statsmodels_append),
                              ("statsmodels refit loop", statsmodels_refit))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--origins", type=int, default=100)
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument("--child", choices=("tsgen", "statsmodels"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    y = airline()
    start = len(y) - HORIZON - args.origins + 1
    stops = list(range(start, start + args.origins))
    if args.child:
        rows = tsgen_rows(y, start, args) if args.child == "tsgen" else statsmodels_rows(y, stops)
        print("ROWS " + json.dumps(rows))
        return
    rows = []
    for child in ("tsgen", "statsmodels"):
        forwarded = ["--origins", str(args.origins)] + (["--skip-dask"] if args.skip_dask else [])
        run = subprocess.run([sys.executable, __file__, "--child", child, *forwarded],
                             capture_output=True, text=True)
        lines = [line for line in run.stdout.splitlines() if line.startswith("ROWS ")]
        if run.returncode != 0 or not lines:
            sys.exit(f"the {child} process failed (exit code {run.returncode}):\n{run.stderr[-3000:]}")
        rows += [tuple(row) for row in json.loads(lines[-1][5:])]
    print(f"ARIMA{ORDER}x{SEASONAL} backtest on airline passengers (pd.Series, monthly PeriodIndex): "
          f"{args.origins} origins, horizon {HORIZON}")
    print("public API: tsgen.backtest(tsgen.ARIMA(...), pd.Series) vs statsmodels SARIMAX on the same pd.Series; "
          "each library timed in its own fresh process")
    print(f"{'method':<44} {'seconds':>9} {'origins/s':>10}")
    for label, seconds in rows:
        per_second = "" if label.startswith("tsgen first call") else f"{args.origins / seconds:10.1f}"
        print(f"{label:<44} {seconds:9.2f} {per_second}")
    speed = dict(rows)
    print(f"no-refit speed-up vs statsmodels apply: "
          f"{speed['statsmodels apply loop (no refit)'] / speed['tsgen no refit, serial']:.1f}x (goal >= 10x)")
    print(f"refit time ratio statsmodels / tsgen: "
          f"{speed['statsmodels refit loop'] / speed['tsgen refit, serial']:.2f} (goal >= 1)")


if __name__ == "__main__":
    main()
