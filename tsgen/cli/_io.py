"""CSV in, pandas out: find the time column, parse it, set the frequency, pick the value columns."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from tsgen.data._index import seasonal_period  # noqa: F401  (the CLI's import path)

#: column names taken as the time column when ``--time-col`` is not given
TIME_NAMES = ("date", "time", "timestamp", "datetime", "ds", "month", "period", "day", "week", "year", "quarter")


class CLIError(Exception):
    """A user mistake on the command line: printed without a traceback."""


def _guess_time_column(frame: pd.DataFrame) -> str | None:
    for column in frame.columns:
        if str(column).strip().lower() in TIME_NAMES:
            return column
    first = frame.columns[0]
    if not pd.api.types.is_numeric_dtype(frame[first]):
        return first  # a leading text column is a time column or a mistake; parsing will tell
    return None


def _parse_times(values: pd.Series, column: str) -> pd.Index:
    parsed = pd.to_datetime(values, errors="coerce", format="mixed")
    bad = parsed.isna() & values.notna()
    if bad.any() or values.isna().any():
        row = int((bad | values.isna()).to_numpy().argmax())
        raise CLIError(
            f"could not parse time column {column!r} as dates: row {row + 2} holds {values.iloc[row]!r}. "
            "Fix the value, or name another column with --time-col."
        )
    index = pd.DatetimeIndex(parsed)
    inferred = pd.DatetimeIndex(index, freq="infer").freq if len(index) >= 3 else None
    freq = None if inferred is None else inferred.freqstr
    if freq is None:
        raise CLIError(
            f"time column {column!r} is not regularly spaced (no frequency could be inferred); "
            "resample the data to a regular grid, leaving missing values empty."
        )
    index = pd.DatetimeIndex(index, freq=freq)
    if freq[0] in "MQYA":  # calendar months/quarters/years read best as periods (1961-01)
        return index.to_period()
    return index


def read_series(path, time_col: str | None = None, columns: list[str] | None = None):
    """The CSV at ``path`` as a Series (one value column) or a DataFrame indexed by time."""
    path = Path(path)
    if not path.is_file():
        raise CLIError(f"file not found: {str(path)!r}.")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise CLIError(f"could not read {str(path)!r} as CSV: {err}") from None
    available = [str(c) for c in frame.columns]
    if time_col is not None and time_col not in frame.columns:
        raise CLIError(f"--time-col {time_col!r} is not a column of {path.name}; columns: {available}.")
    time_col = time_col if time_col is not None else _guess_time_column(frame)
    if columns:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise CLIError(f"--columns {missing} not found in {path.name}; columns: {available}.")
        values = frame[columns]
    else:
        values = frame.drop(columns=[time_col] if time_col is not None else [])
    if values.shape[1] == 0:
        raise CLIError(f"{path.name} has no value column besides the time column {time_col!r}.")
    text = [str(c) for c in values.columns if not pd.api.types.is_numeric_dtype(values[c])]
    if text:
        raise CLIError(
            f"column(s) {text} of {path.name} are not numeric; choose value columns with --columns "
            "or the time column with --time-col."
        )
    values = values.astype("float64")
    if time_col is not None:
        values.index = _parse_times(frame[time_col], str(time_col))
        values.index.name = time_col
    if values.shape[1] == 1:
        return values.iloc[:, 0]
    return values

