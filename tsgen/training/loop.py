"""The one training loop: every deep model hands it a ``loss_fn`` and nothing else."""
from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from dataclasses import replace
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from tsgen._config import show_progress
from tsgen.exceptions import TrainingDivergedError, TrainingDivergenceWarning
from tsgen.training.batch import SequenceBatch
from tsgen.training.config import TrainingConfig
from tsgen.training.device import resolve_device
from tsgen.training.randomness import seeded_from

LossFn = Callable[[SequenceBatch, float], torch.Tensor]
logger = logging.getLogger(__name__)

#: an epoch's loss this far above the best one, in units of max(1, |best|), counts as an explosion
EXPLOSION_FACTOR = 0.5
_ADVICE = "lower `learning_rate`, set `grad_clip`, or check the data for extreme values."


def split_validation(
    data: SequenceBatch, fraction: float, generator: torch.Generator
) -> tuple[SequenceBatch, SequenceBatch | None]:
    """Hold out ``round(fraction * B)`` random sequences (at least one, and one left to train on)."""
    n = len(data)
    n_valid = min(max(1, round(fraction * n)), n - 1) if fraction > 0 else 0
    if n_valid == 0:
        return data, None
    order = torch.randperm(n, generator=generator)
    return data.select(order[n_valid:].sort().values), data.select(order[:n_valid].sort().values)


def parameter_groups(module: nn.Module, parameters: list[torch.Tensor], learning_rate: float) -> list[dict]:
    """Adam's parameter groups: ``learning_rate`` times the factor a submodule
    declares for some of its own parameters (a ``learning_rate_scales()``
    method returning ``{parameter: factor}``, e.g. the DMM guide's wide ReLU
    RNN), 1 for the rest. The full-rate group comes first (its rate is the
    one the history records), and without declared factors there is one
    group, as with a plain ``Adam(parameters)``."""
    scales: dict[int, float] = {}
    for sub in module.modules():
        declared = getattr(sub, "learning_rate_scales", None)
        if callable(declared):
            scales.update((id(p), float(factor)) for p, factor in declared().items())
    groups: dict[float, list[torch.Tensor]] = {1.0: []}
    for p in parameters:
        groups.setdefault(scales.get(id(p), 1.0), []).append(p)
    return [{"params": ps, "lr": learning_rate * factor} for factor, ps in groups.items() if ps]


def _check_finite(loss: torch.Tensor, epoch: int, batch: int, phase: str) -> float:
    value = float(loss.detach())
    if not math.isfinite(value):
        raise TrainingDivergedError(f"the {phase} loss became {value} at epoch {epoch}, batch {batch}; {_ADVICE}")
    return value


def _check_gradient(gradient_norm: torch.Tensor, epoch: int, batch: int) -> None:
    """Raise before a non-finite gradient is applied.

    It (or a parameter it made non-finite, :func:`_check_parameters`) would
    otherwise surface one batch later as an unreadable error inside a
    distribution's argument check (NaN ``loc``), or not at all.
    """
    if not bool(torch.isfinite(gradient_norm)):
        raise TrainingDivergedError(
            f"the gradient became {float(gradient_norm)} at epoch {epoch}, batch {batch}; {_ADVICE}"
        )


def _check_parameters(parameters: list[torch.Tensor], epoch: int, batch: int) -> None:
    with torch.no_grad():  # one device sync for all parameters
        finite = torch.stack([torch.isfinite(p).all() for p in parameters]).all()
    if not bool(finite):
        raise TrainingDivergedError(
            f"a parameter became NaN or infinite after the update at epoch {epoch}, batch {batch}; {_ADVICE}"
        )


@contextlib.contextmanager
def _unchecked_distributions():
    """Build ``torch.distributions`` without argument checks while training.

    Diverging parameters first show up as NaN or infinite distribution
    arguments; with the checks on, torch raises its own ``ValueError``
    (printing the whole tensor) before the loss exists, so the loop could
    not name the epoch. Unchecked, the NaN reaches the loss and
    :func:`_check_finite` raises :class:`TrainingDivergedError`. The data's
    support is checked once at the estimators' edge instead, and the
    caller's setting is restored on exit.
    """
    previous = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(previous)


