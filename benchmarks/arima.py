"""ARIMA benchmark through tsgen's public estimator API on pandas input.

Sections (``--sections``, comma-separated; each runs alone in a fresh Python
process, so a crash in one is reported and the others still run):

``fixed``
    ``tsgen.ARIMA(order=(2, 1, 1)).fit(list of pd.Series)`` then
    ``predict(12)``, against statsmodels and statsforecast fitting one series
    at a time: milliseconds per series and the peers' time as a multiple of
    tsgen's (the compiled kernel's own time is printed beside it); agreement
    of log-likelihoods and forecasts with statsmodels.
``auto``
    Automatic order selection on the same simulated ARIMA(2,1,1) series:
    ``ARIMA(order="auto", trend="auto")`` vs statsforecast's ``AutoARIMA`` and
    pmdarima's ``auto_arima`` (time per series, AICc of the chosen models).
``m3``
    The M3 development subset in ``../shared/datasets/m3_dev`` (Quarterly:
    period 4, Other: non-seasonal; horizon 8 for both, as in the
    competition): ``ARIMA(order="auto", seasonal_order="auto", trend="auto")``
    vs statsforecast's ``AutoARIMA`` with the same ``season_length`` on the
    same series and horizons. sMAPE as in the competition (mean over the
    horizon of ``200 |y - f| / (|y| + |f|)``, averaged over series, in %);
    MASE as in M4 (mean absolute error over the horizon divided by the
    in-sample mean absolute error of the seasonal naive method with lag 4
    for Quarterly, 1 for Other; averaged over series). Beside them the naive
    method, the deseasonalised naive method (NAIVE2: multiplicative classical
    decomposition when the 90% autocorrelation test at lag 4 finds
    seasonality) and the published scores of the original entries (B-J
    automatic ARIMA, THETA, ForecastPro, NAIVE2).
``seasonal``
    20 hourly series of 1008 points, period 24 (18 simulated seasonal ARIMA
    series and two windows of the hourly Taylor electricity demand that
    pmdarima ships), the last 48 points held out:
    ``ARIMA(order="auto", seasonal_order="auto", trend="auto")`` on an hourly
    DatetimeIndex (period 24): share of fits that converged within the
    default ``max_iter`` (``converged_``), time per series against
    statsforecast's ``AutoARIMA(season_length=24)``, accuracy against the
    seasonal naive method.

statsforecast / pmdarima are benchmark-only dependencies (``pip install
statsforecast pmdarima``). Timings on a shared machine are noisy: compare the
ratios measured in one run. Run::

    OMP_NUM_THREADS=1 python benchmarks/arima.py                 # everything (~1 h on 2 cores)
    OMP_NUM_THREADS=1 python benchmarks/arima.py --n-seasonal-peer 5   # statsforecast on 5 hourly series
    OMP_NUM_THREADS=1 python benchmarks/arima.py --sections m3 --quick

statsforecast's AutoARIMA takes 30-100 s per hourly series here, so
``--n-seasonal-peer`` limits it to the first k seasonal series (its time per
series and its accuracy are then reported on those k).
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

SECTIONS = ("fixed", "auto", "m3", "seasonal")
M3_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "m3_dev"
#: published sMAPE of the original M3 entries on these groups (the data set's README)
M3_PUBLISHED = {
    "Quarterly": {"B-J automatic ARIMA": 10.26, "THETA": 8.96, "ForecastPro": 9.82, "NAIVE2": 9.95},
    "Other": {"B-J automatic ARIMA": 5.06, "THETA": 4.41, "NAIVE2": 6.30},
}
M3_GROUPS = {"Quarterly": 4, "Other": 1}  # group -> seasonal period


# ------------------------------------------------------------------ helpers
def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def series_mase(train: np.ndarray, y: np.ndarray, f: np.ndarray, m: int) -> float:
    """tsgen.metrics.mase with the M4 convention for short or constant histories: lag 1
    when the history is not longer than m, NaN (left out of the mean) when the scale is 0."""
    from tsgen.metrics import mase

    try:
        return float(mase(y, f, train, m=m if len(train) > m else 1))
    except ValueError:
        return math.nan


def seasonal_naive(train: np.ndarray, h: int, m: int) -> np.ndarray:
    m = max(m, 1)
    return np.array([train[len(train) - m + (k % m)] for k in range(h)])


def is_seasonal(x: np.ndarray, m: int) -> bool:
    """The M3/M4 90% test: |r_m| > 1.645 sqrt((1 + 2 sum_{k<m} r_k^2) / n)."""
    if m < 2 or len(x) < 3 * m:
        return False
    from statsmodels.tsa.stattools import acf

    r = acf(x, nlags=m, fft=False)
    limit = 1.645 * math.sqrt((1.0 + 2.0 * np.sum(r[1:m] ** 2)) / len(x))
    return abs(r[m]) > limit


def naive2(train: np.ndarray, h: int, m: int) -> np.ndarray:
    """Deseasonalised naive: classical multiplicative indices when seasonal, else naive."""
    if not is_seasonal(train, m):
        return np.full(h, train[-1])
    from statsmodels.tsa.seasonal import seasonal_decompose

    index = seasonal_decompose(train, model="multiplicative", period=m).seasonal
    n = len(train)
    future = np.array([index[n - m + (k % m)] for k in range(h)])
    return train[-1] / index[-1] * future


def scores(train, test, forecasts, m):
    from tsgen.metrics import smape

    s = np.array([smape(y, f) for y, f in zip(test, forecasts)])
    q = np.array([series_mase(x, y, f, m) for x, y, f in zip(train, test, forecasts)])
    return float(np.mean(s)), float(np.nanmean(q))


def quiet():
    warnings.simplefilter("ignore")
    import logging

    logging.getLogger("statsforecast").setLevel(logging.ERROR)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


# ------------------------------------------------------------ fixed + auto
def simulate(n_series: int, length: int, seed: int = 0) -> list[np.ndarray]:
    """ARIMA(2,1,1): (1 - .5L + .25L^2)(1 - L) y_t = (1 + .4L) e_t, y_0 = 100."""
    rng = np.random.default_rng(seed)
    out = []
    burn = 100
    for _ in range(n_series):
        e = rng.normal(size=length + burn)
        w = np.zeros(length + burn)
        for t in range(2, length + burn):
            w[t] = 0.5 * w[t - 1] - 0.25 * w[t - 2] + e[t] + 0.4 * e[t - 1]
        out.append(100.0 + np.cumsum(w[burn:]))
    return out


def as_pandas(series: list[np.ndarray]) -> list[pd.Series]:
    index = pd.date_range("2000-01-03", periods=len(series[0]), freq="D")
    return [pd.Series(s, index=index, name="y") for s in series]


def section_fixed(args):
    import torch

    import tsgen
    from statsmodels.tsa.arima.model import ARIMA as SMARIMA

    torch.set_num_threads(1)
    series = simulate(args.n_series, args.length)
    n, h = len(series), args.horizon
    frames = as_pandas(series)
    print(f"{n} simulated ARIMA(2,1,1) series of length {args.length} (pd.Series, daily index), horizon {h}\n")

    # one-time costs (lazy imports, loading compiled kernels) are left out for every
    # package alike: a two-series fit here, statsforecast's numba compilation below
    tsgen.ARIMA(order=(2, 1, 1)).fit(frames[:2]).predict(h)
    model, t_fit = timed(lambda: tsgen.ARIMA(order=(2, 1, 1)).fit(frames))
    forecasts, t_pred = timed(lambda: model.predict(h))
    t_tsgen = t_fit + t_pred
    ours_llf = np.array(model.llf_)
    ours_fc = np.stack([f["mean"].to_numpy() for f in forecasts])

    # the compiled fit alone (no pandas edge, no result attributes), for reference
    from tsgen.models._arima_fit import fit_spec
    from tsgen.models._arima_spec import ArimaSpec

    y = torch.as_tensor(np.stack(series))
    spec = ArimaSpec.from_args((2, 1, 1), (0, 0, 0, 0), None, 0)
    _, t_kernel = timed(lambda: fit_spec(spec, y, None))

    sm_fits, sm_t_fit = timed(lambda: [SMARIMA(s, order=(2, 1, 1)).fit() for s in frames])
    sm_fc, sm_t_pred = timed(lambda: np.stack([np.asarray(r.forecast(h)) for r in sm_fits]))
    sm_llf = np.array([r.llf for r in sm_fits])

    rows = [("tsgen (one call)", t_fit, t_pred), ("statsmodels", sm_t_fit, sm_t_pred)]
    sf_fc = None
    try:
        from statsforecast.models import ARIMA as SFARIMA

        SFARIMA(order=(2, 1, 1), include_mean=False).fit(series[0]).predict(h)  # numba compilation
        # statsforecast's model objects take arrays: the pandas values are handed over
        sf_models, sf_t_fit = timed(lambda: [SFARIMA(order=(2, 1, 1), include_mean=False).fit(s.to_numpy())
                                             for s in frames])
        sf_fc, sf_t_pred = timed(lambda: np.stack([m.predict(h)["mean"] for m in sf_models]))
        rows.append(("statsforecast", sf_t_fit, sf_t_pred))
    except ImportError:
        print("statsforecast not installed: skipped")

    print(f"fixed order (2,1,1): ms per series, peer time / tsgen time (fit alone, fit + {h}-step forecast)")
    for name, fit_s, pred_s in rows:
        print(f"  {name:<18} fit {1e3 * fit_s / n:7.2f} ms  x{fit_s / t_fit:6.1f}    "
              f"fit + forecast {1e3 * (fit_s + pred_s) / n:7.2f} ms  x{(fit_s + pred_s) / t_tsgen:6.1f}")
    print(f"  (tsgen's compiled fit kernel alone, no pandas edge: {1e3 * t_kernel / n:.2f} ms per series)")
    diff = ours_llf - sm_llf
    print(f"  log-likelihood tsgen - statsmodels: mean {diff.mean():+.2e}, min {diff.min():+.2e}, "
          f"max {diff.max():+.2e}")
    # statsmodels' exact-diffuse llf carries round-off that grows with the level of the
    # series; its optimum evaluated by the exact likelihood of the differenced series:
    exact_at_sm = np.array([
        SMARIMA(np.diff(s), order=(2, 0, 1), trend="n").loglike(r.params) for s, r in zip(series, sm_fits)
    ])
    diff = ours_llf - exact_at_sm
    print(f"  log-likelihood tsgen - exact likelihood at statsmodels' optimum: mean {diff.mean():+.2e}, "
          f"min {diff.min():+.2e}")
    print(f"  mean |{h}-step forecast tsgen - statsmodels|: {np.abs(ours_fc - sm_fc).mean():.2e}")
    if sf_fc is not None:
        print(f"  mean |{h}-step forecast tsgen - statsforecast|: {np.abs(ours_fc - sf_fc).mean():.2e}")


def section_auto(args):
    import tsgen

    series = simulate(args.n_series, args.length)
    frames = as_pandas(series)
    n = len(series)
    print(f"{n} simulated ARIMA(2,1,1) series of length {args.length}")
    print("automatic order selection (stepwise, AICc): seconds per series (peer time / tsgen time)")
    tsgen.ARIMA(order="auto", trend="auto").fit(frames[:2])
    auto, t_auto = timed(lambda: tsgen.ARIMA(order="auto", trend="auto").fit(frames))
    orders = auto.order_
    print(f"  {'tsgen (one call)':<18} {t_auto / n:8.3f} s    x{1.0:6.1f}   "
          f"true order (2,1,1) chosen for {np.mean([o == (2, 1, 1) for o in orders]):.0%}")
    m = min(args.n_auto_peer, n)
    ours_aicc = np.array(auto.aicc_[:m])
    try:
        from statsforecast.models import AutoARIMA

        AutoARIMA(season_length=1).fit(series[0])
        sf_auto, t_sfa = timed(lambda: [AutoARIMA(season_length=1).fit(s.to_numpy()) for s in frames[:m]])
        sf_aicc = np.array([a.model_["aicc"] for a in sf_auto])
        sf_orders = [tuple(int(a.model_["arma"][k]) for k in (0, 5, 1)) for a in sf_auto]
        same_d = np.array([o[1] == s[1] for o, s in zip(orders[:m], sf_orders)])
        print(f"  {'statsforecast':<18} {t_sfa / m:8.3f} s    x{(t_sfa / m) / (t_auto / n):6.1f}   "
              f"true order chosen for {np.mean([o == (2, 1, 1) for o in sf_orders]):.0%} ({m} series)")
        d = (ours_aicc - sf_aicc)[same_d]
        if d.size:
            print(f"  AICc tsgen - statsforecast (series with the same d, {same_d.sum()}/{m}): mean {d.mean():+.3f}, "
                  f"tsgen no worse on {np.mean(d <= 1e-6):.0%}")
    except ImportError:
        print("  statsforecast not installed: skipped")
    try:
        import pmdarima

        k = min(m, 10 if args.quick else 20)
        pm_fits, t_pm = timed(lambda: [pmdarima.auto_arima(s.to_numpy(), seasonal=False, stepwise=True,
                                                           information_criterion="aicc") for s in frames[:k]])
        pm_aicc = np.array([f.aicc() for f in pm_fits])
        pm_orders = [f.order for f in pm_fits]
        same_d = np.array([o[1] == p[1] for o, p in zip(orders[:k], pm_orders)])
        d = (ours_aicc[:k] - pm_aicc)[same_d]
        print(f"  {'pmdarima':<18} {t_pm / k:8.3f} s    x{(t_pm / k) / (t_auto / n):6.1f}   ({k} series); "
              f"AICc tsgen - pmdarima (same d): mean {d.mean():+.3f}")
    except ImportError:
        print("  pmdarima not installed: skipped")


# ---------------------------------------------------------------------- M3
def _ragged(path: Path) -> dict[str, np.ndarray]:
    frame = pd.read_csv(path)
    out = {}
    for _, row in frame.iterrows():
        values = row.drop("series").to_numpy(dtype=float)
        out[row["series"]] = values[np.isfinite(values)]
    return out


def _m3_index(start: str, n: int, period: int) -> pd.Index:
    """A quarterly PeriodIndex from M3's start field (e.g. "1984" or "1984/2"); else a RangeIndex."""
    if period != 4:
        return pd.RangeIndex(n)
    try:
        year, _, quarter = str(start).partition("/")
        year, quarter = int(year), int(quarter or 1)
        if not (1 <= quarter <= 4 and 1 <= year <= 2200):
            raise ValueError(start)
        first = pd.Period(year=year, quarter=quarter, freq="Q")
    except ValueError:  # a few M3 start fields are not calendar dates
        first = pd.Period("1990Q1", freq="Q")
    return pd.period_range(first, periods=n, freq="Q")


