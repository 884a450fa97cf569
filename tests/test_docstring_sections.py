"""numpydoc sections hold what their name says: no prose after a Parameters or Attributes list.

numpydoc reads every unindented line of a Parameters section as a
parameter's name, so a paragraph written after the list renders as
parameters named by its lines (the API reference showed Naive's
"Fitted attributes: ..." as a parameter). Prose belongs in Notes, fitted
attributes in Attributes.
"""
import ast
import re
from pathlib import Path

import pytest

numpydoc = pytest.importorskip("numpydoc.docscrape")

PACKAGE = Path(__file__).resolve().parents[1] / "tsgen"
#: a name, or names separated by commas, as a section entry starts (a wrapped list may end in "," or " :")
ENTRY = re.compile(r"^\*{0,2}[A-Za-z_][\w.]*(\s*,\s*\*{0,2}[A-Za-z_][\w.]*)*\s*[,:]?$")
SECTIONS = ("Parameters", "Other Parameters", "Attributes")
#: docstrings that still put prose in a list (files owned elsewhere when this test was written): drop an
#: entry once its docstring is fixed, so that the prose cannot come back
KNOWN = {
    "anomaly/_detector.py:AnomalyDetector",
    "anomaly/_spot.py:SPOT",
    "models/arima.py:ARIMA",
    "models/dmm.py:DeepMarkovModule",
}


def _docstrings():
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and any(f"{section}\n{'-' * len(section)}" in doc for section in SECTIONS):
                    yield f"{path.relative_to(PACKAGE).as_posix()}:{getattr(node, 'name', '<module>')}", doc


def test_no_prose_inside_parameter_and_attribute_lists():
    offenders = {}
    for where, doc in _docstrings():
        parsed = numpydoc.NumpyDocString(doc)
        prose = [entry.name for section in SECTIONS for entry in parsed[section] if not ENTRY.match(entry.name)]
        if prose:
            offenders[where] = prose[0]
    assert {k: v for k, v in offenders.items() if k not in KNOWN} == {}


def test_the_check_sees_prose():
    doc = "Summary.\n\nParameters\n----------\nx : int\n    A value.\n\nFitted attributes: ``a_``.\n"
    assert not ENTRY.match(numpydoc.NumpyDocString(doc)["Parameters"][-1].name)
    wrapped = "Summary.\n\nParameters\n----------\na, b,\nc, d :\n    Settings.\n"
    assert all(ENTRY.match(entry.name) for entry in numpydoc.NumpyDocString(wrapped)["Parameters"])
