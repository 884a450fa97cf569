"""The models the command line offers: name -> estimator class, defaults and main options.

Adding a model to the CLI means adding one :class:`ModelEntry` here; the
``forecast``/``backtest``/``detect`` parsers, ``tsgen models`` and the
model construction are all generated from this table.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable


def int_tuple(text: str) -> tuple[int, ...] | str:
    """``"0,1,1"`` -> ``(0, 1, 1)``; ``"auto"`` stays as is."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"expected comma-separated integers such as 0,1,1 or 'auto'; got {text!r}") from None


@dataclass(frozen=True)
class Option:
    flag: str  # command-line flag, e.g. "--order"
    param: str  # constructor argument it sets
    type: Callable
    help: str


@dataclass(frozen=True)
class ModelEntry:
    name: str
    target: str  # "module:Class"
    description: str
    options: tuple[Option, ...] = ()
    #: constructor defaults that depend on the data: (seasonal period) -> {param: value}
    defaults: Callable[[int], dict] = field(default=lambda period: {})
    #: constructor defaults that make a CLI run short (e.g. fewer epochs)
    fixed: dict = field(default_factory=dict)
    #: models one variable at a time: a CSV with several value columns is forecast column by column
    univariate: bool = False

    def load_class(self):
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)

    def build(self, period: int, chosen: dict, random_state: int | None):
        """An unfitted estimator: data-dependent defaults, then the user's options."""
        cls = self.load_class()
        params = {**self.fixed, **self.defaults(period), **chosen}
        accepted = cls().get_params(deep=False)
        if "random_state" in accepted:
            params["random_state"] = random_state
        return cls(**{k: v for k, v in params.items() if k in accepted})


def _airline_defaults(period: int) -> dict:
    seasonal = (0, 1, 1, period) if period > 1 else (0, 0, 0, 0)
    return {"order": (0, 1, 1), "seasonal_order": seasonal, "period": period if period > 1 else None}


