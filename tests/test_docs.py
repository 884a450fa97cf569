"""The API reference (docs/) builds with Sphinx, autodoc and numpydoc, warnings as errors,
and every public estimator has a page."""
from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tsgen

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _documented_classes() -> set[str]:
    names = set()
    for page in (DOCS / "api").glob("*.rst"):
        names.update(re.findall(r"^\.\. autoclass:: tsgen\.(\w+)", page.read_text(), flags=re.MULTILINE))
    return names


def test_every_public_estimator_has_a_page_with_an_example():
    estimators = {name for name in tsgen.__all__
                  if inspect.isclass(getattr(tsgen, name)) and issubclass(getattr(tsgen, name), tsgen.BaseForecaster)}
    assert estimators - _documented_classes() == set()
    for page in (DOCS / "api").glob("*.rst"):
        text = page.read_text()
        if set(re.findall(r"^\.\. autoclass:: tsgen\.(\w+)", text, flags=re.MULTILINE)) & estimators:
            assert "Example" in text and ".. code-block:: python" in text, page.name


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("numpydoc")
    # -W: any warning (a broken docstring, a missing reference) fails the build; -E: no stale environment
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html", str(DOCS),
         str(tmp_path / "html")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    built = tmp_path / "html"
    assert (built / "index.html").exists()
    ets = (built / "api" / "ets.html").read_text()
    assert "Parameters" in ets and "max_evals" in ets and "Attributes" in ets
