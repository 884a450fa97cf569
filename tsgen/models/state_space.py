r"""User-written nonlinear state-space models, and the estimator that gives them everything.

A state-space model is three conditional distributions::

    z_1 ~ initial(context_1)                      p(z_1)
    z_t ~ transition(z_{t-1}, context_t)          f(z_t | z_{t-1}),  t = 2..T
    y_t ~ emission(z_t, context_t)                g(y_t | z_t)

Subclass :class:`StateSpaceModel` with those three methods (and optionally
a ``proposal``), keep the static parameters as torch parameters, and wrap
an instance (or the class) in :class:`StateSpaceForecaster`: it fits them
by particle EM, PMMH or FIVO and offers ``filter``, ``smooth``,
``predict``, ``sample``, ``log_likelihood`` (one-step predictive densities
from the particle filter), ``score``, ``save``/``tsgen.load``, and so
works with :func:`tsgen.backtest` and :class:`tsgen.AnomalyDetector`.

The adapter from this small base to the model protocol
(:class:`tsgen.protocol.SequentialModel`) that the SMC layer
(:mod:`tsgen.inference.smc`) runs lives here, once
(:class:`StateSpaceProtocol`).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, biject_to, constraints

from tsgen._validation import is_int
from tsgen.base import BaseForecaster
from tsgen.data import SeriesBatch, unwrap
from tsgen.inference.smc.particle_em import transition_mask
# the frames of filter()/smooth(), shared with the DMM's (weighted_quantiles and latent_frames stay importable here)
from tsgen.models._latent_frames import (
    filtering_summary, frame_input, latent_frames, latent_names, smoothing_summary, weighted_quantiles,
)
from tsgen.models._lds_protocol import _standard_normal
from tsgen.models._likelihood_free_fit import LIKELIHOOD_FREE_METHODS, LikelihoodFreeFits, scalar_priors
from tsgen.protocol import Context, SequentialModel, ancestral_sample, index_state, observed_log_prob
from tsgen.training.loop import _unchecked_distributions as unchecked_distributions

__all__ = ["StateSpaceForecaster", "StateSpaceModel", "StateSpaceProtocol", "latent_frames", "weighted_quantiles"]

_DTYPE = torch.float64
#: fit methods of the state-space estimators
METHODS = ("particle_em", "pmmh", "fivo", *LIKELIHOOD_FREE_METHODS)
PROPOSALS = ("bootstrap", "guided", "auxiliary")
#: every subclass of StateSpaceModel defined in this process, by "module.QualName": what tsgen.load may rebuild
_MODEL_CLASSES: dict[str, type] = {}


def _class_key(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# ---------------------------------------------------------------- the user's base
class StateSpaceModel(nn.Module):
    r"""Base of a user-written state-space model (see the module docstring for the equations).

    Notes
    -----
    A subclass implements:

    ``initial(context)``
        The distribution of ``z_1``.
    ``transition(z_prev, context)``
        The distribution of ``z_t`` given ``z_prev`` ``(*batch, Z)``.
    ``emission(z, context)``
        The distribution of ``y_t`` given ``z`` ``(*batch, Z)``.
    ``proposal(z_prev, y, context)`` (optional)
        A distribution ``q(z_t | z_{t-1}, y_t)`` for the guided filter
        (``z_prev`` is None at the first step), or None.

    Distributions come from ``torch.distributions`` or ``pyro.distributions``.
    A univariate latent or observation may use scalar distributions (event
    shape ``()``, and then ``z_prev``/``z`` arrive without their last
    dimension); otherwise event shapes are ``(Z,)`` and ``(D,)``.
    ``context`` is a dict with ``"t"``, the 1-based time step ``(B,)``
    (continued into the forecast horizon), and ``"covariates"`` ``(B, K)``
    when the estimator was fitted with ``X``. Methods must broadcast over
    leading batch dimensions (particles, series, and for particle EM's
    M-step also time), as elementwise tensor code does; set
    ``vectorized_time = False`` if yours cannot take time as a batch
    dimension.

    Parameters are ``nn.Parameter`` attributes (unconstrained), or
    registered with :meth:`register_constrained`, which keeps a positive
    or bounded parameter valid during fitting and can attach the prior
    that PMMH samples under. :meth:`get_config` returns the constructor
    arguments that rebuild the model (for ``tsgen.load``; default none).

    Examples
    --------
    >>> class LocalLevel(StateSpaceModel):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.register_constrained("q", 1.0, constraints.positive)
    ...         self.register_constrained("r", 1.0, constraints.positive)
    ...     def initial(self, context):
    ...         return Normal(0.0, 10.0)
    ...     def transition(self, z_prev, context):
    ...         return Normal(z_prev, self.q.sqrt())
    ...     def emission(self, z, context):
    ...         return Normal(z, self.r.sqrt())
    """

    #: column names of the latent components in ``filter``/``smooth`` frames (default ``z0, z1, ...``)
    latent_names: tuple[str, ...] | None = None
    #: whether the methods accept time as a leading batch dimension (fast particle-EM M-step)
    vectorized_time: bool = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _MODEL_CLASSES[_class_key(cls)] = cls

    def initial(self, context: dict) -> Distribution:
        raise NotImplementedError(f"{type(self).__name__} must implement initial(context).")

    def transition(self, z_prev: Tensor, context: dict) -> Distribution:
        raise NotImplementedError(f"{type(self).__name__} must implement transition(z_prev, context).")

    def emission(self, z: Tensor, context: dict) -> Distribution:
        raise NotImplementedError(f"{type(self).__name__} must implement emission(z, context).")

    def proposal(self, z_prev: Tensor | None, y: Tensor, context: dict) -> Distribution | None:
        return None

    def get_config(self) -> dict:
        """Constructor arguments (JSON-able) that rebuild this model's structure; default none."""
        return {}

    # ------------------------------------------------------- parameters
    def register_constrained(self, name: str, value, constraint=constraints.real, prior: Distribution | None = None):
        """A parameter ``name`` in the support of ``constraint``, optionally with a ``prior`` over its value.

        It is stored unconstrained (``<name>_unconstrained``, through
        ``torch.distributions.biject_to(constraint)``), so gradient steps and
        PMMH's random walk never leave the support; ``self.<name>`` reads the
        constrained value.
        """
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"`name` must be a Python identifier; got {name!r}.")
        if prior is not None and not isinstance(prior, Distribution):
            raise TypeError(f"`prior` must be a torch/Pyro Distribution or None; got {type(prior).__name__}.")
        transform = biject_to(constraint)
        value = torch.as_tensor(value, dtype=torch.get_default_dtype())
        if not bool(constraint.check(value).all()):
            raise ValueError(f"the starting value of `{name}` ({value.tolist()}) is outside its constraint {constraint}.")
        raw = nn.Parameter(transform.inv(value).detach().clone())
        self.register_parameter(f"{name}_unconstrained", raw)
        # the transform is kept: building it on every read would cost more than the read itself
        self.__dict__.setdefault("_constrained", {})[name] = (constraint, prior, transform)

    def __getattr__(self, name: str):
        constrained = self.__dict__.get("_constrained", {})
        if name in constrained:
            raw = super().__getattr__(f"{name}_unconstrained")
            if torch.is_grad_enabled():
                return constrained[name][2](raw)
            # a filter reads every parameter at every step without a graph, and the transform cost
            # more than the step's arithmetic on small models: reuse it while the raw tensor is the
            # same object (swapped parameters are not) at the same version (in-place updates bump it)
            # and storage (module.to() swaps .data in place)
            cache = self.__dict__.setdefault("_constrained_cache", {})
            key = (raw._version, raw.data_ptr(), raw.dtype)
            hit = cache.get(name)
            if hit is not None and hit[0] is raw and hit[1] == key:
                return hit[2]
            value = constrained[name][2](raw)
            cache[name] = (raw, key, value)
            return value
        return super().__getattr__(name)

    def constrained_parameters(self) -> dict[str, Tensor]:
        """The registered parameters' current (constrained) values, detached from the graph."""
        return {name: getattr(self, name).detach() for name in self.__dict__.get("_constrained", {})}

    def priors(self) -> dict[str, Distribution]:
        """The priors of the registered parameters that have one (name -> distribution): what PMMH samples."""
        constrained = self.__dict__.get("_constrained", {})
        return {name: entry[1] for name, entry in constrained.items() if entry[1] is not None}

    def set_constrained(self, name: str, value) -> None:
        """Set a registered parameter to the constrained ``value`` (in place, no gradient)."""
        transform = self.__dict__.get("_constrained", {})[name][2]
        raw = getattr(self, f"{name}_unconstrained")
        with torch.no_grad():
            raw.copy_(transform.inv(torch.as_tensor(value, dtype=raw.dtype, device=raw.device)))


