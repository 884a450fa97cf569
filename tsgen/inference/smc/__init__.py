"""Sequential Monte Carlo over the model protocol (:mod:`tsgen.protocol`): particle filters, resampling,
smoothers and particle MCMC.

Pure tensor functions: they import the protocol and nothing from ``models/``.
"""
from tsgen.inference.smc.filter import KEEP, PROPOSALS, FilterOutput, particle_filter
from tsgen.inference.smc.pmcmc import PGASResult, PMMHResult, pgas, pmmh
from tsgen.inference.smc.resampling import RESAMPLERS, ess, normalise, resampler
from tsgen.inference.smc.smoothing import FixedLagSmoother, WeightedPaths, ffbsi, fixed_lag, genealogy

__all__ = [
    "FilterOutput", "KEEP", "PROPOSALS", "RESAMPLERS", "ess", "normalise", "particle_filter", "resampler",
    "FixedLagSmoother", "PGASResult", "PMMHResult", "WeightedPaths", "ffbsi", "fixed_lag", "genealogy", "pgas", "pmmh",
]
