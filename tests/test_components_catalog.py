"""The components catalogue (the docs' table of every registered emission and transition) against the registries."""
import importlib.util
from pathlib import Path

import torch

from tsgen.components import EMISSIONS, TRANSITIONS, make_head, make_transition
from tsgen.components.catalog import component_catalog

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_registered_name_is_listed_with_its_class_flags():
    catalog = component_catalog()
    assert [(c.kind, c.name) for c in catalog] == (
        [("emission", n) for n in EMISSIONS.names()] + [("transition", n) for n in TRANSITIONS.names()])
    for info in catalog:
        registry = EMISSIONS if info.kind == "emission" else TRANSITIONS
        assert info.cls is registry.get(info.name)
        assert info.exact_log_prob is bool(info.cls.exact_log_prob) and info.summary
        if info.kind == "emission":
            assert info.factorizes is bool(info.cls.factorizes)
        else:
            assert info.factorizes is None and info.has_rsample is bool(info.cls.has_rsample)
    # every family is represented, with the flags its design states
    by_name = {(c.kind, c.name): c for c in catalog}
    assert not by_name["emission", "made"].factorizes and by_name["emission", "mdn"].factorizes
    assert not by_name["emission", "vae"].exact_log_prob and by_name["emission", "energy"].exact_log_prob
    assert by_name["emission", "flow"].has_rsample and not by_name["emission", "bernoulli"].has_rsample


def test_has_rsample_agrees_with_the_distributions_built():
    for info in component_catalog():
        if info.kind == "emission":
            distribution = make_head(info.name, 4, 3)(torch.randn(2, 4))
        else:
            distribution = make_transition(info.name, 3, hidden_dim=8)(torch.randn(2, 3))
        assert bool(distribution.has_rsample) is info.has_rsample, info.name
        assert distribution.event_shape == (3,), info.name


def test_the_catalogue_leaves_the_global_random_stream_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    component_catalog()
    assert torch.equal(torch.rand(3), expected)


def test_the_docs_page_tabulates_every_name():
    spec = importlib.util.spec_from_file_location("tsgen_docs_conf", DOCS / "conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    page = (DOCS / "api" / "components.rst").read_text()
    assert conf.COMPONENT_TABLE in page
    tables = conf.component_tables()
    for info in component_catalog():
        assert f'``"{info.name}"``' in tables and info.cls.__qualname__ in tables
    assert tables.count(".. list-table::") == 2
    index = (DOCS / "index.rst").read_text()
    assert "api/components" in index and "api/likelihood_free" in index
