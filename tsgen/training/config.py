"""Training hyper-parameters, validated once."""
from __future__ import annotations

import math
from dataclasses import dataclass

from tsgen._validation import is_int

#: training objectives of latent models
OBJECTIVES = ("elbo", "iwae", "fivo")
#: ``kl_annealing_epochs="auto"`` warms the KL up over this many epochs (fewer when ``max_epochs`` is short)
AUTO_KL_ANNEALING_EPOCHS = 10


def _check(name: str, ok: bool, expected: str, value) -> None:
    if not ok:
        raise ValueError(f"`{name}` must be {expected}; got {value!r}.")


def _is_real(value) -> bool:
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


@dataclass
class TrainingConfig:
    """Settings of :func:`tsgen.training.train`.

    KL annealing multiplies the KL term by
    ``w_e = start + (1 - start) * min(1, e / kl_annealing_epochs)`` in epoch
    ``e = 0, 1, ...`` (``w = 1`` when ``kl_annealing_epochs = 0``); the
    learning rate in epoch ``e`` is ``learning_rate * lr_decay**e``.
    ``kl_annealing_epochs="auto"`` (the latent estimators' default) is
    ``min(AUTO_KL_ANNEALING_EPOCHS, max_epochs // 3)``: a warm-up of 10
    epochs, or of the first third of a shorter training (none under 3
    epochs). A latent model whose data reach ``x_t`` only through ``z_t``
    (the DMM) otherwise collapses its posterior onto the prior in its first
    updates: before the transition predicts anything, every nat ``z_t`` holds
    about ``x_t`` costs a nat of KL, and once ``q = p`` no gradient leads
    back (Bowman et al. 2016; Sønderby et al. 2016). On JSB Chorales (latent
    16, hidden 64, 30 epochs, batch 20) the DMM stayed at the
    independent-Bernoulli baseline without it (IWAE 10.72 nats a step
    against 10.73 on 20 test chorales, KL 0.03) and reached 8.84 with it (KL
    1.2; 8.97 against 11.06 on all 77, ``benchmarks/polyphonic.py``).

    ``objective`` is what a latent model maximises (the loop minimises its
    negative): ``"elbo"``, the importance weighted bound ``"iwae"`` with
    ``n_particles`` draws (Burda et al. 2016), or ``"fivo"``, the particle
    filter's log-evidence with ``n_particles`` particles (Maddison et al.
    2017). KL annealing applies to the ELBO only: the other two bounds have
    no separate KL term, so their weight is always 1.

    ``validation_fraction`` here is the share of whole sequences the loop
    holds out (:func:`tsgen.training.loop.split_validation`). The deep
    estimators' ``validation_fraction="auto"`` default resolves before this
    config: pandas series are validated on their last 10% of steps, handed
    to :func:`tsgen.training.train` as ``valid_data``
    (:mod:`tsgen.models.deep_estimator`), and collections hold out nothing.
    """

    max_epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 10.0
    validation_fraction: float = 0.0
    patience: int | None = 10
    kl_annealing_epochs: int | str = 0
    kl_annealing_start: float = 0.0
    lr_decay: float = 1.0
    device: str = "cpu"
    progress: bool = True
    max_seconds: float | None = None  # stop after the epoch that passes this wall-clock budget
    objective: str = "elbo"
    n_particles: int = 8  # draws of the IWAE bound, particles of FIVO's filter (unused by the ELBO)

    def __post_init__(self):
        _check("max_epochs", is_int(self.max_epochs) and self.max_epochs >= 1, "a positive integer", self.max_epochs)
        _check("batch_size", is_int(self.batch_size) and self.batch_size >= 1, "a positive integer", self.batch_size)
        _check("learning_rate", _is_real(self.learning_rate) and self.learning_rate > 0, "a positive number",
               self.learning_rate)
        _check("weight_decay", _is_real(self.weight_decay) and self.weight_decay >= 0, "a number >= 0",
               self.weight_decay)
        _check("grad_clip", self.grad_clip is None or (_is_real(self.grad_clip) and self.grad_clip > 0),
               "None or a positive number", self.grad_clip)
        _check("validation_fraction", _is_real(self.validation_fraction) and 0 <= self.validation_fraction < 1,
               "a number in [0, 1)", self.validation_fraction)
        _check("patience", self.patience is None or (is_int(self.patience) and self.patience >= 1),
               "None or a positive integer", self.patience)
        _check("kl_annealing_epochs", self.kl_annealing_epochs == "auto" if isinstance(self.kl_annealing_epochs, str)
               else is_int(self.kl_annealing_epochs) and self.kl_annealing_epochs >= 0,
               "an integer >= 0 or 'auto'", self.kl_annealing_epochs)
        _check("kl_annealing_start", _is_real(self.kl_annealing_start) and 0 <= self.kl_annealing_start <= 1,
               "a number in [0, 1]", self.kl_annealing_start)
        _check("lr_decay", _is_real(self.lr_decay) and 0 < self.lr_decay <= 1, "a number in (0, 1]", self.lr_decay)
        _check("progress", isinstance(self.progress, bool), "True or False", self.progress)
        _check("max_seconds", self.max_seconds is None or (_is_real(self.max_seconds) and self.max_seconds > 0),
               "None or a positive number", self.max_seconds)
        _check("objective", isinstance(self.objective, str) and self.objective in OBJECTIVES,
               f"one of {list(OBJECTIVES)}", self.objective)
        _check("n_particles", is_int(self.n_particles) and self.n_particles >= (2 if self.objective == "fivo" else 1),
               "an integer >= 2 for objective='fivo' (>= 1 otherwise)", self.n_particles)

    @property
    def annealing_epochs(self) -> int:
        """The epochs of KL warm-up, ``"auto"`` resolved (class docstring)."""
        if self.kl_annealing_epochs == "auto":
            return min(AUTO_KL_ANNEALING_EPOCHS, self.max_epochs // 3)
        return self.kl_annealing_epochs

    def kl_weight(self, epoch: int) -> float:
        """KL weight used during ``epoch`` (0-based)."""
        epochs = self.annealing_epochs
        if epochs == 0 or self.objective != "elbo":
            return 1.0
        fraction = min(1.0, epoch / epochs)
        return self.kl_annealing_start + (1.0 - self.kl_annealing_start) * fraction
