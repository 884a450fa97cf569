"""Seconds per training epoch: tsgen's VRNN, STORN, SRNN and LSTMSSM vs Pyro SVI/Trace_ELBO peers, on JSB Chorales.

Each tsgen estimator is trained through its public ``fit`` on the list of
``(T_i, 88)`` piano-roll arrays with a Bernoulli emission, minibatches of 20
sequences, Adam at 1e-3 and the gradient norm clipped at 10; its Pyro peer
is the same generative model and guide at the same sizes (latent 16, hidden
64, feature width 64 by default, and LSTMSSM also at its own default
sizes), written out below with the same cells
(GRU/LSTM), the same one-hidden-layer MLPs (``phi_x``, ``phi_z``, priors,
guides, decoders; scales through ``softplus + 1e-6``), the same inputs
(``u_t = [x_t, 1, 0]``: tsgen's scaled value, observed indicator and log
scale ratio, constant for a Bernoulli emission), and trained by ``SVI`` with
``Trace_ELBO`` (one particle) and ``ClippedAdam`` (lr 1e-3, clip 10).

The Pyro code is written the way Pyro's examples write sequential models
(examples/dmm.py; ``dmm_speed.py`` here): a model and a guide that loop over
time with one ``pyro.sample`` per latent and per observation step inside
``pyro.plate``, and the data-only networks (``phi_x`` of every step, the
recognition / backward RNNs over the whole sequence) run once per sequence
before the loop. A recurrence that reads sampled latents runs in both the
model and the guide, as SVI's model/guide split requires.

- VRNN (Chung et al. 2015): prior ``p(z_t | h_{t-1})``, emission from
  ``[phi_z(z_t), h_{t-1}]``, ``h_t = GRU(h_{t-1}, [phi_x(u_t), phi_z(z_t)])``;
  guide ``q(z_t | phi_x(u_t), h_{t-1})``.
- STORN (Bayer & Osendorfer 2014): ``z_t ~ N(0, I)``,
  ``h_t = GRU(h_{t-1}, [phi_x(u_{t-1}), phi_z(z_t)])``, emission from ``h_t``;
  guide from a forward GRU over ``phi_x(u_{1:t})`` (tsgen's default
  ``inference="filtering"``).
- SRNN (Fraccaro et al. 2016): ``d_t = GRU(d_{t-1}, phi_x(u_{t-1}))``, prior
  ``p(z_t | z_{t-1}, d_t)``, emission from ``[z_t, d_t]``; guide
  ``q(z_t | z_{t-1}, a_t)`` with the prior's mean plus a correction
  ("Resq") and ``a_t`` a backward GRU over ``[d_t, phi_x(u_t)]`` (tsgen's
  default ``inference="smoothing"``).
- LSTMSSM (Zheng et al. 2017): ``h_t = LSTM(h_{t-1}, z_{t-1})``,
  ``z_t ~ N(mu(h_t), sigma^2(h_t))``, emission from ``z_t``; guide
  ``q(z_t | phi_x(u_t), h_t)``. tsgen is timed with its default objective
  and with both ``objective="elbo"`` and ``"pgas"`` (the paper's particle
  Gibbs with ancestor sampling: not an SVI objective, so its Pyro peer is
  still the ELBO), at the issue's sizes and at LSTMSSM's own defaults;
  at the issue's sizes also PGAS's variants (``PGAS_VARIANTS``: the former
  restart-every-minibatch sampler, Metropolis-Hastings ancestor moves).

What is timed: tsgen through ``Estimator(...).fit(list_of_arrays)`` with
``max_epochs = --epochs``: the per-epoch times the training loop records
inside that call (``training_history_``), and beside them the whole call
divided by the epochs (input conversion, module construction and
initialisation included; a small untimed fit first takes the imports out).
Pyro: the time of each epoch's ``svi.step`` calls (batch padding included).
Both sides run in this one process, in ``--rounds`` rounds of a tsgen fit
then as many Pyro epochs (its SVI continues), with torch on ``--threads``
threads (default 1). The machine running this is shared: a single thread on
each side, alternating rounds and the best epoch of each side keep the
comparison fair under load (the epochs another process slowed down are
printed but do not count). The ratio is Pyro's best epoch over tsgen's.
Both peers start the Bernoulli output bias at the keys' base rates, as tsgen
does, so the printed losses are comparable.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/latent_speed.py [--epochs 2 --rounds 2] [--models vrnn,storn,srnn,lstm-ssm]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam
from torch import nn
from torch.nn import functional as F

import tsgen
from _jsb import JSB, load_split, padded_batches

MODELS = ("vrnn", "storn", "srnn", "lstm-ssm")
BATCH = 20
LEARNING_RATE = 1e-3
CLIP = 10.0
#: (latent, hidden, feature width): the issue's sizes; LSTMSSM's own defaults are timed too
SIZES = (16, 64, 64)


# ------------------------------------------------------------------ building blocks of the Pyro peers
def mlp(n_in: int, width: int, n_out: int, final_relu: bool = False) -> nn.Sequential:
    """One hidden ReLU layer, as tsgen's ``MLP(n_in, [width], n_out)``."""
    layers = [nn.Linear(n_in, width), nn.ReLU(), nn.Linear(width, n_out)]
    return nn.Sequential(*layers, nn.ReLU()) if final_relu else nn.Sequential(*layers)


