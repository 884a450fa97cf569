"""The pandas edge of tsgen: validation, frequency, masks, padding, and back to pandas."""
from tsgen.data._batch import SeriesBatch, to_series_batch, validate_horizon
from tsgen.data._covariates import to_covariates
from tsgen.data._index import future_index, index_from_spec, index_to_spec, validate_index
from tsgen.data._output import forecast_frames, per_step_series, quantile_label, unwrap

__all__ = [
    "SeriesBatch",
    "forecast_frames",
    "future_index",
    "index_from_spec",
    "index_to_spec",
    "per_step_series",
    "quantile_label",
    "to_covariates",
    "to_series_batch",
    "unwrap",
    "validate_horizon",
    "validate_index",
]