def load_m3(group: str, stride: int = 1):
    train = _ragged(M3_DIR / f"M3-{group}-train.csv")
    test = _ragged(M3_DIR / f"M3-{group}-test.csv")
    info = pd.read_csv(M3_DIR / "M3-info.csv").set_index("series")
    names = [name for name in train if name in test][::stride]
    period = M3_GROUPS[group]
    ys = [pd.Series(train[k], index=_m3_index(info.loc[k, "start"], len(train[k]), period), name=k) for k in names]
    h = int(info.loc[names[0], "h"])
    assert all(len(test[k]) == h for k in names)
    return ys, [test[k] for k in names], h


def tsgen_auto(period: int):
    import tsgen

    if period >= 2:
        return tsgen.ARIMA(order="auto", seasonal_order="auto", trend="auto", period=period)
    return tsgen.ARIMA(order="auto", trend="auto")


def section_m3(args):
    import tsgen  # noqa: F401  (import time is not a fit's)

    if not M3_DIR.is_dir():
        print(f"M3 data not found at {M3_DIR}: skipped")
        return
    stride = 5 if args.quick else 1
    print("M3 dev subset (Quarterly, Other): automatic ARIMA, horizon 8"
          + (f" (--quick: every {stride}th series)" if stride > 1 else "") + "\n")
    warm = tsgen_auto(4)
    warm.fit([pd.Series(np.arange(24.0) % 4 + np.arange(24.0))] * 2).predict(8)
    for group, m in M3_GROUPS.items():
        ys, tests, h = load_m3(group, stride)
        trains = [y.to_numpy() for y in ys]
        n = len(ys)
        results = {}

        def run_tsgen():
            model = tsgen_auto(m).fit(ys)
            return model, np.stack([f["mean"].to_numpy() for f in model.predict(h)])

        (model, fc), t_ts = timed(run_tsgen)
        results["tsgen ARIMA auto"] = (fc, t_ts)
        try:
            from statsforecast.models import AutoARIMA

            AutoARIMA(season_length=m).fit(trains[0]).predict(h)  # numba compilation
            fc, t_sf = timed(lambda: np.stack([AutoARIMA(season_length=m).fit(x).predict(h)["mean"]
                                               for x in trains]))
            results["statsforecast AutoARIMA"] = (fc, t_sf)
        except ImportError:
            print("statsforecast not installed: skipped")
        results["naive"] = (np.stack([np.full(h, x[-1]) for x in trains]), None)
        results["seasonal naive"] = (np.stack([seasonal_naive(x, h, m) for x in trains]), None)
        results["NAIVE2 (deseasonalised naive)"] = (np.stack([naive2(x, h, m) for x in trains]), None)

        print(f"{group}: {n} series, horizon {h}, period {m}")
        print(f"  {'method':<32} {'sMAPE':>7} {'MASE':>7} {'s/series':>9}")
        for name, (fc, seconds) in results.items():
            s, q = scores(trains, tests, fc, m)
            per = "" if seconds is None else f"{seconds / n:9.3f}"
            print(f"  {name:<32} {s:7.2f} {q:7.3f} {per}")
        for name, value in M3_PUBLISHED[group].items():
            print(f"  {name + ' (published)':<32} {value:7.2f}")
        if "statsforecast AutoARIMA" in results:
            ratio = results["statsforecast AutoARIMA"][1] / t_ts
            print(f"  time per series statsforecast / tsgen: x{ratio:.1f}")
        orders = model.order_
        seasonal = model.seasonal_order_
        print(f"  tsgen chose d: {_counts([o[1] for o in orders])}, D: {_counts([s[1] for s in seasonal])}, "
              f"trend: {_counts([str(t) for t in model.trend_])}, converged {np.mean(model.converged_):.0%}\n")


