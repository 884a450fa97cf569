"""Likelihood-free fitting of simulators: sample discrepancies, adversarial training and ABC-SMC.

Pure tensor functions: they take a simulator (a callable returning windows or
data drawn from the model), observed windows and the parameters to fit, and
import nothing from ``models/``. The estimator-level entry point is
``tsgen.StateSpaceForecaster(model, method="mmd" | "energy" | "gan" | "abc")``.

- :func:`mmd`, :func:`energy_distance`: distances between two samples of windows.
- :func:`with_autocovariances`: windows with their within-window
  autocovariances appended (features for a kernel on noisy persistent series).
- :func:`fit_discrepancy`: gradient descent on the MMD or energy distance
  through a reparameterised simulator.
- :func:`fit_adversarial`: a GAN over windows (non-saturating loss), with
  :func:`discriminative_score` on held-out windows as its quality measure.
- :func:`abc_smc`: an ABC-SMC posterior over a few static parameters
  (:func:`window_moments` and :func:`moment_distance`: the estimators' distance).
"""
from tsgen.inference.likelihood_free.abc import ABCResult, abc_smc
from tsgen.inference.likelihood_free.adversarial import (
    AdversarialFit, WindowDiscriminator, discriminative_score, fit_adversarial,
)
from tsgen.inference.likelihood_free.discrepancy import (
    BANDWIDTH_FACTORS, energy_distance, median_bandwidth, mmd, moment_distance, pairwise_sq_distances, window_moments,
    with_autocovariances,
)
from tsgen.inference.likelihood_free.gradient import DISCREPANCIES, DiscrepancyFit, fit_discrepancy

__all__ = [
    "ABCResult", "AdversarialFit", "BANDWIDTH_FACTORS", "DISCREPANCIES", "DiscrepancyFit", "WindowDiscriminator",
    "abc_smc", "discriminative_score", "energy_distance", "fit_adversarial", "fit_discrepancy", "median_bandwidth",
    "mmd", "moment_distance", "pairwise_sq_distances", "window_moments", "with_autocovariances",
]
