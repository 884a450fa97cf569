"""Default deep forecasters on real monthly series, next to automatic seasonal ARIMA.

Issue 11's goal "forecasting that works by default": every deep estimator,
built with its defaults (only ``random_state`` and ``progress`` set), is
fitted on a monthly series without its last 24 months and forecasts them.
The goal is an 80% interval (``q0.1``..``q0.9``) covering 0.65-0.95 of the
hold-out and an MAE within 2x of ``tsgen.ARIMA(order="auto",
seasonal_order="auto")`` on the same hold-out.

Series: statsmodels' Mauna Loa CO2 (weekly, resampled to month starts and
interpolated, 1958-2001) and the shipped ``datasets/airline_passengers.csv``
(Box & Jenkins, 1949-1960). Everything goes through the public estimators
on pandas input; ``fit s`` is the wall-clock time of ``fit`` alone.

    python benchmarks/deep_forecast.py [--datasets co2 airline] [--models RNNForecaster DeepMarkovModel ...]
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import tsgen

MODELS = ("RNNForecaster", "DeepMarkovModel", "VRNN", "STORN", "SRNN", "LSTMSSM", "DeepState")
HOLD_OUT = 24
LEVELS = (0.1, 0.5, 0.9)


def load(name: str) -> pd.Series:
    if name == "co2":
        import statsmodels.api as sm

        return sm.datasets.co2.load_pandas().data["co2"].resample("MS").mean().interpolate()
    frame = pd.read_csv(Path(__file__).resolve().parents[1] / "datasets" / "airline_passengers.csv")
    index = pd.PeriodIndex(frame["month"], freq="M").to_timestamp()
    return pd.Series(frame["passengers"].to_numpy(float), index=pd.DatetimeIndex(index, freq="MS"), name="passengers")


def evaluate(model, y: pd.Series) -> dict:
    train, test = y.iloc[:-HOLD_OUT], y.iloc[-HOLD_OUT:].to_numpy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        began = time.perf_counter()
        model.fit(train)
        seconds = time.perf_counter() - began
        forecast = model.predict(HOLD_OUT, quantiles=LEVELS)
    covered = (test >= forecast["q0.1"].to_numpy()) & (test <= forecast["q0.9"].to_numpy())
    return {"mae": float(np.abs(forecast["mean"].to_numpy() - test).mean()), "coverage": float(covered.mean()),
            "seconds": seconds, "epochs": len(getattr(model, "training_history_", None) or []),
            "warnings": sorted({type(w.message).__name__ for w in caught})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["co2", "airline"], choices=["co2", "airline"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    args = parser.parse_args()
    for name in args.datasets:
        y = load(name)
        arima = evaluate(tsgen.ARIMA(order="auto", seasonal_order="auto"), y)
        print(f"\n{name}: {len(y) - HOLD_OUT} training months, {HOLD_OUT}-month hold-out")
        print(f"{'model':16s} {'MAE':>8s} {'MAE/ARIMA':>9s} {'cov80':>6s} {'fit s':>7s} {'epochs':>6s}  goal  warnings")
        print(f"{'ARIMA(auto)':16s} {arima['mae']:8.3f} {1.0:9.2f} {arima['coverage']:6.2f} {arima['seconds']:7.1f} "
              f"{'-':>6s}")
        for model_name in args.models:
            row = evaluate(getattr(tsgen, model_name)(random_state=0, progress=False), y)
            ratio = row["mae"] / arima["mae"]
            goal = "ok" if ratio <= 2 and 0.65 <= row["coverage"] <= 0.95 else "MISS"
            print(f"{model_name:16s} {row['mae']:8.3f} {ratio:9.2f} {row['coverage']:6.2f} {row['seconds']:7.1f} "
                  f"{row['epochs']:6d}  {goal:4s}  {', '.join(row['warnings']) or '-'}", flush=True)


if __name__ == "__main__":
    main()
