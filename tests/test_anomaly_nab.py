"""NAB scoring (issue 13 §5): hand-computed values from Lavin & Ahmad's formulas and NAB's rules."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tsgen.anomaly import nab_evaluate, nab_score, read_nab_windows
from tsgen.anomaly._nab import probationary_length, scaled_sigmoid

N = 100  # probationary period: min(floor(0.15 * 100), 750) = 15 rows
INDEX = pd.date_range("2024-01-01", periods=N, freq="5min")
WINDOWS = [(INDEX[40], INDEX[49]), (INDEX[70], INDEX[79])]  # widths 10


def sigma(p):
    return 2 / (1 + np.exp(5 * p)) - 1


def scores_at(values: dict, n=N, index=INDEX) -> pd.Series:
    out = pd.Series(0.0, index=index)
    for position, value in values.items():
        out.iloc[position] = value
    return out


def flags_at(*positions, n=N, index=INDEX) -> pd.Series:
    out = pd.Series(False, index=index)
    out.iloc[list(positions)] = True
    return out


def normalised(raw, null, perfect):
    return 100 * (raw - null) / (perfect - null)


def test_probationary_length_is_nabs_rule():
    assert probationary_length(100) == 15
    assert probationary_length(4032) == 604  # floor(604.8)
    assert probationary_length(22695) == 750  # capped at 0.15 * 5000
    np.testing.assert_allclose(scaled_sigmoid([-1.0, 0.0, 3.0, 3.01]), [sigma(-1.0), 0.0, sigma(3.0), -1.0])


def test_perfect_null_and_partial_detections_by_hand():
    assert nab_score(WINDOWS, flags_at(40, 70)) == pytest.approx(100.0)
    assert nab_score(WINDOWS, flags_at()) == pytest.approx(0.0)
    # only the first detection per window counts
    assert nab_score(WINDOWS, flags_at(40, 41, 49, 70, 75)) == pytest.approx(100.0)
    # half-way into the first window, second missed: p = -(49 - 45 + 1) / 10
    raw = sigma(-0.5) / sigma(-1.0) - 1.0
    assert nab_score(WINDOWS, flags_at(45)) == pytest.approx(normalised(raw, -2.0, 2.0))
    # a false positive past the probationary period and before any window costs A_FP; inside it, nothing
    assert nab_score(WINDOWS, flags_at(20, 40, 70)) == pytest.approx(normalised(2 - 0.11, -2.0, 2.0))
    assert nab_score(WINDOWS, flags_at(5, 40, 70)) == pytest.approx(100.0)
    # after a window the cost is A_FP * sigma(|i - right| / (width - 1)), here (55 - 49) / 9
    result = nab_evaluate(WINDOWS, flags_at(40, 55, 70))
    assert result.raw == pytest.approx(2 + 0.11 * sigma(6 / 9))
    assert result.score == pytest.approx(normalised(2 + 0.11 * sigma(6 / 9), -2.0, 2.0))
    assert result.threshold is None and result.per_series["false_positive_rows"].iloc[0] == 1
    # past three widths, the full A_FP; profiles weigh the parts differently
    assert nab_score(WINDOWS, flags_at(40, 70, 99)) == pytest.approx(normalised(2 - 0.11, -2.0, 2.0))
    low_fp = nab_score(WINDOWS, flags_at(20, 40, 70), profile="reward_low_FP_rate")
    assert low_fp == pytest.approx(normalised(2 - 0.22, -2.0, 2.0))
    low_fn = nab_score(WINDOWS, flags_at(40), profile="reward_low_FN_rate")
    assert low_fn == pytest.approx(normalised(1 - 2, -4.0, 2.0))


def test_windows_in_the_probationary_period():
    # a window starting inside it keeps its width; only its rows past row 15 can be detected
    windows = [(INDEX[10], INDEX[19])]
    assert nab_score(windows, flags_at(12)) == pytest.approx(0.0)  # a flag in the probationary rows is not seen
    expected = normalised(sigma(-(19 - 15 + 1) / 10) / sigma(-1.0), -1.0, 1.0)
    assert nab_score(windows, flags_at(15)) == pytest.approx(expected)
    # a window wholly inside it is never missed (the null detector does not pay for it) but still counts in
    # the perfect score, as NAB's normaliser counts every window
    result = nab_evaluate([(INDEX[2], INDEX[8])] + WINDOWS, flags_at(40, 70))
    assert (result.null, result.perfect, result.raw) == (-2.0, 3.0, 2.0)
    assert result.score == pytest.approx(normalised(2.0, -2.0, 3.0))
    # positions work as well as timestamps, and the probationary period can be switched off
    assert nab_score([(2, 8), (40, 49)], flags_at(2, 40).to_numpy(), probationary_percent=0.0) == 100.0


def test_threshold_optimised_per_profile_over_the_corpus():
    values = {40: 0.9, 70: 0.7, **{p: 0.8 for p in range(20, 30)}}  # ten early false positives above 0.7
    scores = scores_at(values)
    # thresholds: inf -> -2; 0.9 -> 1 - 1 = 0; 0.8 -> 0 - 10 A_FP; 0.7 -> 2 - 10 A_FP; 0 -> everything flagged
    standard = nab_evaluate(WINDOWS, scores)
    assert standard.threshold == 0.7 and standard.raw == pytest.approx(2 - 1.1)
    low_fp = nab_evaluate(WINDOWS, scores, "reward_low_FP_rate")  # 2 - 2.2 < 0: keep only the 0.9 flag
    assert low_fp.threshold == 0.9 and low_fp.raw == pytest.approx(0.0)
    assert low_fp.score == pytest.approx(50.0)
    low_fn = nab_evaluate(WINDOWS, scores, "reward_low_FN_rate")
    assert low_fn.threshold == 0.7 and low_fn.score == pytest.approx(normalised(2 - 1.1, -4.0, 2.0))
    # a fixed threshold flags every row scoring at least it
    assert nab_evaluate(WINDOWS, scores, threshold=0.8).raw == pytest.approx(1 - 1.1 - 1)
    # one threshold for the corpus: alone, the first series prefers 0.9; with a clean second one, 0.7 wins
    # (0.9: 0 + 0; 0.7: (2 - 2.2) + 2) and each series is scored at it
    clean = scores_at({40: 0.9, 70: 0.7})
    corpus = nab_evaluate({"a": WINDOWS, "b": WINDOWS}, {"a": scores, "b": clean}, "reward_low_FP_rate")
    assert corpus.threshold == 0.7 and corpus.raw == pytest.approx(1.8)
    np.testing.assert_allclose(corpus.per_series["raw"], [-0.2, 2.0])
    assert list(corpus.per_series.index) == ["a", "b"] and corpus.null == -4.0
    # the same with lists; ties go to the highest threshold (fewest flags), as NAB's stable sort does
    assert nab_evaluate([WINDOWS, WINDOWS], [scores, clean], "reward_low_FP_rate").threshold == 0.7
    tie = scores_at({40: 0.9, 41: 0.5})
    assert nab_evaluate(WINDOWS, tie).threshold == 0.9


def _reference_raw(windows, scores, threshold, weights, probation):
    """NAB's row loop written out plainly: enter a window at its first row, leave after its last."""
    a_tp, a_fp, a_fn = weights
    best, fp, previous = {}, 0.0, None
    for i, score in enumerate(scores):
        current = next((w for w in windows if w[0] <= i <= w[1]), None)
        if current is not None:
            worth = a_tp * sigma(-(current[1] - i + 1) / (current[1] - current[0] + 1)) / sigma(-1.0)
        elif previous is None:
            worth = -a_fp
        else:
            past = abs(i - previous[1]) / (previous[1] - previous[0])
            worth = a_fp * (-1.0 if past > 3 else sigma(past))
        if i >= probation:
            if current is not None:
                best.setdefault(current, -a_fn)
                if score >= threshold:
                    best[current] = max(best[current], worth)
            elif score >= threshold:
                fp += worth
        if current is not None and i == current[1]:
            previous = current
    return fp + sum(best.values())


