"""Many series: series fitted per second, serial vs n_jobs=2 vs a Dask LocalCluster, next to statsforecast.

Data: the M3 dev subset's Quarterly training series (756, period 4;
``../shared/datasets/m3_dev/``) replicated under new ids up to ``--series``
series (default 10,000; series ``k`` is series ``k mod 756``), as one long
frame ``unique_id, ds, y`` with quarterly timestamps. Both libraries get
that same frame through their public API:

- tsgen: ``model.fit(long_frame)`` under ``tsgen.config_context(...)``:
  serial, ``n_jobs=2`` (loky), and ``backend="dask"`` on a
  ``LocalCluster(n_workers=2, threads_per_worker=1)`` (worker processes,
  started before its rows and closed after them);
  the partitions are ``partition_size=min(500, ceil(N / 4))`` series (500
  is the library's default; fewer series get at least 4 partitions, so
  that two workers have something to share), the same in every
  configuration;
- statsforecast: ``StatsForecast(models=[...], freq="QS", n_jobs=1 | 2).fit(long_frame)``.

Models: ARIMA(1,1,1) (fixed order; statsforecast's ``ARIMA(order=(1,1,1))``,
with its ``fallback_model=Naive()`` for the ~1 in 8 series where it raises),
automatic ETS (tsgen ``ETS(model="ZZZ")``, statsforecast
``AutoETS(season_length=4)``) and automatic ARIMA (tsgen
``ARIMA(order="auto", seasonal_order="auto", trend="auto")``, statsforecast
``AutoARIMA(season_length=4)``), in that order (the slowest last).

Every configuration is warmed up once untimed on 16 series in 4 partitions,
so worker pools exist and numba kernels are compiled in the workers
(statsforecast's pool is its own: it starts one per call, so its start-up
is part of its time). Wall seconds on a shared 2-core machine: compare
figures measured in the same run only. Each row also prints CPU seconds:
this process's own (for n_jobs / Dask: the caller's share -- splitting,
pickling, merging) and those of all its processes (workers included),
which depend little on the load, and the load average when it ended;
the ratios to statsforecast are given both per wall second and per CPU
second. The fitted
models of every tsgen configuration are checked to be identical (AICc of
every series) -- the partition layout, not the backend, decides the result.

A long run yields partial tables: every row is printed (and appended to
``--out``, a tab-separated file) as soon as it is measured, and the ratios
of a model follow its last row; progress goes to stderr. ``--peer-subset
auto_arima=2000`` fits that model's statsforecast rows on a random subset
of the series (``--subset-seed``) when the whole set would take too long;
the rows say so, and their series per second are compared with tsgen's on
all series (the subset is drawn from the same replicated series).

Run from the repository root: ``python benchmarks/panel.py`` (``--series
2000`` for a quicker run, ``--models ets`` for one model, ``--runners
serial sf1`` for some configurations: serial, njobs2, dask, sf1, sf2).
"""
from __future__ import annotations

import argparse
import functools
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ets import load  # noqa: E402  (the M3 dev subset reader of benchmarks/ets.py)

MODELS = ("arima", "ets", "auto_arima")
#: runner -> label; the tsgen ones are config_context settings, the sf ones statsforecast's n_jobs
RUNNERS = {"serial": "tsgen serial", "njobs2": "tsgen n_jobs=2", "dask": "tsgen dask (2 workers)",
           "sf1": "statsforecast n_jobs=1", "sf2": "statsforecast n_jobs=2"}
PEERS = {"serial": "sf1", "njobs2": "sf2", "dask": "sf2"}


@functools.lru_cache(maxsize=1)
def _quarterly() -> list[pd.Series]:
    return load("Quarterly", None)


def long_frame(n_series: int) -> pd.DataFrame:
    """``n_series`` series: the Quarterly training series repeated under new ids, as one long frame."""
    base = _quarterly()
    picks = [base[k % len(base)] for k in range(n_series)]
    stamps = {len(s): pd.date_range("1990-01-01", periods=len(s), freq="QS") for s in base}
    lengths = [len(s) for s in picks]
    return pd.DataFrame({
        "unique_id": np.repeat([f"{s.name}_{k // len(base)}" for k, s in enumerate(picks)], lengths),
        "ds": np.concatenate([stamps[n].to_numpy() for n in lengths]),
        "y": np.concatenate([s.to_numpy() for s in picks]),
    })


