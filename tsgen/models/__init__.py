"""Model families: one module per family, each a generative module and its estimator.

The estimators are imported on first use, so ``tsgen.models.arima`` does not
import the deep models (and their torch/Pyro stack) through this package.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from tsgen._lazy import attach

__all__ = [
    "ARIMA",
    "ConformalForecaster",
    "DeepMarkovModel",
    "DeepState",
    "Drift",
    "ETS",
    "Ensemble",
    "LSTMSSM",
    "LinearGaussianSSM",
    "Mean",
    "Naive",
    "NonlinearGrowth",
    "RNNForecaster",
    "SRNN",
    "STORN",
    "SeasonalNaive",
    "StateSpaceForecaster",
    "StateSpaceModel",
    "StochasticVolatility",
    "Theta",
    "VRNN",
]

__getattr__, __dir__ = attach(
    __name__,
    {
        "ARIMA": "tsgen.models.arima",
        "ConformalForecaster": "tsgen.models.conformal",
        "Ensemble": "tsgen.models.ensemble",
        "DeepMarkovModel": "tsgen.models.dmm",
        "DeepState": "tsgen.models.deepstate",
        "LSTMSSM": "tsgen.models.lstm_ssm",
        "LinearGaussianSSM": "tsgen.models.lds",
        "NonlinearGrowth": "tsgen.models.nonlinear_growth",
        "RNNForecaster": "tsgen.models.rnn",
        "SRNN": "tsgen.models.srnn",
        "STORN": "tsgen.models.storn",
        "StateSpaceForecaster": "tsgen.models.state_space",
        "StateSpaceModel": "tsgen.models.state_space",
        "StochasticVolatility": "tsgen.models.stochastic_volatility",
        "VRNN": "tsgen.models.vrnn",
        "Drift": "tsgen.models.baselines",
        "ETS": "tsgen.models.ets",
        "Theta": "tsgen.models.theta",
        "Mean": "tsgen.models.baselines",
        "Naive": "tsgen.models.baselines",
        "SeasonalNaive": "tsgen.models.baselines",
    },
    submodules=["arima", "baselines", "conformal", "ensemble", "deep_estimator", "deepstate", "dmm", "ets", "lds", "lstm_ssm", "nonlinear_growth", "rnn",
                "latent_estimator",
                "srnn", "state_space", "stochastic_volatility", "storn", "theta", "vrnn"],
)

if TYPE_CHECKING:
    from tsgen.models.arima import ARIMA
    from tsgen.models.conformal import ConformalForecaster
    from tsgen.models.ensemble import Ensemble
    from tsgen.models.baselines import Drift, Mean, Naive, SeasonalNaive
    from tsgen.models.deepstate import DeepState
    from tsgen.models.dmm import DeepMarkovModel
    from tsgen.models.ets import ETS
    from tsgen.models.lds import LinearGaussianSSM
    from tsgen.models.lstm_ssm import LSTMSSM
    from tsgen.models.nonlinear_growth import NonlinearGrowth
    from tsgen.models.rnn import RNNForecaster
    from tsgen.models.srnn import SRNN
    from tsgen.models.state_space import StateSpaceForecaster, StateSpaceModel
    from tsgen.models.stochastic_volatility import StochasticVolatility
    from tsgen.models.storn import STORN
    from tsgen.models.theta import Theta
    from tsgen.models.vrnn import VRNN
