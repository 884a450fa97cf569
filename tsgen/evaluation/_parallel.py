"""One code path for serial, joblib and Dask execution of independent tasks.

``backend="dask"`` runs the very same joblib ``Parallel`` call on a
``dask.distributed`` cluster through joblib's Dask backend, so results
cannot depend on where the tasks ran. Backtests and the partitioned
many-series methods of :class:`tsgen.BaseForecaster` both run here.

A worker process does not see its parent's :mod:`tsgen._config` settings
(they live in a context variable), so every task carries them along and
runs as nested work (no progress bars under ``progress="auto"``), serially
inside (no pool inside a pool).
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager

import joblib

from tsgen._config import config_context, get_config, nested_work

JOBLIB_BACKENDS = ("loky", "threading", "multiprocessing")


def _dask_client(client):
    try:
        from dask.distributed import Client
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "backend='dask' needs dask.distributed: pip install 'tsgen[dask]'."
        ) from None
    if client is None:
        from dask.distributed import get_client

        try:
            return get_client(), False
        except ValueError:
            raise ValueError(
                "backend='dask' needs `client`: a dask.distributed.Client or a scheduler address "
                "such as 'tcp://127.0.0.1:8786' (or create a Client first)."
            ) from None
    if isinstance(client, str):
        return Client(client), True
    if isinstance(client, Client):
        return client, False
    raise TypeError(f"`client` must be a dask.distributed.Client or an address string; got {type(client).__name__}.")


class _Configured:
    """A task function run under its caller's settings, as nested work, serially inside."""

    def __init__(self, function, settings: dict):
        self.function = function
        self.settings = settings

    def __call__(self, *args, **kwargs):
        with config_context(**self.settings), nested_work():
            return self.function(*args, **kwargs)


class _Parallel:
    """``joblib.Parallel`` whose tasks (``delayed(f)(...)`` triples) carry the caller's settings."""

    def __init__(self, parallel: joblib.Parallel):
        self._parallel = parallel
        # the client stays with the caller: a worker runs its task serially
        self._settings = {**get_config(), "n_jobs": 1, "backend": "loky", "client": None}

    def __call__(self, tasks):
        return self._parallel((_Configured(f, self._settings), args, kwargs) for f, args, kwargs in tasks)


@contextmanager
def parallel_context(n_jobs, backend: str, client):
    """A joblib ``Parallel`` (yielding results in order) for the requested backend.

    Its tasks run as nested work under the caller's :mod:`tsgen._config`
    settings, wherever they run."""
    with ExitStack() as stack:
        stack.enter_context(nested_work())
        if backend == "dask":
            dask_client, owned = _dask_client(client)
            if owned:
                stack.callback(dask_client.close)
            stack.enter_context(joblib.parallel_config(backend="dask", client=dask_client))
            yield _Parallel(joblib.Parallel(n_jobs=-1, return_as="generator"))
            return
        if backend not in JOBLIB_BACKENDS:
            raise ValueError(f"`backend` must be one of {JOBLIB_BACKENDS + ('dask',)}; got {backend!r}.")
        if client is not None:
            raise ValueError("`client` is only used with backend='dask'.")
        yield _Parallel(joblib.Parallel(n_jobs=n_jobs, backend=backend, return_as="generator"))
