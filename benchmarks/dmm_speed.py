"""Seconds per training epoch: tsgen's DeepMarkovModel vs a Pyro SVI/Trace_ELBO DMM, on JSB Chorales.

Both models have Pyro's example sizes (examples/dmm.py: z 100, emission 100,
transition 200, guide RNN 600 (ReLU), minibatches of 20 sequences), the same
gated transition, combiner, emitter and backward-RNN guide, and Adam with
learning rate 3e-4 (Pyro's). The Pyro reference is written the way Pyro's example
writes it: a model and a guide that loop over time with one ``pyro.sample``
per step inside ``pyro.plate``, a packed RNN, and ``SVI`` with
``Trace_ELBO`` and ``ClippedAdam`` (gradients clipped at 10, as tsgen's
loop clips the norm at 10). tsgen draws the guide with hand-differentiated
scans and then evaluates transition, emission and the analytic KL for all
valid steps in one batched call. The machine's cores matter: tsgen is
compute-bound (its matmuls use every torch thread), Pyro's per-step Python
overhead is not, so compare at the same ``--threads``.

After the same number of epochs both report the test ELBO as NLL per time
step (negative ELBO summed over the test set / total test steps), each with
its own estimator (Pyro: Monte Carlo KL, tsgen: analytic KL; the same
expectation), averaged over ``--eval-samples`` draws.

What is timed: tsgen through its public estimator API, as a user calls it:
``DeepMarkovModel(...).fit(list_of_arrays)`` on the list of ``(T_i, 88)``
piano-roll arrays, wall clock around the whole call (input conversion,
module construction and every epoch) divided by the epochs run; the
training loop's own per-epoch times are printed beside it. Pyro: the time
of each epoch's ``svi.step`` calls (batch padding included). Each side runs
in a fresh Python process (this script starts one per side), so neither
inherits the other's warm caches and first-call costs are counted, as a
user's first fit pays them. The ratio is computed from the two processes
of one invocation.

Usage::

    python benchmarks/dmm_speed.py --epochs 3 [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam
from torch import nn
from torch.nn import functional as F

from _jsb import JSB, load_split, padded_batches
from tsgen.components.inference_networks import reverse_within_lengths
from tsgen.models.dmm import DeepMarkovModel

SIZES = dict(latent_dim=100, emission_dim=100, transition_dim=200, hidden_dim=600)


# --------------------------------------------------------------------- the Pyro reference DMM
class PyroEmitter(nn.Module):
    def __init__(self, input_dim, z_dim, emission_dim):
        super().__init__()
        self.lin_z_to_hidden = nn.Linear(z_dim, emission_dim)
        self.lin_hidden_to_hidden = nn.Linear(emission_dim, emission_dim)
        self.lin_hidden_to_input = nn.Linear(emission_dim, input_dim)

    def forward(self, z_t):
        h1 = F.relu(self.lin_z_to_hidden(z_t))
        h2 = F.relu(self.lin_hidden_to_hidden(h1))
        return torch.sigmoid(self.lin_hidden_to_input(h2))


class PyroGatedTransition(nn.Module):
    def __init__(self, z_dim, transition_dim):
        super().__init__()
        self.lin_gate_z_to_hidden = nn.Linear(z_dim, transition_dim)
        self.lin_gate_hidden_to_z = nn.Linear(transition_dim, z_dim)
        self.lin_proposed_mean_z_to_hidden = nn.Linear(z_dim, transition_dim)
        self.lin_proposed_mean_hidden_to_z = nn.Linear(transition_dim, z_dim)
        self.lin_sig = nn.Linear(z_dim, z_dim)
        self.lin_z_to_loc = nn.Linear(z_dim, z_dim)
        with torch.no_grad():
            self.lin_z_to_loc.weight.copy_(torch.eye(z_dim))
            self.lin_z_to_loc.bias.zero_()

    def forward(self, z_t_1):
        gate = torch.sigmoid(self.lin_gate_hidden_to_z(F.relu(self.lin_gate_z_to_hidden(z_t_1))))
        proposed_mean = self.lin_proposed_mean_hidden_to_z(F.relu(self.lin_proposed_mean_z_to_hidden(z_t_1)))
        loc = (1 - gate) * self.lin_z_to_loc(z_t_1) + gate * proposed_mean
        scale = F.softplus(self.lin_sig(F.relu(proposed_mean)))
        return loc, scale


class PyroCombiner(nn.Module):
    def __init__(self, z_dim, rnn_dim):
        super().__init__()
        self.lin_z_to_hidden = nn.Linear(z_dim, rnn_dim)
        self.lin_hidden_to_loc = nn.Linear(rnn_dim, z_dim)
        self.lin_hidden_to_scale = nn.Linear(rnn_dim, z_dim)

    def forward(self, z_t_1, h_rnn):
        h_combined = 0.5 * (torch.tanh(self.lin_z_to_hidden(z_t_1)) + h_rnn)
        return self.lin_hidden_to_loc(h_combined), F.softplus(self.lin_hidden_to_scale(h_combined))


class PyroDMM(nn.Module):
    """Pyro's examples/dmm.py model and guide (no IAFs), written out for this benchmark."""

    def __init__(self, input_dim=88, z_dim=100, emission_dim=100, transition_dim=200, rnn_dim=600):
        super().__init__()
        self.emitter = PyroEmitter(input_dim, z_dim, emission_dim)
        self.trans = PyroGatedTransition(z_dim, transition_dim)
        self.combiner = PyroCombiner(z_dim, rnn_dim)
        self.rnn = nn.RNN(input_size=input_dim, hidden_size=rnn_dim, nonlinearity="relu", batch_first=True)
        self.z_0 = nn.Parameter(torch.zeros(z_dim))
        self.z_q_0 = nn.Parameter(torch.zeros(z_dim))
        self.h_0 = nn.Parameter(torch.zeros(1, 1, rnn_dim))

    def model(self, batch, reversed_batch, mask, lengths, annealing_factor=1.0):
        pyro.module("dmm", self)
        z_prev = self.z_0.expand(batch.size(0), self.z_0.size(0))
        with pyro.plate("z_minibatch", len(batch)):
            for t in pyro.markov(range(1, batch.size(1) + 1)):
                z_loc, z_scale = self.trans(z_prev)
                with poutine.scale(scale=annealing_factor):
                    z_t = pyro.sample(
                        f"z_{t}", dist.Normal(z_loc, z_scale).mask(mask[:, t - 1 : t]).to_event(1)
                    )
                probs = self.emitter(z_t)
                pyro.sample(
                    f"obs_x_{t}", dist.Bernoulli(probs).mask(mask[:, t - 1 : t]).to_event(1), obs=batch[:, t - 1, :]
                )
                z_prev = z_t

    def guide(self, batch, reversed_batch, mask, lengths, annealing_factor=1.0):
        pyro.module("dmm", self)
        h_0 = self.h_0.expand(1, batch.size(0), self.rnn.hidden_size).contiguous()
        packed = nn.utils.rnn.pack_padded_sequence(reversed_batch, lengths, batch_first=True, enforce_sorted=False)
        rnn_output, _ = self.rnn(packed, h_0)
        rnn_output, _ = nn.utils.rnn.pad_packed_sequence(rnn_output, batch_first=True, total_length=batch.size(1))
        rnn_output = reverse_within_lengths(rnn_output, lengths)
        z_prev = self.z_q_0.expand(batch.size(0), self.z_q_0.size(0))
        with pyro.plate("z_minibatch", len(batch)):
            for t in pyro.markov(range(1, batch.size(1) + 1)):
                z_loc, z_scale = self.combiner(z_prev, rnn_output[:, t - 1, :])
                with poutine.scale(scale=annealing_factor):
                    z_t = pyro.sample(f"z_{t}", dist.Normal(z_loc, z_scale).mask(mask[:, t - 1 : t]).to_event(1))
                z_prev = z_t


