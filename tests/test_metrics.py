"""Metrics against independent computations: brute force, closed forms, quadrature, hand values."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import integrate, stats

from tsgen import metrics

RNG_SEED = 20240611


def crps_energy_form(y, samples, fair=False):
    """O(n^2) oracle: E|X - y| - 1/2 E|X - X'| over the samples on axis 0."""
    n = samples.shape[0]
    first = np.mean(np.abs(samples - y), axis=0)
    pair_sum = np.sum(np.abs(samples[:, None] - samples[None, :]), axis=(0, 1))
    return first - pair_sum / (2 * n * (n - 1) if fair else 2 * n**2)


def crps_gaussian_by_quadrature(y, mu, sigma):
    """int (Phi((z - mu)/sigma) - 1{z >= y})^2 dz, split at the jump y."""
    left, _ = integrate.quad(lambda z: stats.norm.cdf(z, mu, sigma) ** 2, -np.inf, y, epsabs=1e-12, epsrel=1e-12)
    right, _ = integrate.quad(lambda z: stats.norm.sf(z, mu, sigma) ** 2, y, np.inf, epsabs=1e-12, epsrel=1e-12)
    return left + right


# --------------------------------------------------------------- point metrics


def test_mae_and_rmse_skip_missing_targets():
    y = np.array([1.0, np.nan, 4.0, -2.0])
    yhat = np.array([2.0, 100.0, 1.0, -2.0])
    assert metrics.mae(y, yhat) == pytest.approx((1 + 3 + 0) / 3, abs=1e-15)
    assert metrics.rmse(y, yhat) == pytest.approx(np.sqrt((1 + 9 + 0) / 3), abs=1e-15)


def test_axis_keeps_batch_of_origins():
    rng = np.random.default_rng(RNG_SEED)
    y = rng.normal(size=(4, 5, 2))
    y[0, 1, 1] = np.nan
    yhat = rng.normal(size=(4, 5, 2))
    per_origin = metrics.mae(y, yhat, axis=(1, 2))
    expected = [np.nanmean(np.abs(y[b] - yhat[b])) for b in range(4)]
    np.testing.assert_allclose(per_origin, expected, rtol=1e-14)
    per_step = metrics.rmse(y, yhat, axis=0)
    np.testing.assert_allclose(per_step, np.sqrt(np.nanmean((y - yhat) ** 2, axis=0)), rtol=1e-14)
    elementwise = metrics.mae(y, yhat, axis=())
    np.testing.assert_array_equal(np.isnan(elementwise), np.isnan(y))
    np.testing.assert_allclose(elementwise, np.abs(y - yhat), rtol=1e-15)
    # negative axes count from the end of y_true
    np.testing.assert_allclose(metrics.mae(y, yhat, axis=(-2, -1)), per_origin, rtol=1e-15)


def test_all_missing_slice_scores_nan():
    y = np.array([[np.nan, np.nan], [1.0, 2.0]])
    out = metrics.mae(y, np.zeros((2, 2)), axis=1)
    assert np.isnan(out[0]) and out[1] == 1.5
    assert np.isnan(metrics.crps_gaussian([np.nan], 0.0, 1.0))


def test_mase_by_hand():
    y_train = np.array([1.0, 3.0, 2.0, 5.0, 4.0])
    y, yhat = np.array([6.0, 5.0]), np.array([5.0, 7.0])
    # m=1: scale = (2 + 1 + 3 + 1) / 4 = 7/4; mean |e| = 3/2
    assert metrics.mase(y, yhat, y_train) == pytest.approx(1.5 / 1.75, abs=1e-15)
    # m=2: scale = (|2-1| + |5-3| + |4-2|) / 3 = 5/3
    assert metrics.mase(y, yhat, y_train, m=2) == pytest.approx(1.5 / (5 / 3), abs=1e-15)
    # a missing training value drops the two pairs it belongs to: pairs (1,3), (5,4) -> scale 3/2
    y_train_gap = np.array([1.0, 3.0, np.nan, 5.0, 4.0])
    assert metrics.mase(y, yhat, y_train_gap) == pytest.approx(1.5 / 1.5, abs=1e-15)


def test_mase_batch_uses_one_scale_per_series():
    rng = np.random.default_rng(RNG_SEED)
    y_train = rng.normal(size=(3, 20, 2)).cumsum(axis=1)
    y, yhat = rng.normal(size=(3, 6, 2)), rng.normal(size=(3, 6, 2))
    got = metrics.mase(y, yhat, y_train, m=4, axis=1, time_axis=1)
    for b in range(3):
        for d in range(2):
            series = y_train[b, :, d]
            scale = np.mean([abs(series[t] - series[t - 4]) for t in range(4, 20)])
            assert got[b, d] == pytest.approx(np.mean(np.abs(y[b, :, d] - yhat[b, :, d])) / scale, rel=1e-13)