def _exploded(loss: float, best: float) -> bool:
    """Whether ``loss`` rose far above ``best`` (losses may be negative: log-densities)."""
    return math.isfinite(best) and loss - best > EXPLOSION_FACTOR * max(1.0, abs(best))


def evaluate(module: nn.Module, loss_fn: LossFn, data: SequenceBatch, batch_size: int, epoch: int = 0) -> float:
    """Mean of ``loss_fn(batch, 1.0)`` over ``data``, weighted by batch rows, without gradients."""
    was_training = module.training
    module.eval()
    total = 0.0
    with torch.no_grad():
        for b, start in enumerate(range(0, len(data), batch_size)):
            batch = data.select(torch.arange(start, min(start + batch_size, len(data))))
            total += _check_finite(loss_fn(batch, 1.0), epoch, b + 1, "validation") * len(batch)
    module.train(was_training)
    return total / len(data)


def _numbered(train_data: SequenceBatch, valid_data: SequenceBatch | None
              ) -> tuple[SequenceBatch, SequenceBatch | None]:
    """Give rows without an ``index`` their positions, validation rows after the training rows, so every
    sequence the loop will show a loss keeps one identity across shuffled epochs (``SequenceBatch.index``)."""
    if train_data.index is None:
        train_data = replace(train_data, index=torch.arange(len(train_data)))
    if valid_data is not None and valid_data.index is None:
        first = int(train_data.index.max()) + 1
        valid_data = replace(valid_data, index=torch.arange(first, first + len(valid_data)))
    return train_data, valid_data


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def train(
    module: nn.Module,
    loss_fn: LossFn,
    train_data: SequenceBatch,
    valid_data: SequenceBatch | None = None,
    *,
    config: TrainingConfig,
    generator: torch.Generator,
) -> list[dict]:
    """Minimise ``loss_fn`` over minibatches of ``train_data`` with Adam.

    Each epoch shuffles the sequences with ``generator``, and for every
    minibatch computes ``loss_fn(batch, kl_weight)``, clips the gradient norm
    to ``config.grad_clip`` and steps; the learning rate then decays by
    ``config.lr_decay`` (a submodule may declare a smaller rate for some of
    its parameters: :func:`parameter_groups`). The monitored loss is the validation loss
    (``kl_weight = 1``) when there is validation data (``valid_data`` or a
    random ``config.validation_fraction`` of the sequences), else the mean
    training loss. With ``config.patience`` set, training stops after that
    many epochs without improvement and the best weights are restored
    (without validation data, epochs under a partial KL weight are not
    candidates: their loss is not the objective). ``config.max_seconds``
    ends training after the epoch that exhausts that wall-clock budget.

    All global-RNG draws inside (dropout, reparameterised samples) come from
    a fork seeded by ``generator``, so runs are bit-for-bit repeatable on CPU.

    Returns
    -------
    list of dict
        One record per epoch: ``epoch`` (from 1), ``train_loss``,
        ``valid_loss`` (None without validation data), ``kl_weight``, ``lr``,
        ``seconds``.

    Raises
    ------
    TrainingDivergedError
        When a loss or the gradient norm is NaN or infinite, or an update
        leaves a parameter so (the message names epoch and batch).

    Warns
    -----
    TrainingDivergenceWarning
        Once, when an epoch's training loss (at full KL weight) rises above
        the best one by more than ``EXPLOSION_FACTOR * max(1, |best|)``: the
        loss exploded without becoming NaN (the message names the epochs).
    """
    if not isinstance(config, TrainingConfig):
        raise TypeError(f"`config` must be a TrainingConfig; got {type(config).__name__}.")
    if not isinstance(train_data, SequenceBatch) or len(train_data) == 0:
        raise ValueError("`train_data` must be a non-empty SequenceBatch.")
    device = resolve_device(config.device)
    train_data, valid_data = _numbered(train_data, valid_data)
    if valid_data is None:
        train_data, valid_data = split_validation(train_data, config.validation_fraction, generator)
    train_data = train_data.to(device)
    valid_data = None if valid_data is None else valid_data.to(device)
    module.to(device)
    parameters = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(
        parameter_groups(module, parameters, config.learning_rate), lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_decay)

    history: list[dict] = []
    best_loss, best_state, stale = math.inf, None, 0
    best_train, best_train_epoch, warned = math.inf, 0, False
    n = len(train_data)
    began = time.perf_counter()
    with seeded_from(generator, device), _unchecked_distributions():
        # the estimator's `progress` asks for a bar; the library-wide switch (tsgen.set_config) decides
        epochs = tqdm(range(config.max_epochs), disable=not show_progress(config.progress), desc="training",
                      leave=False)
        for index in epochs:
            epoch = index + 1
            started = time.perf_counter()
            kl_weight = config.kl_weight(index)
            lr = optimizer.param_groups[0]["lr"]
            module.train()
            order = torch.randperm(n, generator=generator)
            total = 0.0
            for b, start in enumerate(range(0, n, config.batch_size)):
                batch = train_data.select(order[start : start + config.batch_size])
                loss = loss_fn(batch, kl_weight)
                value = _check_finite(loss, epoch, b + 1, "training")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # the norm is computed either way (clipping by inf changes nothing) to catch NaN gradients
                max_norm = math.inf if config.grad_clip is None else config.grad_clip
                _check_gradient(nn.utils.clip_grad_norm_(parameters, max_norm), epoch, b + 1)
                optimizer.step()
                _check_parameters(parameters, epoch, b + 1)
                total += value * len(batch)
            train_loss = total / n
            if kl_weight >= 1.0:  # under a partial KL weight the loss is another objective
                if not warned and _exploded(train_loss, best_train):
                    warned = True
                    warnings.warn(
                        f"the training loss exploded: {train_loss:.6g} at epoch {epoch} against its best "
                        f"{best_train:.6g} at epoch {best_train_epoch}; the fit is unreliable: {_ADVICE}",
                        TrainingDivergenceWarning,
                        stacklevel=2,
                    )
                if train_loss < best_train:
                    best_train, best_train_epoch = train_loss, epoch
            valid_loss = None
            if valid_data is not None:
                valid_loss = evaluate(module, loss_fn, valid_data, config.batch_size, epoch)
            scheduler.step()
            history.append({
                "epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss,
                "kl_weight": kl_weight, "lr": lr, "seconds": time.perf_counter() - started,
            })
            epochs.set_postfix(train=f"{train_loss:.4g}", valid="-" if valid_loss is None else f"{valid_loss:.4g}")
            logger.debug("epoch %d: train loss %.6g, valid loss %s, kl weight %.3g, lr %.3g, %.2f s", epoch,
                         train_loss, "-" if valid_loss is None else f"{valid_loss:.6g}", kl_weight, lr,
                         history[-1]["seconds"])
            monitored = train_loss if valid_loss is None else valid_loss
            # a training loss under a partial KL weight is not the objective: not comparable
            comparable = valid_loss is not None or kl_weight >= 1.0
            if comparable and monitored < best_loss:
                best_loss, stale = monitored, 0
                if config.patience is not None:
                    best_state = _snapshot(module)
            elif comparable:
                stale += 1
            if config.patience is not None and stale >= config.patience:
                logger.info("early stopping after epoch %d: no improvement in %d epochs", epoch, stale)
                break
            if config.max_seconds is not None and time.perf_counter() - began >= config.max_seconds:
                logger.info("stopping after epoch %d: the max_seconds budget of %g s is spent", epoch,
                            config.max_seconds)
                break
        epochs.close()
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return history
