"""Automatic ETS on the M3 dev subset: tsgen.ETS(model="ZZZ") vs statsforecast's AutoETS, in one run.

Both fit every series of a group (M3 Quarterly: 756 series, period 4; M3
Other: 174 series, no season) by automatic AICc selection over the same
family (error A/M, trend N/A/Ad, season N/A/M, multiplicative components
only for positive data, no additive error with a multiplicative season),
single-threaded, from pandas input through each library's public API:
``tsgen.ETS(model="ZZZ").fit(list_of_series)`` and
``StatsForecast(models=[AutoETS(season_length=m)], freq=1, n_jobs=1).fit(long_frame)``.
Each side first fits a few series untimed (numba compilation / cache load).

AICc is compared on one scale: statsforecast reports ``-2 loglik`` without
the constant ``n (log(2 pi / n) + 1)`` (R's convention), which is added
back here, so both are ``-2 llf + 2k + 2k(k+1)/(n-k-1)`` with the exact
Gaussian log-likelihood and the same parameter count ``k``. Lower is better;
"no worse" allows 1e-6.

Run from the repository root: ``python benchmarks/ets.py`` (``--groups
Quarterly`` to run one group, ``--limit N`` for the first N series).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "m3_dev"
PERIODS = {"Quarterly": 4, "Other": 1}


def load(group: str, limit: int | None) -> list[pd.Series]:
    """The training series of a group, as pandas Series with a quarterly PeriodIndex (or a RangeIndex)."""
    frame = pd.read_csv(DATA / f"M3-{group}-train.csv")
    out = []
    for _, row in frame.iterrows():
        values = row.drop("series").dropna().to_numpy(float)
        if PERIODS[group] == 4:
            index = pd.period_range("1990Q1", periods=len(values), freq="Q")
        else:
            index = pd.RangeIndex(len(values))
        out.append(pd.Series(values, index=index, name=row["series"]))
    return out[:limit] if limit else out


def fit_tsgen(series: list[pd.Series]):
    import tsgen

    start = time.perf_counter()
    model = tsgen.ETS(model="ZZZ").fit(series)
    seconds = time.perf_counter() - start
    return seconds, np.asarray(model.aicc_), list(model.model_)


def fit_statsforecast(series: list[pd.Series], period: int):
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS

    long = pd.concat(
        [pd.DataFrame({"unique_id": s.name, "ds": np.arange(len(s)), "y": s.to_numpy()}) for s in series],
        ignore_index=True,
    )
    forecaster = StatsForecast(models=[AutoETS(season_length=period)], freq=1, n_jobs=1)
    start = time.perf_counter()
    forecaster.fit(long)
    seconds = time.perf_counter() - start
    ids = list(forecaster.uids)
    fitted = {uid: forecaster.fitted_[i, 0].model_ for i, uid in enumerate(ids)}
    aicc, names = [], []
    for s in series:
        info = fitted[s.name]
        n = len(s)
        aicc.append(info["aicc"] + n * (np.log(2 * np.pi / n) + 1.0))  # R's constant-free -2 loglik -> exact
        names.append(info["method"].replace("ETS(", "").replace(")", "").replace(",", ""))
    return seconds, np.asarray(aicc), names


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", nargs="+", default=list(PERIODS), choices=list(PERIODS))
    parser.add_argument("--limit", type=int, default=None, help="first N series of each group")
    args = parser.parse_args(argv)
    for group in args.groups:
        series = load(group, args.limit)
        period = PERIODS[group]
        fit_tsgen(series[:3])  # untimed: numba cache load / compilation
        fit_statsforecast(series[:3], period)
        t_ts, aicc_ts, forms_ts = fit_tsgen(series)
        t_sf, aicc_sf, _ = fit_statsforecast(series, period)
        n = len(series)
        diff = aicc_ts - aicc_sf
        print(f"M3 dev subset, {group}: {n} series, period {period}")
        print(f"  tsgen.ETS(model='ZZZ')   fit {t_ts:8.2f} s  ({1000 * t_ts / n:7.2f} ms/series)")
        print(f"  statsforecast AutoETS    fit {t_sf:8.2f} s  ({1000 * t_sf / n:7.2f} ms/series)")
        print(f"  speed-up (statsforecast time / tsgen time, same run): {t_sf / t_ts:.1f}x")
        print(f"  AICc tsgen - statsforecast: mean {diff.mean():+.3f}, median {np.median(diff):+.3f}; "
              f"tsgen no worse on {np.mean(diff <= 1e-6):.1%} of series, worse by > 1 on {np.mean(diff > 1):.1%}")
        counts = pd.Series(forms_ts).value_counts()
        print("  tsgen forms chosen: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