def pyro_batches(seqs, batch_size, rng):
    for values, lengths, mask in padded_batches(seqs, batch_size, rng):
        yield values, reverse_within_lengths(values, lengths), mask, lengths


def run_pyro(train, test, epochs, seed, eval_samples, deadline):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    dmm = PyroDMM()
    svi = SVI(dmm.model, dmm.guide, ClippedAdam({"lr": 3e-4, "clip_norm": 10.0}), loss=Trace_ELBO())
    rng = np.random.default_rng(seed)
    n_steps = sum(len(s) for s in train)
    seconds = []
    for epoch in range(epochs):
        started = time.perf_counter()
        loss = sum(svi.step(*batch) for batch in pyro_batches(train, 20, rng))
        seconds.append(time.perf_counter() - started)
        print(f"  pyro  epoch {epoch + 1}: {seconds[-1]:7.2f} s, train -ELBO/step {loss / n_steps:.3f}", flush=True)
        if time.perf_counter() > deadline:
            break
    test_steps = sum(len(s) for s in test)
    with torch.no_grad():
        losses = [sum(svi.evaluate_loss(*b) for b in pyro_batches(test, 20, None)) for _ in range(eval_samples)]
    return seconds, float(np.mean(losses)) / test_steps


def run_tsgen(train, test, epochs, seed, eval_samples):
    """Seconds per epoch of the public ``fit`` (whole call / epochs), and the test -ELBO per step."""
    model = DeepMarkovModel(
        emission="bernoulli", **SIZES, batch_size=20, learning_rate=3e-4, grad_clip=10.0, max_epochs=epochs,
        patience=None, random_state=seed, progress=False,
    )
    started = time.perf_counter()
    model.fit(train)
    fit_seconds = time.perf_counter() - started
    n_epochs = len(model.training_history_)
    for h in model.training_history_:
        print(f"  tsgen epoch {h['epoch']}: loop {h['seconds']:7.2f} s, train -ELBO/step {h['train_loss']:.3f}",
              flush=True)
    print(f"  tsgen fit(list of {len(train)} arrays): {fit_seconds:.2f} s for {n_epochs} epoch(s) "
          f"= {fit_seconds / n_epochs:.2f} s/epoch (whole public call)", flush=True)
    test_steps = sum(len(s) for s in test)
    nll = -model.log_likelihood(test, method="elbo", n_samples=eval_samples) / test_steps
    # each epoch charged its share of the whole call, so the fixed costs of fit are counted
    return [fit_seconds / n_epochs] * n_epochs, nll


