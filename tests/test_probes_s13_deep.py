"""Regressions found by probing the deep models as a Darts / GluonTS / Pyro user would (stop 13 QA)."""
import numpy as np
import pandas as pd
import pytest

import tsgen

TINY = dict(hidden_dim=8, latent_dim=2, max_epochs=1, progress=False, random_state=0)


def _daily(values):
    return pd.Series(values, index=pd.date_range("2020-01-01", periods=len(values), freq="D"))


@pytest.fixture(scope="module")
def vrnn():
    y = _daily(np.sin(np.arange(40) / 4) + np.random.default_rng(0).normal(0, 0.1, 40))
    return tsgen.VRNN(**TINY).fit(y), y


def test_a_misspelt_likelihood_option_is_refused_naming_it_and_the_options_taken(vrnn):
    # was Python's "LatentForecaster._log_likelihood() got an unexpected keyword argument 'n_particle'"
    model, y = vrnn
    with pytest.raises(TypeError, match=r"VRNN.log_likelihood got unknown option\(s\) \['n_particle'\]") as error:
        model.log_likelihood(y, n_particle=100)
    message = str(error.value)
    assert "n_particles" in message and "method" in message and "_causal" not in message


def test_likelihood_options_the_model_takes_still_work(vrnn):
    model, y = vrnn
    assert np.isfinite(model.log_likelihood(y, method="smc", n_particles=16))
    assert len(model.log_likelihood(y, per_step=True, method="iwae", n_samples=4)) == len(y)


def test_a_float_year_index_names_its_dtype_and_the_conversion():
    # statsmodels' Nile data keeps its years as floats (1871.0): the error said only "got Index"
    nile = pd.Series([1120.0, 1160, 963, 1210], index=pd.Index([1871.0, 1872, 1873, 1874], name="year"))
    with pytest.raises(TypeError, match=r"got Index of dtype float64 \(first label 1871.0\).*astype\(int\)"):
        tsgen.RNNForecaster(max_epochs=1, progress=False).fit(nile)
    converted = nile.copy()
    converted.index = converted.index.astype(int)
    assert tsgen.Naive().fit(converted).predict(2).index.tolist() == [1875, 1876]


def test_dates_read_as_text_name_the_parse():
    y = pd.Series([1.0, 2, 3], index=["2000-01-01", "2000-01-02", "2000-01-03"])
    # pandas 3 reads text as its own string dtype ("str"), pandas 2 as object
    with pytest.raises(TypeError, match=r"dtype (object|str) \(first label '2000-01-01'\).*pd.to_datetime"):
        tsgen.RNNForecaster(max_epochs=1, progress=False).fit(y)


def test_cli_help_gives_deepstate_s_season_default_as_the_estimator_has_it():
    # `tsgen models` said "--season-length seasonal period (default none)"; DeepState's default is "auto",
    # the season of the data's frequency, and the command line leaves it at that
    from tsgen.cli._registry import MODELS

    entry = MODELS["deepstate"]
    (option,) = [o for o in entry.options if o.flag == "--season-length"]
    assert "none" not in option.help and "frequency" in option.help
    assert "season_length" not in entry.fixed
    assert tsgen.DeepState().get_params()["season_length"] == "auto"
    model = entry.build(12, {}, random_state=0)
    assert model.get_params()["season_length"] == "auto"