# ------------------------------------------------------ scalar distributions as vectors
class _LastDim(Distribution):
    """A scalar-event distribution seen with a trailing dimension of size 1 (batch ``(*batch, 1)``)."""

    arg_constraints: dict = {}

    def __init__(self, base: Distribution):
        self.base = base
        super().__init__(base.batch_shape + (1,), torch.Size(), validate_args=False)

    @property
    def has_rsample(self) -> bool:
        return self.base.has_rsample

    @property
    def support(self):
        return self.base.support

    @property
    def mean(self) -> Tensor:
        return self.base.mean.unsqueeze(-1)

    @property
    def variance(self) -> Tensor:
        return self.base.variance.unsqueeze(-1)

    def expand(self, batch_shape, _instance=None):
        return _LastDim(self.base.expand(torch.Size(batch_shape)[:-1]))

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        base = self.base
        if type(base) is Normal:
            # a filter step draws N x B normals; float64 ones are filled one by one on the CPU (see
            # _lds_protocol._standard_normal), and this draw dominated a bootstrap step of a scalar model
            with torch.no_grad():
                shape = base._extended_shape(torch.Size(sample_shape))
                noise = _standard_normal(shape, base.loc)
                return torch.addcmul(base.loc.expand(shape), base.scale.expand(shape), noise).unsqueeze(-1)
        return base.sample(sample_shape).unsqueeze(-1)

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        return self.base.rsample(sample_shape).unsqueeze(-1)

    def log_prob(self, value: Tensor) -> Tensor:
        return self.scalar_log_prob(value).unsqueeze(-1)

    def scalar_log_prob(self, value: Tensor) -> Tensor:
        """The base's ``log_prob`` of ``value`` ``(*batch, 1)``, without the trailing dimension."""
        base = self.base
        if type(base) is Normal and not base._validate_args:
            # torch's Normal broadcasts its scale to the particles' shape and then takes scale**2 and
            # log(scale) once per particle: in a filter step that doubled the emission's cost
            scale = _compact(base.scale)
            standardised = (value.squeeze(-1) - base.loc) / scale
            return torch.addcmul(-(scale.log() + _HALF_LOG_2PI), standardised, standardised, value=-0.5)
        return base.log_prob(value.squeeze(-1))


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _compact(tensor: Tensor) -> Tensor:
    """``tensor`` with its broadcast (stride-0) dimensions cut to size 1: it broadcasts back the same."""
    strides = tensor.stride()
    if 0 not in strides:
        return tensor
    return tensor[tuple(slice(0, 1) if stride == 0 else slice(None) for stride in strides)]


