"""The ``tsgen`` command line: forecast, backtest and detect anomalies in CSV files.

    tsgen forecast FILE.csv --model arima --horizon 24 --out forecast.csv --plot forecast.png
    tsgen backtest FILE.csv --model arima --horizon 12 --start 96 --out metrics.csv
    tsgen detect FILE.csv --model arima --train-size 0.5 --out scores.csv --plot anomalies.png
    tsgen forecast SALES.csv --id-col store --horizon 8 --out forecasts.csv   # long CSV: every series
    tsgen --quiet forecast FILE.csv --horizon 12 --fill nan
    tsgen models

Parsing imports neither pandas nor a model: ``tsgen --help`` and argument
errors are answered at once, and a command imports what it needs when it runs.
"""
from __future__ import annotations

import argparse
import logging
import sys

import tsgen
from tsgen.cli._arguments import SPOT_MIN_TRAIN, dest, positive_int, refit, start
from tsgen.cli._registry import all_options


def _quiet_argument(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="no progress bars and no informational messages (results and errors still print)")


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="CSV file: a time column and one or more value columns "
                        "(or, with --id-col, a long file: an id, a time and a value column)")
    parser.add_argument("--time-col", help="name of the time column (default: auto-detected)")
    parser.add_argument("--columns", help="comma-separated value columns (default: all but the time and id "
                        "columns; in a long file with a 'y' column, y alone)")
    parser.add_argument("--id-col", help="long format: the column naming each series (default: unique_id when "
                        "the file has it); every series is forecast and the output is one long CSV keyed by id "
                        "and time")
    parser.add_argument("--fill", choices=("nan",), help="'nan': put irregular timestamps on a regular grid, "
                        "missing steps as NaN (which the models marginalise) instead of refusing the file")
    order = parser.add_mutually_exclusive_group()
    order.add_argument("--dayfirst", dest="dayfirst", action="store_const", const=True, default=None,
                       help="read dates such as 01/02/2020 as 1 February (default: from the values, else ask)")
    order.add_argument("--monthfirst", dest="dayfirst", action="store_const", const=False,
                       help="read dates such as 01/02/2020 as 2 January")
    parser.add_argument("--model", default="arima", help="model name, see `tsgen models` (default: arima)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    _quiet_argument(parser, argparse.SUPPRESS)  # also accepted after the command name
    group = parser.add_argument_group("model options (each applies to the models listed by `tsgen models`)")
    for flag, owners in all_options().items():
        names = ", ".join(name for name, _ in owners)
        group.add_argument(flag, dest=dest(flag), type=owners[0][1].type, default=None,
                           help=f"[{names}] {owners[0][1].help}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tsgen", description="Probabilistic forecasting, backtesting and anomaly detection on CSV files."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {tsgen.__version__}")
    _quiet_argument(parser, False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("forecast", help="fit a model and forecast with prediction intervals")
    _data_arguments(p)
    p.add_argument("--horizon", type=positive_int, required=True, help="number of steps to forecast")
    p.add_argument("--out", help="write the forecast (mean and quantiles) to this CSV")
    p.add_argument("--plot", help="write a fan chart to this image file (png, pdf, svg)")
    p.set_defaults(handler="forecast")

    p = commands.add_parser("backtest", help="rolling-origin evaluation with probabilistic scores")
    _data_arguments(p)
    p.add_argument("--horizon", type=positive_int, required=True, help="forecast length scored at each origin")
    p.add_argument("--start", type=start, help="training length or timestamp of the first origin "
                   "(default: half the series)")
    p.add_argument("--step", type=positive_int, default=1, help="steps between origins (default 1)")
    p.add_argument("--window", choices=("expanding", "sliding"), default="expanding")
    p.add_argument("--refit", type=refit, default=True,
                   help="'always' (default), 'never' (condition the first fit on each history) or every k origins")
    p.add_argument("--samples", type=positive_int, default=100, help="sample paths per origin for the CRPS")
    p.add_argument("--n-jobs", type=int, default=1, help="parallel workers (-1: all cores)")
    p.add_argument("--out", help="write the tidy metrics to this CSV")
    p.add_argument("--forecasts-out", help="write every origin's forecast to this CSV")
    p.add_argument("--plot", help="write the backtest overview to this image file")
    p.add_argument("--metric", default="crps", help="metric drawn by --plot (default crps)")
    p.set_defaults(handler="backtest")

    p = commands.add_parser("detect", help="flag anomalies by the model's one-step predictive likelihood")
    _data_arguments(p)
    p.add_argument("--train-size", type=float, help="leading steps (count, or fraction < 1) to fit on "
                   "(default: all)")
    p.add_argument("--method", choices=("auto", "spot", "quantile"), default="auto",
                   help="threshold: SPOT tail fit, or quantile of the training scores (default auto: SPOT "
                   f"from {SPOT_MIN_TRAIN} training steps on)")
    p.add_argument("--false-alarm-rate", type=float, default=0.01, help="target false-alarm rate (default 0.01)")
    p.add_argument("--window", type=positive_int, default=1, help="average scores over this many steps")
    p.add_argument("--out", help="write score, threshold and anomaly flag per step to this CSV")
    p.add_argument("--plot", help="write the anomaly chart to this image file")
    p.set_defaults(handler="detect")

    p = commands.add_parser("models", help="list the models and their main options")
    p.set_defaults(handler="models")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tsgen`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from tsgen._config import config_context
    from tsgen.cli import _commands  # pandas, and the chosen model, from here on
    from tsgen.cli._io import CLIError

    try:
        # --quiet: the library-wide progress switch off, and only warnings from tsgen's logger
        with config_context(progress=False if args.quiet else "auto"), _logging(args.quiet):
            status = getattr(_commands, args.handler)(args)
        try:
            sys.stdout.flush()
        except BrokenPipeError:  # the reader of stdout left after the work was done
            _commands.stdout_closed()
        return status
    except CLIError as err:
        print(f"tsgen: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as err:  # the library's own input errors, which name the argument
        print(f"tsgen {args.command}: error: {err}", file=sys.stderr)
        return 1


class _logging:
    """Show tsgen's log records on stderr during one command: info and up, or warnings only when quiet."""

    def __init__(self, quiet: bool):
        self.level = logging.WARNING if quiet else logging.INFO

    def __enter__(self):
        self.logger = logging.getLogger("tsgen")
        self.previous = self.logger.level
        self.handler = logging.StreamHandler(sys.stderr)
        self.handler.setFormatter(logging.Formatter("tsgen: %(message)s"))
        self.logger.addHandler(self.handler)
        self.logger.setLevel(self.level)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.previous)
        return False


__all__ = ["build_parser", "main"]
