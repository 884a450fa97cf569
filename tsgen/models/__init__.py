"""Model families: one module per family, each a generative module and its estimator."""
from tsgen.models.rnn import RNNForecaster  # noqa: F401
from tsgen.models.dmm import DeepMarkovModel  # noqa: F401
from tsgen.models.arima import ARIMA  # noqa: F401
