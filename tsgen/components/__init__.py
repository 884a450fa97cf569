"""Reusable nn.Modules: distribution heads, MLPs (and the deep models' transitions and inference networks)."""
from tsgen.components.heads import (
    EMISSIONS,
    HEADS,
    BernoulliHead,
    DistributionHead,
    NegativeBinomialHead,
    NormalHead,
    PoissonHead,
    StudentTHead,
    element_log_prob,
    is_exact,
    make_head,
    masked_log_prob,
    register_emission,
)
from tsgen.components.mlp import MLP
from tsgen.components.positive import MIN_POSITIVE, positive
from tsgen.components.scaling import CausalScale, fitted_scale, scale_mode
from tsgen.components.transitions import (
    TRANSITIONS,
    TransitionComponent,
    kl_term,
    make_transition,
    register_transition,
)

__all__ = [
    "EMISSIONS",
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
    "TRANSITIONS",
    "TransitionComponent",
    "element_log_prob",
    "fitted_scale",
    "is_exact",
    "kl_term",
    "make_head",
    "make_transition",
    "masked_log_prob",
    "positive",
    "register_emission",
    "register_transition",
    "scale_mode",
]
