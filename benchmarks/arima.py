"""ARIMA benchmark: batched tsgen fits vs statsmodels, statsforecast (and pmdarima).

Prints, for N simulated ARIMA(2,1,1) series of length T:

- seconds per series of a fixed-order fit: tsgen (one batched fit), statsmodels
  and statsforecast (one fit per series), as ratios to tsgen;
- seconds per series of automatic order selection: tsgen (batched stepwise
  search), statsforecast's AutoARIMA, pmdarima's auto_arima (if installed);
- quality: mean log-likelihood difference to statsmodels, mean absolute
  12-step forecast difference, and the AICc of the chosen orders.

statsforecast / pmdarima are benchmark-only dependencies (``pip install
statsforecast pmdarima``). Run: ``OMP_NUM_THREADS=1 python benchmarks/arima.py``
(``--n-series``, ``--length``, ``--n-auto-peer`` to subsample the slow peers).
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd


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


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-series", type=int, default=200)
    parser.add_argument("--length", type=int, default=300)
    parser.add_argument("--n-auto-peer", type=int, default=200, help="series for the peers' auto fits")
    parser.add_argument("--horizon", type=int, default=12)
    parser.add_argument("--no-auto", action="store_true", help="only the fixed-order comparison")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(1)
    from statsmodels.tsa.arima.model import ARIMA as SMARIMA

    from tsgen.models.arima import ARIMA

    series = simulate(args.n_series, args.length)
    n, h = len(series), args.horizon
    print(f"{n} simulated ARIMA(2,1,1) series of length {args.length}, horizon {h}\n")

    # ------------------------------------------------------------ fixed order
    # one-time costs (lazy imports, first-call initialisation) are left out for every
    # package alike: statsforecast's numba compilation below, a two-series fit here
    ARIMA((2, 1, 1)).fit([pd.Series(s) for s in series[:2]])
    model, t_tsgen = timed(lambda: ARIMA((2, 1, 1)).fit([pd.Series(s) for s in series]))
    ours_llf = np.array(model.llf_)
    ours_fc = np.stack([f["mean"].to_numpy() for f in model.predict(h)])

    def fit_statsmodels():
        return [SMARIMA(s, order=(2, 1, 1)).fit() for s in series]

    sm_fits, t_sm = timed(fit_statsmodels)
    sm_llf = np.array([r.llf for r in sm_fits])
    sm_fc = np.stack([r.forecast(h) for r in sm_fits])

    rows = [("tsgen (batched)", t_tsgen), ("statsmodels", t_sm)]
    sf_fc = None
    try:
        from statsforecast.models import ARIMA as SFARIMA

        SFARIMA(order=(2, 1, 1), include_mean=False).fit(series[0])  # numba compilation
        sf_models, t_sf = timed(lambda: [SFARIMA(order=(2, 1, 1), include_mean=False).fit(s) for s in series])
        sf_fc = np.stack([m.predict(h)["mean"] for m in sf_models])
        rows.append(("statsforecast", t_sf))
    except ImportError:
        print("statsforecast not installed: skipped")

    print("fixed order (2,1,1): seconds per series (ratio to tsgen)")
    for name, seconds in rows:
        print(f"  {name:<18} {1e3 * seconds / n:8.2f} ms   x{seconds / t_tsgen:6.1f}")
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
    print(f"  mean |12-step forecast tsgen - statsmodels|: {np.abs(ours_fc - sm_fc).mean():.2e}")
    if sf_fc is not None:
        print(f"  mean |12-step forecast tsgen - statsforecast|: {np.abs(ours_fc - sf_fc).mean():.2e}")

    # ------------------------------------------------------------------ auto
    if args.no_auto:
        return
    print("\nautomatic order selection (stepwise, AICc): seconds per series (ratio to tsgen)")
    auto, t_auto = timed(lambda: ARIMA(order="auto", trend="auto").fit([pd.Series(s) for s in series]))
    orders = auto.order_
    print(f"  {'tsgen (batched)':<18} {t_auto / n:8.3f} s    x{1.0:6.1f}   "
          f"true order (2,1,1) chosen for {np.mean([o == (2, 1, 1) for o in orders]):.0%}")
    m = min(args.n_auto_peer, n)
    ours_aicc = np.array(auto.aicc_[:m])
    try:
        from statsforecast.models import AutoARIMA

        AutoARIMA(season_length=1).fit(series[0])
        sf_auto, t_sfa = timed(lambda: [AutoARIMA(season_length=1).fit(s) for s in series[:m]])
        sf_aicc = np.array([a.model_["aicc"] for a in sf_auto])
        sf_orders = [tuple(int(a.model_["arma"][k]) for k in (0, 5, 1)) for a in sf_auto]
        same_d = np.array([o[1] == s[1] for o, s in zip(orders[:m], sf_orders)])
        print(f"  {'statsforecast':<18} {t_sfa / m:8.3f} s    x{(t_sfa / m) / (t_auto / n):6.1f}   "
              f"true order chosen for {np.mean([o == (2, 1, 1) for o in sf_orders]):.0%} ({m} series)")
        d = (ours_aicc - sf_aicc)[same_d]
        print(f"  AICc tsgen - statsforecast (series with the same d, {same_d.sum()}/{m}): mean {d.mean():+.3f}, "
              f"tsgen no worse on {np.mean(d <= 1e-6):.0%}")
    except ImportError:
        print("  statsforecast not installed: skipped")
    try:
        import pmdarima

        k = min(m, 20)
        pm_fits, t_pm = timed(lambda: [pmdarima.auto_arima(s, seasonal=False, stepwise=True,
                                                           information_criterion="aicc") for s in series[:k]])
        pm_aicc = np.array([f.aicc() for f in pm_fits])
        pm_orders = [f.order for f in pm_fits]
        same_d = np.array([o[1] == p[1] for o, p in zip(orders[:k], pm_orders)])
        d = (ours_aicc[:k] - pm_aicc)[same_d]
        print(f"  {'pmdarima':<18} {t_pm / k:8.3f} s    x{(t_pm / k) / (t_auto / n):6.1f}   ({k} series); "
              f"AICc tsgen - pmdarima (same d): mean {d.mean():+.3f}")
    except ImportError:
        print("  pmdarima not installed: skipped")


if __name__ == "__main__":
    main()
