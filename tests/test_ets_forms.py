"""The automatic ETS search compares the forms statsforecast's AutoETS (after R's ets) compares."""
import pytest

from tsgen.models._ets_spec import candidate_forms


def names(error, trend, seasonal, damped, allow_mul_trend, positive=True, period=4, n=60):
    forms = candidate_forms(error, trend, seasonal, damped, period, positive, n, allow_mul_trend)
    return sorted(f.name for f in forms)


def test_default_search_is_statsforecasts_fifteen_forms():
    expected = sorted(e + t + s for e in "AM" for t in ("N", "A", "Ad") for s in "NAM"
                      if not (e == "A" and s == "M"))
    assert names("auto", "auto", "auto", "auto", False) == expected
    assert len(expected) == 15
    assert names("auto", "auto", "auto", "auto", False, period=1) == ["AAN", "AAdN", "ANN", "MAN", "MAdN", "MNN"]


def test_multiplicative_trend_search_leaves_out_the_restricted_forms():
    got = names("auto", "auto", "auto", "auto", True)
    # statsforecast's restrict: no additive error with a multiplicative part, no MMA / MMdA
    assert {"MMN", "MMdN", "MMM", "MMdM"} <= set(got)
    assert not {"MMA", "MMdA", "AMN", "AMdN", "AMA", "ANM"} & set(got)
    assert len(got) == 19
    assert "MMA" not in names("mul", "mul", "auto", False, True)


@pytest.mark.parametrize("spec", [("mul", "mul", "add", False), ("mul", "mul", "add", True)])
def test_a_restricted_form_asked_for_by_name_is_still_fitted(spec):
    assert len(names(*spec, allow_mul_trend=False)) == 1