def subset(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` of ``frame``'s series drawn at random (their rows in the frame's order)."""
    ids = frame["unique_id"].unique()
    chosen = np.random.default_rng(seed).choice(len(ids), size=n, replace=False)
    return frame[frame["unique_id"].isin(ids[np.sort(chosen)])].reset_index(drop=True)


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


class CpuClock:
    """CPU seconds of this process and all its descendants: the live ones (worker pools) by psutil,
    the finished and reaped ones (statsforecast's per-call pool) by ``RUSAGE_CHILDREN``. On a shared
    machine this is the steadier measure of the work a configuration did (wall time depends on the load)."""

    def __init__(self):
        import psutil

        self.me = psutil.Process()
        self.start = self._live()
        self.reaped = self._reaped()

    def _live(self) -> dict:
        import psutil

        out = {}
        for proc in [self.me, *self.me.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                out[(proc.pid, proc.create_time())] = t.user + t.system
            except psutil.Error:  # ended meanwhile: counted by RUSAGE_CHILDREN once reaped
                pass
        return out

    @staticmethod
    def _reaped() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def seconds(self) -> float:
        live = self._live()
        spent = sum(t - self.start.get(key, 0.0) for key, t in live.items())
        return spent + self._reaped() - self.reaped


def time_tsgen(name: str, frame: pd.DataFrame, settings: dict):
    import tsgen

    with tsgen.config_context(**settings):
        start, cpu, clock = time.perf_counter(), time.process_time(), CpuClock()
        model = tsgen_model(name).fit(frame)
        seconds, cpu, total = time.perf_counter() - start, time.process_time() - cpu, clock.seconds()
    return seconds, cpu, total, np.asarray(model.aicc_, dtype=float)


def time_statsforecast(name: str, frame: pd.DataFrame, n_jobs: int):
    from statsforecast import StatsForecast
    from statsforecast.models import Naive

    # statsforecast 2.1's ARIMA(1,1,1) raises on about 1 in 8 M3 quarterly series (all residuals NaN);
    # its fallback model keeps the run going (those series then cost a Naive fit)
    fallback = Naive() if name == "arima" else None
    forecaster = StatsForecast(models=[statsforecast_model(name)], freq="QS", n_jobs=n_jobs, fallback_model=fallback)
    start, cpu, clock = time.perf_counter(), time.process_time(), CpuClock()
    forecaster.fit(frame)
    return time.perf_counter() - start, time.process_time() - cpu, clock.seconds()


class Report:
    """Rows to stdout and, as they come, to the results file; progress to stderr."""

    def __init__(self, path: str | None):
        self.path = path
        self.started = time.time()
        self.run = time.strftime("%Y-%m-%dT%H:%M:%S")
        if path:
            new = not os.path.exists(path)
            with open(path, "a") as f:
                if new:
                    f.write("run\tmodel\tconfiguration\tseries\tseconds\tseries_per_s\tcaller_cpu_s\ttotal_cpu_s"
                            "\tload1\tnote\n")

    def progress(self, message: str) -> None:
        load = os.getloadavg()[0]
        print(f"[{time.strftime('%H:%M:%S')} +{time.time() - self.started:7.0f} s, load {load:.1f}] {message}",
              file=sys.stderr, flush=True)

    def line(self, text: str) -> None:
        print(text, flush=True)

    def row(self, model: str, label: str, n: int, seconds: float, cpu: float, total: float, note: str = "") -> None:
        load = os.getloadavg()[0]
        self.line(f"  {label:<24} {n:6d} series {seconds:8.1f} s {n / seconds:8.1f} series/s | CPU s: caller "
                  f"{cpu:7.1f}, all processes {total:7.1f} ({1000 * total / n:6.1f} ms/series) | load {load:4.1f}"
                  f"{'  ' + note if note else ''}")
        if self.path:
            with open(self.path, "a") as f:
                f.write(f"{self.run}\t{model}\t{label}\t{n}\t{seconds:.2f}\t{n / seconds:.3f}\t{cpu:.2f}\t{total:.2f}"
                        f"\t{load:.2f}\t{note}\n")


def parse_subsets(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, _, count = item.partition("=")
        if name not in MODELS or not count.isdigit() or int(count) < 1:
            raise SystemExit(f"--peer-subset takes MODEL=N with MODEL one of {MODELS}; got {item!r}")
        out[name] = int(count)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000, help="number of series (default 10000)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=RUNNERS,
                        help="configurations to time (default: all)")
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask LocalCluster")
    parser.add_argument("--no-peer", action="store_true", help="skip statsforecast")
    parser.add_argument("--peer-subset", nargs="*", default=[], metavar="MODEL=N",
                        help="fit statsforecast's MODEL on N random series of the set")
    parser.add_argument("--subset-seed", type=int, default=0)
    parser.add_argument("--partition-size", type=int, default=None,
                        help="series per partition (default: min(500, ceil(N / 4)))")
    parser.add_argument("--out", default="/tmp/tsgen_panel_results.tsv",
                        help="tab-separated file each row is appended to (default %(default)s; '' for none)")
    args = parser.parse_args(argv)
    runners = [r for r in args.runners if not (args.no_dask and r == "dask")
               and not (args.no_peer and r.startswith("sf"))]
    subsets = parse_subsets(args.peer_subset)
    report = Report(args.out or None)

    n = args.series
    report.progress(f"building the frame of {n} series")
    frame = long_frame(n)
    warm = long_frame(16)
    size = args.partition_size or min(500, -(-n // 4))
    configs = {"serial": {"n_jobs": 1}, "njobs2": {"n_jobs": 2}, "dask": {"backend": "dask"}}
    for settings in configs.values():
        settings["partition_size"] = size
    cluster = client = None
    if "dask" in runners:
        from dask.distributed import Client, LocalCluster
    report.line(f"M3 dev subset, Quarterly training series replicated to {n} series ({len(frame)} rows) "
                f"in partitions of {size}, series fitted per second (higher is better); run {report.run}, "
                f"load average at start {os.getloadavg()[0]:.1f}")
    try:
        for name in args.models:
            report.line(f"\n{name}:")
            rates, work, reference = {}, {}, None
            for runner in runners:
                label = RUNNERS[runner]
                if runner in configs:
                    report.progress(f"{name} {label}: warm-up")
                    settings = configs[runner]
                    if runner == "dask":
                        # started for its rows only: idle workers' heartbeats would count as CPU of the other rows
                        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                               dashboard_address=None)
                        client = Client(cluster)
                        settings = {**settings, "client": client}
                    time_tsgen(name, warm, {**settings, "partition_size": 4})  # workers start, compile
                    report.progress(f"{name} {label}: fitting {n} series")
                    seconds, cpu, total, aicc = time_tsgen(name, frame, settings)
                    if runner == "dask":
                        client.close()
                        cluster.close()
                        client = cluster = None
                    if reference is None:
                        reference = aicc
                    same = np.array_equal(aicc, reference, equal_nan=True)
                    report.row(name, label, n, seconds, cpu, total,
                               "" if same else "AICc differ from the first tsgen row!")
                    rates[runner], work[runner] = n / seconds, total / n
                else:
                    n_jobs = 1 if runner == "sf1" else 2
                    data = frame if name not in subsets else subset(frame, min(subsets[name], n), args.subset_seed)
                    m = data["unique_id"].nunique()
                    report.progress(f"{name} {label}: warm-up")
                    time_statsforecast(name, long_frame(4), n_jobs)  # numba compilation
                    report.progress(f"{name} {label}: fitting {m} series")
                    seconds, cpu, total = time_statsforecast(name, data, n_jobs)
                    note = "" if m == n else f"random subset of {m} (seed {args.subset_seed})"
                    report.row(name, label, m, seconds, cpu, total, note)
                    rates[runner], work[runner] = m / seconds, total / m
            for runner, peer in PEERS.items():
                if runner in rates and peer in rates:
                    report.line(f"  {RUNNERS[runner]} / {RUNNERS[peer]}: {rates[runner] / rates[peer]:.2f}x series/s, "
                                f"{work[peer] / work[runner]:.2f}x series per CPU second")
            for runner in ("njobs2", "dask"):
                if runner in rates and "serial" in rates:
                    report.line(f"  {RUNNERS[runner]} / tsgen serial: {rates[runner] / rates['serial']:.2f}x")
            if "sf1" in rates and "sf2" in rates:
                report.line(f"  statsforecast n_jobs=2 / n_jobs=1: {rates['sf2'] / rates['sf1']:.2f}x")
        report.progress(f"done, load average {os.getloadavg()[0]:.1f}")
    finally:
        if client is not None:
            client.close()
            cluster.close()


if __name__ == "__main__":
    main()
