"""Randomness from a local generator without touching the caller's global RNG."""
from __future__ import annotations

import contextlib

import torch


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
