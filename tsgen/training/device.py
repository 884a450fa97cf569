"""Where tensors live during training."""
from __future__ import annotations

import torch


def resolve_device(device) -> torch.device:
    """``"cpu"``, ``"cuda"`` (``"cuda:1"``) or ``"auto"`` (CUDA when available) as a ``torch.device``."""
    if isinstance(device, torch.device):
        resolved = device
    elif isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif isinstance(device, str):
        try:
            resolved = torch.device(device)
        except RuntimeError:
            raise ValueError(f"`device` must be 'cpu', 'cuda' or 'auto'; got {device!r}.") from None
    else:
        raise TypeError(f"`device` must be 'cpu', 'cuda' or 'auto'; got {device!r}.")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"`device` must be 'cpu', 'cuda' or 'auto'; got {device!r}.")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("`device` is 'cuda' but no CUDA GPU is available; use device='cpu' or 'auto'.")
    return resolved