def run_side(side: str, args) -> tuple[list[float], float]:
    """Run one side in a fresh Python process; its last stdout line is a JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--only", side, "--data", str(args.data),
               "--epochs", str(args.epochs), "--minutes", str(args.minutes), "--eval-samples",
               str(args.eval_samples), "--seed", str(args.seed)]
    if args.max_sequences:
        command += ["--max-sequences", str(args.max_sequences)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    process = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    lines = process.stdout.rstrip("\n").splitlines()
    print("\n".join(lines[:-1]), flush=True)
    result = json.loads(lines[-1])
    return result["seconds"], result["nll"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=JSB)
    parser.add_argument("--epochs", type=int, default=3, help="epochs for each model (default 3)")
    parser.add_argument("--minutes", type=float, default=6.0, help="stop Pyro's epochs after this budget")
    parser.add_argument("--eval-samples", type=int, default=3)
    parser.add_argument("--max-sequences", type=int, default=None,
                        help="use only the first N training and test sequences (a quick smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--only", choices=["tsgen", "pyro"], default=None,
                        help=argparse.SUPPRESS)  # one side, in the fresh process the parent started
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.only is not None:
        train, test = load_split(args.data, "train"), load_split(args.data, "test")
        train, test = train[: args.max_sequences], test[: args.max_sequences]
        if args.only == "tsgen":
            seconds, nll = run_tsgen(train, test, args.epochs, args.seed, args.eval_samples)
        else:
            seconds, nll = run_pyro(train, test, args.epochs, args.seed, args.eval_samples,
                                    time.perf_counter() + 60 * args.minutes)
        print(json.dumps({"seconds": seconds, "nll": nll}))
        return 0
    lengths = np.load(args.data)["train_lengths"][: args.max_sequences]
    print(f"JSB Chorales: {len(lengths)} training sequences, {int(lengths.sum())} "
          f"steps; torch threads {args.threads or torch.get_num_threads()}; Pyro sizes {SIZES}, batch 20; "
          "each side in a fresh process", flush=True)

    print("tsgen DeepMarkovModel (public fit on the list of arrays):", flush=True)
    t_seconds, t_nll = run_side("tsgen", args)
    print("Pyro SVI/Trace_ELBO DMM:", flush=True)
    args.epochs = len(t_seconds)
    p_seconds, p_nll = run_side("pyro", args)
    # tsgen's figure is its whole fit over its epochs; Pyro ran at most as many epochs (it stops at
    # --minutes), so its mean is over the epochs it ran
    t_mean, p_mean = float(np.mean(t_seconds)), float(np.mean(p_seconds))
    print()
    print(f"{'':28s}{'s/epoch':>10s}{'test -ELBO/step':>18s}")
    print(f"{'tsgen DeepMarkovModel.fit':28s}{t_mean:10.2f}{t_nll:18.3f}   ({len(t_seconds)} epoch(s), whole call)")
    print(f"{'Pyro SVI + Trace_ELBO':28s}{p_mean:10.2f}{p_nll:18.3f}   ({len(p_seconds)} epoch(s))")
    print(f"speed-up (Pyro / tsgen): {p_mean / t_mean:.2f}x per epoch   (goal >= 3x)")
    print("(on a shared machine other processes change epoch times: compare runs made at the same --threads)")
    if len(p_seconds) < len(t_seconds):
        print(f"note: Pyro stopped after {len(p_seconds)} epoch(s) at the --minutes budget; ELBOs are "
              "after different numbers of epochs")
    return 0 if math.isfinite(t_nll) else 1


if __name__ == "__main__":
    raise SystemExit(main())
