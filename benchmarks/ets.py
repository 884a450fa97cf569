"""Automatic ETS on the M3 dev subset: tsgen.ETS(model="ZZZ") vs statsforecast's AutoETS, in one run.

Both fit every series of a group (M3 Quarterly: 756 series, period 4; M3
Other: 174 series, no season) by automatic AICc selection over the same
family (error A/M, trend N/A/Ad, season N/A/M, multiplicative components
only for positive data, no additive error with a multiplicative season;
statsforecast's optimiser bounds each smoothing parameter in a box, tsgen
uses statsmodels' bounds beta <= alpha, gamma <= 1 - alpha, so the AICc
comparison is also printed on the series where statsforecast's fit
respects those),
single-threaded, from pandas input through each library's public API:
``tsgen.ETS(model="ZZZ").fit(list_of_series)`` and
``StatsForecast(models=[AutoETS(season_length=m)], freq=1, n_jobs=1).fit(long_frame)``.
Each side first fits a few series untimed (numba compilation / cache load).
Wall and CPU seconds are both printed: on a shared machine the CPU time
of this process is the steadier measure of the work done.

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

    start, cpu = time.perf_counter(), time.process_time()
    model = tsgen.ETS(model="ZZZ").fit(series)
    seconds = (time.perf_counter() - start, time.process_time() - cpu)
    return seconds, np.asarray(model.aicc_), list(model.model_), None


def fit_statsforecast(series: list[pd.Series], period: int):
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS

    long = pd.concat(
        [pd.DataFrame({"unique_id": s.name, "ds": np.arange(len(s)), "y": s.to_numpy()}) for s in series],
        ignore_index=True,
    )
    forecaster = StatsForecast(models=[AutoETS(season_length=period)], freq=1, n_jobs=1)
    start, cpu = time.perf_counter(), time.process_time()
    forecaster.fit(long)
    seconds = (time.perf_counter() - start, time.process_time() - cpu)
    ids = list(forecaster.uids)
    fitted = {uid: forecaster.fitted_[i, 0].model_ for i, uid in enumerate(ids)}
    aicc, names, inside = [], [], []
    for s in series:
        info = fitted[s.name]
        n = len(s)
        aicc.append(info["aicc"] + n * (np.log(2 * np.pi / n) + 1.0))  # R's constant-free -2 loglik -> exact
        names.append(info["method"].replace("ETS(", "").replace(")", "").replace(",", ""))
        alpha, beta, gamma = info["par"][:3]
        # statsforecast's optimiser keeps each parameter in a box, so beta > alpha or gamma > 1 - alpha can
        # come out; statsmodels (and tsgen) keep beta <= alpha and gamma <= 1 - alpha
        inside.append(not (beta > alpha + 1e-12 or gamma > 1 - alpha + 1e-12))
    return seconds, np.asarray(aicc), names, np.asarray(inside)


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
        (wall_ts, cpu_ts), aicc_ts, forms_ts, _ = fit_tsgen(series)
        (wall_sf, cpu_sf), aicc_sf, _, inside = fit_statsforecast(series, period)
        n = len(series)
        diff = aicc_ts - aicc_sf
        print(f"M3 dev subset, {group}: {n} series, period {period}")
        for label, wall, cpu in (("tsgen.ETS(model='ZZZ')", wall_ts, cpu_ts),
                                 ("statsforecast AutoETS", wall_sf, cpu_sf)):
            print(f"  {label:24s} fit {wall:7.2f} s wall ({1000 * wall / n:6.2f} ms/series), "
                  f"{cpu:7.2f} s CPU ({1000 * cpu / n:6.2f} ms/series)")
        print(f"  speed-up, statsforecast time / tsgen time in this run: {wall_sf / wall_ts:.1f}x wall, "
              f"{cpu_sf / cpu_ts:.1f}x CPU")
        print(f"  AICc tsgen - statsforecast: mean {diff.mean():+.3f}, median {np.median(diff):+.3f}; tsgen no worse "
              f"(<= +1e-6) on {np.mean(diff <= 1e-6):.1%} of series, within +0.1 on {np.mean(diff <= 0.1):.1%}, "
              f"worse by > 1 on {np.mean(diff > 1):.1%}")
        d = diff[inside]
        print(f"  on the {inside.sum()} series whose statsforecast fit lies inside statsmodels' bounds "
              f"(beta <= alpha, gamma <= 1 - alpha): mean {d.mean():+.3f}; no worse on {np.mean(d <= 1e-6):.1%}, "
              f"within +0.1 on {np.mean(d <= 0.1):.1%}, worse by > 1 on {np.mean(d > 1):.1%}")
        counts = pd.Series(forms_ts).value_counts()
        print("  tsgen forms chosen: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
