"""Reusable nn.Modules: distribution heads, MLPs (and the deep models' transitions and inference networks)."""
from tsgen.components.heads import (
    HEADS,
    BernoulliHead,
    DistributionHead,
    NegativeBinomialHead,
    NormalHead,
    PoissonHead,
    StudentTHead,
    element_log_prob,
    make_head,
    masked_log_prob,
)
from tsgen.components.mlp import MLP

__all__ = [
    "HEADS",
    "MLP",
    "BernoulliHead",
    "DistributionHead",
    "NegativeBinomialHead",
    "NormalHead",
    "PoissonHead",
    "StudentTHead",
    "element_log_prob",
    "make_head",
    "masked_log_prob",
]