def test_mase_rejects_short_or_constant_training_series():
    with pytest.raises(ValueError, match=r"y_train.*more than m=3"):
        metrics.mase([1.0], [1.0], [1.0, 2.0, 3.0], m=3)
    with pytest.raises(ValueError, match=r"y_train.*scale of 0"):
        metrics.mase([1.0], [1.0], [1.0, 2.0, 1.0, 2.0], m=2)
    with pytest.raises(ValueError, match=r"y_train.*pair of observed"):
        metrics.mase([1.0], [1.0], [1.0, np.nan, np.nan, 2.0], m=2)
    with pytest.raises(ValueError, match="y_train"):
        metrics.mase([[1.0]], [[1.0]], [1.0, 2.0, 4.0])  # univariate history for a 2-D target
    with pytest.raises(ValueError, match="`m`"):
        metrics.mase([1.0], [1.0], [1.0, 2.0], m=0)
    with pytest.raises(TypeError, match="`m`"):
        metrics.mase([1.0], [1.0], [1.0, 2.0], m=1.5)


def test_smape_m4_convention_known_values():
    # 200 * 10 / 210 and an exact zero forecast of zero (0/0 := 0)
    assert metrics.smape([100.0, 0.0], [110.0, 0.0]) == pytest.approx(200 * 10 / 210 / 2, abs=1e-12)
    # opposite signs and a zero on one side hit the upper bound 200
    assert metrics.smape([1.0, 0.0], [-1.0, 5.0]) == pytest.approx(200.0, abs=1e-12)
    assert metrics.smape([3.0], [3.0]) == 0.0
    # symmetric in its arguments, unlike MAPE
    assert metrics.smape([2.0], [5.0]) == pytest.approx(metrics.smape([5.0], [2.0]), abs=1e-15)
    assert metrics.smape([2.0], [5.0]) == pytest.approx(200 * 3 / 7, abs=1e-12)


# ------------------------------------------------------------------------- CRPS


@pytest.mark.parametrize("shape", [(), (7,), (3, 4)])
@pytest.mark.parametrize("n_samples", [1, 2, 17, 200])
def test_crps_sample_equals_energy_form(shape, n_samples):
    rng = np.random.default_rng(RNG_SEED + n_samples)
    samples = rng.standard_t(df=3, size=(n_samples,) + shape) * 2.0 + 1.0
    y = rng.normal(size=shape) * 3.0
    expected = crps_energy_form(y, samples)
    np.testing.assert_allclose(metrics.crps_sample(y, samples, axis=()), expected, rtol=0, atol=1e-10)
    assert metrics.crps_sample(y, samples) == pytest.approx(np.mean(expected), abs=1e-10)
    if n_samples >= 2:
        fair = crps_energy_form(y, samples, fair=True)
        np.testing.assert_allclose(metrics.crps_sample(y, samples, axis=(), fair=True), fair, rtol=0, atol=1e-10)


def test_crps_sample_with_ties_equals_energy_form():
    samples = np.array([0.0, 1.0, 1.0, 1.0, 2.0, 2.0])[:, None]
    y = np.array([1.0])
    assert metrics.crps_sample(y, samples) == pytest.approx(crps_energy_form(y, samples)[0], abs=1e-14)


def test_crps_sample_fair_estimator_matches_gaussian_closed_form():
    """Unbiased estimator over 400 independent ensembles, within 5 standard errors."""
    rng = np.random.default_rng(RNG_SEED)
    mu, sigma = 0.5, 2.0
    y = np.array([-3.0, 0.5, 1.0, 6.0])
    n_ensembles, n_members = 400, 200
    samples = rng.normal(mu, sigma, size=(n_members, n_ensembles, y.size))
    per_ensemble = metrics.crps_sample(np.broadcast_to(y, (n_ensembles, y.size)), samples, axis=(), fair=True)
    estimate = per_ensemble.mean(axis=0)
    standard_error = per_ensemble.std(axis=0, ddof=1) / np.sqrt(n_ensembles)
    exact = metrics.crps_gaussian(y, mu, sigma, axis=())
    assert np.all(np.abs(estimate - exact) < 5 * standard_error)
    # the plain (empirical-distribution) CRPS is biased up by E|X - X'| / (2 n) = sigma / (sqrt(pi) n)
    plain = metrics.crps_sample(np.broadcast_to(y, (n_ensembles, y.size)), samples, axis=0)
    np.testing.assert_allclose(plain - estimate, sigma / np.sqrt(np.pi) / n_members, rtol=0.05)