MODELS: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        ModelEntry(
            "arima",
            "tsgen.models.arima:ARIMA",
            "Seasonal ARIMA by exact maximum likelihood. Default: the 'airline model' (0,1,1)(0,1,1,s) "
            "with s from the data's frequency (12 for monthly data), or (0,1,1) without a season.",
            (
                Option("--order", "order", int_tuple, "p,d,q (or 'auto': stepwise AICc search, slow)"),
                Option("--seasonal-order", "seasonal_order", int_tuple, "P,D,Q,s (or 'auto')"),
                Option("--trend", "trend", str, "n, c, t or ct"),
            ),
            defaults=_airline_defaults,
            univariate=True,
        ),
        ModelEntry(
            "lds",
            "tsgen.models.lds:LinearGaussianSSM",
            "Gaussian linear dynamical system (Kalman filter), parameters by EM.",
            (
                Option("--state-dim", "n_dim_state", int, "dimension of the latent state (default 2)"),
                Option("--max-iter", "max_iter", int, "EM iterations (default 50)"),
            ),
            fixed={"n_dim_state": 2, "max_iter": 50},
        ),
        ModelEntry(
            "rnn",
            "tsgen.models.rnn:RNNForecaster",
            "Autoregressive LSTM with a distribution head (DeepAR-style).",
            (
                Option("--hidden-dim", "hidden_dim", int, "LSTM width (default 40)"),
                Option("--max-epochs", "max_epochs", int, "training epochs (default 50)"),
            ),
            fixed={"max_epochs": 50, "progress": True},
        ),
        ModelEntry(
            "dmm",
            "tsgen.models.dmm:DeepMarkovModel",
            "Deep Markov Model: nonlinear latent state-space model trained by the ELBO.",
            (
                Option("--latent-dim", "latent_dim", int, "latent state dimension"),
                Option("--max-epochs", "max_epochs", int, "training epochs (default 50)"),
            ),
            fixed={"max_epochs": 50, "progress": True},
        ),
        ModelEntry(
            "vrnn",
            "tsgen.models.vrnn:VRNN",
            "Variational RNN (Chung et al. 2015): a latent per step in a GRU, learned prior, trained by the ELBO; "
            "scored and forecast by the guided particle filter.",
            (
                Option("--latent-dim", "latent_dim", int, "latent dimension"),
                Option("--max-epochs", "max_epochs", int, "training epochs (default 50)"),
            ),
            fixed={"max_epochs": 50, "progress": True},
        ),
        ModelEntry(
            "deepstate",
            "tsgen.models.deepstate:DeepState",
            "DeepState (Rangapuram et al. 2018): an LSTM over covariates emits a level-trend(-seasonal) "
            "linear-Gaussian model per step; exact Kalman likelihood.",
            (
                Option("--season-length", "season_length", int,
                       "seasonal period (default: from the frequency, e.g. 12 for monthly data)"),
                Option("--max-epochs", "max_epochs", int, "training epochs (default 50)"),
            ),
            fixed={"max_epochs": 50, "progress": True},
        ),
        ModelEntry(
            "lstm-ssm",
            "tsgen.models.lstm_ssm:LSTMSSM",
            "State Space LSTM (Zheng et al. 2017): an LSTM over a Gaussian latent path, trained by particle Gibbs "
            "with ancestor sampling and the complete-data likelihood; scored and forecast by the particle filter.",
            (
                Option("--latent-dim", "latent_dim", int, "latent dimension"),
                Option("--max-epochs", "max_epochs", int, "training epochs (default 50)"),
            ),
            fixed={"max_epochs": 50, "progress": True},
        ),
        ModelEntry(
            "storn",
            "tsgen.models.storn:STORN",
            "STORN (Bayer & Osendorfer 2014): a GRU driven by i.i.d. standard normal latents, with a recognition "
            "RNN; trained by the ELBO, scored and forecast by the particle filter.",
            (
                Option("--latent-dim", "latent_dim", int, "latent dimension"),
                Option("--max-epochs", "max_epochs", int, "training epochs (default 50)"),
            ),
            fixed={"max_epochs": 50, "progress": True},
        ),
        ModelEntry(
            "srnn",
            "tsgen.models.srnn:SRNN",
            "Stochastic RNN (Fraccaro et al. 2016): a GRU layer with a Markov latent layer on top and a smoothing "
            "guide, trained by the ELBO; scored by the particle filter, forecast by the guided filter.",
            (
                Option("--latent-dim", "latent_dim", int, "latent dimension"),
                Option("--max-epochs", "max_epochs", int, "training epochs (default 50)"),
            ),
            fixed={"max_epochs": 50, "progress": True},
        ),
        ModelEntry(
            "sv",
            "tsgen.models.stochastic_volatility:StochasticVolatility",
            "Stochastic volatility (Kim, Shephard & Chib 1998) of a demeaned return series, by particle EM; "
            "detect scores returns by the particle filter's one-step densities.",
            (
                Option("--max-iter", "max_iter", int, "particle-EM iterations (default 20)"),
                Option("--particles", "n_particles", int, "particles of each filter run (default 500)"),
            ),
            univariate=True,
        ),
        ModelEntry("naive", "tsgen.models.baselines:Naive",
                   "Naive baseline: the last value, with random-walk intervals (sigma sqrt(h))."),
        ModelEntry(
            "snaive",
            "tsgen.models.baselines:SeasonalNaive",
            "Seasonal naive baseline: the value one season earlier (season from the data's frequency).",
            (Option("--period", "period", int, "season length (default: from the frequency)"),),
            defaults=lambda period: {"period": period},
        ),
        ModelEntry("drift", "tsgen.models.baselines:Drift",
                   "Drift baseline: random walk with the average change as drift."),
        ModelEntry("mean", "tsgen.models.baselines:Mean", "Mean baseline: the historical mean."),
        ModelEntry(
            "ets",
            "tsgen.models.ets:ETS",
            "Exponential smoothing state-space model; default: automatic selection by AICc ('ZZZ', as R's ets) "
            "with the season from the data's frequency.",
            (Option("--ets-model", "model", str, "R's notation, e.g. ANN, AAdN, MAM, ZZZ (default ZZZ)"),
             Option("--period", "period", int, "season length (default: from the frequency)")),
            fixed={"model": "ZZZ"},
            univariate=True,
        ),
        ModelEntry(
            "theta",
            "tsgen.models.theta:Theta",
            "Theta method (M3 winner): SES with drift, seasonally adjusted by a classical decomposition.",
            (Option("--period", "period", int, "season length (default: from the frequency)"),),
            univariate=True,
        ),
    )
}


def available_models() -> dict[str, ModelEntry]:
    """The registered models whose estimator can be imported in this installation."""
    out = {}
    for name, entry in MODELS.items():
        try:
            entry.load_class()
        except (ImportError, AttributeError):
            continue
        out[name] = entry
    return out


def all_options() -> dict[str, list[tuple[str, Option]]]:
    """flag -> [(model name, option)] over every registered model (flags may be shared)."""
    flags: dict[str, list[tuple[str, Option]]] = {}
    for entry in MODELS.values():
        for option in entry.options:
            flags.setdefault(option.flag, []).append((entry.name, option))
    return flags
