"""MAPE, WAPE, MSIS, OWA, energy and variogram scores against hand computations and closed forms."""
import numpy as np
import pandas as pd
import pytest

from tsgen import metrics


def test_mape_and_wape_by_hand():
    y = np.array([2.0, 4.0, np.nan, 10.0])
    pred = np.array([1.0, 5.0, 99.0, 10.0])
    assert metrics.mape(y, pred) == pytest.approx(100 * (0.5 + 0.25 + 0.0) / 3)
    assert metrics.wape(y, pred) == pytest.approx((1 + 1 + 0) / (2 + 4 + 10))
    batch = np.array([[1.0, 2.0], [3.0, 5.0]])
    np.testing.assert_allclose(metrics.wape(batch, batch + 1, axis=1), [2 / 3, 2 / 8])
    np.testing.assert_allclose(metrics.mape(batch, batch * 1.1, axis=0), [10.0, 10.0])


def test_mape_and_wape_refuse_zero_levels():
    with pytest.raises(ValueError, match="y_true.*zero"):
        metrics.mape([0.0, 1.0], [1.0, 1.0])
    assert metrics.wape([0.0, 2.0], [1.0, 2.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="y_true.*WAPE"):
        metrics.wape([0.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="y_pred"):
        metrics.mape([1.0, 2.0], [1.0, 2.0, 3.0])


def test_msis_of_a_known_interval_by_hand():
    y_train = np.array([1.0, 3.0, 2.0, 5.0, 4.0])  # |diffs| 2, 1, 3, 1 -> scale 7/4
    y = np.array([2.0, 10.0, -1.0])
    lower, upper = np.array([1.0, 2.0, 0.0]), np.array([3.0, 4.0, 1.0])
    alpha = 0.2
    by_hand = ((3 - 1) + (4 - 2 + 2 / alpha * (10 - 4)) + (1 - 0 + 2 / alpha * (0 - -1))) / 3 / (7 / 4)
    assert metrics.msis(y, lower, upper, y_train, alpha=alpha) == pytest.approx(by_hand)
    seasonal = np.array([1.0, 2.0, 4.0, 3.0, 1.0, 2.0])  # m=2: |4-1|,|3-2|,|1-4|,|2-3| -> 2
    assert metrics.msis(y, lower, upper, seasonal, m=2, alpha=alpha) == pytest.approx(by_hand * (7 / 4) / 2)


def test_msis_checks_its_arguments():
    with pytest.raises(ValueError, match="alpha"):
        metrics.msis([1.0], [0.0], [2.0], [1.0, 2.0], alpha=1.5)
    with pytest.raises(ValueError, match="lower"):
        metrics.msis([1.0], [3.0], [2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="y_train.*MSIS"):
        metrics.msis([1.0], [0.0], [2.0], [1.0, 1.0])


def test_owa_is_one_for_naive2_and_halves_the_ratio_sum():
    rng = np.random.default_rng(0)
    y_train = rng.uniform(5, 10, size=(3, 24))
    y = rng.uniform(5, 10, size=(3, 6))
    naive2 = np.repeat(y_train[:, -1:], 6, axis=1)
    assert metrics.owa(y, naive2, naive2, y_train, time_axis=1) == pytest.approx(1.0)
    pred = y + rng.normal(scale=0.3, size=y.shape)
    expected = 0.5 * (
        metrics.smape(y, pred) / metrics.smape(y, naive2)
        + metrics.mase(y, pred, y_train, time_axis=1) / metrics.mase(y, naive2, y_train, time_axis=1)
    )
    assert metrics.owa(y, pred, naive2, y_train, time_axis=1) == pytest.approx(expected)
    assert metrics.owa(y, pred, naive2, y_train, time_axis=1) < 1
    with pytest.raises(ValueError, match="y_naive2"):
        metrics.owa(y, pred, y, y_train, time_axis=1)


def test_energy_score_of_a_point_mass_is_the_euclidean_error():
    y = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.0]])
    forecast = np.array([[0.0, 2.0], [1.0, 1.0], [0.5, 3.0]])
    expected = np.sqrt(((y - forecast) ** 2).sum())
    assert metrics.energy_score(y, forecast[None]) == pytest.approx(expected)
    np.testing.assert_allclose(metrics.energy_score(y, forecast[None], axis=1), np.linalg.norm(y - forecast, axis=1))


def test_energy_score_in_one_dimension_is_the_crps():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(4, 1))
    x = rng.normal(size=(200, 4, 1))
    for fair in (False, True):
        np.testing.assert_allclose(
            metrics.energy_score(y, x, axis=1, fair=fair),
            metrics.crps_sample(y, x, axis=1, fair=fair),
            rtol=1e-12,
        )


def test_energy_score_prefers_the_right_correlation():
    rng = np.random.default_rng(2)
    cov = np.array([[1.0, 0.9], [0.9, 1.0]])
    y = rng.multivariate_normal([0, 0], cov, size=400)
    right = rng.multivariate_normal([0, 0], cov, size=(300, 400))
    wrong = rng.normal(size=(300, 400, 2))
    assert metrics.energy_score(y, right, axis=1).mean() < metrics.energy_score(y, wrong, axis=1).mean()