def _counts(values) -> str:
    keys, counts = np.unique(np.asarray(values), return_counts=True)
    return ", ".join(f"{k}: {c}" for k, c in zip(keys, counts))


# ----------------------------------------------------------- long seasonal
def simulate_sarima(rng, n: int, m: int = 24) -> np.ndarray:
    """One of two seasonal ARIMA families with random coefficients (burn-in dropped):
    (1,0,1)(0,1,1)_m, or (1,0,0)(1,0,1)_m with a mean and a daily profile."""
    burn = 10 * m
    e = rng.normal(size=n + burn)
    phi = rng.uniform(0.3, 0.9)
    theta = rng.uniform(-0.4, 0.4)
    big_theta = rng.uniform(-0.8, -0.3)
    u = np.zeros(n + burn)
    for t in range(1, n + burn):
        u[t] = phi * u[t - 1] + e[t] + theta * e[t - 1]
    if rng.uniform() < 0.5:
        # (1 - L^m) y = (1 + Theta L^m) u: seasonal difference, seasonal MA
        w = u.copy()
        w[m:] += big_theta * u[:-m]
        y = np.zeros(n + burn)
        for t in range(n + burn):
            y[t] = w[t] + (y[t - m] if t >= m else 0.0)
        return 50.0 + y[burn:]
    big_phi = rng.uniform(0.5, 0.9)
    y = np.zeros(n + burn)
    for t in range(n + burn):
        y[t] = u[t] + (big_phi * y[t - m] if t >= m else 0.0) + (big_theta * u[t - m] if t >= m else 0.0)
    profile = 5.0 * np.sin(2 * np.pi * np.arange(n + burn) / m) + 2.0 * np.cos(4 * np.pi * np.arange(n + burn) / m)
    return 100.0 + profile[burn:] + y[burn:]


