"""Many series, partitioned: per-series estimators fit and forecast in parallel.

An estimator that fits every series on its own (``_fits_series_independently``:
ARIMA, ETS, Theta, the baselines) gets more series than the
``partition_size`` setting (:mod:`tsgen._config`) split into consecutive
partitions. Each partition runs the estimator's own array-level method on
its rows -- ``_fit``, ``_forecast``, ``_draw_paths``,
``_per_step_log_likelihood``, ``_total_log_likelihood`` -- through
:func:`tsgen.evaluation._parallel.parallel_context` (serial, joblib or
Dask: one code path), and the pieces are put back in series order.

A fit's partitions are merged through the estimator's save format
(``_fitted_state`` / ``_load_fitted_state``): per-series lists in the
metadata are concatenated, per-series tensors (leading dimension the
partition's series) are stacked, zero-padded along later dimensions, and
tensors numbered per series (``params.0``, ``params.1``, ...) are
renumbered. The merged model is what ``save``/``load`` would rebuild, so
nothing but the save format has to know about partitions; a forecast
splits the fitted state the same way.

Why results cannot depend on where partitions run: the layout depends only
on the number of series and ``partition_size``; a worker runs its piece
serially under the caller's settings; and partition ``k`` draws from a seed
derived from ``(random_state, k)``.
"""
from __future__ import annotations

import dataclasses
import logging
import re

import numpy as np
import torch
from joblib import delayed

from tsgen._config import get_config
from tsgen.data import SeriesBatch

logger = logging.getLogger(__name__)

#: SeriesBatch fields with one entry per series (sliced); the others describe the whole batch
_PER_SERIES_FIELDS = ("values", "mask", "lengths", "indexes", "ids", "names")
_NUMBERED = re.compile(r"^(.*)\.(\d+)$")


def partitions(n_series: int) -> list[slice] | None:
    """The partitions of ``n_series`` series, or None when they are not split (one piece)."""
    size = get_config()["partition_size"]
    if n_series <= size:
        return None
    return [slice(start, min(start + size, n_series)) for start in range(0, n_series, size)]


def _plan(model, n_series: int) -> list[slice] | None:
    if not getattr(model, "_fits_series_independently", False) or getattr(model, "_in_partition", False):
        return None
    return partitions(n_series)


def select_series(batch: SeriesBatch, rows: slice) -> SeriesBatch:
    """Series ``rows`` of ``batch`` as a batch of their own, cut to their longest length."""
    changes = {}
    for field in dataclasses.fields(batch):
        value = getattr(batch, field.name)
        if field.name in _PER_SERIES_FIELDS and value is not None:
            changes[field.name] = value[rows]
    length = int(changes["lengths"].max())
    changes["values"] = changes["values"][:, :length].clone()
    changes["mask"] = changes["mask"][:, :length].clone()
    changes["lengths"] = changes["lengths"].clone()
    return dataclasses.replace(batch, **changes)


def _rows(covariates, rows: slice):
    return None if covariates is None else covariates[rows].clone()


def _part_seed(random_state, entropy: int, k: int) -> int:
    """Partition ``k``'s 32-bit seed from the model's ``random_state`` (or this call's fresh entropy)."""
    base = entropy if random_state is None else int(random_state)
    return int(np.random.SeedSequence([base, k]).generate_state(1, np.uint32)[0])


# ------------------------------------------------------------------ merging fitted states
def _pad_stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    shape = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
    out = []
    for t in tensors:
        if list(t.shape[1:]) != shape:
            padded = t.new_zeros((t.shape[0], *shape))
            padded[tuple(slice(0, n) for n in t.shape)] = t
            t = padded
        out.append(t)
    return torch.cat(out)


def merge_states(states: list[tuple[dict, dict]], sizes: list[int]) -> tuple[dict, dict]:
    """One fitted state from the partitions' ``(meta, tensors)`` (see the module docstring)."""
    metas, tensor_sets = zip(*states)
    meta = {}
    for key in metas[0]:
        values = [m[key] for m in metas]
        if all(isinstance(v, list) and len(v) == n for v, n in zip(values, sizes)):
            meta[key] = [item for v in values for item in v]
        elif all(v == values[0] for v in values[1:]):
            meta[key] = values[0]
        else:
            raise RuntimeError(f"partitions of one fit disagree on {key!r}: {values!r}")
    tensors, offset = {}, 0
    for part, n in zip(tensor_sets, sizes):
        for name, value in part.items():
            numbered = _NUMBERED.match(name)
            if numbered and int(numbered.group(2)) < n:
                tensors[f"{numbered.group(1)}.{int(numbered.group(2)) + offset}"] = value
        offset += n
    for name in tensor_sets[0]:
        if _NUMBERED.match(name) and name in tensors:
            continue
        values = [part[name] for part in tensor_sets]
        if all(v.dim() > 0 and v.shape[0] == n for v, n in zip(values, sizes)):
            tensors[name] = _pad_stack(values)
        elif all(torch.equal(v, values[0]) for v in values[1:]):
            tensors[name] = values[0]
        else:
            raise RuntimeError(f"partitions of one fit disagree on tensor {name!r}")
    return meta, tensors


def split_state(meta: dict, tensors: dict, n_series: int, rows: slice) -> tuple[dict, dict]:
    """The fitted state of series ``rows`` from a state fitted on ``n_series`` series."""
    start = rows.start
    part_meta = {k: v[rows] if isinstance(v, list) and len(v) == n_series else v for k, v in meta.items()}
    part = {}
    for name, value in tensors.items():
        numbered = _NUMBERED.match(name)
        if numbered:
            i = int(numbered.group(2))
            if rows.start <= i < rows.stop:
                part[f"{numbered.group(1)}.{i - start}"] = value
        elif value.dim() > 0 and value.shape[0] == n_series:
            part[name] = value[rows]
        else:
            part[name] = value
    return part_meta, part