@pytest.mark.parametrize("seed", range(5))
def test_sweep_matches_the_row_loop_at_every_threshold(seed):
    rng = np.random.default_rng(seed)
    n = 300
    index = pd.date_range("2024-01-01", periods=n, freq="h")
    windows = [(30, 49), (120, 131), (200, 239)]
    scores = pd.Series(np.round(rng.uniform(size=n), 2), index=index)  # rounded: many ties
    weights = (1.0, 0.11, 1.0)
    result = nab_evaluate(windows, scores)
    candidates = np.append(np.unique(scores), np.inf)
    expected = {t: _reference_raw(windows, scores.to_numpy(), t, weights, 45) for t in candidates}
    best = max(expected.values())
    assert result.raw == pytest.approx(best, abs=1e-9)
    assert result.threshold == max(t for t, v in expected.items() if v >= best - 1e-9)
    for t in candidates[::7]:
        assert nab_evaluate(windows, scores, threshold=t).raw == pytest.approx(expected[t], abs=1e-9)


def test_labels_input_and_the_windows_file(tmp_path):
    labels = pd.Series(False, index=INDEX)
    labels.iloc[[45, 75]] = True  # windows of 0.1 * 100 / 2 = 5 rows centred on each label
    assert nab_score(labels, flags_at(43, 73)) == pytest.approx(100.0)
    path = tmp_path / "combined_windows.json"
    path.write_text(json.dumps({"a.csv": [[str(a), str(b)] for a, b in WINDOWS], "b.csv": []}))
    read = read_nab_windows(path)
    assert read["a.csv"] == WINDOWS and read["b.csv"] == []
    assert nab_score(read, {"a.csv": flags_at(40, 70), "b.csv": flags_at(90)}) == pytest.approx(
        normalised(2 - 0.11, -2.0, 2.0))


def test_nab_bad_input():
    with pytest.raises(ValueError, match="`profile`"):
        nab_score(WINDOWS, flags_at(40), profile="strict")
    with pytest.raises(ValueError, match="no anomaly window"):
        nab_score([], flags_at(40))
    with pytest.raises(ValueError, match="not a timestamp"):
        nab_score([(pd.Timestamp("2030-01-01"), INDEX[5])], flags_at(40))
    with pytest.raises(ValueError, match="DatetimeIndex"):
        nab_score(WINDOWS, flags_at(40).to_numpy())
    with pytest.raises(ValueError, match="overlap"):
        nab_score([(40, 49), (45, 60)], flags_at(40))
    with pytest.raises(ValueError, match="same keys"):
        nab_score({"a": WINDOWS}, {"b": flags_at(40)})
    with pytest.raises(TypeError, match="`scores`"):
        nab_score(WINDOWS, pd.Series(["x"] * N, index=INDEX))
    with pytest.raises(ValueError, match="`probationary_percent`"):
        nab_score(WINDOWS, flags_at(40), probationary_percent=1.5)
