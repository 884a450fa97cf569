"""A global deep model against per-series ARIMA on many short series: the M3 dev subset.

Issue 11's many-series goal: one ``RNNForecaster`` fitted on every series
at once (a "global" model, as DeepAR is used) should beat automatic ARIMA
fitted series by series in mean CRPS. The data are the M3 competition's
Quarterly (756 series, horizon 8, period 4) and Other (174 series, horizon
8) groups in ``../shared/datasets/m3_dev`` (source and licence in its
README): a public, offline many-series set. Report it as "M3 dev subset".

Everything goes through the public estimators on pandas input, in this
fresh process: ``tsgen.RNNForecaster(...).fit(list_of_series)`` then
``sample``; ``tsgen.ARIMA(order="auto", seasonal_order="auto")`` per
series (the ARIMA fits are batched in one call over the list). CRPS is
computed from 200 sample paths per series for both models (ARIMA's paths
are exact Gaussian draws), scaled per series by the mean absolute
one-step change of its training part (as MASE scales errors), so that
series of different magnitudes weigh alike; sMAPE of the mean forecast is
printed beside it next to the competition's published rows.

    python benchmarks/global_forecast.py [--group Quarterly|Other|both] [--series N] [--epochs E]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd

import tsgen
from tsgen.metrics import crps_sample, smape

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "m3_dev"
#: the competition's published sMAPE on these groups (README of the data)
PUBLISHED_SMAPE = {"Quarterly": {"THETA": 8.96, "B-J auto ARIMA": 10.26, "NAIVE2": 9.95},
                   "Other": {"THETA": 4.41, "B-J auto ARIMA": 5.06, "NAIVE2": 6.30}}
FREQUENCY = {"Quarterly": "QS", "Other": None}
N_SAMPLES = 200


def _rows(path: Path) -> dict[str, np.ndarray]:
    frame = pd.read_csv(path)
    return {row.iloc[0]: row.iloc[1:].dropna().to_numpy(float) for _, row in frame.iterrows()}


def _start_date(start) -> str:
    """First quarter's date from R's ``tsp`` start, ``year + (quarter - 1) / 4`` (``"3967/2"`` is 1983 Q3)."""
    value = Fraction(str(start))
    year = math.floor(value)
    return f"{year}-{int((value - year) * 12) + 1:02d}-01"


def load_group(group: str, limit: int | None):
    """Training series (pandas, indexed by calendar time where the group has one) and hold-outs."""
    if not DATA.is_dir():
        sys.exit(f"M3 dev data not found at {DATA}; it lives in the shared datasets folder.")
    info = pd.read_csv(DATA / "M3-info.csv").set_index("series")
    train, test = _rows(DATA / f"M3-{group}-train.csv"), _rows(DATA / f"M3-{group}-test.csv")
    names = list(train)[:limit]
    series, holdouts = [], []
    for name in names:
        values = train[name]
        if FREQUENCY[group] is None:
            index = pd.RangeIndex(len(values))
        else:
            index = pd.date_range(_start_date(info.loc[name, "start"]), periods=len(values), freq=FREQUENCY[group])
        series.append(pd.Series(values, index=index, name=name))
        holdouts.append(test[name])
    return series, holdouts


def scaled_crps(holdouts, paths, series) -> float:
    """Mean over series of CRPS / (mean |one-step change| of the training part)."""
    scores = []
    for y, draws, history in zip(holdouts, paths, series):
        scale = np.mean(np.abs(np.diff(history.to_numpy()))) or 1.0
        scores.append(crps_sample(y, draws[:, : len(y), 0]) / scale)
    return float(np.mean(scores))


def mean_smape(holdouts, paths) -> float:
    return float(np.mean([smape(y, draws[:, : len(y), 0].mean(0)) for y, draws in zip(holdouts, paths)]))


def run_group(group: str, limit: int | None, epochs: int) -> None:
    series, holdouts = load_group(group, limit)
    horizon = max(len(y) for y in holdouts)
    print(f"\nM3 dev subset, {group}: {len(series)} series, horizon {horizon}, "
          f"lengths {min(map(len, series))}-{max(map(len, series))}")
    results = {}

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ARIMA's per-series convergence notes
        arima = tsgen.ARIMA(order="auto", seasonal_order="auto" if FREQUENCY[group] else (0, 0, 0, 0),
                            random_state=0).fit(series)
        arima_paths = arima.sample(horizon, n_samples=N_SAMPLES)
    results["ARIMA(auto), per series"] = (arima_paths, time.perf_counter() - start)

    start = time.perf_counter()
    rnn = tsgen.RNNForecaster(max_epochs=epochs, random_state=0, progress=False).fit(series)
    rnn_paths = rnn.sample(horizon, n_samples=N_SAMPLES)
    results[f"RNNForecaster, global ({len(rnn.training_history_)} epochs)"] = (rnn_paths, time.perf_counter() - start)

    print(f"{'model':44s} {'scaled CRPS':>12s} {'sMAPE':>7s} {'seconds':>8s}")
    for label, (paths, seconds) in results.items():
        print(f"{label:44s} {scaled_crps(holdouts, paths, series):12.4f} "
              f"{mean_smape(holdouts, paths):7.2f} {seconds:8.1f}")
    crps = {label: scaled_crps(holdouts, paths, series) for label, (paths, _) in results.items()}
    labels = list(crps)
    print(f"CRPS ratio global RNN / per-series ARIMA: {crps[labels[1]] / crps[labels[0]]:.3f} (< 1: the RNN wins)")
    for name, value in PUBLISHED_SMAPE[group].items():
        print(f"{'published: ' + name:44s} {'':12s} {value:7.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", choices=["Quarterly", "Other", "both"], default="both")
    parser.add_argument("--series", type=int, default=None, help="first N series of each group (default all)")
    parser.add_argument("--epochs", type=int, default=100, help="RNN max_epochs (early stopping may end sooner)")
    args = parser.parse_args(argv)
    print(f"tsgen {tsgen.__version__}; torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}; "
          "public estimators on pandas input, one fresh process")
    for group in (["Quarterly", "Other"] if args.group == "both" else [args.group]):
        run_group(group, args.series, args.epochs)


if __name__ == "__main__":
    main()
