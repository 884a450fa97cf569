"""Model families: one module per family, each a generative module and its estimator."""
from tsgen.models.rnn import RNNForecaster  # noqa: F401
