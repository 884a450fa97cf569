"""benchmarks/polyphonic.py's early-stopping bookkeeping: which epoch's weights a row reports and why it stopped.

The benchmark is a script, not part of the package, so it is loaded from its
file; nothing here trains a model.
"""
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "polyphonic.py"
spec = importlib.util.spec_from_file_location("polyphonic_benchmark", PATH)
polyphonic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(polyphonic)


def args(**overrides):
    values = dict(patience=3, epochs=None, max_epochs=100, seconds=60.0, validation_fraction=0.1)
    values.update(overrides)
    return SimpleNamespace(**values)


def history(valid, kl=None):
    kl = kl or [1.0] * len(valid)
    return [{"epoch": i + 1, "train_loss": 10.0 - i, "valid_loss": v, "kl_weight": w, "lr": 1e-3, "seconds": 1.0}
            for i, (v, w) in enumerate(zip(valid, kl))]


def test_patience_stop_reports_the_best_held_out_epoch():
    out = polyphonic.best_epoch(history([5.0, 4.0, 3.0, 3.5, 3.2, 3.1]), args())
    assert out == {"best": 3, "best_valid": 3.0, "stop": "patience"}


def test_budget_stops_are_told_apart():
    improving = history([5.0, 4.0, 3.0])
    assert polyphonic.best_epoch(improving, args())["stop"] == "seconds"
    assert polyphonic.best_epoch(improving, args(epochs=3))["stop"] == "epochs"


def test_without_patience_the_last_epoch_is_kept():
    out = polyphonic.best_epoch(history([5.0, 4.0, 6.0]), args(patience=0))
    assert out["best"] == 3


def test_without_hold_out_annealed_epochs_are_not_candidates():
    # the training loss falls fastest under a partial KL weight, where it is not the objective
    rows = history([None] * 4, kl=[0.1, 0.5, 1.0, 1.0])
    for row, loss in zip(rows, [1.0, 2.0, 4.0, 3.0]):
        row["train_loss"] = loss
    out = polyphonic.best_epoch(rows, args(validation_fraction=0.0))
    assert out["best"] == 4 and out["best_valid"] == 3.0


def test_curve_spreads_its_points_over_the_run():
    text = polyphonic.curve(history([float(v) for v in range(20, 0, -1)]), points=4)
    assert text.split(", ")[0] == "1: 20.000" and text.split(", ")[-1] == "20: 1.000"
    assert polyphonic.curve(history([None, None])) == "no hold-out"


@pytest.mark.parametrize("flag", [["--validation-fraction", "1.5"], ["--patience", "-1"]])
def test_bad_flags_are_refused(flag):
    with pytest.raises(SystemExit, match=flag[0]):
        polyphonic.main(["--models", "rnn", *flag])
