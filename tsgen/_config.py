"""Library-wide settings: progress bars and how many-series work is spread out.

Settings say *how* work runs, never *what* it computes, so they are not
estimator parameters (a saved model carries no Dask client and no
progress flag of its caller): results are the same under every setting,
which the tests check. They live in a context variable, so
:func:`config_context` changes them for one block (and one thread or task)
only, like scikit-learn's ``config_context`` and joblib's
``parallel_config``.

``progress``
    ``"auto"`` (the default): a progress bar where the estimator's own
    ``progress`` parameter asks for one, except inside nested work
    (backtests, ensembles, conformal calibration, partitions run by
    workers). ``True``: bars inside nested work too. ``False``: no bars
    anywhere (``tsgen --quiet`` sets this). The environment variable
    ``TSGEN_PROGRESS`` (``0``/``1``/``auto``, or ``false``/``true``) gives
    the starting value.
``n_jobs``, ``backend``, ``client``
    Where per-series work runs: ``n_jobs`` joblib workers with ``backend``
    ``"loky"``, ``"threading"`` or ``"multiprocessing"``, or a Dask cluster
    with ``backend="dask"`` and ``client`` a ``dask.distributed.Client`` or
    a scheduler address (None: the current client).
``partition_size``
    Series per partition. Estimators that fit every series on its own
    (ARIMA, ETS, Theta, the baselines) split more series than this into
    consecutive partitions of this size for ``fit``, ``predict``,
    ``sample`` and ``log_likelihood``, and run the partitions through the
    backend. The layout depends only on the number of series and this
    size, and partition ``k`` draws its sample paths from a seed derived
    from ``(random_state, k)``, so ``n_jobs``, ``backend`` and ``client``
    cannot change a result: a serial run gives bit-for-bit what a cluster
    gives. Like a backtest's ``batch_size``, the size is part of the random
    stream of ``sample`` (fits and closed-form forecasts do not depend on
    it).

    Estimators whose parameters are shared by all series are not
    partitioned: ``LinearGaussianSSM``, ``StateSpaceForecaster`` and the
    deep models maximise one likelihood summed over every series, so a
    partition fitted on its own would estimate its own parameters -- a
    different model for each group of series, and a result that would
    depend on ``partition_size``. Their work is already one batched tensor
    computation over all series (and multi-threaded by torch), and what
    would have to be split is each optimiser step, not the series.
"""
from __future__ import annotations

import contextvars
import os
import warnings
from contextlib import contextmanager

from tsgen._validation import is_int

_BACKENDS = ("loky", "threading", "multiprocessing", "dask")
_ENV_PROGRESS = {"auto": "auto", "1": True, "true": True, "yes": True, "on": True,
                 "0": False, "false": False, "no": False, "off": False}


def _progress_from_env():
    raw = os.environ.get("TSGEN_PROGRESS")
    if raw is None or raw.strip() == "":
        return "auto"
    value = _ENV_PROGRESS.get(raw.strip().lower())
    if value is None:
        # a typo in the environment must not make `import tsgen` fail
        warnings.warn(f"TSGEN_PROGRESS must be one of 0, 1, auto (or false, true); got {raw!r}: using 'auto'.",
                      stacklevel=2)
        return "auto"
    return value


_global = {"progress": _progress_from_env(), "n_jobs": 1, "backend": "loky", "client": None,
           "partition_size": 500}
_local: contextvars.ContextVar[dict | None] = contextvars.ContextVar("tsgen_config", default=None)
# depth of nested work (backtests, ensembles, workers): "auto" progress hides bars there
_nested: contextvars.ContextVar[int] = contextvars.ContextVar("tsgen_nested", default=0)


def get_config() -> dict:
    """The settings in force here, as a new dict (see :mod:`tsgen._config` for each key).

    Returns
    -------
    dict
        ``progress``, ``n_jobs``, ``backend``, ``client`` and ``partition_size``.
    """
    return dict(_local.get() or _global)


def _checked(updates: dict) -> dict:
    unknown = set(updates) - set(_global)
    if unknown:
        raise TypeError(f"unknown tsgen setting(s) {sorted(unknown)}; expected some of {sorted(_global)}.")
    if "progress" in updates and not (updates["progress"] is True or updates["progress"] is False
                                      or (isinstance(updates["progress"], str) and updates["progress"] == "auto")):
        raise ValueError(f"`progress` must be 'auto', True or False; got {updates['progress']!r}.")
    if "n_jobs" in updates:
        n_jobs = updates["n_jobs"]
        if not (n_jobs is None or (is_int(n_jobs) and n_jobs != 0)):
            raise ValueError(f"`n_jobs` must be None or a non-zero integer (-1: all cores); got {n_jobs!r}.")
    if "backend" in updates and updates["backend"] not in _BACKENDS:
        raise ValueError(f"`backend` must be one of {_BACKENDS}; got {updates['backend']!r}.")
    if "partition_size" in updates:
        size = updates["partition_size"]
        if not (is_int(size) and size >= 1):
            raise ValueError(f"`partition_size` must be a positive integer; got {size!r}.")
    return updates


def set_config(**settings) -> None:
    """Change settings: for the whole process, or for the rest of the
    enclosing :func:`config_context` block when called inside one.

    Parameters
    ----------
    **settings
        Any of ``progress`` ('auto', True or False), ``n_jobs`` (int or
        None), ``backend`` ('loky', 'threading', 'multiprocessing' or
        'dask'), ``client`` (a ``dask.distributed.Client``, an address or
        None) and ``partition_size`` (a positive int).

    Examples
    --------
    >>> import tsgen
    >>> tsgen.set_config(progress=False)
    >>> tsgen.get_config()["progress"]
    False
    >>> tsgen.set_config(progress="auto")
    """
    _checked(settings)
    current = _local.get()
    if current is None:
        _global.update(settings)
    else:
        _local.set({**current, **settings})


@contextmanager
def config_context(**settings):
    """Settings for the duration of a ``with`` block (the previous ones come back after it).

    Parameters
    ----------
    **settings
        As for :func:`set_config`.

    Examples
    --------
    Fit many series on two local processes (the result equals the serial fit):

    >>> import numpy as np, tsgen
    >>> panel = [np.random.default_rng(i).normal(size=40).cumsum() for i in range(6)]
    >>> with tsgen.config_context(n_jobs=2, partition_size=3):
    ...     model = tsgen.Naive().fit(panel)
    >>> len(model.sigma_)
    6
    """
    token = _local.set({**get_config(), **_checked(settings)})
    try:
        yield
    finally:
        _local.reset(token)


@contextmanager
def nested_work():
    """Mark a block as nested work (a backtest's refits, an ensemble's members): with
    ``progress="auto"`` no progress bar is shown inside it."""
    token = _nested.set(_nested.get() + 1)
    try:
        yield
    finally:
        _nested.reset(token)


def show_progress(requested: bool = True) -> bool:
    """Whether a progress bar that its caller ``requested`` is shown under the current settings."""
    progress = get_config()["progress"]
    if progress is False or not requested:
        return False
    return progress is True or _nested.get() == 0


__all__ = ["config_context", "get_config", "nested_work", "set_config", "show_progress"]
