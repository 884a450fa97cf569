"""Randomness from a local generator without touching the caller's global RNG."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from tsgen._validation import is_int

#: seeds are 32-bit, as numpy's ``RandomState`` and scikit-learn's ``check_random_state``
#: accept, so a seed means the same everywhere a user may pass it
MAX_SEED = 2**32 - 1


def check_random_state(random_state) -> int | None:
    """``random_state`` as None or a Python int in ``[0, 2**32 - 1]``, or a clear error.

    Accepted: None (fresh entropy on every use) and a Python or numpy integer
    in that range. Generator objects (numpy ``Generator``/``RandomState``,
    ``torch.Generator``) are refused: a model must stay reproducible from its
    parameters alone and savable, so draw a seed from them instead, e.g.
    ``int(rng.integers(2**32))``.
    """
    if random_state is None:
        return None
    if is_int(random_state):
        if not 0 <= random_state <= MAX_SEED:
            raise ValueError(f"`random_state` must be None or an int in [0, 2**32 - 1]; got {random_state!r}.")
        return int(random_state)
    remedy = ""
    if isinstance(random_state, (torch.Generator, np.random.Generator, np.random.RandomState)):
        remedy = " Pass a seed drawn from it instead, e.g. `int(rng.integers(2**32))`."
    raise TypeError(
        f"`random_state` must be None or an int in [0, 2**32 - 1]; got {type(random_state).__name__} "
        f"{random_state!r}.{remedy}"
    )


def make_generator(random_state) -> torch.Generator:
    """A local torch generator from a checked ``random_state``: the library never seeds global state."""
    seed = check_random_state(random_state)
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


@contextlib.contextmanager
def seeded_from(generator: torch.Generator, device: torch.device | str | None = None):
    """Run a block whose global-RNG draws (dropout, ``Distribution.sample``, ``nn.Linear`` init)
    are fixed by ``generator``; the global RNG state is restored on exit.

    ``torch.distributions`` and ``nn`` draw from the global RNG only, so the
    one way to make them follow ``random_state`` without setting global seeds
    is to fork the global state, seed the fork from ``generator`` and restore.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    device = torch.device(device) if device is not None else torch.device("cpu")
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        torch.manual_seed(seed)
        yield
