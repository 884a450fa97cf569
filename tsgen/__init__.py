"""tsgen: probabilistic time-series forecasting with sequential generative models."""
from tsgen import metrics
from tsgen.base import BaseForecaster, load
from tsgen.models.lds import LinearGaussianSSM

__version__ = "0.1.0"

__all__ = ["BaseForecaster", "LinearGaussianSSM", "load", "metrics", "__version__"]