def test_crps_sample_of_many_gaussian_samples_approaches_closed_form():
    rng = np.random.default_rng(RNG_SEED + 1)
    samples = rng.normal(-1.0, 0.5, size=(100_000, 3))
    y = np.array([-1.0, 0.0, 2.0])
    # standard error of the sample CRPS is below sd|X - y| / sqrt(n) <= 3.5 / 316
    np.testing.assert_allclose(
        metrics.crps_sample(y, samples, axis=()), metrics.crps_gaussian(y, -1.0, 0.5, axis=()), atol=0.01
    )


@pytest.mark.parametrize("y, mu, sigma", [(0.0, 0.0, 1.0), (2.5, -1.0, 0.7), (-4.0, 3.0, 5.0), (1e-3, 0.0, 1e-2)])
def test_crps_gaussian_equals_quadrature(y, mu, sigma):
    assert metrics.crps_gaussian(y, mu, sigma) == pytest.approx(crps_gaussian_by_quadrature(y, mu, sigma), rel=1e-8)


def test_crps_gaussian_zero_std_is_absolute_error():
    assert metrics.crps_gaussian([3.0, -1.0], [1.0, 1.0], 0.0, axis=()) == pytest.approx([2.0, 2.0], abs=0)
    # and the limit is continuous
    assert metrics.crps_gaussian(3.0, 1.0, 1e-9) == pytest.approx(2.0, abs=1e-8)


def test_crps_sample_is_twice_the_pinball_integral():
    """CRPS = 2 int_0^1 rho_q(y - F^-1(q)) dq; the step quantile makes the midpoint rule exact."""
    rng = np.random.default_rng(RNG_SEED)
    samples = rng.gamma(2.0, size=(50, 6))
    y = rng.gamma(2.0, size=6)
    levels = (np.arange(1, 51) - 0.5) / 50
    step_quantiles = metrics.quantile_from_samples(samples, levels, method="inverted_cdf")
    np.testing.assert_allclose(step_quantiles, np.sort(samples, axis=0).T, rtol=0)
    via_pinball = 2 * metrics.pinball_loss(y, step_quantiles, levels, axis=(), average=True)
    np.testing.assert_allclose(via_pinball, metrics.crps_sample(y, samples, axis=()), rtol=1e-12)


# ----------------------------------------------------------- quantiles, coverage


def test_pinball_at_median_is_half_mae():
    rng = np.random.default_rng(RNG_SEED)
    y, yhat = rng.normal(size=30), rng.normal(size=30)
    y[3] = np.nan
    assert metrics.pinball_loss(y, yhat, 0.5) == pytest.approx(metrics.mae(y, yhat) / 2, rel=1e-14)


def test_pinball_per_quantile_by_hand():
    y = np.array([1.0, 2.0, 3.0])
    preds = np.array([[0.0, 1.0], [2.0, 2.0], [3.0, 5.0]])
    # q=0.1: u = (1, 0, 0) -> 0.1/3;  q=0.9: u = (0, 0, -2) -> 0.1*2/3
    got = metrics.pinball_loss(y, preds, [0.1, 0.9])
    np.testing.assert_allclose(got, [0.1 / 3, 0.2 / 3], rtol=1e-14)
    assert metrics.pinball_loss(y, preds, [0.1, 0.9], average=True) == pytest.approx(0.05, rel=1e-14)
    assert metrics.pinball_loss(y, preds, [0.1, 0.9], axis=()).shape == (3, 2)


def test_pinball_takes_predict_style_frame():
    index = pd.date_range("2024-01-01", periods=3, freq="D")
    y = pd.Series([1.0, 2.0, 3.0], index=index)
    frame = pd.DataFrame({"q0.1": [0.0, 2.0, 3.0], "q0.9": [1.0, 2.0, 5.0]}, index=index)
    np.testing.assert_allclose(metrics.pinball_loss(y, frame, [0.1, 0.9]), [0.1 / 3, 0.2 / 3], rtol=1e-14)
    with pytest.raises(ValueError, match="quantile_preds.*index"):
        metrics.pinball_loss(y, frame.set_axis(index + pd.Timedelta("1D")), [0.1, 0.9])


def test_interval_coverage_counts_closed_interval():
    y = np.array([0.0, 1.0, 2.0, 3.0, np.nan])
    assert metrics.interval_coverage(y, 1.0, 2.0) == 0.5  # bounds are inside
    np.testing.assert_array_equal(
        metrics.interval_coverage(y, [0.5, 0.5, 0.5, 0.5, 0.0], 3.0, axis=()), [0.0, 1.0, 1.0, 1.0, np.nan]
    )
    with pytest.raises(ValueError, match="lower.*upper"):
        metrics.interval_coverage(y, 2.0, 1.0)