class _ScalarAsVector(Independent):
    """``Independent(_LastDim(d), 1)``: its log-density skips the sum over the trailing size-1 dimension
    (a full pass over the particles in a filter step)."""

    def __init__(self, base: _LastDim):
        super().__init__(base, 1, validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return _ScalarAsVector(self.base_dist.expand(torch.Size(batch_shape) + (1,)))

    def log_prob(self, value: Tensor) -> Tensor:
        return self.base_dist.scalar_log_prob(value)


def _as_vector(distribution, batch_shape: torch.Size, scalar: bool, what: str) -> Distribution:
    """``distribution`` with batch shape ``batch_shape`` and a vector event (scalar ones get a trailing 1)."""
    if not isinstance(distribution, Distribution):
        raise TypeError(f"{what} must return a torch.distributions.Distribution; got {type(distribution).__name__}.")
    event = tuple(distribution.event_shape)
    if scalar != (event == ()):
        raise ValueError(
            f"{what} returned a distribution with event shape {event}; the model's latent is "
            f"{'scalar (event shape ())' if scalar else 'a vector'}, as its `initial` distribution says."
        )
    if distribution.batch_shape != batch_shape:
        distribution = distribution.expand(batch_shape)
    return _ScalarAsVector(_LastDim(distribution)) if scalar else distribution


# ------------------------------------------------------------------- the adapter
@dataclasses.dataclass
class _Start:
    """The state before the first step: ``z`` is a placeholder carrying the batch shape."""

    z: Tensor


class StateSpaceProtocol(SequentialModel):
    """A :class:`StateSpaceModel` as a :class:`tsgen.protocol.SequentialModel` (what the SMC layer runs).

    The state is ``z_t`` itself, ``(*batch, Z)`` (Markov latent); the step
    tensor ``"t"`` of the context is the 1-based time step. Call
    :meth:`prepare` before anything else: it reads the latent's size off the
    model's ``initial`` distribution.
    """

    markov_latent = True

    def __init__(self, model: StateSpaceModel):
        super().__init__()
        if not isinstance(model, StateSpaceModel):
            raise TypeError(f"`model` must be a tsgen.StateSpaceModel; got {type(model).__name__}.")
        self.model = model
        self.latent_dim = 0  # known after prepare
        self._scalar_latent = False
        self._scalar_emission = False
        self._n_dims = None

    # ------------------------------------------------------------ context
    def prepare(self, values: Tensor, mask: Tensor, covariates: Tensor | None = None, horizon: int = 0) -> Context:
        B, T = values.shape[:2]
        steps = torch.arange(1, T + horizon + 1, dtype=values.dtype, device=values.device)
        return self.context_from(steps.expand(B, T + horizon), covariates, values.shape[-1])

    def context_from(self, t: Tensor, covariates: Tensor | None, n_dims: int) -> Context:
        """A context with time steps ``t`` ``(B, L)`` and covariates ``(B, >= L, K)`` or None."""
        steps = {"t": t}
        if covariates is not None:
            L = t.shape[1]
            covariates = covariates[:, :L].to(t)
            if covariates.shape[1] < L:  # rows past a series' end are never read
                covariates = torch.cat([covariates, covariates.new_zeros(t.shape[0], L - covariates.shape[1],
                                                                         covariates.shape[2])], 1)
            steps["covariates"] = covariates
        context = Context(steps)
        first = self.model.initial(context.at(0))
        if not isinstance(first, Distribution):
            raise TypeError(f"{type(self.model).__name__}.initial must return a Distribution; got {type(first).__name__}.")
        event = tuple(first.event_shape)
        if len(event) > 1:
            raise ValueError(f"{type(self.model).__name__}.initial must have event shape () or (Z,); got {event}.")
        self._scalar_latent = event == ()
        self.latent_dim = 1 if self._scalar_latent else event[0]
        self._n_dims = n_dims
        try:
            typical = first.mean
        except NotImplementedError:
            typical = first.sample()
        emitted = self.model.emission(typical, context.at(0))
        # a scalar emission also sees y_t as a scalar in its proposal
        self._scalar_emission = isinstance(emitted, Distribution) and tuple(emitted.event_shape) == ()
        return context

    def _user(self, z: Tensor) -> Tensor:
        return z.squeeze(-1) if self._scalar_latent else z

    # --------------------------------------------------------------- steps
    def init_state(self, context: Context, sample_shape=()):
        t = context.steps["t"]
        return _Start(t.new_zeros(*sample_shape, t.shape[0], self.latent_dim))

    def transition(self, state, x_prev, context_t):
        if isinstance(state, _Start):
            batch = state.z.shape[:-1]
            return state, _as_vector(self.model.initial(context_t), batch, self._scalar_latent,
                                     f"{type(self.model).__name__}.initial")
        distribution = self.model.transition(self._user(state), context_t)
        return state, _as_vector(distribution, state.shape[:-1], self._scalar_latent,
                                 f"{type(self.model).__name__}.transition")

    def commit(self, state, z, context_t):
        return z

    def emission(self, state, context_t):
        distribution = self.model.emission(self._user(state), context_t)
        name = f"{type(self.model).__name__}.emission"
        if not isinstance(distribution, Distribution):
            raise TypeError(f"{name} must return a Distribution; got {type(distribution).__name__}.")
        event = tuple(distribution.event_shape)
        scalar = event == ()
        if (1 if scalar else event[-1]) != self._n_dims or len(event) > 1:
            raise ValueError(f"{name} has event shape {event}; the data have {self._n_dims} variable(s).")
        return _as_vector(distribution, state.shape[:-1], scalar, name)

    def proposal(self, state, x, mask, context_t):
        start = isinstance(state, _Start)
        z_prev = None if start else self._user(state)
        y = x.squeeze(-1) if self._scalar_emission else x
        distribution = self.model.proposal(z_prev, y, context_t)
        if distribution is None:
            return None
        batch = state.z.shape[:-1] if start else state.shape[:-1]
        return _as_vector(distribution, batch, self._scalar_latent, f"{type(self.model).__name__}.proposal")

    def state_from_latent(self, z, context_t):
        return z

    # ----------------------------------------------------- particle EM's M-step
    def complete_log_likelihood(self, z: Tensor, values: Tensor, mask: Tensor, context: Context) -> Tensor:
        r"""``log p(y_{1:T}, z_{1:T})`` of trajectories ``z`` ``(M, B, T, Z)`` -> ``(M, B)``,
        with time as a batch dimension (one call of each model method), transitions after a
        series' last observed step left out (they integrate to one)."""
        if not self.model.vectorized_time:
            return None
        T = z.shape[2]
        zt = z.movedim(2, 0)  # (T, M, B, Z)
        # context tensors (B, L, ...) -> (T, 1, B, ...): time in front, a singleton for the trajectories
        stacked = {k: v[:, :T].movedim(1, 0).unsqueeze(1) for k, v in context.steps.items()}
        later = {k: v[1:] for k, v in stacked.items()}
        name = type(self.model).__name__
        initial = _as_vector(self.model.initial(context.at(0)), zt.shape[1:-1], self._scalar_latent, f"{name}.initial")
        total = initial.log_prob(zt[0])
        if T > 1:
            moves = _as_vector(self.model.transition(self._user(zt[:-1]), later), zt[1:].shape[:-1],
                               self._scalar_latent, f"{name}.transition")
            counted = transition_mask(mask)[:, 1:].T.unsqueeze(1).to(z.dtype)  # (T-1, 1, B)
            total = total + (moves.log_prob(zt[1:]) * counted).sum(0)
        emission = self.emission(zt, stacked)
        x = values[:, :T].movedim(1, 0).unsqueeze(1)
        m = mask[:, :T].movedim(1, 0).unsqueeze(1)
        return total + observed_log_prob(emission, x, m).sum(0)


# ------------------------------------------------------------------ estimators
def _check_int(name: str, value, minimum: int) -> int:
    if not is_int(value) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _check_choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}; got {value!r}.")
    return value


