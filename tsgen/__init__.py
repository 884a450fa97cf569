"""tsgen: probabilistic time-series forecasting with sequential generative models.

The public names are imported on first use (``tsgen.ARIMA`` imports the
ARIMA estimator and what it needs, not torch's deep-learning stack), so
``import tsgen`` itself imports none of torch, numba, scikit-learn or
matplotlib.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tsgen._lazy import attach

# the library logs through `logging` under "tsgen"; the application decides where records go
logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "ARIMA",
    "AnomalyDetector",
    "BacktestResult",
    "BaseForecaster",
    "ConformalForecaster",
    "DeepMarkovModel",
    "DeepState",
    "Drift",
    "ETS",
    "Ensemble",
    "InsufficientDataWarning",
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
    "TrainingDivergedError",
    "TrainingDivergenceWarning",
    "VRNN",
    "backtest",
    "config_context",
    "get_config",
    "load",
    "metrics",
    "set_config",
    "__version__",
]

__getattr__, __dir__ = attach(
    __name__,
    {
        "ARIMA": "tsgen.models.arima",
        "ConformalForecaster": "tsgen.models.conformal",
        "Ensemble": "tsgen.models.ensemble",
        "AnomalyDetector": "tsgen.anomaly",
        "BacktestResult": "tsgen.evaluation",
        "BaseForecaster": "tsgen.base",
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
        "InsufficientDataWarning": "tsgen.exceptions",
        "TrainingDivergedError": "tsgen.exceptions",
        "TrainingDivergenceWarning": "tsgen.exceptions",
        "VRNN": "tsgen.models.vrnn",
        "backtest": "tsgen.evaluation",
        "config_context": "tsgen._config",
        "get_config": "tsgen._config",
        "set_config": "tsgen._config",
        "load": "tsgen.base",
        "Drift": "tsgen.models.baselines",
        "ETS": "tsgen.models.ets",
        "Theta": "tsgen.models.theta",
        "Mean": "tsgen.models.baselines",
        "Naive": "tsgen.models.baselines",
        "SeasonalNaive": "tsgen.models.baselines",
    },
    # subpackages as attributes too (``tsgen.plotting.plot_forecast`` after a bare ``import tsgen``)
    submodules=["anomaly", "base", "cli", "components", "data", "evaluation", "exceptions", "inference",
                "metrics", "models", "plotting", "training"],
)

if TYPE_CHECKING:
    from tsgen import metrics
    from tsgen._config import config_context, get_config, set_config
    from tsgen.anomaly import AnomalyDetector
    from tsgen.base import BaseForecaster, load
    from tsgen.evaluation import BacktestResult, backtest
    from tsgen.exceptions import InsufficientDataWarning, TrainingDivergedError, TrainingDivergenceWarning
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
