"""Argument types and names shared by the parser and the commands.

Kept apart from ``_commands`` (which imports pandas and, through the
registry, the models) so that ``tsgen --help`` and argument errors are
answered without importing either.
"""
from __future__ import annotations

import argparse

#: shortest training set for which ``detect --method auto`` picks SPOT (10 peaks over the 0.98 quantile)
SPOT_MIN_TRAIN = 500


def dest(flag: str) -> str:
    """The ``argparse`` destination of a model option's flag (``--seasonal-order`` -> ``model_seasonal_order``)."""
    return "model_" + flag.lstrip("-").replace("-", "_")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text}")
    return value


def refit(text: str):
    if text in ("always", "never"):
        return text == "always"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'always', 'never' or a number of origins; got {text!r}") from None


def start(text: str):
    """An int (training length) or a timestamp string, which the backtest looks up in the index."""
    try:
        return int(text)
    except ValueError:
        return text