class _StateSpaceEstimator(LikelihoodFreeFits, BaseForecaster):
    """The machinery shared by the state-space estimators: subclasses write ``_build_model(data)``.

    Fitted attributes: ``module_`` (the fitted :class:`StateSpaceModel`, float64),
    ``log_evidences_`` (the particle filter's ``log p_hat(y)`` per iteration of
    particle EM or PMMH, the training objective per epoch of FIVO), ``n_iter_``,
    and after PMMH ``posterior_samples_`` (name -> array ``(S, *shape)`` of
    constrained values) and ``acceptance_rate_``.
    """

    _supports_covariates = True
    _n_predict_samples = 500
    #: AnomalyDetector scores it by the particle filter's one-step densities with its own n_particles
    _latent_model = True

    # subclasses set these in their constructors (sklearn style); listed for readers
    method: str
    max_iter: int
    n_particles: int
    n_trajectories: int
    proposal: str
    resampling: str
    learning_rate: float
    m_step_iter: int
    burn_in: float
    device: str
    random_state: object

    def _build_model(self, data: SeriesBatch | None) -> StateSpaceModel:
        raise NotImplementedError

    # ------------------------------------------------------------ checks
    def _check_arguments(self) -> None:
        from tsgen.inference.smc.resampling import RESAMPLERS

        _check_choice("method", self.method, METHODS)
        _check_int("max_iter", self.max_iter, 0)
        _check_int("n_particles", self.n_particles, 2)
        _check_int("n_trajectories", self.n_trajectories, 1)
        _check_int("m_step_iter", self.m_step_iter, 1)
        _check_choice("proposal", self.proposal, PROPOSALS)
        _check_choice("resampling", self.resampling, tuple(RESAMPLERS))
        rate = self.learning_rate
        if not (isinstance(rate, (int, float)) and not isinstance(rate, bool) and math.isfinite(rate) and rate > 0):
            raise ValueError(f"`learning_rate` must be a positive number; got {rate!r}.")
        burn_in = self.burn_in
        if not (isinstance(burn_in, (int, float)) and not isinstance(burn_in, bool) and 0 <= burn_in < 1):
            raise ValueError(f"`burn_in` must be a fraction in [0, 1); got {burn_in!r}.")

    def _device(self) -> torch.device:
        from tsgen.training import resolve_device

        return resolve_device(self.device)

    def _protocol(self, module: StateSpaceModel | None = None) -> StateSpaceProtocol:
        return StateSpaceProtocol(self.module_ if module is None else module)

    def _tensors(self, data: SeriesBatch, covariates):
        device = self._device()
        covariates = None if covariates is None else covariates.to(device=device, dtype=_DTYPE)
        return data.values.to(device), data.mask.to(device), covariates

    def _filter(self, adapter, values, mask, covariates, n_particles=None, keep="none", proposal=None):
        from tsgen.inference.smc.filter import particle_filter

        n = self.n_particles if n_particles is None else _check_int("n_particles", n_particles, 2)
        context = adapter.prepare(values, mask, covariates)
        return particle_filter(
            adapter, values, mask, covariates, n_particles=n, proposal=self.proposal if proposal is None else proposal,
            resampling=self.resampling, keep=keep, context=context,
        ), context

    @contextlib.contextmanager
    def _seeded(self):
        from tsgen.training import seeded_from
        from tsgen.training.randomness import make_generator

        # argument checks of the distributions built every step would dominate a filter step
        with torch.no_grad(), seeded_from(make_generator(self.random_state), self._device()), unchecked_distributions():
            yield

    # ------------------------------------------------------------------ fit
    def _fit(self, data: SeriesBatch, covariates):
        from tsgen.training import seeded_from
        from tsgen.training.randomness import make_generator

        self._check_arguments()
        device = self._device()
        generator = make_generator(self.random_state)
        with seeded_from(generator, device):
            module = self._build_model(data)
        if not isinstance(module, StateSpaceModel):
            raise TypeError(f"`model` must be a tsgen.StateSpaceModel (instance or subclass); got {type(module).__name__}.")
        module = module.to(device=device, dtype=_DTYPE)
        values, mask, covariates = self._tensors(data, covariates)
        adapter = self._protocol(module)
        self.log_evidences_, self.n_iter_ = [], 0
        self.posterior_samples_, self.acceptance_rate_ = {}, None
        self._forget_likelihood_free()
        if self.max_iter > 0:
            with seeded_from(generator, device), unchecked_distributions():
                getattr(self, f"_fit_{self.method}")(adapter, values, mask, covariates, generator)
        self.module_ = module.eval()

    def _fit_particle_em(self, adapter, values, mask, covariates, generator):
        from tsgen.inference.smc.particle_em import particle_em

        result = particle_em(
            adapter, values, mask, covariates, n_iter=self.max_iter, n_particles=self.n_particles,
            n_trajectories=self.n_trajectories, m_step_iter=self.m_step_iter, proposal=self.proposal,
            resampling=self.resampling,
        )
        self.log_evidences_ = [float(v) for v in result.log_evidences]
        self.n_iter_ = result.n_iter

    def _fit_fivo(self, adapter, values, mask, covariates, generator):
        from tsgen.inference.smc.filter import particle_filter
        from tsgen.training import SequenceBatch, TrainingConfig, train

        def loss(batch, kl_weight):
            out = particle_filter(
                adapter, batch.values, batch.mask, batch.covariates, n_particles=self.n_particles,
                proposal=self.proposal, resampling=self.resampling, reparameterized=True,
            )
            return -out.log_evidence.sum() / max(1, batch.n_observed)

        batch = SequenceBatch(values, mask, None if covariates is None else covariates[:, : values.shape[1]])
        config = TrainingConfig(max_epochs=self.max_iter, batch_size=len(batch), learning_rate=self.learning_rate,
                                patience=None, progress=False, device=str(values.device))
        history = train(adapter, loss, batch, config=config, generator=generator)
        self.log_evidences_ = [-record["train_loss"] * max(1, batch.n_observed) for record in history]
        self.n_iter_ = len(history)

    def _fit_pmmh(self, adapter, values, mask, covariates, generator):
        from tsgen.inference.smc.pmcmc import pmmh

        module = adapter.model
        priors, current = scalar_priors(module, "pmmh")
        names = list(priors)
        n_warmup = int(round(self.burn_in * self.max_iter))
        n_samples = max(1, self.max_iter - n_warmup)

        def build(theta):
            for name, value in zip(names, theta):
                module.set_constrained(name, value.reshape(current[name].shape))
            return adapter

        result = pmmh(
            build, priors, values, mask, covariates, n_samples=n_samples, n_warmup=n_warmup,
            n_particles=self.n_particles, adapt=n_warmup >= 2 * len(names) + 2,
            initial=torch.stack([current[n].detach().reshape(()) for n in names]).cpu(),
            filter_options={"proposal": self.proposal, "resampling": self.resampling},
        )
        samples = result.samples.detach().cpu()
        self.posterior_samples_ = {name: samples[:, k].numpy().copy() for k, name in enumerate(names)}
        for k, name in enumerate(names):
            # the point estimate that predict/filter use: the posterior mean
            module.set_constrained(name, samples[:, k].mean().reshape(current[name].shape))
        self.acceptance_rate_ = float(result.acceptance_rate)
        self.log_evidences_ = [float(v) for v in result.log_likelihood]
        self.n_iter_ = n_warmup + n_samples

    # ----------------------------------------------------------- likelihood
    def _log_likelihood(self, data, covariates, method="smc", n_particles=None):
        if method != "smc":
            raise ValueError(
                f"`method` must be 'smc' for {type(self).__name__} (a particle filter's one-step densities); got {method!r}."
            )
        values, mask, covariates = self._tensors(data, covariates)
        with self._seeded():
            out, _ = self._filter(self._protocol(), values, mask, covariates, n_particles)
        return out.step_log_likelihood.detach().cpu().double()

    # ------------------------------------------------------------- sampling
    def _sample(self, horizon, n_samples, history, covariates, generator):
        from tsgen.training import seeded_from

        values, mask, covariates = self._tensors(history, covariates)
        adapter = self._protocol()
        device = values.device
        draws = values.new_empty(history.n_series, n_samples, horizon, history.n_dims)
        lengths = history.lengths.to(device)
        with torch.no_grad(), seeded_from(generator, device), unchecked_distributions():
            # series of one length are filtered together, so each ends at its own last step
            for length in torch.unique(history.lengths).tolist():
                rows = torch.nonzero(lengths == length).squeeze(-1)
                rows_cov = None if covariates is None else covariates[rows]
                out, _ = self._filter(adapter, values[rows, :length], mask[rows, :length], rows_cov)
                ancestors = torch.multinomial(torch.softmax(out.log_weights, 0).T, n_samples, replacement=True).T
                state = index_state(out.state, ancestors)
                t = (length + torch.arange(1, horizon + 1, dtype=_DTYPE, device=device)).expand(len(rows), horizon)
                future = None if rows_cov is None else rows_cov[:, length:]
                context = adapter.context_from(t, future, history.n_dims)
                x_prev = values[rows, length - 1].expand(n_samples, len(rows), history.n_dims)
                paths = ancestral_sample(adapter, state, context, 0, horizon, x_prev)  # (n_samples, b, horizon, D)
                draws[rows] = paths.movedim(0, 1).to(draws)
        return draws.cpu()

    # ------------------------------------------------------ filter / smooth
    def _latent_names(self, Z: int) -> list[str]:
        return latent_names(getattr(self.module_, "latent_names", None), Z)

    def _state_input(self, y, X, quantiles):
        return frame_input(self, y, X, quantiles)

    def filter(self, y, X=None, quantiles=(0.05, 0.5, 0.95), n_particles=None, proposal=None):
        """Filtering distributions ``p(z_t | y_1:t)`` by the particle filter.

        ``n_particles`` and ``proposal`` default to the estimator's.

        Returns
        -------
        DataFrame (a list of them for many series)
            Indexed like ``y``: the weighted particle mean and quantiles of each latent
            component (flat columns for one latent, a ``(latent, statistic)`` MultiIndex otherwise).
        """
        batch, covariates, levels = self._state_input(y, X, quantiles)
        values, mask, covariates = self._tensors(batch, covariates)
        with self._seeded():
            out, _ = self._filter(self._protocol(), values, mask, covariates, n_particles, keep="particles",
                                  proposal=proposal)
            means, bands = filtering_summary(out.z, out.log_weights_history, levels)
        return unwrap(batch, latent_frames(batch, means, bands, self._latent_names(means.shape[-1])))

    def smooth(self, y, X=None, quantiles=(0.05, 0.5, 0.95), n_particles=None, n_trajectories=None, proposal=None):
        """Smoothing distributions ``p(z_t | y_1:T)`` by forward filtering, backward simulation (FFBSi).

        ``n_trajectories`` backward draws (default the estimator's
        ``n_trajectories``); the frames are laid out as in :meth:`filter`.
        """
        from tsgen.inference.smc.smoothing import ffbsi

        batch, covariates, levels = self._state_input(y, X, quantiles)
        M = self.n_trajectories if n_trajectories is None else _check_int("n_trajectories", n_trajectories, 1)
        values, mask, covariates = self._tensors(batch, covariates)
        adapter = self._protocol()
        with self._seeded():
            out, context = self._filter(adapter, values, mask, covariates, n_particles, keep="particles",
                                        proposal=proposal)
            means, bands = smoothing_summary(ffbsi(adapter, out, values, mask, context, M), levels)
        return unwrap(batch, latent_frames(batch, means, bands, self._latent_names(means.shape[-1])))

    # ------------------------------------------------------------ save/load
    def _fitted_state(self) -> tuple[dict, dict]:
        meta = {
            "log_evidences": list(self.log_evidences_),
            "n_iter": self.n_iter_,
            "acceptance_rate": self.acceptance_rate_,
            "posterior_parameters": sorted(self.posterior_samples_),
            "likelihood_free": self._likelihood_free_summary(),
        }
        tensors = {f"module.{k}": v.detach().cpu() for k, v in self.module_.state_dict().items()}
        tensors.update({f"posterior.{k}": torch.as_tensor(v) for k, v in self.posterior_samples_.items()})
        return meta, tensors

    def _load_fitted_state(self, meta: dict, tensors: dict) -> None:
        module = self._build_model(None).to(_DTYPE)
        state = {k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")}
        expected = module.state_dict()
        if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
            raise ValueError(f"stored parameters {sorted(state)} do not fit {type(module).__name__}'s {sorted(expected)}")
        if not all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()):
            raise ValueError("stored parameters have NaN or infinite values")
        module.load_state_dict(state)
        log_evidences, n_iter, rate = meta["log_evidences"], meta["n_iter"], meta["acceptance_rate"]
        names = meta["posterior_parameters"]
        if not (isinstance(log_evidences, list) and all(isinstance(v, (int, float)) for v in log_evidences)
                and is_int(n_iter) and n_iter >= 0 and (rate is None or isinstance(rate, (int, float)))
                and isinstance(names, list) and all(f"posterior.{n}" in tensors for n in names)):
            raise ValueError("the stored fit summary is malformed")
        try:
            device = self._device()
        except ValueError:  # saved on a GPU machine, loaded on one without
            device = torch.device("cpu")
        self.module_ = module.to(device).eval()
        self.log_evidences_, self.n_iter_, self.acceptance_rate_ = log_evidences, n_iter, rate
        self.posterior_samples_ = {n: tensors[f"posterior.{n}"].numpy() for n in names}
        # files written before likelihood-free fits were saved have no entry: their fits had none to keep
        self._restore_likelihood_free(meta.get("likelihood_free"))


