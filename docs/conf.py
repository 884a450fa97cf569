"""Sphinx configuration of the tsgen API reference (``sphinx-build -W -b html docs docs/_build/html``)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# the package from this checkout, also when it is not installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MPLBACKEND", "Agg")

import tsgen  # noqa: E402

project = "tsgen"
author = "tsgen developers"
release = version = tsgen.__version__
copyright = "tsgen developers"  # noqa: A001 - Sphinx's name

extensions = ["sphinx.ext.autodoc", "numpydoc", "sphinx.ext.mathjax"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []

autodoc_default_options = {
    "members": True,
    "inherited-members": False,
    "show-inheritance": False,
    # scikit-learn's metadata-routing setters and the conformance suite's hook are not tsgen's API
    "exclude-members": "set_fit_request,set_predict_request,set_score_request,get_test_params",
}
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc sections say the types
numpydoc_show_class_members = False  # members are listed by autodoc, once
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
# docstrings are checked for what makes them render wrongly; a missing section is not an error
numpydoc_validation_checks: set[str] = set()
suppress_warnings: list[str] = []

# ------------------------------------------------------------ generated content
COMPONENT_TABLE = ".. tsgen-component-table"


def component_tables() -> str:
    """The components page's tables of every registered emission and transition, from the registries."""
    from tsgen.components.catalog import component_catalog

    def yes(flag) -> str:
        return "yes" if flag else "no"

    out = []
    catalog = component_catalog()
    for kind, flags in (("emission", ("factorizes", "exact_log_prob", "has_rsample")),
                        ("transition", ("exact_log_prob", "has_rsample"))):
        rows = [info for info in catalog if info.kind == kind]
        out += [f".. list-table:: ``{kind}=`` names", "   :header-rows: 1", "   :widths: auto", "",
                "   * - name", "     - class", *(f"     - ``{flag}``" for flag in flags), "     - what it is"]
        for info in rows:
            out += [f"   * - ``\"{info.name}\"``",
                    f"     - :class:`~{info.cls.__module__}.{info.cls.__qualname__}`",
                    *(f"     - {yes(getattr(info, flag))}" for flag in flags),
                    f"     - {info.summary}"]
        out.append("")
    return "\n".join(out)


def _insert_generated(app, docname, source):
    if COMPONENT_TABLE in source[0]:
        source[0] = source[0].replace(COMPONENT_TABLE, component_tables())


def setup(app):
    app.connect("source-read", _insert_generated)
