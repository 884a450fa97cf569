"""Sequential Monte Carlo over the model protocol (:mod:`tsgen.protocol`): particle filters and resampling.

Pure tensor functions: they import the protocol and nothing from ``models/``.
"""
from tsgen.inference.smc.filter import KEEP, PROPOSALS, FilterOutput, particle_filter
from tsgen.inference.smc.resampling import RESAMPLERS, ess, normalise, resampler

__all__ = ["FilterOutput", "KEEP", "PROPOSALS", "RESAMPLERS", "ess", "normalise", "particle_filter", "resampler"]