def test_sample_interval_coverage_uses_central_quantiles():
    samples = np.arange(101.0)[:, None] * np.ones(4)  # 5% and 95% quantiles are 5 and 95
    y = np.array([4.9, 5.0, 95.0, 95.1])
    np.testing.assert_array_equal(metrics.sample_interval_coverage(y, samples, 0.9, axis=()), [0, 1, 1, 0])
    rng = np.random.default_rng(RNG_SEED)
    # calibrated Gaussian ensembles: coverage is Binomial(4000, 0.9)/4000 up to quantile noise
    coverage = metrics.sample_interval_coverage(rng.normal(size=4000), rng.normal(size=(500, 4000)), 0.8)
    assert abs(coverage - 0.8) < 0.04


def test_quantile_from_samples_layout():
    rng = np.random.default_rng(RNG_SEED)
    samples = rng.normal(size=(300, 5, 2))
    out = metrics.quantile_from_samples(samples, [0.1, 0.5, 0.9])
    assert out.shape == (5, 2, 3)
    np.testing.assert_allclose(out[..., 1], np.median(samples, axis=0), rtol=1e-14)
    assert metrics.quantile_from_samples(samples, 0.5).shape == (5, 2)


# ------------------------------------------------------------------- log scores


def test_log_score_is_negative_mean_log_density():
    assert metrics.log_score([-1.0, np.nan, -3.0]) == 2.0
    assert metrics.log_score([-1.0, -np.inf]) == np.inf
    series = pd.Series([-1.0, -2.0, np.nan, -6.0])
    assert metrics.log_score(series) == 3.0


def test_gaussian_log_score_matches_scipy():
    rng = np.random.default_rng(RNG_SEED)
    y, mu, sigma = rng.normal(size=(3, 8)), rng.normal(size=8), rng.gamma(2.0, size=8)
    expected = -stats.norm.logpdf(y, mu, sigma)
    np.testing.assert_allclose(metrics.gaussian_log_score(y, mu, sigma, axis=()), expected, rtol=1e-13)
    assert metrics.gaussian_log_score(y, mu, sigma) == pytest.approx(expected.mean(), rel=1e-13)
    with pytest.raises(ValueError, match="std"):
        metrics.gaussian_log_score(y, mu, 0.0)


# ---------------------------------------------------------------- pandas, input


def test_pandas_inputs_including_nullable_dtype():
    index = pd.date_range("2024-01-01", periods=4, freq="h")
    y = pd.Series([1.0, None, 3.0, 4.0], index=index, dtype="Float64")
    yhat = pd.Series([2.0, 2.0, 2.0, 2.0], index=index)
    assert metrics.mae(y, yhat) == pytest.approx(4 / 3)
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, np.nan]})
    assert metrics.rmse(frame, frame * 2) == pytest.approx(np.sqrt((1 + 4 + 9) / 3))
    with pytest.raises(ValueError, match="y_pred.*index"):
        metrics.mae(y, yhat.set_axis(index + pd.Timedelta("1h")))


def test_inputs_are_not_modified():
    y = np.array([1.0, np.nan, 3.0])
    samples = np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    y_copy, samples_copy = y.copy(), samples.copy()
    metrics.crps_sample(y, samples)
    metrics.sample_interval_coverage(y, samples)
    np.testing.assert_array_equal(y, y_copy)
    np.testing.assert_array_equal(samples, samples_copy)


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda: metrics.mae(np.zeros(3), np.zeros((3, 1))), ValueError, r"`y_pred` must have shape \(3,\)"),
        (lambda: metrics.mae(np.zeros(3), np.zeros(4)), ValueError, "`y_pred`"),
        (lambda: metrics.mae(["a", "b"], [1.0, 2.0]), TypeError, "`y_true`"),
        (lambda: metrics.mae([1.0, np.inf], [1.0, 2.0]), ValueError, "`y_true`"),
        (lambda: metrics.mae([1.0, 2.0], [1.0, np.nan]), ValueError, "`y_pred` must be finite"),
        (lambda: metrics.mae([1.0, 2.0], [1.0, 2.0], axis=1), ValueError, "`axis`"),
        (lambda: metrics.mae([1.0, 2.0], [1.0, 2.0], axis="0"), TypeError, "`axis`"),
        (lambda: metrics.crps_sample(np.zeros(3), np.zeros((5, 4))), ValueError, "`samples`"),
        (lambda: metrics.crps_sample(np.zeros(3), np.zeros((1, 3)), fair=True), ValueError, "at least 2"),
        (lambda: metrics.crps_gaussian(0.0, 0.0, -1.0), ValueError, "`std`"),
        (lambda: metrics.pinball_loss([1.0], [[1.0, 2.0]], [0.1, 1.5]), ValueError, "`quantiles`"),
        (lambda: metrics.pinball_loss([1.0], [[1.0, 2.0]], [0.1, 0.5, 0.9]), ValueError, "`quantile_preds`"),
        (lambda: metrics.sample_interval_coverage([1.0], [[1.0]], level=1.0), ValueError, "`level`"),
        (lambda: metrics.log_score([np.inf]), ValueError, "`log_densities`"),
    ],
)
def test_bad_input_names_the_argument(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_predictions_may_be_nan_where_target_is_missing():
    assert metrics.mae([1.0, np.nan], [2.0, np.nan]) == 1.0
    assert metrics.crps_sample([1.0, np.nan], [[1.0, np.nan], [3.0, np.nan]]) == pytest.approx(0.5)


# ------------------------------------------------------------ property tests

finite_floats = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5)


