"""Rolling-origin probabilistic backtesting of any tsgen estimator."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from joblib import delayed
from sklearn.base import clone

from tsgen.base import _check_n_samples, _check_quantiles, _past_positions, _target
from tsgen.data import SeriesBatch, quantile_label, to_covariates, to_series_batch, to_static, validate_horizon
from tsgen.data._output import id_array
from tsgen.evaluation._parallel import parallel_context
from tsgen.evaluation._result import BacktestResult
from tsgen.evaluation._score import as_2d, score_origins, with_seed
from tsgen.evaluation._windows import (
    check_refit,
    fit_groups,
    origin_stops,
    resolve_start,
    series_seeds,
    train_starts,
)


@dataclass(frozen=True)
class _Outcome:
    series: int
    position: int
    stop: int
    scores: dict
    forecast: np.ndarray  # (horizon, dim, statistic): mean, then the requested quantiles
    times: pd.Index
    samples: np.ndarray | None


def _series_pandas(batch: SeriesBatch, i: int):
    """Series ``i`` of a validated batch as a fresh pandas object (never the caller's)."""
    n = int(batch.lengths[i])
    values = batch.values[i, :n].numpy().copy()
    index, columns = batch.indexes[i], batch.columns_of(i)
    if batch.n_dims == 1 and batch.kind != "frame":
        return pd.Series(values[:, 0], index=index, name=columns[0])
    return pd.DataFrame(values, index=index, columns=list(columns))


@dataclass(frozen=True)
class _Exog:
    """One series' covariates for a backtest: ``X`` over all its steps (a frame on its index), its static
    row ``(1, n_static)``, and which columns of ``X`` are past-observed."""
    X: pd.DataFrame | None
    static: pd.DataFrame | None
    past: tuple

    def static_rows(self, n: int) -> pd.DataFrame | None:
        """The static row once per window (``n`` windows share the series' row)."""
        return None if self.static is None else self.static.iloc[np.zeros(n, dtype=np.int64)].reset_index(drop=True)

    def fit_args(self, spans: list, many: bool) -> dict:
        """``fit``'s covariate arguments for the training windows ``spans`` (a list of them when ``many``)."""
        X = [self.X.iloc[a:b] for a, b in spans] if self.X is not None else None
        out = {}
        if X is not None:
            out["X"] = X if many else X[0]
        if self.past:
            out["past_covariates"] = self.past
        if self.static is not None:
            out["static"] = self.static_rows(len(spans))
        return out


def _series_exog(X, static, past_covariates, batch: SeriesBatch, datasets: list) -> list:
    """Each series' covariates aligned to its own steps once (by timestamp, or by id for panel ``y``)."""
    if X is None and static is None:
        if past_covariates is not None:
            raise ValueError("`past_covariates` names columns of `X`, but no `X` was given.")
        return [None] * batch.n_series
    frames = [None] * batch.n_series
    past = ()
    if X is not None:
        covariates, names = to_covariates(X, "X", batch.indexes, ids=batch.ids, id_col=batch.id_col,
                                          time_col=batch.time_col, target=_target(batch))
        columns = list(names) if names is not None else list(range(covariates.shape[-1]))
        frames = [pd.DataFrame(covariates[i, : len(d)].numpy(), index=d.index, columns=columns)
                  for i, d in enumerate(datasets)]
        past = _past_positions(past_covariates, names, covariates.shape[-1])
    rows = [None] * batch.n_series
    if static is not None:
        values, static_names = to_static(static, "static", batch.n_series, batch.ids, id_col=batch.id_col)
        rows = [pd.DataFrame(values[i : i + 1].numpy(), columns=list(static_names)) for i in range(batch.n_series)]
    return [_Exog(frames[i], rows[i], past) for i in range(batch.n_series)]


def _seeded_clone(model, seed: int):
    fresh = clone(model)
    if "random_state" in fresh.get_params(deep=False):
        fresh.set_params(random_state=int(seed))
    return fresh


def _run_task(model, fitted, group, data, horizon, quantiles, n_samples, season, keep_samples, batch_size,
              exog=None):
    """Fit (unless ``fitted`` is given) and score every origin of ``group``; runs on a worker.

    Origins are conditioned in batches of ``batch_size`` (one model call per
    batch); a batch draws its samples from the seed of its first origin.
    """
    fits = []
    if fitted is None:
        first = group.origins[0]
        fitted = _seeded_clone(model, group.fit_seed).fit(
            data.iloc[first.train_start : first.stop],
            **({} if exog is None else exog.fit_args([(first.train_start, first.stop)], many=False)))
        fits.append((group.series, first.position, first.stop, first.stop - first.train_start))
    outcomes = []
    values, columns = as_2d(data), _columns(data)
    for b in range(0, len(group.origins), batch_size):
        batch = group.origins[b : b + batch_size]
        scored = score_origins(with_seed(fitted, batch[0].seed), values, data.index, columns,
                               [(o.train_start, o.stop) for o in batch], horizon, quantiles, n_samples, season,
                               keep_samples, exog)
        for origin, out in zip(batch, scored):
            outcomes.append(_Outcome(group.series, origin.position, origin.stop, *out))
    return fits, outcomes


def _columns(data) -> tuple:
    return (data.name,) if isinstance(data, pd.Series) else tuple(data.columns)


def _run_batched_refits(model, groups, data, horizon, quantiles, n_samples, season, keep_samples, batch_size,
                        exog=None):
    """Refit every group of ``groups`` in ONE ``fit`` call on the list of their training windows; runs on a worker.

    Only for estimators whose fit on a list is one independent fit per
    series (``_fits_series_independently``, e.g. ARIMA's batched BFGS), so
    series ``g`` of the fitted model is the fit on group ``g``'s window
    alone. The ``p``-th origin of every group is then conditioned at once:
    series ``g`` of ``y=`` continues with group ``g``'s parameters. Groups
    with fewer origins are padded with their first history (scored, then
    dropped) so that ``y`` keeps pairing one history with each fit.
    """
    windows = [data.iloc[g.origins[0].train_start : g.origins[0].stop] for g in groups]
    spans = [(g.origins[0].train_start, g.origins[0].stop) for g in groups]
    fitted = _seeded_clone(model, groups[0].fit_seed).fit(
        windows, **({} if exog is None else exog.fit_args(spans, many=True)))
    fits = [(g.series, g.origins[0].position, g.origins[0].stop, len(w)) for g, w in zip(groups, windows)]
    outcomes = []
    values, columns = as_2d(data), _columns(data)
    for p in range(max(len(g.origins) for g in groups)):
        batch = [g.origins[p] if p < len(g.origins) else g.origins[0] for g in groups]
        real = [p < len(g.origins) for g in groups]
        seed = next(o.seed for o, r in zip(batch, real) if r)
        scored = score_origins(with_seed(fitted, seed), values, data.index, columns,
                               [(o.train_start, o.stop) for o in batch], horizon, quantiles, n_samples, season,
                               keep_samples, exog)
        for g, origin, keep, out in zip(groups, batch, real, scored):
            if keep:
                outcomes.append(_Outcome(g.series, origin.position, origin.stop, *out))
    return fits, outcomes


def _chunks(group, size: int):
    """Split a never-refit group into tasks of ``size`` origins (fixed, so results ignore ``n_jobs``)."""
    return [type(group)(group.series, group.fit_seed, group.origins[k : k + size])
            for k in range(0, len(group.origins), size)]


def backtest(
    model,
    y,
    horizon: int,
    *,
    X=None,
    static=None,
    past_covariates=None,
    start=None,
    step: int = 1,
    window: str = "expanding",
    window_length: int | None = None,
    refit: bool | int = True,
    quantiles=(0.1, 0.5, 0.9),
    n_samples: int = 100,
    season: int = 1,
    n_jobs: int | None = 1,
    backend: str = "loky",
    client=None,
    random_state: int | None = None,
    batch_size: int = 32,
    keep_samples: bool = False,
    progress: bool = False,
) -> BacktestResult:
    """Rolling-origin evaluation of a probabilistic forecaster.

    At each origin ``t`` (``t`` observations of history) the model forecasts
    ``y[t:t+H]`` from its training window: ``predict`` gives the mean and
    quantiles, ``sample`` joint paths for the CRPS, and the one-step
    predictive densities give the log score (see
    :mod:`tsgen.evaluation._score` for each metric's definition).

    Parameters
    ----------
    model : tsgen estimator
        Unfitted template; every fit uses a fresh ``sklearn.base.clone``.
    y : Series, DataFrame, array or list of them
        One series, or many backtested independently (each with its own fits).
    horizon : int
        Forecast length ``H`` scored at each origin.
    X : covariates, optional
        Time-varying covariates of ``y`` over all its steps (aligned by
        timestamp; for panel ``y`` a long frame or dict keyed by id). At each
        origin the model is fitted on the training window's rows and
        forecasts with the future-known columns' rows of the horizon; the
        ``past_covariates`` columns are read up to the origin only (their
        later values never reach a fit, forecast or score).
    static : optional
        Static covariates, one row per series (see ``fit``).
    past_covariates : names or positions of ``X``'s past-observed columns, optional
    start : int, timestamp or None
        Training length at the first origin (negative counts from the end),
        or the timestamp of the first cutoff; None = half the series.
    step : int
        Distance between consecutive origins.
    window : {"expanding", "sliding"}
        Train on all past data, or on the last ``window_length`` steps
        (default: the length at the first origin).
    refit : bool or int
        ``True`` refits at every origin, ``k`` at every k-th origin, ``False``
        fits once at the first origin; between refits the fitted model is
        conditioned on each new history through ``y=`` without refitting.
    quantiles : sequence of float
        Levels whose pinball loss is reported (80% and 95% coverage are
        always reported).
    n_samples : int
        Sample paths per origin for the CRPS of models without closed-form
        marginals (and for ``keep_samples``).
    season : int
        Seasonal period of the MASE scale.
    n_jobs : int or None
        Parallel workers (joblib semantics; -1 = all cores).
    backend : {"loky", "threading", "multiprocessing", "dask"}
        ``"dask"`` runs the same tasks on a ``dask.distributed`` cluster.
    client : dask.distributed.Client or str, optional
        The Dask client or scheduler address (``backend="dask"`` only;
        default: the current client).
    random_state : int or None
        Seeds of every fit and every sample set are derived from it per
        (series, origin), so the result does not depend on ``n_jobs`` or
        ``backend``. None takes the model's own ``random_state`` (as
        scikit-learn's ``cross_validate`` runs a seeded estimator
        reproducibly), and draws fresh entropy when that is None too. The
        CRPS of models with closed-form Gaussian marginals is exact and
        does not depend on the seed (see :mod:`tsgen.evaluation._score`).
    batch_size : int
        Origins that share a fitted model are conditioned together, this
        many per model call (models batched over series, such as the
        Kalman-based ones, then filter all histories in one pass); for
        estimators fitted per series (``_fits_series_independently``, e.g.
        ARIMA) it is also how many refits share one batched ``fit`` call.
        Also the unit of parallel work. Part of the random stream: changing
        it changes the sample draws.
    keep_samples : bool
        Keep every origin's sample paths in ``result.samples``.
    progress : bool
        Show a tqdm progress bar over tasks.

    Returns
    -------
    BacktestResult
    """
    horizon = validate_horizon(horizon)
    quantiles = _check_quantiles(quantiles)
    n_samples = _check_n_samples(n_samples)
    refit_every = check_refit(refit)
    if not isinstance(season, (int, np.integer)) or isinstance(season, bool) or season < 1:
        raise ValueError(f"`season` must be a positive int; got {season!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int; got {batch_size!r}.")
    if not hasattr(model, "fit") or not hasattr(model, "sample"):
        raise TypeError(f"`model` must be a tsgen estimator; got {type(model).__name__}.")
    if random_state is None:
        random_state = model.get_params(deep=False).get("random_state")
    batch = to_series_batch(y, "y")
    datasets, groups_per_series, cutoffs = [], [], []
    plans = []
    for i in range(batch.n_series):
        data = _series_pandas(batch, i)
        first = resolve_start(start, len(data), horizon, data.index)
        stops = origin_stops(len(data), horizon, first, step)
        plans.append((data, stops, train_starts(stops, window, window_length)))
    exogs = _series_exog(X, static, past_covariates, batch, [p[0] for p in plans])
    seeds = series_seeds(random_state, batch.n_series, [len(p[1]) for p in plans])
    for i, (data, stops, starts) in enumerate(plans):
        datasets.append(data)
        cutoffs.append(data.index[stops - 1])
        groups_per_series.append(fit_groups(i, stops, starts, seeds[i][0], seeds[i][1], refit_every))

    common = dict(horizon=horizon, quantiles=quantiles, n_samples=n_samples, season=season,
                  keep_samples=keep_samples, batch_size=int(batch_size))
    fits, outcomes = [], []
    batched = refit_every >= 1 and getattr(model, "_fits_series_independently", False)
    with parallel_context(n_jobs, backend, client) as parallel:
        tasks = []
        for i, groups in enumerate(groups_per_series):
            if batched:
                # refits of `batch_size` groups share one batched fit call (fixed chunks: results ignore n_jobs)
                tasks += [(_run_batched_refits, None, groups[k : k + int(batch_size)], datasets[i], exogs[i])
                          for k in range(0, len(groups), int(batch_size))]
                continue
            for group in groups:
                fitted = None
                if refit_every == 0:
                    # one fit, then the conditioning-only origins spread over the workers
                    first = group.origins[0]
                    fitted = _seeded_clone(model, group.fit_seed).fit(
                        datasets[i].iloc[first.train_start : first.stop],
                        **({} if exogs[i] is None else exogs[i].fit_args([(first.train_start, first.stop)], False)))
                    fits.append((i, first.position, first.stop, first.stop - first.train_start))
                    chunks = _chunks(group, int(batch_size))
                else:
                    chunks = [group]
                tasks += [(_run_task, fitted, chunk, datasets[i], exogs[i]) for chunk in chunks]
        results = parallel(
            delayed(run)(model, g, d, **common, exog=e) if run is _run_batched_refits
            else delayed(run)(model, f, g, d, **common, exog=e)
            for run, f, g, d, e in tasks
        )
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(tasks), desc="backtest", unit="task")
        for task_fits, task_outcomes in results:
            fits += task_fits
            outcomes += task_outcomes
    result = _assemble(fits, outcomes, datasets, cutoffs, horizon, quantiles, keep_samples)
    return _named_by_id(result, batch) if batch.is_panel else result


