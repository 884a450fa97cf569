"""CSV in, pandas out: find the time column, parse it, set the frequency, pick the value columns."""
from __future__ import annotations

import csv
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format


#: column names taken as the time column when ``--time-col`` is not given
TIME_NAMES = ("date", "time", "timestamp", "datetime", "ds", "month", "period", "day", "week", "year", "quarter",
              "step", "t")


class CLIError(Exception):
    """A user mistake on the command line: printed without a traceback."""


#: leading rows of a text time column whose written form is checked against a guessed date pattern
_FORMAT_ROWS = 50


@dataclass(frozen=True)
class TimeFormat:
    """How the input wrote its times, so that outputs write theirs alike and join back on the time column.

    Models see monthly, quarterly and yearly data as periods; a user who
    wrote ``2009-01-01`` (or ``2009-03-31``) must get timestamps on that
    convention back, not ``2009Q1``. ``kind`` is ``"dates"`` (written with
    the strftime ``pattern`` that reads the input back, else ISO; a period
    as its first or last day, ``anchor``), ``"periods"`` (the input wrote
    period text such as ``2009Q1``) or ``"integers"`` (years or time
    steps, written as integers).
    """

    kind: str = "dates"
    pattern: str | None = None
    anchor: str = "start"

    def anchored(self, stamps: pd.DatetimeIndex, index: pd.Index) -> "TimeFormat":
        """This format with the period end the input's ``stamps`` fall on, once they are read as ``index``."""
        if self.kind != "dates" or not isinstance(index, pd.PeriodIndex) or not len(stamps):
            return self
        starts = pd.DatetimeIndex(stamps).to_period(index.freq).start_time
        at_start = bool((starts == pd.DatetimeIndex(stamps).tz_localize(None)).all())
        return TimeFormat(self.kind, self.pattern, "start" if at_start else "end")

    def index(self, values) -> pd.Index:
        """Times (an index or column of periods, timestamps or integers) as the input wrote them."""
        index = pd.Index(values)
        name = index.name
        if isinstance(index, pd.PeriodIndex):
            if self.kind == "integers":
                return pd.Index(index.year, name=name)
            if self.kind == "periods":
                return pd.Index(index.astype(str), name=name)
            index = index.start_time if self.anchor == "start" else index.end_time.normalize()
        if isinstance(index, pd.DatetimeIndex) and self.kind == "integers":  # years left as dates (--fill nan)
            return pd.Index(index.year, name=name)
        if isinstance(index, pd.DatetimeIndex) and self.pattern is not None:
            return pd.Index(index.strftime(self.pattern), name=name)
        return index.rename(name)

    def parse(self, text: str) -> pd.Timestamp | None:
        """A time typed on the command line (e.g. ``--start``) as the file writes its times, or None."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # dateutil's "could not infer format" chatter
                return pd.to_datetime(text, format=self.pattern) if self.pattern else pd.Timestamp(text)
        except (ValueError, TypeError):
            return None

    def frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A copy of ``frame`` whose time index and time columns (periods or timestamps) read as the input's."""
        out = frame.copy()
        if isinstance(out.index, (pd.PeriodIndex, pd.DatetimeIndex)):
            out.index = self.index(out.index)
        for column in out.columns:
            dtype = out[column].dtype
            if isinstance(dtype, pd.PeriodDtype) or pd.api.types.is_datetime64_any_dtype(dtype):
                out[column] = self.index(out[column]).to_numpy()
        return out


