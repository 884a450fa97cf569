"""The library reports through `logging`, never print(); progress bars follow tsgen.set_config."""
from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from joblib import delayed

import tsgen
from tsgen._config import nested_work, show_progress
from tsgen.evaluation._parallel import parallel_context

PACKAGE = Path(tsgen.__file__).resolve().parent


def test_no_print_outside_the_command_line():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "cli" in path.relative_to(PACKAGE).parts:
            continue  # the command line's output functions print by design
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


def test_the_package_logger_has_only_a_null_handler():
    handlers = logging.getLogger("tsgen").handlers
    assert handlers and all(isinstance(h, logging.NullHandler) for h in handlers)


def test_progress_switch_and_nested_work():
    assert tsgen.get_config()["progress"] == "auto"
    assert show_progress(True) and not show_progress(False)
    with nested_work():
        assert not show_progress(True)  # backtests and ensembles hide their inner bars...
        with tsgen.config_context(progress=True):
            assert show_progress(True)  # ...unless asked
    with tsgen.config_context(progress=False):
        assert not show_progress(True)
        tsgen.set_config(progress=True)  # inside a context: changes the context only
        assert show_progress(True)
    assert tsgen.get_config()["progress"] == "auto"
    with pytest.raises(ValueError, match="progress"):
        tsgen.set_config(progress="yes")


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_tasks_run_as_nested_work_under_the_callers_settings(n_jobs):
    with tsgen.config_context(progress=False, partition_size=7):
        with parallel_context(n_jobs, "loky", None) as parallel:
            seen = list(parallel(delayed(tsgen.get_config)() for _ in range(2)))
        with parallel_context(n_jobs, "loky", None) as parallel:
            shown = list(parallel(delayed(show_progress)() for _ in range(2)))
    assert all(c["progress"] is False and c["partition_size"] == 7 and c["n_jobs"] == 1 for c in seen)
    assert shown == [False, False]


def _rnn():
    return tsgen.RNNForecaster(hidden_dim=4, num_layers=1, max_epochs=2, batch_size=8, window_length=12,
                               random_state=0, progress=True)


def test_training_bar_and_epoch_logs(capsys, caplog):
    y = np.sin(np.arange(120) / 3.0)
    with caplog.at_level(logging.DEBUG, logger="tsgen"):
        _rnn().fit(y)
    assert "training" in capsys.readouterr().err  # the estimator asked for a bar: shown at top level
    epochs = [r for r in caplog.records if r.name == "tsgen.training.loop" and r.getMessage().startswith("epoch")]
    assert len(epochs) == 2
    with tsgen.config_context(progress=False):
        _rnn().fit(y)
    assert "training" not in capsys.readouterr().err


def test_partitioned_work_is_logged(caplog):
    panel = [np.arange(20.0) + i for i in range(4)]
    with caplog.at_level(logging.INFO, logger="tsgen"), tsgen.config_context(partition_size=2):
        tsgen.Naive().fit(panel)
    assert any("4 series in 2 partitions" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("value", "expected"), [("0", "False"), ("1", "True"), ("auto", "auto"), ("nope", "auto")])
def test_progress_from_the_environment(value, expected):
    env = {**os.environ, "TSGEN_PROGRESS": value}
    out = subprocess.run([sys.executable, "-W", "always", "-c", "import tsgen; print(tsgen.get_config()['progress'])"],
                         capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == expected
    assert ("TSGEN_PROGRESS must be" in out.stderr) == (value == "nope")
