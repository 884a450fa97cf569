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
from tsgen.components.positive import MIN_POSITIVE, positive
from tsgen.components.scaling import CausalScale, fitted_scale, scale_mode

__all__ = [
    "HEADS",
    "MIN_POSITIVE",
    "MLP",
    "BernoulliHead",
    "CausalScale",
    "DistributionHead",
    "NegativeBinomialHead",
    "NormalHead",
    "PoissonHead",
    "StudentTHead",
    "element_log_prob",
    "fitted_scale",
    "make_head",
    "masked_log_prob",
    "positive",
    "scale_mode",
]