def test_energy_score_skips_missing_components_and_names_arguments():
    y = np.array([1.0, np.nan, 3.0])
    x = np.array([[0.0, 100.0, 3.0], [2.0, -50.0, 3.0]])
    assert metrics.energy_score(y, x) == pytest.approx(metrics.energy_score(y[[0, 2]], x[:, [0, 2]]))
    assert np.isnan(metrics.energy_score(np.array([[np.nan], [1.0]]), np.ones((2, 2, 1)), axis=1)[0])
    with pytest.raises(ValueError, match="samples"):
        metrics.energy_score(y, x[:1], fair=True)
    with pytest.raises(ValueError, match="samples"):
        metrics.energy_score(y, np.ones((2, 4)))


def test_variogram_score_by_hand():
    y = np.array([0.0, 1.0, 4.0])
    x = np.array([[0.0, 0.0, 1.0], [1.0, 2.0, 1.0]])
    # E|X_i - X_j|^p over the two samples, pairs (0,1), (0,2), (1,2), p = 1
    expected = {(0, 1): (0 + 1) / 2, (0, 2): (1 + 0) / 2, (1, 2): (1 + 1) / 2}
    observed = {(0, 1): 1.0, (0, 2): 4.0, (1, 2): 3.0}
    by_hand = 2 * sum((observed[k] - expected[k]) ** 2 for k in expected)
    assert metrics.variogram_score(y, x, p=1.0) == pytest.approx(by_hand)
    w = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=float)
    assert metrics.variogram_score(y, x, p=1.0, weights=w) == pytest.approx(2 * (1.0 - 0.5) ** 2)
    p_half = 2 * sum((observed[k] ** 0.5 - np.mean(np.abs(x[:, k[0]] - x[:, k[1]]) ** 0.5)) ** 2 for k in expected)
    assert metrics.variogram_score(y, x) == pytest.approx(p_half)


def test_variogram_score_per_origin_missing_pairs_and_checks():
    rng = np.random.default_rng(3)
    y = rng.normal(size=(2, 3, 2))
    x = rng.normal(size=(20, 2, 3, 2))
    per_origin = metrics.variogram_score(y, x, axis=(1, 2))
    assert per_origin.shape == (2,)
    assert per_origin[1] == pytest.approx(metrics.variogram_score(y[1], x[:, 1]))
    y_missing = np.array([0.0, np.nan, 4.0])
    x3 = rng.normal(size=(10, 3))
    assert metrics.variogram_score(y_missing, x3) == pytest.approx(metrics.variogram_score(y_missing[[0, 2]], x3[:, [0, 2]]))
    with pytest.raises(ValueError, match="`p`"):
        metrics.variogram_score(y[0], x[:, 0], p=0)
    with pytest.raises(ValueError, match="weights"):
        metrics.variogram_score(y[0, 0], x[:, 0, 0], weights=np.ones((3, 3)))


def test_pandas_inputs_are_compared_by_position_and_not_modified():
    index = pd.period_range("2020-01", periods=3, freq="M")
    y = pd.Series([1.0, 2.0, 4.0], index=index)
    pred = pd.Series([1.5, 2.0, 3.0], index=index)
    before = y.copy()
    assert metrics.wape(y, pred) == pytest.approx(1.5 / 7)
    pd.testing.assert_series_equal(y, before)
    with pytest.raises(ValueError, match="y_pred"):
        metrics.mape(y, pred.set_axis(pd.period_range("2021-01", periods=3, freq="M")))


# ------------------------------------------------------------ crps_normal_mixture
def test_crps_normal_mixture_of_one_component_is_crps_gaussian():
    rng = np.random.default_rng(0)
    y, mean, std = rng.normal(size=(3, 4, 5))
    std = np.abs(std)
    std[0, 0] = 0.0  # the point-mass limit too
    np.testing.assert_allclose(metrics.crps_normal_mixture(y, [1.0], mean[None], std[None], axis=()),
                               metrics.crps_gaussian(y, mean, std, axis=()), rtol=1e-12, atol=1e-14)


def test_crps_normal_mixture_equals_the_integral_of_the_squared_cdf_difference():
    # CRPS(F, y) = int (F(x) - 1{x >= y})^2 dx, integrated numerically: independent of the folded-normal form
    from scipy import integrate, stats

    weights, means, stds = np.array([0.3, 0.7]), np.array([-1.0, 2.0]), np.array([0.5, 1.5])
    for y in (-1.2, 0.4, 3.0):
        def integrand(x):
            cdf = float(np.sum(weights * stats.norm.cdf(x, means, stds)))
            return (cdf - (x >= y)) ** 2
        exact = sum(integrate.quad(integrand, a, b, limit=200)[0] for a, b in ((-30, y), (y, 30)))
        found = metrics.crps_normal_mixture(y, weights, means, stds)
        assert found == pytest.approx(exact, rel=1e-7)


def test_crps_normal_mixture_skips_missing_targets_and_refuses_bad_weights_and_shapes():
    y = np.array([0.0, np.nan, 1.0])
    means, stds = np.zeros((2, 3)), np.ones((2, 3))
    per_step = metrics.crps_normal_mixture(y, [0.5, 0.5], means, stds, axis=())
    assert np.isnan(per_step[1]) and np.isfinite(per_step[[0, 2]]).all()
    with pytest.raises(ValueError, match="`weights`"):
        metrics.crps_normal_mixture(y, [0.5, 0.6], means, stds)
    with pytest.raises(ValueError, match="`means`"):
        metrics.crps_normal_mixture(y, [0.5, 0.5], np.zeros((3, 3)), stds)
    with pytest.raises(ValueError, match="`stds`"):
        metrics.crps_normal_mixture(y, [0.5, 0.5], means, -stds)