def _written_as(values: pd.Series, parsed: pd.DatetimeIndex, dayfirst: bool) -> TimeFormat:
    """The format of a text time column: a date pattern that reads its rows back, else period text, else ISO."""
    text = values.astype(str).str.strip().head(_FORMAT_ROWS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dayfirst guesses on ISO text warn
        pattern = guess_datetime_format(text.iloc[0], dayfirst=dayfirst)
        if pattern is not None:
            try:
                again = pd.DatetimeIndex(pd.to_datetime(text, format=pattern))
                if again.equals(parsed[: len(text)]):
                    return TimeFormat("dates", pattern)
            except (ValueError, TypeError):
                pass
    try:
        if all(str(pd.Period(t)) == t for t in text):
            return TimeFormat("periods")
    except (ValueError, TypeError):
        pass
    return TimeFormat("dates")


#: integer times (years or steps) are written as integers
INTEGERS = TimeFormat("integers")


#: integers read as calendar years when they are a time column (outside: refused, never nanoseconds)
YEAR_RANGE = (1000, 2999)
#: a day-month-year or month-day-year date: two small numbers before the year
_DMY = r"^\s*(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{2}|\d{4})(?:\D|$)"


def _guess_time_column(frame: pd.DataFrame) -> str | None:
    for column in frame.columns:
        if str(column).strip().lower() in TIME_NAMES:
            return column
    first = frame.columns[0]
    if not pd.api.types.is_numeric_dtype(frame[first]):
        return first  # a leading text column is a time column or a mistake; parsing will tell
    return None


def _looks_like_data(cell: str) -> bool:
    """A header cell that is really a value: a number or a date (with a digit: 'today' parses too)."""
    text = cell.strip()
    if not text:
        return False
    try:
        float(text)
        return True
    except ValueError:
        pass
    if not any(ch.isdigit() for ch in text):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dateutil's "could not infer format" chatter
        return not pd.isna(pd.to_datetime(text, errors="coerce", format="mixed"))


def _has_header(path: Path) -> bool:
    """False when every cell of the first line is a number or a date: that line is data, not names."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        try:
            first = next(csv.reader(handle))
        except (StopIteration, csv.Error, UnicodeDecodeError):
            return True  # let pandas report an empty or unreadable file
    cells = [c for c in first if c.strip()]
    return not cells or not all(_looks_like_data(c) for c in cells)


def _name_headerless(frame: pd.DataFrame) -> pd.DataFrame:
    """Names for a file without a header: a leading text or year column is ``time``, values ``y`` or ``y1..``."""
    first = frame.iloc[:, 0]
    leading_time = not pd.api.types.is_numeric_dtype(first) or _are_years(first)
    n_values = frame.shape[1] - int(leading_time)
    values = ["y"] if n_values == 1 else [f"y{k}" for k in range(1, n_values + 1)]
    return frame.set_axis((["time"] if leading_time else []) + values, axis=1)


def _are_years(values: pd.Series) -> bool:
    numbers = values.to_numpy(dtype="float64", na_value=float("nan"))
    return bool(
        len(numbers) and np.isfinite(numbers).all() and (numbers == np.round(numbers)).all()
        and (numbers >= YEAR_RANGE[0]).all() and (numbers <= YEAR_RANGE[1]).all()
    )


def _parse_years(values: pd.Series, column: str) -> pd.PeriodIndex:
    """Integer years as an annual PeriodIndex (pandas would read them as nanoseconds since 1970)."""
    if not _are_years(values):
        raise CLIError(
            f"time column {column!r} holds numbers that are not calendar years ({YEAR_RANGE[0]}-{YEAR_RANGE[1]}); "
            "write dates such as 2020-01-31, or name the time column with --time-col."
        )
    years = values.to_numpy(dtype="int64")
    gaps = np.flatnonzero(np.diff(years) != 1)
    if len(gaps):
        row = int(gaps[0]) + 1
        raise CLIError(
            f"time column {column!r} must hold consecutive years; row {row + 2} holds {years[row]} after "
            f"{years[row - 1]}. Add the missing years with empty values."
        )
    return pd.period_range(start=pd.Period(year=int(years[0]), freq="Y"), periods=len(years))


def _day_first(text: pd.Series, column: str, dayfirst: bool | None) -> bool | None:
    """Whether ``a/b/yyyy`` dates are day-first: from the flag, from values above 12, or refused when ambiguous.

    None when the dates are not of that form (ISO dates are year-first and
    unambiguous).
    """
    parts = text.str.extract(_DMY)
    if parts[0].isna().any():
        return None
    first, second = parts[0].astype(int), parts[1].astype(int)
    day_first_ok = bool((second <= 12).all())
    month_first_ok = bool((first <= 12).all())
    if dayfirst is not None:
        fits = day_first_ok if dayfirst else month_first_ok
        if not fits:
            wrong = second if dayfirst else first
            row = int((wrong > 12).to_numpy().argmax())
            order = "day-first (--dayfirst)" if dayfirst else "month-first (--monthfirst)"
            raise CLIError(f"time column {column!r} is not {order}: row {row + 2} holds {text.iloc[row]!r}.")
        return dayfirst
    if day_first_ok and not month_first_ok:
        return True
    if month_first_ok and not day_first_ok:
        return False
    if day_first_ok and month_first_ok:
        raise CLIError(
            f"time column {column!r} has dates such as {text.iloc[0].strip()!r} that read both day-first and "
            "month-first; pass --dayfirst or --monthfirst."
        )
    return None  # neither order fits every row: the parser names the bad row


def _parse_dates(values: pd.Series, column: str, dayfirst: bool | None) -> tuple[pd.DatetimeIndex, TimeFormat]:
    """A text time column as timestamps (in file order, no frequency yet) and how it is written, or an error
    naming the bad row."""
    text = values.astype("string")
    order = _day_first(text.fillna(""), column, dayfirst)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dateutil's "could not infer format" chatter
        parsed = pd.to_datetime(values, errors="coerce", format="mixed", dayfirst=bool(order))
    bad = parsed.isna() & values.notna()
    if bad.any() or values.isna().any():
        row = int((bad | values.isna()).to_numpy().argmax())
        raise CLIError(
            f"could not parse time column {column!r} as dates: row {row + 2} holds {values.iloc[row]!r}. "
            "Fix the value, or name another column with --time-col."
        )
    stamps = pd.DatetimeIndex(parsed)
    return stamps, _written_as(values, stamps, bool(order))


def _parse_steps(values: pd.Series, column: str) -> pd.Index:
    """Integer time steps (1, 2, 3, ... as a statsforecast ``ds`` may be) in file order, or an error naming the row."""
    numbers = values.to_numpy(dtype="float64")
    whole = np.isfinite(numbers) & (numbers == np.round(numbers))
    if not whole.all():
        row = int((~whole).argmax())
        raise CLIError(
            f"time column {column!r} holds numbers that are neither calendar years ({YEAR_RANGE[0]}-{YEAR_RANGE[1]}) "
            f"nor integer time steps: row {row + 2} holds {numbers[row]:g}. Write dates such as 2020-01-31 or "
            "whole step numbers, or name the time column with --time-col."
        )
    return pd.Index(numbers.astype(np.int64), name=values.name)


#: integer steps with gaps: --fill nan regularizes dates only (tsgen.data.regularize takes no integer steps)
_STEP_GAPS = ("time column {column!r} holds integer time steps that are not evenly spaced{detail}. Add the missing "
              "steps as rows with empty values, or write dates.")


def _uneven(steps: pd.Index) -> int | None:
    """The first position whose integer step differs from the first step (or goes backwards), None when even."""
    gaps = np.diff(steps.to_numpy())
    wrong = (gaps != gaps[0]) | (gaps <= 0) if len(gaps) else np.zeros(0, dtype=bool)
    return int(wrong.argmax()) + 1 if wrong.any() else None


def _check_time_filled(values: pd.Series, column: str) -> None:
    if values.isna().any():
        row = int(values.isna().to_numpy().argmax())
        raise CLIError(f"time column {column!r} is empty at row {row + 2}; fill it in or remove the row.")


def _is_number_column(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _as_periods(index: pd.DatetimeIndex) -> pd.Index:
    """Calendar months/quarters/years read best as periods (1961-01) inside; outputs write them back as dates."""
    return index.to_period() if index.freqstr[0] in "MQYA" else index


def _parse_times(values: pd.Series, column: str, dayfirst: bool | None = None,
                 fill: bool = False) -> tuple[pd.Index, TimeFormat]:
    """The time column as a regular index and how it is written; with ``fill`` an irregular one is returned as
    parsed (no frequency), for :func:`_regular`."""
    if _is_number_column(values):
        _check_time_filled(values, column)
        if _are_years(values):
            if fill:
                return pd.DatetimeIndex(pd.to_datetime(values.astype("int64").astype(str), format="%Y")), INTEGERS
            return _parse_years(values, column), INTEGERS
        steps = _parse_steps(values, column)
        row = _uneven(steps)
        if row is None:
            step = int(steps[1] - steps[0]) if len(steps) > 1 else 1
            return pd.RangeIndex(int(steps[0]), int(steps[-1]) + step, step), INTEGERS
        raise CLIError(_STEP_GAPS.format(column=column, detail=f": row {row + 2} holds {steps[row]} after "
                                                                 f"{steps[row - 1]}"))
    index, written = _parse_dates(values, column, dayfirst)
    inferred = pd.DatetimeIndex(index, freq="infer").freq if len(index) >= 3 else None
    freq = None if inferred is None else inferred.freqstr
    if freq is None:
        if fill:
            return index, written
        raise CLIError(
            f"time column {column!r} is not regularly spaced (no frequency could be inferred); "
            "pass --fill nan to put it on a regular grid with the missing steps empty, or resample the data."
        )
    regular = _as_periods(pd.DatetimeIndex(index, freq=freq))
    return regular, written.anchored(index, regular)


def _regular(values, column: str):
    """``values`` (indexed by parsed timestamps) on a regular grid with NaN at the missing steps (``--fill nan``)."""
    from tsgen.data import regularize

    if isinstance(values.index, pd.DatetimeIndex) and values.index.freq is None:
        if not values.index.is_monotonic_increasing:
            values = values.sort_index()
        try:
            values = regularize(values)
        except ValueError as err:
            raise CLIError(f"--fill nan: time column {column!r}: {err}") from None
        values.index = _as_periods(values.index)
        values.index.name = column
    return values


#: the id and value columns of statsforecast's long format, read as such without --id-col / --columns
DEFAULT_ID_COL, DEFAULT_VALUE_COL = "unique_id", "y"


def default_id_col(path) -> str | None:
    """``unique_id`` when the CSV's header names it (statsforecast's long layout), else None."""
    path = Path(path)
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8-sig") as handle:
        try:
            header = next(csv.reader(handle))
        except (StopIteration, csv.Error, UnicodeDecodeError):
            return None
    return DEFAULT_ID_COL if DEFAULT_ID_COL in [cell.strip() for cell in header] else None


def _read_frame(path: Path) -> pd.DataFrame:
    header = _has_header(path)
    try:
        frame = pd.read_csv(path, header=0 if header else None)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise CLIError(f"could not read {str(path)!r} as CSV: {err}") from None
    if not header:
        frame = _name_headerless(frame)
        print(f"{path.name} has no header row: reading its first line as data, columns {list(frame.columns)}.",
              file=sys.stderr)
    return frame


def read_series(path, time_col: str | None = None, columns: list[str] | None = None, dayfirst: bool | None = None,
                fill: str | None = None):
    """The CSV at ``path`` as a Series (one value column) or a DataFrame indexed by time.

    See :func:`read_series_as_written`, which also says how the file wrote its times.
    """
    return read_series_as_written(path, time_col, columns, dayfirst, fill)[0]


def read_series_as_written(path, time_col: str | None = None, columns: list[str] | None = None,
                           dayfirst: bool | None = None, fill: str | None = None):
    """``(y, format)``: the CSV at ``path`` as a Series or DataFrame indexed by time, and its :class:`TimeFormat`.

    A first line made only of numbers and dates is data, not a header (the
    columns are then called ``time`` and ``y``/``y1``...; a note goes to
    stderr). Integer years become an annual PeriodIndex, other integers
    evenly spaced time steps (a RangeIndex). Dates written
    ``a/b/yyyy`` are day-first or month-first as the values show (a part
    above 12); when every value reads both ways, ``dayfirst`` (True/False)
    decides and None refuses. ``fill="nan"`` puts irregular timestamps on
    a regular grid with NaN at the missing steps instead of refusing them.
    """
    path = Path(path)
    if not path.is_file():
        raise CLIError(f"file not found: {str(path)!r}.")
    frame = _read_frame(path)
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
    if text and time_col is not None and frame[time_col].duplicated().any():
        raise CLIError(
            f"{path.name} repeats its times ({time_col!r}) and has the text column(s) {text}: a long file, one row "
            f"per series and time. Name its id column with --id-col (e.g. --id-col {text[0]})."
        )
    if text:
        raise CLIError(
            f"column(s) {text} of {path.name} are not numeric; choose value columns with --columns "
            "or the time column with --time-col."
        )
    values = values.astype("float64")
    written = TimeFormat()
    if time_col is not None:
        index, written = _parse_times(frame[time_col], str(time_col), dayfirst, fill=fill is not None)
        values.index = index
        values.index.name = time_col
        values = _regular(values, str(time_col))
        if isinstance(index, pd.DatetimeIndex):  # irregular dates: periods only once on the grid
            written = written.anchored(index, values.index)
    if values.shape[1] == 1:
        return values.iloc[:, 0], written
    return values, written



def read_long(path, id_col: str, time_col: str | None = None, columns: list[str] | None = None,
              dayfirst: bool | None = None, fill: str | None = None):
    """A long CSV (one row per series and timestamp) as a :class:`tsgen.data.Panel` keyed by ``id_col``.

    See :func:`read_long_as_written`, which also says how the file wrote its times.
    """
    return read_long_as_written(path, id_col, time_col, columns, dayfirst, fill)[0]


def read_long_as_written(path, id_col: str, time_col: str | None = None, columns: list[str] | None = None,
                         dayfirst: bool | None = None, fill: str | None = None):
    """``(panel, format)``: a long CSV as a :class:`tsgen.data.Panel` keyed by ``id_col``, and its :class:`TimeFormat`.

    The time column is ``time_col`` or guessed as in :func:`read_series`; the
    value columns are ``columns`` or every other column (which must then be
    numeric). Times are dates, integer years or integer time steps (each
    series may start at its own step, as statsforecast's ``ds = 1, 2, ...``
    does). All series must share one frequency; ``fill="nan"`` puts each
    on a regular grid with NaN at its missing steps.
    """
    from tsgen.data import from_long, regularize

    path = Path(path)
    if not path.is_file():
        raise CLIError(f"file not found: {str(path)!r}.")
    frame = _read_frame(path)
    available = [str(c) for c in frame.columns]
    if id_col not in frame.columns:
        raise CLIError(f"--id-col {id_col!r} is not a column of {path.name}; columns: {available}.")
    if time_col is not None and time_col not in frame.columns:
        raise CLIError(f"--time-col {time_col!r} is not a column of {path.name}; columns: {available}.")
    if time_col is None:
        time_col = _guess_time_column(frame.drop(columns=[id_col]))
        if time_col is None:
            raise CLIError(f"no time column found in {path.name}; name it with --time-col (columns: {available}).")
    if columns:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise CLIError(f"--columns {missing} not found in {path.name}; columns: {available}.")
    else:
        columns = [c for c in frame.columns if c not in (id_col, time_col)]
        if DEFAULT_VALUE_COL in columns and len(columns) > 1:
            # statsforecast's layout: y is the target and the other columns are its exogenous variables
            others = [str(c) for c in columns if c != DEFAULT_VALUE_COL]
            print(f"{path.name}: forecasting its {DEFAULT_VALUE_COL!r} column; {others} are not used (the command "
                  "line takes no covariates; choose value columns with --columns).", file=sys.stderr)
            columns = [DEFAULT_VALUE_COL]
    if not columns:
        raise CLIError(f"{path.name} has no value column besides {id_col!r} and {time_col!r}.")
    text = [str(c) for c in columns if not _is_number_column(frame[c])]
    if text:
        raise CLIError(f"column(s) {text} of {path.name} are not numeric; choose value columns with --columns.")
    _check_time_filled(frame[time_col], str(time_col))
    times = frame[time_col]
    written = INTEGERS
    if not _is_number_column(times):
        stamps, written = _parse_dates(times, str(time_col), dayfirst)
    elif _are_years(times):
        stamps = pd.DatetimeIndex(pd.to_datetime(times.astype("int64").astype(str), format="%Y"))
    else:
        stamps = _parse_steps(times, str(time_col))
        keys = pd.DataFrame({"id": frame[id_col].to_numpy(), "t": stamps.to_numpy()}).sort_values(["id", "t"])
        gaps = keys.groupby("id", sort=False)["t"].diff()
        first = gaps.groupby(keys["id"], sort=False).transform("first")
        uneven = gaps.notna() & ((gaps != first) | (gaps <= 0))
        if uneven.any():
            detail = f" in series {keys['id'][uneven].iloc[0]!r}"
            raise CLIError(_STEP_GAPS.format(column=time_col, detail=detail))
    long = frame[[id_col, *columns]].astype({c: "float64" for c in columns}).assign(**{time_col: stamps})
    long = long[[id_col, time_col, *columns]]
    if fill is not None:
        long = regularize(long, id_col=id_col, time_col=time_col)
    if isinstance(stamps, pd.DatetimeIndex):
        long = _long_periods(long, id_col, time_col)
        if isinstance(long[time_col].dtype, pd.PeriodDtype):
            written = written.anchored(stamps, pd.PeriodIndex(long[time_col]))
    panel = from_long(long, id_col=id_col, time_col=time_col, value_col=columns if len(columns) > 1 else columns[0])
    return panel, written


def _long_periods(long: pd.DataFrame, id_col: str, time_col: str) -> pd.DataFrame:
    """Monthly, quarterly and yearly stamps as periods, as :func:`read_series` reads them."""
    from tsgen.data._index import infer_offset

    for _, rows in long.groupby(id_col, sort=False):
        if len(rows) >= 3:
            stamps = pd.DatetimeIndex(rows[time_col]).sort_values()
            freq = infer_offset(stamps)
            if freq is not None and freq.freqstr[0] in "MQYA":
                period = pd.DatetimeIndex(stamps, freq=freq).to_period().freqstr
                return long.assign(**{time_col: pd.DatetimeIndex(long[time_col]).to_period(period)})
            return long
    return long
