"""What each subcommand does once its arguments are parsed."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd

from tsgen.cli._arguments import SPOT_MIN_TRAIN
from tsgen.cli._arguments import dest as _dest
from tsgen.cli._io import CLIError, default_id_col, read_long_as_written, read_series_as_written
from tsgen.cli._registry import all_options, available_models
from tsgen.data import Panel
from tsgen.data._index import seasonal_period

#: forecast quantiles: the 50/80/95% fan bands and the median
FAN_QUANTILES = (0.025, 0.1, 0.25, 0.5, 0.75, 0.9, 0.975)


def _info(args, message: str) -> None:
    """A progress note on stderr, silenced by --quiet (results and errors always print)."""
    if not args.quiet:
        print(message, file=sys.stderr)


def _first_index(y):
    return next(iter(y.values())).index if isinstance(y, Panel) else y.index


def _entry(args):
    models = available_models()
    if args.model not in models:
        raise CLIError(f"unknown model {args.model!r}; available: {', '.join(models)} (see `tsgen models`).")
    return models[args.model]


def _per_column(args, y):
    """A wide CSV given to a univariate model: each value column becomes its own series (a panel keyed by column)."""
    if isinstance(y, pd.DataFrame) and y.shape[1] > 1 and _entry(args).univariate:
        _info(args, f"{args.model} models one variable: forecasting each of the {y.shape[1]} columns of "
                    f"{Path(args.file).name} as its own series.")
        return Panel.from_dict({column: y[column] for column in y.columns}, time_col=y.index.name or "time")
    return y


def _describe(y) -> str:
    if isinstance(y, Panel):
        return f"{len(y)} series"
    return f"{len(y)} steps"


def _model(args, y):
    entry = _entry(args)
    own = {option.flag for option in entry.options}
    chosen = {}
    for flag, owners in all_options().items():
        value = getattr(args, _dest(flag))
        if value is None:
            continue
        if flag not in own:
            raise CLIError(f"{flag} is an option of {', '.join(n for n, _ in owners)}, not of {args.model}.")
        chosen[next(o.param for n, o in owners if n == entry.name)] = value
    return entry.build(seasonal_period(_first_index(y)), chosen, args.seed)


def _load(args):
    """``(y, written)``: the data, and how the file wrote its times (every output writes them alike)."""
    _check_outputs(args)
    columns = [c.strip() for c in args.columns.split(",")] if args.columns else None
    if args.id_col is None:
        args.id_col = default_id_col(args.file)
        if args.id_col is not None:
            _info(args, f"{Path(args.file).name} has a {args.id_col!r} column: reading it as a long file, one "
                        f"series per {args.id_col} (--id-col {args.id_col}).")
    if args.id_col is not None:
        return read_long_as_written(args.file, args.id_col, args.time_col, columns, args.dayfirst, args.fill)
    return read_series_as_written(args.file, args.time_col, columns, args.dayfirst, args.fill)


#: the output flags of the commands: (argparse destination, flag)
OUTPUTS = (("out", "--out"), ("forecasts_out", "--forecasts-out"), ("plot", "--plot"))


def _check_outputs(args) -> None:
    """Refuse, before any work, an output that cannot be written or would overwrite the input or another output."""
    source = Path(args.file)
    seen = {}
    for name, flag in OUTPUTS:
        value = getattr(args, name, None)
        if not value:
            continue
        path = Path(value)
        if path.is_dir() or value.endswith(("/", "\\")):
            raise CLIError(f"{flag} {value!r} is a directory; give a file name inside it.")
        folder = path.parent
        if not folder.is_dir():
            raise CLIError(f"{flag} {value!r}: the folder {str(folder)!r} does not exist; create it first.")
        if path.exists() and source.exists() and path.samefile(source):
            raise CLIError(f"{flag} {value!r} is the input file; writing there would overwrite the data.")
        key = path.resolve()
        if key in seen:
            raise CLIError(f"{flag} and {seen[key]} are the same file {value!r}; give each output its own file.")
        seen[key] = flag
    if getattr(args, "plot", None):
        from matplotlib.figure import Figure

        suffix = Path(args.plot).suffix.lstrip(".").lower()
        formats = Figure().canvas.get_supported_filetypes()
        if suffix and suffix not in formats:
            raise CLIError(f"--plot {args.plot!r}: unknown image format {suffix!r}; use one of {', '.join(formats)}.")


def _write(args, what: str, path, write) -> None:
    try:
        write(path)
    except OSError as err:  # permissions, full disk: one line, not a traceback
        raise CLIError(f"could not write {what} to {str(path)!r}: {err.strerror or err}.") from None
    if not args.quiet:
        _say(f"{what} written to {path}")


def _save_figure(args, figure, path) -> None:
    _write(args, "plot", path, lambda target: figure.savefig(target, dpi=110))


def _show(frame: pd.DataFrame) -> None:
    with pd.option_context("display.max_rows", 60, "display.width", 120, "display.float_format", "{:.4g}".format):
        text = frame.to_string()
    _say(text)


def _say(text: str = "") -> None:
    """Print a result line; once the reader of stdout has gone (``tsgen forecast ... | head``) the rest of
    the output is dropped and the command still writes its files."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        stdout_closed()


