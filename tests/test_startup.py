"""Start-up: ``import tsgen`` and the CLI's help and argument parsing stay light.

Each check runs in a fresh interpreter (this process has long imported
everything) and asserts on ``sys.modules``, never on time: what a command
imports is stable, how long it takes on a shared machine is not.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what a user pays for only once a model (or a plot) is actually used
HEAVY = ("torch", "numba", "matplotlib", "sklearn", "pyro", "scipy", "statsmodels")
#: prints the heavy modules the preceding code imported, as JSON, on the last line of stdout
REPORT = f"import json, sys; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _python(code: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def _heavy_after(code: str) -> list[str]:
    return json.loads(_python(f"{code}\n{REPORT}").stdout.strip().splitlines()[-1])


def test_import_tsgen_imports_no_heavy_dependency():
    assert _heavy_after("import tsgen") == []


def test_public_names_listed_without_importing_them():
    code = (
        "import tsgen\n"
        "assert set(tsgen.__all__) <= set(dir(tsgen)), set(tsgen.__all__) - set(dir(tsgen))\n"
        "assert tsgen.__version__\n"
    )
    assert _heavy_after(code) == []


def test_metrics_do_not_need_torch():
    assert "torch" not in _heavy_after("import tsgen; tsgen.metrics.crps_sample")


def test_public_names_resolve_on_first_use():
    code = (
        "import tsgen\n"
        "from tsgen import ARIMA, BaseForecaster, LinearGaussianSSM, RNNForecaster, DeepMarkovModel\n"
        "from tsgen import AnomalyDetector, BacktestResult, backtest, load, metrics\n"
        "from tsgen.models.arima import ARIMA as direct\n"
        "assert ARIMA is direct and issubclass(ARIMA, BaseForecaster)\n"
        "assert all(getattr(tsgen, name) is not None for name in tsgen.__all__)\n"
        "assert tsgen.ARIMA is ARIMA\n"
    )
    _python(code)


def test_subpackages_are_attributes():
    code = (
        "import tsgen\n"
        "assert callable(tsgen.plotting.plot_forecast) and tsgen.models.arima.ARIMA is tsgen.ARIMA\n"
        "assert {'plotting', 'models', 'data'} <= set(dir(tsgen)) and 'arima' in dir(tsgen.models)\n"
        "from tsgen import *\n"
        "assert ARIMA is tsgen.ARIMA and callable(backtest)\n"
    )
    _python(code)


def test_unknown_attribute_is_an_attribute_error():
    code = (
        "import tsgen\n"
        "try:\n    tsgen.NoSuchModel\nexcept AttributeError as err:\n    assert 'NoSuchModel' in str(err)\n"
        "else:\n    raise SystemExit('no AttributeError')\n"
        "assert not hasattr(tsgen, 'no_such_thing')\n"
    )
    _python(code)


def test_arima_does_not_import_the_deep_models():
    heavy = _heavy_after("from tsgen import ARIMA")
    assert "pyro" not in heavy and "matplotlib" not in heavy
    modules = _python("from tsgen import ARIMA; import sys; print(' '.join(sys.modules))").stdout.split()
    assert not {"tsgen.models.rnn", "tsgen.models.dmm", "tsgen.training.loop"} & set(modules)


def test_load_in_a_fresh_process(tmp_path):
    """``tsgen.load`` finds the model's class even when nothing imported it yet."""
    import numpy as np
    import pandas as pd

    from tsgen import ARIMA

    y = pd.Series(np.random.default_rng(0).normal(size=60).cumsum())
    path = tmp_path / "arima.pt"
    ARIMA(order=(1, 1, 0)).fit(y).save(path)
    done = _python(f"import tsgen; m = tsgen.load({str(path)!r}); print(type(m).__name__, m.order)")
    assert done.stdout.split()[0] == "ARIMA"


@pytest.mark.parametrize("argv", [["--help"], ["forecast", "--help"], ["backtest", "--help"], ["detect", "--help"]])
def test_cli_help_imports_no_model(argv):
    code = (
        "import sys\nfrom tsgen.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as exit_:\n    assert exit_.code == 0\n"
        "assert not any(m.startswith('tsgen.models') for m in sys.modules), 'a model was imported'\n"
        "assert 'pandas' not in sys.modules\n"
    )
    assert _heavy_after(code) == []


def test_cli_argument_errors_import_no_model():
    """A bad command line is answered by argparse before anything heavy is imported."""
    code = (
        "import sys\nfrom tsgen.cli import main\n"
        "try:\n    main(['forecast', 'x.csv', '--horizon', '0'])\nexcept SystemExit as exit_:\n"
        "    assert exit_.code == 2\n"
        "assert not any(m.startswith('tsgen.models') for m in sys.modules)\n"
    )
    assert _heavy_after(code) == []


@pytest.mark.parametrize("module", ["tsgen", "tsgen.cli"])
def test_python_dash_m_help(module):
    code = (
        "import runpy, sys\n"
        f"sys.argv = [{module!r}, '--help']\n"
        f"try:\n    runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exit_:\n    assert exit_.code == 0\n"
    )
    assert _heavy_after(code) == []
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, env=_env(),
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0 and "usage: tsgen" in done.stdout


def test_console_script_help():
    script = shutil.which("tsgen") or shutil.which("tsgen", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the tsgen console script is not installed in this environment")
    done = subprocess.run([script, "--help"], capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
    assert done.returncode == 0 and "usage: tsgen" in done.stdout


def test_arima_fit_and_forecast_do_not_import_sympy():
    """``torch.broadcast_shapes`` imports torch's reference ops and sympy on first use (~0.6 s of the first
    ``predict``); the ARIMA path broadcasts with numpy instead."""
    code = (
        "import numpy as np, pandas as pd, sys\nfrom tsgen import ARIMA\n"
        "y = pd.Series(np.random.default_rng(0).normal(size=60).cumsum())\n"
        "m = ARIMA(order=(1, 1, 1)).fit(y)\nm.predict(3)\nm.sample(3, n_samples=5)\n"
        "ARIMA(order=(0, 1, 1), seasonal_order=(0, 1, 1, 4)).fit(y).predict(3)\n"
        "print('sympy' in sys.modules)\n"
    )
    assert _python(code).stdout.strip().splitlines()[-1] == "False"
