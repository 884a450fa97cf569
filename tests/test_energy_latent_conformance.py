"""The estimator contract (tests/test_conformance.py's checks) for models built with the energy-based and the
VAE-style emissions: RNNForecaster (exact teacher-forced likelihood) and a latent model (DeepMarkovModel)."""
import pytest

import tsgen
import test_conformance as conformance
from test_conformance import fitted  # noqa: F401  (the shared module-scoped fixture of fitted models)

CASES = [
    pytest.param(tsgen.RNNForecaster, {**tsgen.RNNForecaster.get_test_params()[0], "emission": name},
                 id=f"RNNForecaster-{name}")
    for name in ("energy", "energy_nce", "vae")
] + [
    pytest.param(tsgen.DeepMarkovModel, {**tsgen.DeepMarkovModel.get_test_params()[0], "emission": name},
                 id=f"DeepMarkovModel-{name}")
    for name in ("vae",)  # "energy" inside a particle filter costs grid_size tilt evaluations per particle: slow here
]


@pytest.mark.parametrize("check", conformance.CHECKS, ids=lambda check: check.__name__.removeprefix("test_"))
@pytest.mark.parametrize("cls, params", CASES)
def test_conformance(cls, params, check, fitted, tmp_path):  # noqa: F811
    conformance.run_check(check, cls, params, fitted, tmp_path)