def _named_by_id(result: BacktestResult, batch: SeriesBatch) -> BacktestResult:
    """Panel input: the ``series`` column (and ``samples`` keys) hold each series' id instead of its position."""
    ids = id_array(batch.series_ids)

    def by_id(frame):
        return frame.assign(series=ids.take(frame["series"].to_numpy(dtype=np.int64)))

    samples = None if result.samples is None else {(ids[s], p): v for (s, p), v in result.samples.items()}
    return BacktestResult(metrics=by_id(result.metrics), forecasts=by_id(result.forecasts), fits=by_id(result.fits),
                          horizon=result.horizon, samples=samples)


def _assemble(fits, outcomes, datasets, cutoffs, horizon, quantiles, keep_samples) -> BacktestResult:
    """Stack every origin's scores and forecasts into the two tidy frames (built once, not per origin)."""
    outcomes = sorted(outcomes, key=lambda o: (o.series, o.position))
    names = list(dict.fromkeys(name for o in outcomes for name in o.scores))
    n_out, n_metrics = len(outcomes), len(names)
    series = np.array([o.series for o in outcomes])
    positions = np.array([o.position for o in outcomes])
    cutoff = pd.Index([cutoffs[o.series][o.position] for o in outcomes])
    nan = np.full(horizon, np.nan)
    scores = np.stack([[np.asarray(o.scores.get(name, nan), dtype=np.float64) for name in names] for o in outcomes])
    metrics = pd.DataFrame({
        "series": np.repeat(series, n_metrics * horizon),
        "origin": np.repeat(positions, n_metrics * horizon),
        "cutoff": cutoff.repeat(n_metrics * horizon),
        "horizon": np.tile(np.arange(1, horizon + 1), n_out * n_metrics),
        "metric": np.tile(np.repeat(names, horizon), n_out),
        "value": scores.reshape(-1),
    })

    # each series under its own variable names (a list of differently named series keeps them apart)
    own = [np.array([d.name] if isinstance(d, pd.Series) else list(d.columns), dtype=object) for d in datasets]
    n_dims = len(own[0])
    stats = ["mean"] + [quantile_label(q) for q in quantiles]
    # (origin, horizon, variable, statistic) -> (origin, variable, horizon, statistic)
    values = np.stack([o.forecast for o in outcomes])
    values = values.transpose(0, 2, 1, 3).reshape(-1, len(stats))
    arrays = [as_2d(data) for data in datasets]
    actual = np.stack([arrays[o.series][o.stop : o.stop + horizon] for o in outcomes])
    times = outcomes[0].times.append([o.times for o in outcomes[1:]])
    time = times.to_numpy().reshape(n_out, 1, horizon).repeat(n_dims, axis=1).reshape(-1)
    forecasts = pd.DataFrame({
        "series": np.repeat(series, n_dims * horizon),
        "origin": np.repeat(positions, n_dims * horizon),
        "cutoff": cutoff.repeat(n_dims * horizon),
        "time": pd.Index(time),
        "horizon": np.tile(np.arange(1, horizon + 1), n_out * n_dims),
        "variable": np.concatenate([np.repeat(own[o.series], horizon) for o in outcomes]),
        "y": actual.transpose(0, 2, 1).reshape(-1),
    })
    for j, stat in enumerate(stats):
        forecasts[stat] = values[:, j]

    fits_frame = pd.DataFrame(sorted(fits), columns=["series", "origin", "stop", "train_length"])
    fits_frame.insert(2, "cutoff", [cutoffs[s][p] for s, p in zip(fits_frame["series"], fits_frame["origin"])])
    samples = {(o.series, o.position): o.samples for o in outcomes} if keep_samples else None
    return BacktestResult(
        metrics=metrics,
        forecasts=forecasts,
        fits=fits_frame.drop(columns="stop"),
        horizon=horizon,
        samples=samples,
    )