@st.composite
def target_and_samples(draw):
    shape = draw(shapes)
    n_samples = draw(st.integers(1, 12))
    y = draw(hnp.arrays(np.float64, shape, elements=finite_floats))
    missing = draw(hnp.arrays(np.bool_, shape))
    y = np.where(missing, np.nan, y)
    samples = draw(hnp.arrays(np.float64, (n_samples,) + shape, elements=finite_floats))
    return y, samples


@settings(max_examples=60, deadline=None)
@given(target_and_samples())
def test_crps_sample_is_nonnegative_and_skips_missing(data):
    y, samples = data
    per_element = metrics.crps_sample(y, samples, axis=())
    observed = ~np.isnan(y)
    assert per_element.shape == y.shape
    assert np.all(per_element[observed] >= 0)
    assert np.all(np.isnan(per_element[~observed]))
    # averaging skips exactly the missing entries: same as dropping them
    total = metrics.crps_sample(y, samples)
    if observed.any():
        kept = metrics.crps_sample(y[observed], samples[:, observed])
        assert total == pytest.approx(kept, rel=1e-12, abs=1e-12)
    else:
        assert np.isnan(total)


@settings(max_examples=60, deadline=None)
@given(target_and_samples(), st.integers(1, 6))
def test_crps_of_point_mass_is_absolute_error(data, n_copies):
    y, samples = data
    point = np.broadcast_to(samples[0], (n_copies,) + y.shape)
    np.testing.assert_allclose(
        metrics.crps_sample(y, point, axis=()), np.abs(y - samples[0]), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        metrics.crps_gaussian(y, samples[0], 0.0, axis=()), metrics.mae(y, samples[0], axis=()), rtol=0, atol=0
    )


@settings(max_examples=60, deadline=None)
@given(target_and_samples(), st.data())
def test_reduced_shapes_follow_axis(data, draw):
    y, samples = data
    axis = tuple(sorted(draw.draw(st.sets(st.integers(0, y.ndim - 1)))))
    expected_shape = tuple(s for i, s in enumerate(y.shape) if i not in axis)
    pred = samples[0]
    for value in (
        metrics.mae(y, pred, axis=axis),
        metrics.rmse(y, pred, axis=axis),
        metrics.smape(y, pred, axis=axis),
        metrics.crps_sample(y, samples, axis=axis),
        metrics.crps_gaussian(y, pred, 1.0, axis=axis),
        metrics.interval_coverage(y, pred - 1.0, pred + 1.0, axis=axis),
    ):
        assert np.shape(value) == expected_shape
        if expected_shape == ():
            assert isinstance(value, float)
    quantile_preds = np.stack([pred - 1.0, pred, pred + 1.0], axis=-1)
    assert np.shape(metrics.pinball_loss(y, quantile_preds, [0.1, 0.5, 0.9], axis=axis)) == expected_shape + (3,)


@settings(max_examples=60, deadline=None)
@given(target_and_samples())
def test_point_metric_bounds(data):
    y, samples = data
    pred = samples[0]
    if np.isnan(y).all():
        return
    assert 0 <= metrics.smape(y, pred) <= 200 + 1e-9
    assert metrics.mae(y, pred) <= metrics.rmse(y, pred) * (1 + 1e-12) + 1e-12
    coverage = metrics.sample_interval_coverage(y, samples, 0.5)
    assert 0.0 <= coverage <= 1.0
