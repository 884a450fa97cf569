"""Sequential Monte Carlo over the model protocol (:mod:`tsgen.protocol`): particle filters and resampling.

Pure tensor functions: they import the protocol and nothing from ``models/``.
"""
from tsgen.inference.smc.resampling import RESAMPLERS, ess, normalise, resampler

__all__ = ["RESAMPLERS", "ess", "normalise", "resampler"]
