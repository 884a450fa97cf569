"""Default deep forecasters on real series, next to automatic seasonal ARIMA.

Issue 11's goal "forecasting that works by default": every deep estimator,
built with its defaults (only ``random_state`` and ``progress`` set), is
fitted on a series without its last 24 steps and forecasts them. The goal
is an 80% interval (``q0.1``..``q0.9``) covering 0.65-0.95 of the hold-out
and an MAE within 2x of ``tsgen.ARIMA(order="auto", seasonal_order="auto")``
on the same hold-out.

Series: statsmodels' Mauna Loa CO2 (weekly, resampled to month starts and
interpolated, 1958-2001) and the shipped ``datasets/airline_passengers.csv``
(Box & Jenkins, 1949-1960), on which the defaults were developed; and two
the defaults were not tuned on: statsmodels' El Nino sea surface
temperatures (monthly, 1950-2010, positive: the Box-Cox search runs) and
yearly sunspot numbers (1700-2008, with zeros: never transformed).
Everything goes through the public estimators on pandas input; ``fit s``
is the wall-clock time of ``fit`` alone. Each (model, series, seed) fits in
its own process, ``--jobs`` at a time, each on one thread.

    python benchmarks/deep_forecast.py [--datasets co2 airline elnino sunspots] [--models RNNForecaster ...]
                                       [--seeds 0 1 2] [--jobs 2] [--target-transform auto|none|log|LAMBDA]

``--rolling`` asks instead whether the 24-step bands are calibrated over
more than one path: each model is fitted once on the series up to the
earliest of the origins 96, 72, 48, 24 and 0 steps before the hold-out
(the earliest that leaves at least ``ROLLING_MIN_TRAIN`` steps: all five
on CO2, 48, 24 and 0 on airline) and forecasts 24 steps from every origin,
conditioned on the data up to it (no refit; all of it after the fit is out
of sample; origin 0 forecasts the hold-out itself). Rows print the 80%
interval's coverage pooled over every origin and horizon, then per origin,
per block of 6 horizons, its width against the realised error
(``(q0.9 - q0.1) / 2.563`` over the RMS error: 1 is a calibrated Gaussian
band, above 1 too wide), and the MAE pooled the same way against ARIMA's.

Why pool: one 24-step path is a single draw of a strongly dependent
sequence. The header of each series prints how often a correctly
specified model's own 80% band covers 0.65-0.95 of one such path, and of
the pooled windows: the textbook airline model (SARIMA(0,1,1)(0,1,1)_s on
logs) fitted to the training data, with 20,000 futures simulated from that
fit (so the model is the truth by construction). On CO2 and airline it is
about 0.4 for one path (0.37-0.42 of paths cover more than 0.95), far above
0.9 pooled over the windows: the single hold-out's coverage cannot tell a
calibrated band from a wide one; the pooled figure can.

With several seeds a row prints the MAE ratio and the coverage of each seed
and how many seeds meet the goal. ``1-step cov80`` is the 80% interval's
coverage of one-step forecasts from each of the 24 hold-out origins (the
fitted model conditioned on the data up to the origin, no refit): the 24
steps of one forecast path move together, so its coverage of 1.00 or 0.96
can be one lucky path; the one-step coverage tells a calibrated interval
from a systematically wide one.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd

MODELS = ("RNNForecaster", "DeepMarkovModel", "VRNN", "STORN", "SRNN", "LSTMSSM", "DeepState")
DATASETS = ("co2", "airline", "elnino", "sunspots")
HOLD_OUT = 24
LEVELS = (0.1, 0.5, 0.9)
#: --rolling: forecast origins, in steps before the hold-out, and the fewest steps the fit at the earliest gets
ROLLING_ORIGINS = (96, 72, 48, 24, 0)
ROLLING_MIN_TRAIN = 72
BLOCKS = 4  # horizon blocks of HOLD_OUT // BLOCKS steps in the --rolling table


def load(name: str) -> pd.Series:
    if name == "co2":
        import statsmodels.api as sm

        return sm.datasets.co2.load_pandas().data["co2"].resample("MS").mean().interpolate()
    if name == "elnino":
        import statsmodels.api as sm

        frame = sm.datasets.elnino.load_pandas().data
        values = frame.drop(columns="YEAR").to_numpy(float).ravel()
        start = f"{int(frame['YEAR'].iloc[0])}-01-01"
        return pd.Series(values, index=pd.date_range(start, periods=len(values), freq="MS"), name="sst")
    if name == "sunspots":
        import statsmodels.api as sm

        frame = sm.datasets.sunspots.load_pandas().data
        index = pd.PeriodIndex(frame["YEAR"].astype(int), freq="Y")
        return pd.Series(frame["SUNACTIVITY"].to_numpy(float), index=index, name="sunspots")
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
    # one-step forecasts from every hold-out origin, conditioned on the data up to it (no refit): 24 nearly
    # independent draws of the interval's calibration, where the 24 steps of one path move together
    origins = [y.iloc[: len(train) + k] for k in range(HOLD_OUT)]
    steps = pd.concat(model.predict(1, y=origins, quantiles=LEVELS))
    one_step = float(((test >= steps["q0.1"].to_numpy()) & (test <= steps["q0.9"].to_numpy())).mean())
    transform = getattr(model, "target_transform_", None)
    differencing = getattr(model, "differencing_", None)
    return {"mae": float(np.abs(forecast["mean"].to_numpy() - test).mean()), "coverage": float(covered.mean()),
            "one_step": one_step,
            "seconds": seconds, "epochs": len(getattr(model, "training_history_", None) or []),
            "transform": "-" if transform is None else transform.describe(),
            "lag": "-" if differencing is None else str(differencing.lag),
            "warnings": sorted({type(w.message).__name__ for w in caught})}


def rolling_origins(n_train: int) -> list[int]:
    """The --rolling origins (steps before the hold-out) a series of ``n_train`` steps allows."""
    return [k for k in ROLLING_ORIGINS if n_train - k >= ROLLING_MIN_TRAIN]


def evaluate_rolling(model, y: pd.Series) -> dict:
    """24-step forecasts from origins before the hold-out, from one fit at the earliest (module docstring)."""
    n_train = len(y) - HOLD_OUT
    origins = rolling_origins(n_train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        began = time.perf_counter()
        model.fit(y.iloc[: n_train - origins[0]])
        seconds = time.perf_counter() - began
        forecasts = model.predict(HOLD_OUT, y=[y.iloc[: n_train - k] for k in origins], quantiles=LEVELS)
    actual = np.stack([y.iloc[n_train - k: n_train - k + HOLD_OUT].to_numpy() for k in origins])  # (O, H)
    low, high, mean = (np.stack([f[c].to_numpy() for f in forecasts]) for c in ("q0.1", "q0.9", "mean"))
    covered = ((actual >= low) & (actual <= high)).reshape(len(origins), BLOCKS, -1)
    width = ((high - low) / 2.563).reshape(len(origins), BLOCKS, -1)
    error = (actual - mean).reshape(len(origins), BLOCKS, -1)
    return {"origins": origins, "seconds": seconds, "coverage": covered.mean((0, 2)).tolist(),
            "pooled": float(covered.mean()), "per_origin": covered.mean((1, 2)).tolist(),
            "mae": float(np.abs(error).mean()),
            "width_ratio": (np.sqrt((width ** 2).mean((0, 2))) / np.sqrt((error ** 2).mean((0, 2)))).tolist()}


def oracle_in_range(y: pd.Series, windows: int, paths: int = 20_000) -> tuple[float, float]:
    """How often a correctly specified model's own 80% band covers 0.65-0.95 of one 24-step path, and of
    ``windows`` independent paths pooled: the airline model fitted to the training data, futures simulated
    from that fit (module docstring)."""
    import statsmodels.api as sm

    train = y.iloc[:-HOLD_OUT].to_numpy(float)
    seasonal = (0, 1, 1, 12) if getattr(y.index, "freqstr", None) in ("MS", "M") else (0, 0, 0, 0)
    data = np.log(train) if train.min() > 0 else train
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = sm.tsa.SARIMAX(data, order=(0, 1, 1), seasonal_order=seasonal).fit(disp=False)
    band = fit.get_forecast(HOLD_OUT).conf_int(alpha=0.2)
    state = np.random.get_state()
    np.random.seed(0)  # statsmodels' simulate draws from numpy's global generator
    futures = fit.simulate(HOLD_OUT, repetitions=paths, anchor="end").reshape(HOLD_OUT, -1)
    np.random.set_state(state)
    covered = ((futures >= band[:, :1]) & (futures <= band[:, 1:])).mean(0)
    pooled = covered[: paths // windows * windows].reshape(-1, windows).mean(1)
    return (float(((covered >= 0.65) & (covered <= 0.95)).mean()),
            float(((pooled >= 0.65) & (pooled <= 0.95)).mean()))


def _run(job: tuple) -> dict:
    """One fit in a worker process: (model name, dataset, seed, target_transform, rolling)."""
    import torch

    torch.set_num_threads(1)
    import tsgen

    model_name, dataset, seed, target_transform, rolling = job
    if model_name == "ARIMA":
        model = tsgen.ARIMA(order="auto", seasonal_order="auto")
    else:
        options = {} if target_transform == "auto" else {"target_transform": target_transform}  # the default
        model = getattr(tsgen, model_name)(random_state=seed, progress=False, **options)
    row = (evaluate_rolling if rolling else evaluate)(model, load(dataset))
    print(f"row {model_name} {dataset} {seed}: {row}", file=sys.stderr, flush=True)
    return row


def _transform_option(text: str):
    if text == "none":
        return None
    if text in ("auto", "log"):
        return text
    return float(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["airline", "co2", "elnino"], choices=DATASETS)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--jobs", type=int, default=2, help="fits at once, each in its own process (default 2)")
    parser.add_argument("--target-transform", default="auto", type=_transform_option,
                        help="the deep models' target_transform: auto (default), none, log or a lambda in [0, 1]")
    parser.add_argument("--rolling", action="store_true",
                        help="24-step calibration from origins before the hold-out (module docstring)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    jobs = [("ARIMA", name, 0, None, args.rolling) for name in args.datasets]
    jobs += [(m, name, seed, args.target_transform, args.rolling) for name in args.datasets for m in args.models
             for seed in args.seeds]
    context = multiprocessing.get_context("spawn")
    results = {}
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context, max_tasks_per_child=1) as pool:
        futures = {pool.submit(_run, job): job for job in jobs}
        for done in as_completed(futures):  # progress on stderr; the table below is printed in order
            job, results[futures[done]] = futures[done], done.result()
            print(f"done {job[0]} {job[1]} seed {job[2]}: {results[job]}", file=sys.stderr, flush=True)
    if args.rolling:
        print_rolling(args, results)
    else:
        print_table(args, results)


def print_rolling(args, results: dict) -> None:
    step = HOLD_OUT // BLOCKS
    blocks = " ".join(f"h{b * step + 1}-{(b + 1) * step}".rjust(6) for b in range(BLOCKS))
    print(f"target_transform={args.target_transform!r}, seeds {args.seeds}: 80% interval of 24-step forecasts "
          "from origins up to the hold-out, one fit at the earliest; rows: mean over seeds")
    for name in args.datasets:
        arima = results[("ARIMA", name, 0, None, True)]
        origins = arima["origins"]
        single, pooled = oracle_in_range(load(name), len(origins))
        per_origin = " ".join(f"o{k}".rjust(5) for k in origins)
        print(f"\n{name}: origins {origins} steps before the hold-out, fit on the steps before the first; a "
              f"correctly specified model covers 0.65-0.95 of one 24-step path with probability {single:.2f}, "
              f"pooled over {len(origins)} paths {pooled:.2f}\n{'model':16s} | pooled | cov80 {per_origin} | "
              f"cov80 {blocks} | width/RMS error {blocks} | MAE/ARIMA goal")
        for model_name in ["ARIMA", *args.models]:
            seeds = [0] if model_name == "ARIMA" else args.seeds
            rows = [results[(model_name, name, s, None if model_name == "ARIMA" else args.target_transform, True)]
                    for s in seeds]
            pooled_cov = [r["pooled"] for r in rows]
            ratios = [r["mae"] / arima["mae"] for r in rows]
            met = sum(0.65 <= c <= 0.95 and r <= 2 for c, r in zip(pooled_cov, ratios))
            print(f"{model_name:16s} | " + " ".join(f"{c:4.2f}" for c in pooled_cov).rjust(6) + " | "
                  + f"{'':5s} " + " ".join(f"{c:5.2f}" for c in np.mean([r["per_origin"] for r in rows], 0))
                  + f" | {'':5s} " + " ".join(f"{c:6.2f}" for c in np.mean([r["coverage"] for r in rows], 0))
                  + f" | {'':15s} " + " ".join(f"{r:6.2f}" for r in np.mean([r["width_ratio"] for r in rows], 0))
                  + f" | " + " ".join(f"{r:4.2f}" for r in ratios).rjust(9)
                  + f" {met}/{len(seeds)}", flush=True)


def print_table(args, results: dict) -> None:
    seeds = args.seeds
    print(f"target_transform={args.target_transform!r}, seeds {seeds}, hold-out {HOLD_OUT} steps")
    for name in args.datasets:
        arima = results[("ARIMA", name, 0, None, False)]
        n_train = len(load(name)) - HOLD_OUT
        print(f"\n{name}: {n_train} training steps; ARIMA(auto) MAE {arima['mae']:.3f}, cov80 "
              f"{arima['coverage']:.2f}, 1-step cov80 {arima['one_step']:.2f}, fit {arima['seconds']:.1f} s")
        per_seed = " ".join(f"s{s}".rjust(5) for s in seeds)
        print(f"{'model':16s} {'transform':>14s} {'lag':>3s} | MAE/ARIMA {per_seed} | cov80 {per_seed} | "
              f"1-step cov80 {per_seed} | {'fit s':>6s} {'epochs':>6s} goal  warnings")
        for model_name in args.models:
            rows = [results[(model_name, name, seed, args.target_transform, False)] for seed in seeds]
            ratios = [row["mae"] / arima["mae"] for row in rows]
            met = sum(r <= 2 and 0.65 <= row["coverage"] <= 0.95 for r, row in zip(ratios, rows))
            goal = ("ok" if met else "MISS") if len(seeds) == 1 else f"{met}/{len(seeds)}"
            warned = sorted({w for row in rows for w in row["warnings"]})
            print(f"{model_name:16s} {rows[0]['transform']:>14s} {rows[0]['lag']:>3s} | {'':9s} "
                  + " ".join(f"{r:5.2f}" for r in ratios) + f" | {'':5s} "
                  + " ".join(f"{row['coverage']:5.2f}" for row in rows) + f" | {'':12s} "
                  + " ".join(f"{row['one_step']:5.2f}" for row in rows)
                  + f" | {np.mean([row['seconds'] for row in rows]):6.1f} "
                  f"{np.mean([row['epochs'] for row in rows]):6.0f} {goal:4s}  {', '.join(warned) or '-'}",
                  flush=True)


if __name__ == "__main__":
    main()