# ------------------------------------------------------------------ worker side
def _fit_part(model, data: SeriesBatch, covariates, feature_names):
    model._in_partition = True
    model.feature_names_in_ = feature_names
    model._fit(data, covariates)
    model.history_ = data
    model.n_dims_ = data.n_dims
    model.n_features_ = 0 if covariates is None else covariates.shape[-1]
    model.covariates_ = covariates
    return model._fitted_state()


def _call_part(model, fitted: dict, method: str, args: tuple, options: dict):
    model._in_partition = True
    for name, value in fitted["attributes"].items():
        setattr(model, name, value)
    model._load_fitted_state(*fitted["state"])
    return getattr(model, method)(*args, **options)


def _fresh(model, random_state):
    """An unfitted copy of ``model`` with the same parameters (and the given ``random_state``)."""
    params = model.get_params(deep=False)
    if "random_state" in params:
        params["random_state"] = random_state
    return type(model)(**params)


# ------------------------------------------------------------------ caller side
def _run(tasks, n_series: int, n_parts: int, what: str):
    from tsgen.evaluation._parallel import parallel_context

    config = get_config()
    logger.info("%s: %d series in %d partitions of up to %d (n_jobs=%s, backend=%s)", what, n_series, n_parts,
                config["partition_size"], config["n_jobs"], config["backend"])
    with parallel_context(config["n_jobs"], config["backend"], config["client"]) as parallel:
        return list(parallel(tasks))


def fit_partitioned(model, data: SeriesBatch, covariates) -> bool:
    """Fit ``model`` partition by partition and merge; False (nothing done) when it is not partitioned."""
    plan = _plan(model, data.n_series)
    if plan is None:
        return False
    names = getattr(model, "feature_names_in_", None)
    # fits keep the model's own random_state: a series' fit is the same in any partition
    random_state = getattr(model, "random_state", None)
    tasks = [delayed(_fit_part)(_fresh(model, random_state), select_series(data, rows), _rows(covariates, rows), names)
             for rows in plan]
    states = _run(tasks, data.n_series, len(plan), f"{type(model).__name__}.fit")
    meta, tensors = merge_states(states, [rows.stop - rows.start for rows in plan])
    model.history_ = data
    model.n_dims_ = data.n_dims
    model.n_features_ = 0 if covariates is None else covariates.shape[-1]
    model.covariates_ = covariates
    model._load_fitted_state(meta, tensors)
    return True


#: where each array-level method takes its ``history`` (``covariates`` follows it)
_HISTORY_SLOT = {"_forecast": 1, "_draw_paths": 2, "_per_step_log_likelihood": 0, "_total_log_likelihood": 0}


def by_partition(model, method: str, /, *args, **options):
    """``model.<method>(*args, **options)``, over the partitions of its ``history`` when it has more
    series than ``partition_size`` (results joined along the series axis), else in one call.

    ``method`` is an array-level method that takes ``(history, covariates)``
    at the position :data:`_HISTORY_SLOT` gives."""
    slot = _HISTORY_SLOT[method]
    history, covariates = args[slot], args[slot + 1]
    plan = _plan(model, history.n_series)
    if plan is None:
        return getattr(model, method)(*args, **options)
    n_fitted = None if model.history_ is None else model.history_.n_series
    # a model fitted on one series applies to any number; otherwise its own call names the mismatch
    if n_fitted not in (1, history.n_series):
        return getattr(model, method)(*args, **options)
    meta, tensors = model._fitted_state()
    entropy = int(np.random.SeedSequence().entropy % (2**32))
    random_state = getattr(model, "random_state", None)
    tasks = []
    for k, rows in enumerate(plan):
        fitted_rows = rows if n_fitted > 1 else slice(0, 1)
        state = split_state(meta, tensors, n_fitted, fitted_rows) if n_fitted > 1 else (meta, tensors)
        attributes = {
            "history_": select_series(model.history_, fitted_rows), "n_dims_": model.n_dims_,
            "n_features_": model.n_features_, "covariates_": _rows(model.covariates_, fitted_rows),
            "feature_names_in_": getattr(model, "feature_names_in_", None),
        }
        part_args = list(args)
        part_args[slot], part_args[slot + 1] = select_series(history, rows), _rows(covariates, rows)
        tasks.append(delayed(_call_part)(_fresh(model, _part_seed(random_state, entropy, k)),
                                         {"attributes": attributes, "state": state}, method, tuple(part_args),
                                         options))
    results = _run(tasks, history.n_series, len(plan), f"{type(model).__name__}.{method.lstrip('_')}")
    return _join(method, results, history)


def _join(method: str, results: list, history: SeriesBatch):
    if method == "_forecast":
        means, bands = zip(*results)
        return np.concatenate(means), {q: np.concatenate([b[q] for b in bands]) for q in bands[0]}
    if method == "_draw_paths":
        return np.concatenate(results)
    if method == "_total_log_likelihood":
        if any(r is None for r in results):
            return None
        return torch.cat([torch.as_tensor(r) for r in results])
    if method == "_per_step_log_likelihood":
        out = np.full(tuple(history.values.shape[:2]), np.nan)
        start = 0
        for r in results:
            out[start : start + r.shape[0], : r.shape[1]] = r
            start += r.shape[0]
        return out
    raise ValueError(f"no partitioned form of {method!r}")