class StateSpaceForecaster(_StateSpaceEstimator):
    r"""Estimator for a user-written :class:`StateSpaceModel`: fit, filter, smooth, forecast, score.

    Parameters
    ----------
    model : StateSpaceModel instance or subclass
        The model; it is copied, never modified (the fitted copy is ``module_``).
        A subclass is instantiated with ``model_params``.
    model_params : dict or None
        Constructor arguments when ``model`` is a class.
    method : {"particle_em", "pmmh", "fivo", "mmd", "energy", "gan", "abc"}
        How ``fit`` learns the parameters:

        - ``"particle_em"`` (Kantas et al. 2015): ``max_iter`` iterations of an
          E-step by FFBSi trajectories (``n_trajectories`` of them) and an M-step
          of ``m_step_iter`` L-BFGS iterations on the expected complete-data
          log-likelihood;
        - ``"pmmh"``: particle marginal Metropolis-Hastings over the parameters
          that have a prior (``max_iter`` draws, the first ``burn_in`` fraction
          discarded); the fitted model uses the posterior mean, the draws are in
          ``posterior_samples_``;
        - ``"fivo"`` (Maddison et al. 2017): ``max_iter`` Adam epochs (step
          ``learning_rate``) on the particle filter's log-evidence;
        - likelihood-free, for simulators (an implicit emission, see
          :class:`tsgen.components.implicit.ImplicitDistribution`), comparing
          observed and simulated windows of ``window_length`` steps
          (:mod:`tsgen.models._likelihood_free_fit`,
          :mod:`tsgen.inference.likelihood_free`): ``"mmd"`` / ``"energy"``,
          ``max_iter`` Adam steps through the reparameterised simulator on the
          MMD (multi-bandwidth Gaussian kernel, median heuristic) or energy
          distance with ``n_particles`` simulated windows each (consistent
          when the parameters are identifiable from a window's law: windows
          must be long enough to show the dynamics); ``"gan"``, the same
          simulator against a window discriminator (no likelihood, can be
          unstable: check it by ``heldout_mmd_`` and the discriminative
          scores in ``likelihood_free_``); ``"abc"``, an ABC-SMC posterior of
          the parameters that have a prior (few of them), ``n_particles``
          particles, at most ``max_iter`` generations, the distance between
          the windows' means and covariances, approximate at its final
          tolerance (draws in ``posterior_samples_``, the fitted model at
          their mean). A model may define ``window_features(windows)`` to
          compare transformed windows (e.g. ``log y^2`` for volatility).

        ``max_iter=0`` keeps the model's parameters as given.
    n_particles : int
        Particles of every filter run (fit, ``log_likelihood``, ``filter``,
        ``smooth``, forecasts); ``log_likelihood``/``filter``/``smooth`` also
        take it per call.
    proposal : {"bootstrap", "guided", "auxiliary"}
        The filter's proposal; "guided" uses the model's ``proposal``.
    resampling : {"systematic", "stratified", "multinomial", "residual"}
    device : str
        Where the filters run ("cpu", "cuda", "auto").
    random_state : int or None
        Seeds fitting, and every filter run, so results repeat exactly.
    window_length : int or None
        Window of the likelihood-free methods (None: ``min(50, T)``).

    Notes
    -----
    ``log_likelihood(y, per_step=True)`` gives the particle filter's
    one-step predictive densities ``log p_hat(y_t | y_<t)`` (causal by
    construction; their sum is the log of an unbiased estimate of
    ``p(y)``). Forecasts condition on the history by the particle filter,
    then sample the model forward from the filtering particles.
    """

    def __init__(
        self,
        model=None,
        model_params=None,
        method="particle_em",
        max_iter=20,
        n_particles=500,
        n_trajectories=100,
        proposal="bootstrap",
        resampling="systematic",
        learning_rate=0.01,
        m_step_iter=20,
        burn_in=0.2,
        device="cpu",
        random_state=None,
        window_length=None,
    ):
        self.model = model
        self.model_params = model_params
        self.method = method
        self.max_iter = max_iter
        self.n_particles = n_particles
        self.n_trajectories = n_trajectories
        self.proposal = proposal
        self.resampling = resampling
        self.learning_rate = learning_rate
        self.m_step_iter = m_step_iter
        self.burn_in = burn_in
        self.device = device
        self.random_state = random_state
        self.window_length = window_length

    @classmethod
    def get_test_params(cls):
        from tsgen.models.nonlinear_growth import NonlinearGrowthModel
        from tsgen.models.stochastic_volatility import StochasticVolatilityModel

        return [
            {"model": StochasticVolatilityModel, "max_iter": 2, "n_particles": 64, "n_trajectories": 16},
            {"model": NonlinearGrowthModel, "method": "fivo", "max_iter": 3, "n_particles": 16},
        ]

    def _build_model(self, data):
        model = self.model
        if isinstance(model, type) and issubclass(model, StateSpaceModel):
            params = {} if self.model_params is None else self.model_params
            if not isinstance(params, dict):
                raise TypeError(f"`model_params` must be a dict or None; got {type(params).__name__}.")
            return model(**params)
        if isinstance(model, StateSpaceModel):
            if self.model_params is not None:
                raise ValueError("`model_params` applies to a model class; `model` is already an instance.")
            return copy.deepcopy(model)
        raise TypeError(f"`model` must be a tsgen.StateSpaceModel instance or subclass; got {model!r}.")

    # the model argument is an object: saved as its registered class and configuration
    def _to_payload(self):
        model = self.model
        instance = isinstance(model, StateSpaceModel)
        cls = type(model) if instance else model
        config = model.get_config() if instance else self.model_params
        proxy = copy.copy(self)
        proxy.model = {"state_space_model": _class_key(cls), "instance": instance}
        proxy.model_params = config
        return BaseForecaster._to_payload(proxy)

    def _load_fitted_state(self, meta, tensors):
        spec = self.model
        if not (isinstance(spec, dict) and set(spec) == {"state_space_model", "instance"}):
            raise ValueError("the stored `model` is not a state-space model specification")
        cls = _MODEL_CLASSES.get(spec["state_space_model"])
        if cls is None:
            raise ValueError(
                f"the state-space model class {spec['state_space_model']!r} is not defined in this process: "
                "import or define it before calling tsgen.load"
            )
        params = self.model_params if isinstance(self.model_params, dict) else {}
        try:
            rebuilt = cls(**params)
        except TypeError as error:
            raise ValueError(
                f"{cls.__name__} cannot be rebuilt from its stored arguments {params} ({error}); give it a "
                "get_config() that returns its constructor arguments"
            ) from error
        if spec["instance"]:
            self.model, self.model_params = rebuilt, None
        else:
            self.model = cls
        super()._load_fitted_state(meta, tensors)