def stdout_closed() -> None:
    """Send the rest of stdout to the null device once its reader has gone (no BrokenPipeError at every print)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def forecast(args) -> int:
    y, written = _load(args)
    y = _per_column(args, y)
    model = _model(args, y)
    _info(args, f"fitting {type(model).__name__} on {_describe(y)} of {args.file} ...")
    model.fit(y)
    frame = model.predict(args.horizon, quantiles=FAN_QUANTILES)
    table = frame.drop(columns=[c for c in frame.columns if (c if isinstance(c, str) else c[1]) in ("q0.25", "q0.75")])
    _show(written.frame(table))
    if args.out:
        # panel results are one long frame keyed by its id and time columns: no index to write
        _write(args, "forecast", args.out,
               lambda target: written.frame(frame).to_csv(target, index=not isinstance(y, Panel)))
    if args.plot:
        from tsgen.plotting import plot_forecast

        name = Path(args.file).name
        if isinstance(y, Panel):  # a fan chart draws one series: the first id
            name = f"{y.ids[0]!r} in {name}"
            _info(args, f"--plot draws the first of {len(y)} series, {y.ids[0]!r}.")
        _save_figure(args, plot_forecast(y, frame, title=f"{type(model).__name__} forecast of {name}"), args.plot)
    return 0


def backtest(args) -> int:
    from tsgen.evaluation import backtest as run_backtest

    y, written = _load(args)
    y = _per_column(args, y)
    model = _model(args, y)
    result = run_backtest(
        model, y, args.horizon, start=_cutoff(args.start, written, _first_index(y)), step=args.step, window=args.window, refit=args.refit,
        season=seasonal_period(_first_index(y)), n_jobs=args.n_jobs, n_samples=args.samples,
        # a bar redrawn with carriage returns only garbles stderr sent to a file or a pipe
        random_state=args.seed, progress=not args.quiet and sys.stderr.isatty(),
    )
    _say(f"{result.n_origins} origins, horizon {result.horizon}; scores by horizon step (over all origins):")
    _show(result.summary(by="horizon"))
    _say("overall:")
    _show(result.summary())
    if args.out:
        _write(args, "metrics", args.out,
               lambda target: written.frame(result.metrics).to_csv(target, index=False))
    if args.forecasts_out:
        _write(args, "forecasts", args.forecasts_out,
               lambda target: written.frame(result.forecasts).to_csv(target, index=False))
    if args.plot:
        _save_figure(args, result.plot(args.metric), args.plot)
    return 0


def _cutoff(start, written, index):
    """``--start`` given as a time the way the file writes them (``1990-12-31`` for quarters read as periods)
    as the model's own index holds it: the period it falls in."""
    if not isinstance(start, str) or not isinstance(index, pd.PeriodIndex):
        return start
    stamp = written.parse(start)
    period = None if stamp is None else pd.Period(stamp, freq=index.freq)
    return period if period is not None and period in index else start  # else refused, quoting the user's text


def detect(args) -> int:
    from tsgen.anomaly import AnomalyDetector

    y, written = _load(args)
    if isinstance(y, Panel):
        raise CLIError(f"detect scores one series at a time: give one series per file ({Path(args.file).name} is a "
                       f"long file of {len(y)} series keyed by {args.id_col!r}).")
    n_train = len(y) if args.train_size is None else (
        int(round(args.train_size * len(y))) if args.train_size < 1 else int(args.train_size)
    )
    if not 3 <= n_train <= len(y):
        raise CLIError(f"--train-size must leave between 3 and {len(y)} training steps; got {args.train_size}.")
    model = _model(args, y)
    method = args.method
    if method == "auto":  # SPOT needs enough peaks over its initial quantile to fit a tail
        method = "spot" if n_train >= SPOT_MIN_TRAIN else "quantile"
    detector = AnomalyDetector(model, method=method, false_alarm_rate=args.false_alarm_rate, window=args.window)
    _info(args, f"fitting {type(model).__name__} on the first {n_train} of {len(y)} steps ...")
    detector.fit(y.iloc[:n_train])
    scores = detector.score(y)
    flags = detector.predict(y)
    out = pd.DataFrame({"score": scores, "threshold": detector.threshold_, "anomaly": flags})
    flagged = out.index[out["anomaly"]]
    _say(f"threshold ({method}, false-alarm rate {args.false_alarm_rate:g}): {detector.threshold_:.4g}")
    _say(f"{len(flagged)} of {len(out)} steps flagged" + (":" if len(flagged) else "."))
    if len(flagged):
        _show(written.frame(out.loc[out["anomaly"], ["score"]].head(50)))
    if args.out:
        _write(args, "scores", args.out, written.frame(out).to_csv)
    if args.plot:
        from tsgen.plotting import plot_anomalies

        _save_figure(args, plot_anomalies(y, scores, detector.threshold_, flags), args.plot)
    return 0


def models(args) -> int:
    available = available_models()
    from tsgen.cli._registry import MODELS

    for name, entry in MODELS.items():
        status = "" if name in available else "  (not available in this installation)"
        _say(f"{name}  ->  {entry.target.replace(':', '.')}{status}")
        _say(f"    {entry.description}")
        for option in entry.options:
            _say(f"    {option.flag:<18} {option.help}")
        _say()
    return 0

