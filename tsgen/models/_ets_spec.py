"""ETS model forms: parsing ``model="AAdN"`` / ``error=..., trend=...`` into forms and the automatic candidates."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

_CODES = {None: 0, "add": 1, "mul": 2}
_LETTERS = {0: "N", 1: "A", 2: "M"}
_FROM_LETTER = {"N": None, "A": "add", "M": "mul"}


@dataclass(frozen=True)
class EtsForm:
    """One model form; ``error``/``trend``/``season`` coded 0 none, 1 additive, 2 multiplicative."""

    error: int
    trend: int
    season: int
    damped: bool
    period: int  # m of the seasonal states (1 when there is no season)

    @property
    def name(self) -> str:
        """R's notation: ``"AAdM"``, ``"MNN"``, ..."""
        return _LETTERS[self.error] + _LETTERS[self.trend] + ("d" if self.damped else "") + _LETTERS[self.season]

    @property
    def n_smoothing(self) -> int:
        return 1 + (self.trend > 0) + (self.season > 0) + int(self.damped)

    @property
    def n_states(self) -> int:
        """Estimated initial states: level, trend, and ``m - 1`` seasonal states (one is fixed)."""
        return 1 + (self.trend > 0) + (self.period - 1 if self.season else 0)

    @property
    def n_params(self) -> int:
        """Parameters counted by the information criteria (``sigma^2`` included, as R's ``ets``)."""
        return self.n_smoothing + self.n_states + 1

    @property
    def linear(self) -> bool:
        """Additive error, trend and season: a linear-Gaussian innovations state-space model."""
        return self.error == 1 and self.trend < 2 and self.season < 2


def _component(value, name: str, allowed: tuple) -> object:
    if isinstance(value, str):
        value = value.lower()
        value = {"additive": "add", "multiplicative": "mul", "none": None, "a": "add", "m": "mul", "n": None,
                 "z": "auto"}.get(value, value)
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {allowed}; got {value!r}.")
    return value


def parse_model(model) -> tuple:
    """``"AAdN"`` / ``"ZZZ"`` (R's ``ets`` notation, ``Z`` for automatic) -> (error, trend, seasonal, damped)."""
    if not isinstance(model, str):
        raise TypeError(f"`model` must be a string such as 'ANN', 'AAdM' or 'ZZZ'; got {model!r}.")
    text = model.strip().upper()
    damped = False
    if len(text) == 4 and text[2] == "D":
        damped, text = True, text[:2] + text[3]
    if len(text) != 3 or text[0] not in "AMZ" or text[1] not in "NAMZ" or text[2] not in "NAMZ":
        raise ValueError(
            f"`model` must be three letters error/trend/season from A, M, N, Z with an optional 'd' after the "
            f"trend (e.g. 'ANN', 'AAdN', 'MAM', 'ZZZ'); got {model!r}."
        )

    def letter(c):
        return "auto" if c == "Z" else _FROM_LETTER[c]

    if text[1] == "Z" and not damped:
        damped = "auto"
    return letter(text[0]), letter(text[1]), letter(text[2]), damped


def components(error, trend, seasonal, damped, model) -> tuple:
    """Validated (error, trend, seasonal, damped); ``model`` overrides the four when given."""
    if model is not None:
        error, trend, seasonal, damped = parse_model(model)
    error = _component(error, "error", ("add", "mul", "auto"))
    trend = _component(trend, "trend", (None, "add", "mul", "auto"))
    seasonal = _component(seasonal, "seasonal", (None, "add", "mul", "auto"))
    if damped not in (True, False, "auto"):
        raise ValueError(f"`damped` must be True, False or 'auto'; got {damped!r}.")
    if damped is True and trend is None:
        raise ValueError("`damped`=True needs a trend: pass `trend`='add', 'mul' or 'auto'.")
    return error, trend, seasonal, damped


@lru_cache(maxsize=4096)  # many series share a length and a sign: one list each
def candidate_forms(error, trend, seasonal, damped, period: int, positive: bool, n_observed: int,
                    allow_multiplicative_trend: bool) -> tuple[EtsForm, ...]:
    """The forms an automatic search compares for one series, as R's ``ets``.

    Multiplicative components only for strictly positive data; a season only with ``period > 1``
    and more than ``period`` observations; no additive error with a multiplicative season or trend,
    and no multiplicative error and trend with an additive season (statsforecast's ``restrict``, after
    R's: infinite forecast variance or unstable forms); a multiplicative trend only when asked for;
    forms with too few observations for their parameters (``n - k - 1 <= 0``, AICc undefined) left
    out."""
    def options(value, auto):
        return auto if value == "auto" else [value]

    errors = options(error, ["add", "mul"] if positive else ["add"])
    trends = options(trend, [None, "add"] + (["mul"] if allow_multiplicative_trend and positive else []))
    seasons = options(seasonal, ([None, "add", "mul"] if positive else [None, "add"])
                      if period > 1 and n_observed > period else [None])
    searched = "auto" in (error, trend, seasonal)  # a form asked for by name is fitted as asked
    forms = []
    for e in errors:
        for t in trends:
            for s in seasons:
                for d in ([False, True] if damped == "auto" and t else [bool(damped) and t is not None]):
                    if (e == "add" and s == "mul" and (error == "auto" or seasonal == "auto")) or (
                            e == "add" and t == "mul" and (error == "auto" or trend == "auto")) or (
                            e == "mul" and t == "mul" and s == "add" and searched):
                        continue
                    form = EtsForm(_CODES[e], _CODES[t], _CODES[s], d, period if s else 1)
                    if n_observed - form.n_params - 1 > 0:
                        forms.append(form)
    return tuple(forms)
