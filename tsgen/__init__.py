"""tsgen: probabilistic time-series forecasting with sequential generative models."""
from tsgen.base import BaseForecaster, load

__version__ = "0.1.0"

__all__ = ["BaseForecaster", "load", "__version__"]