def long_seasonal_series(n_series: int, length: int):
    rng = np.random.default_rng(7)
    series = [simulate_sarima(rng, length) for _ in range(n_series)]
    labels = ["simulated"] * n_series
    try:
        from pmdarima.datasets import load_taylor

        # half-hourly demand of 12 weeks -> hourly means; the first and last `length` hours
        hourly = load_taylor(as_series=True).to_numpy().reshape(-1, 2).mean(1)
        if len(hourly) >= length:
            series[-2:] = [hourly[:length] / 1000.0, hourly[-length:] / 1000.0]
            labels[-2:] = ["taylor"] * 2
    except ImportError:
        pass
    index = pd.date_range("2020-01-06", periods=length, freq="h")
    return [pd.Series(s, index=index, name="y") for s in series], labels


def section_seasonal(args):
    import tsgen

    n_series = args.n_seasonal
    length, h, m = 1008, 48, 24
    frames, labels = long_seasonal_series(n_series, length)
    ys = [f.iloc[:-h] for f in frames]
    tests = [f.iloc[-h:].to_numpy() for f in frames]
    trains = [y.to_numpy() for y in ys]
    n = len(ys)
    print(f"{n} hourly series of {length - h} points ({labels.count('taylor')} from the Taylor demand data), "
          f"period {m}, horizon {h}\n")
    tsgen.ARIMA(order=(1, 0, 0), seasonal_order=(0, 1, 1, m)).fit(ys[:1])  # load the compiled kernels

    def run_tsgen():
        model = tsgen.ARIMA(order="auto", seasonal_order="auto", trend="auto", period=m).fit(ys)
        return model, np.stack([f["mean"].to_numpy() for f in model.predict(h)])

    (model, fc), t_ts = timed(run_tsgen)
    results = {"tsgen ARIMA auto": (fc, t_ts / n)}
    k = min(args.n_seasonal_peer, n)
    try:
        from statsforecast.models import AutoARIMA

        if k:
            AutoARIMA(season_length=m).fit(trains[0][:200]).predict(h)  # numba compilation
            fc, t_sf = timed(lambda: np.stack([AutoARIMA(season_length=m).fit(x).predict(h)["mean"]
                                               for x in trains[:k]]))
            results["statsforecast AutoARIMA"] = (fc, t_sf / k)
    except ImportError:
        print("statsforecast not installed: skipped")
    results["seasonal naive"] = (np.stack([seasonal_naive(x, h, m) for x in trains]), None)
    subset = 0 < k < n
    print(f"  {'method':<26} {'s/series':>9} {'sMAPE':>7} {'MASE':>7}   (all {n} series)" + (
        f"   sMAPE, MASE on the first {k} (statsforecast's)" if subset else ""))
    for name, (fc, per_series) in results.items():
        per = f"{'':>9}" if per_series is None else f"{per_series:9.2f}"
        line = f"  {name:<26} {per}"
        if len(fc) == n:
            s, q = scores(trains, tests, fc, m)
            line += f" {s:7.2f} {q:7.3f}"
        else:
            line += f" {'-':>7} {'-':>7}"
        if subset:
            s, q = scores(trains[:k], tests[:k], fc[:k], m)
            line += f"{'':17}{s:7.2f} {q:7.3f}"
        print(line)
    converged = np.asarray(model.converged_)
    print(f"  tsgen fits converged within the default max_iter: {converged.sum()}/{n} ({converged.mean():.0%})")
    if "statsforecast AutoARIMA" in results:
        print(f"  time per series statsforecast / tsgen: x{results['statsforecast AutoARIMA'][1] / (t_ts / n):.2f}")
    print("  tsgen chose: " + ", ".join(
        f"{o}{s[:3]}{'+' + t if t else ''}" for o, s, t in zip(model.order_, model.seasonal_order_, model.trend_)))


