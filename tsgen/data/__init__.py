"""The pandas edge of tsgen: validation, frequency, masks, padding, and back to pandas."""
from tsgen.data._batch import SeriesBatch, to_series_batch, validate_horizon
from tsgen.data._calendar import calendar_features
from tsgen.data._covariates import hold_past, to_covariates, to_static
from tsgen.data._index import future_index, index_from_spec, index_to_spec, validate_index
from tsgen.data._output import (
    forecast_frames,
    forecast_long,
    forecast_output,
    per_step_output,
    per_step_series,
    quantile_label,
    unwrap,
)
from tsgen.data._panel import Panel, from_long, regularize

__all__ = [
    "Panel",
    "SeriesBatch",
    "calendar_features",
    "forecast_frames",
    "forecast_long",
    "forecast_output",
    "from_long",
    "future_index",
    "hold_past",
    "index_from_spec",
    "index_to_spec",
    "per_step_output",
    "per_step_series",
    "quantile_label",
    "regularize",
    "to_covariates",
    "to_series_batch",
    "to_static",
    "unwrap",
    "validate_horizon",
    "validate_index",
]