class Gaussian(nn.Module):
    """``N(mu(u), diag sigma^2(u))`` parameters from an MLP, as tsgen's ``DiagonalGaussian``."""

    def __init__(self, n_in: int, width: int, latent: int):
        super().__init__()
        self.net = mlp(n_in, width, 2 * latent)

    def forward(self, features):
        loc, raw = self.net(features).chunk(2, -1)
        return loc, F.softplus(raw) + 1e-6


def normal(loc, scale, mask_t):
    return dist.Normal(loc, scale).to_event(1).mask(mask_t)


def observe(name, logits, x_t, mask_t):
    pyro.sample(name, dist.Bernoulli(logits=logits).to_event(1).mask(mask_t), obs=x_t)


def inputs_of(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """tsgen's ``u_t = [x_t / s_t, 1{observed}, log(s_t / s_0)]`` for a Bernoulli emission (no scale)."""
    observed = mask[..., None].expand_as(values).float()
    return torch.cat([values * observed, observed, torch.zeros_like(values)], -1)


class PyroVRNN(nn.Module):
    def __init__(self, D, Z, H, W):
        super().__init__()
        self.phi_x, self.phi_z = mlp(3 * D, W, W, True), mlp(Z, W, W, True)
        self.rnn = nn.GRUCell(2 * W, H)
        self.prior, self.posterior = Gaussian(H, W, Z), Gaussian(W + H, W, Z)
        self.decoder, self.head = mlp(W + H, W, W, True), nn.Linear(W, D)
        self.H = H

    def model(self, x, u, mask):
        pyro.module("vrnn", self)
        fx = self.phi_x(u)
        h = x.new_zeros(x.shape[0], self.H)
        with pyro.plate("sequences", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                z = pyro.sample(f"z_{t}", normal(*self.prior(h), mask[:, t]))
                fz = self.phi_z(z)
                observe(f"x_{t}", self.head(self.decoder(torch.cat([fz, h], -1))), x[:, t], mask[:, t])
                h = self.rnn(torch.cat([fx[:, t], fz], -1), h)

    def guide(self, x, u, mask):
        pyro.module("vrnn", self)
        fx = self.phi_x(u)
        h = x.new_zeros(x.shape[0], self.H)
        with pyro.plate("sequences", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                z = pyro.sample(f"z_{t}", normal(*self.posterior(torch.cat([fx[:, t], h], -1)), mask[:, t]))
                h = self.rnn(torch.cat([fx[:, t], self.phi_z(z)], -1), h)


class PyroSTORN(nn.Module):
    def __init__(self, D, Z, H, W):
        super().__init__()
        self.phi_x, self.phi_z = mlp(3 * D, W, W, True), mlp(Z, W, W, True)
        self.rnn = nn.GRUCell(2 * W, H)
        self.recognition = nn.GRU(W, H, batch_first=True)
        self.posterior = mlp(H, W, 2 * Z)
        self.decoder, self.head = mlp(H, W, W, True), nn.Linear(W, D)
        self.H, self.Z = H, Z

    def model(self, x, u, mask):
        pyro.module("storn", self)
        previous = F.pad(self.phi_x(u), (0, 0, 1, 0))[:, :-1]  # phi_x(u_{t-1}), zeros at t = 1
        h = x.new_zeros(x.shape[0], self.H)
        loc, scale = x.new_zeros(x.shape[0], self.Z), x.new_ones(x.shape[0], self.Z)
        with pyro.plate("sequences", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                z = pyro.sample(f"z_{t}", normal(loc, scale, mask[:, t]))
                h = self.rnn(torch.cat([previous[:, t], self.phi_z(z)], -1), h)
                observe(f"x_{t}", self.head(self.decoder(h)), x[:, t], mask[:, t])

    def guide(self, x, u, mask):
        pyro.module("storn", self)
        loc, raw = self.posterior(self.recognition(self.phi_x(u))[0]).chunk(2, -1)
        scale = F.softplus(raw) + 1e-6
        with pyro.plate("sequences", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                pyro.sample(f"z_{t}", normal(loc[:, t], scale[:, t], mask[:, t]))


class PyroSRNN(nn.Module):
    def __init__(self, D, Z, H, W):
        super().__init__()
        self.phi_x = mlp(3 * D, W, W, True)
        self.deterministic = nn.GRU(W, H, batch_first=True)
        self.prior = Gaussian(Z + H, W, Z)
        self.backward_rnn = nn.GRU(H + W, H, batch_first=True)
        self.posterior = Gaussian(Z + H, W, Z)
        self.decoder, self.head = mlp(Z + H, W, W, True), nn.Linear(W, D)
        self.Z = Z

    def _d(self, u):
        features = self.phi_x(u)
        return self.deterministic(F.pad(features, (0, 0, 1, 0))[:, :-1])[0], features

    def model(self, x, u, mask):
        pyro.module("srnn", self)
        d, _ = self._d(u)
        z = x.new_zeros(x.shape[0], self.Z)
        with pyro.plate("sequences", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                z = pyro.sample(f"z_{t}", normal(*self.prior(torch.cat([z, d[:, t]], -1)), mask[:, t]))
                observe(f"x_{t}", self.head(self.decoder(torch.cat([z, d[:, t]], -1))), x[:, t], mask[:, t])

    def guide(self, x, u, mask):
        pyro.module("srnn", self)
        d, features = self._d(u)
        a = self.backward_rnn(torch.cat([d, features], -1).flip(1))[0].flip(1)
        z = x.new_zeros(x.shape[0], self.Z)
        with pyro.plate("sequences", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                prior_loc, _ = self.prior(torch.cat([z, d[:, t]], -1))
                correction, scale = self.posterior(torch.cat([z, a[:, t]], -1))
                z = pyro.sample(f"z_{t}", normal(prior_loc + correction, scale, mask[:, t]))


class PyroLSTMSSM(nn.Module):
    def __init__(self, D, Z, H, W):
        super().__init__()
        self.rnn = nn.LSTMCell(Z, H)
        self.prior = Gaussian(H, W, Z)
        self.phi_x = mlp(3 * D, W, W, True)
        self.posterior = Gaussian(W + H, W, Z)
        self.decoder, self.head = mlp(Z, W, W, True), nn.Linear(W, D)
        self.H, self.Z = H, Z

    def model(self, x, u, mask):
        pyro.module("lstm_ssm", self)
        h = c = x.new_zeros(x.shape[0], self.H)
        z = x.new_zeros(x.shape[0], self.Z)
        with pyro.plate("sequences", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                h, c = self.rnn(z, (h, c))
                z = pyro.sample(f"z_{t}", normal(*self.prior(h), mask[:, t]))
                observe(f"x_{t}", self.head(self.decoder(z)), x[:, t], mask[:, t])

    def guide(self, x, u, mask):
        pyro.module("lstm_ssm", self)
        fx = self.phi_x(u)
        h = c = x.new_zeros(x.shape[0], self.H)
        z = x.new_zeros(x.shape[0], self.Z)
        with pyro.plate("sequences", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                h, c = self.rnn(z, (h, c))
                z = pyro.sample(f"z_{t}", normal(*self.posterior(torch.cat([fx[:, t], h], -1)), mask[:, t]))


PYRO = {"vrnn": PyroVRNN, "storn": PyroSTORN, "srnn": PyroSRNN, "lstm-ssm": PyroLSTMSSM}
ESTIMATORS = {"vrnn": "VRNN", "storn": "STORN", "srnn": "SRNN", "lstm-ssm": "LSTMSSM"}


# ------------------------------------------------------------------------------------ the two sides
def base_rate_logits(train) -> torch.Tensor:
    """Logits of the keys' frequencies: tsgen starts a Bernoulli head's bias there, and so do the peers."""
    frequency = torch.from_numpy(np.concatenate(train).mean(0))
    return torch.logit(frequency.clamp(1e-3, 1 - 1e-3))


class PyroSide:
    """One Pyro peer and its SVI, trained epoch by epoch (continued across rounds)."""

    def __init__(self, name, sizes, train, seed):
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        self.net = PYRO[name](train[0].shape[1], *sizes)
        with torch.no_grad():
            self.net.head.bias.copy_(base_rate_logits(train))
        self.svi = SVI(self.net.model, self.net.guide, ClippedAdam({"lr": LEARNING_RATE, "clip_norm": CLIP}),
                       loss=Trace_ELBO())
        self.train, self.rng = train, np.random.default_rng(seed)
        self.steps = sum(len(s) for s in train)

    def epochs(self, n):
        """Seconds of each of ``n`` epochs of ``svi.step`` calls, and the last epoch's -ELBO per step."""
        seconds, loss = [], float("nan")
        for _ in range(n):
            started = time.perf_counter()
            loss = 0.0
            for values, _, mask in padded_batches(self.train, BATCH, self.rng):
                loss += self.svi.step(values, inputs_of(values, mask), mask)
            seconds.append(time.perf_counter() - started)
        return seconds, loss / self.steps


def run_tsgen(name, sizes, train, epochs, seed, objective=None, extra=None):
    """Per-epoch loop seconds recorded inside ``fit``, the whole call over the epochs, and the last
    epoch's training loss."""
    latent, hidden, width = sizes
    options = {} if objective is None else {"objective": objective}
    options.update(extra or {})
    model = getattr(tsgen, ESTIMATORS[name])(
        emission="bernoulli", latent_dim=latent, hidden_dim=hidden, feature_dim=width, batch_size=BATCH,
        learning_rate=LEARNING_RATE, grad_clip=CLIP, max_epochs=epochs, patience=None, validation_fraction=0.0,
        random_state=seed, progress=False, **options,
    )
    started = time.perf_counter()
    model.fit(train)
    whole = (time.perf_counter() - started) / len(model.training_history_)
    history = model.training_history_
    return [h["seconds"] for h in history], whole, history[-1]["train_loss"], model.objective


#: LSTMSSM's PGAS variants timed beside its default (persistent chains, one conditional sweep a visit, the
#: ancestor drawn from every particle's look-ahead): (row label, estimator settings)
PGAS_VARIANTS = (
    # 3 Metropolis-Hastings moves on the reference's ancestor per step: the look-ahead from 4 states, not all
    ("MH-AS k=3", {"ancestor_proposals": 3}),
    # the former default: every minibatch restarts from a bootstrap filter's draw, then 2 conditional sweeps
    ("restart", {"persistent_chains": False, "sweeps": 2}),
)


def configurations(models):
    """(label, model, sizes, tsgen objective or None for the estimator's default, other estimator settings)."""
    for name in models:
        yield f"{ESTIMATORS[name]} {SIZES}", name, SIZES, None, None
        if name == "lstm-ssm":
            # the default objective, then whichever of the ELBO and PGAS (the paper's) it is not
            defaults = tsgen.LSTMSSM()
            others = [objective for objective in ("elbo", "pgas") if objective != defaults.objective]
            for variant, settings in PGAS_VARIANTS:
                yield f"{ESTIMATORS[name]} {SIZES} {variant}", name, SIZES, "pgas", settings
            for sizes in dict.fromkeys([SIZES, (defaults.latent_dim, defaults.hidden_dim, defaults.feature_dim)]):
                if sizes != SIZES:
                    yield f"{ESTIMATORS[name]} {sizes}", name, sizes, None, None
                for objective in others:
                    yield f"{ESTIMATORS[name]} {sizes}", name, sizes, objective, None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(JSB))
    parser.add_argument("--epochs", type=int, default=2, help="epochs per side, model and round")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of tsgen's fit then Pyro's epochs (the best epoch of all counts)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {','.join(MODELS)}")
    parser.add_argument("--max-sequences", type=int, default=None,
                        help="use only the first N training sequences (a quick smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on both sides (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown or args.epochs < 1 or args.rounds < 1:
        parser.error(f"--models must name some of {list(MODELS)} (got {unknown}); --epochs and --rounds >= 1")
    torch.set_num_threads(args.threads)
    train = load_split(args.data, "train")[: args.max_sequences]
    print(f"JSB Chorales: {len(train)} training sequences, {sum(len(s) for s in train)} steps; batch {BATCH}, "
          f"Adam lr {LEARNING_RATE}, clip {CLIP}; torch threads {torch.get_num_threads()} "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); best of {args.rounds} round(s) x "
          f"{args.epochs} epoch(s) per side",
          flush=True)
    print("(the machine is shared: other processes slow some epochs, so each side's best epoch is reported)\n",
          flush=True)
    header = (f"{'model (latent, hidden, width)':40s}{'objective':>10s}{'tsgen s/ep':>12s}{'fit/ep':>9s}"
              f"{'Pyro s/ep':>11s}{'Pyro/tsgen':>12s}{'tsgen loss':>12s}{'Pyro -ELBO':>12s}")
    rows = []
    for label, name, sizes, objective, extra in configurations(models):
        run_tsgen(name, sizes, train[:4], 1, args.seed, objective, extra)  # first-call costs (imports) left out
        peer = PyroSide(name, sizes, train, args.seed)
        t_seconds, wholes, p_seconds = [], [], []
        for _ in range(args.rounds):  # alternating sides, so both meet the same load on a shared machine
            seconds, whole, t_loss, used = run_tsgen(name, sizes, train, args.epochs, args.seed, objective, extra)
            t_seconds += seconds
            wholes.append(whole)
            seconds, p_loss = peer.epochs(args.epochs)
            p_seconds += seconds
        row = (f"{label:40s}{used:>10s}{min(t_seconds):12.2f}{min(wholes):9.2f}{min(p_seconds):11.2f}"
               f"{min(p_seconds) / min(t_seconds):11.2f}x{t_loss:12.3f}{p_loss:12.3f}")
        print(row, f"  [tsgen epochs {', '.join(f'{s:.2f}' for s in t_seconds)}; "
                   f"Pyro {', '.join(f'{s:.2f}' for s in p_seconds)}]", flush=True)
        rows.append(row)
    print()
    print(header)
    print("\n".join(rows))
    print("\ntsgen s/ep: best epoch inside fit; fit/ep: the whole fit call / epochs; Pyro s/ep: best epoch of "
          "svi.step;\nratio from the best epochs (goal >= 2x). Losses per step after the last epoch (tsgen's is its "
          "objective's:\nthe negative ELBO with the analytic KL, or PGAS's complete-data negative log-likelihood).")
    if "lstm-ssm" in models:
        print("\nWhat each LSTMSSM ratio prices. Pyro's side is always SVI with Trace_ELBO (one guide draw per step\n"
              "through model and guide, then backward). tsgen's elbo rows: the same ELBO (like with like). tsgen's\n"
              "pgas rows: particle Gibbs with ancestor sampling, no autograd (16 particles; each step's ancestor\n"
              "weighed by an 8-step LSTM look-ahead), then one gradient step on the complete-data log-likelihood:\n"
              "  pgas (default): persistent chains, each sequence's chain continued by ONE conditional SMC sweep a\n"
              "    visit (its first visit, in epoch 1, also runs a bootstrap filter: later epochs are the steady cost);\n"
              "  MH-AS k=3: the same with 3 Metropolis-Hastings moves on the ancestor (look-ahead from 4 states);\n"
              "  restart: the former default, a bootstrap filter and 2 sweeps at every minibatch.\n"
              "So a pgas row's Pyro/tsgen prices a different, costlier algorithm against Pyro's ELBO.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