# --------------------------------------------------------------------- main
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (fewer series) for a fast check")
    parser.add_argument("--n-series", type=int, default=None, help="simulated series for fixed/auto (200; quick 40)")
    parser.add_argument("--length", type=int, default=300)
    parser.add_argument("--n-auto-peer", type=int, default=None, help="series for the peers' auto fits (all; quick 20)")
    parser.add_argument("--horizon", type=int, default=12)
    parser.add_argument("--n-seasonal", type=int, default=None, help="series of the seasonal section (20; quick 4)")
    parser.add_argument("--n-seasonal-peer", type=int, default=None,
                        help="of those, series that statsforecast fits too (all; it takes ~30 s per series)")
    parser.add_argument("--child", choices=SECTIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.n_series is None:
        args.n_series = 40 if args.quick else 200
    if args.n_auto_peer is None:
        args.n_auto_peer = 20 if args.quick else args.n_series
    if args.n_seasonal is None:
        args.n_seasonal = 4 if args.quick else 20
    if args.n_seasonal_peer is None:
        args.n_seasonal_peer = args.n_seasonal
    if args.child:
        quiet()
        {"fixed": section_fixed, "auto": section_auto, "m3": section_m3, "seasonal": section_seasonal}[args.child](args)
        return
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    forwarded = [f"--n-series={args.n_series}", f"--length={args.length}",
                 f"--n-auto-peer={args.n_auto_peer}", f"--horizon={args.horizon}",
                 f"--n-seasonal={args.n_seasonal}", f"--n-seasonal-peer={args.n_seasonal_peer}"] + (["--quick"] if args.quick else [])
    failed = []
    for section in sections:
        print(f"==================== {section} ====================", flush=True)
        rc = subprocess.run([sys.executable, __file__, "--child", section, *forwarded]).returncode
        if rc != 0:
            failed.append(section)
            print(f"section {section!r} failed with exit code {rc}"
                  + (" (killed by a signal)" if rc < 0 else ""), flush=True)
        print(flush=True)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
