"""One code path for serial, joblib and Dask execution of independent tasks.

``backend="dask"`` runs the very same joblib ``Parallel`` call on a
``dask.distributed`` cluster through joblib's Dask backend, so results
cannot depend on where the tasks ran.
"""
from __future__ import annotations

from contextlib import contextmanager

import joblib

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


@contextmanager
def parallel_context(n_jobs, backend: str, client):
    """A joblib ``Parallel`` (yielding results in order) for the requested backend."""
    if backend == "dask":
        dask_client, owned = _dask_client(client)
        try:
            with joblib.parallel_config(backend="dask", client=dask_client):
                yield joblib.Parallel(n_jobs=-1, return_as="generator")
        finally:
            if owned:
                dask_client.close()
        return
    if backend not in JOBLIB_BACKENDS:
        raise ValueError(f"`backend` must be one of {JOBLIB_BACKENDS + ('dask',)}; got {backend!r}.")
    if client is not None:
        raise ValueError("`client` is only used with backend='dask'.")
    yield joblib.Parallel(n_jobs=n_jobs, backend=backend, return_as="generator")
