"""Deep Markov Model on polyphonic music: test NLL per time step next to the published table.

Trains ``tsgen.DeepMarkovModel`` (Bernoulli emission over 88 keys, Pyro's
example sizes by default) on the training split of a Boulanger-Lewandowski
piano-roll dataset for a wall-clock budget, then prints the test negative
log-likelihood per time step, normalised by the total number of test time
steps (``sum_i -log p(x_i) / sum_i T_i``, Krishnan et al.'s convention),
estimated by IWAE with K=100 and by the ELBO.

Usage::

    python benchmarks/polyphonic.py --dataset jsb --minutes 20
    python benchmarks/polyphonic.py --dataset nottingham --data-dir ../shared/datasets/polyphonic

Everything is timed and scored through the public estimator API on the
list of ``(T_i, 88)`` arrays a user passes: ``fit(train)`` (wall clock of
the whole call) and ``log_likelihood(test, method=...)``; the epoch budget
comes from a timed one-epoch ``fit`` on a few minibatches. Run it as a
fresh process (as below): the figures include first-call costs.

JSB Chorales ships in ``datasets/``; Nottingham, MuseData and Piano-midi.de
must be read from ``--data-dir`` (their licences forbid copying them here).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from tsgen.models.dmm import DeepMarkovModel

ROOT = Path(__file__).resolve().parents[1]
FILES = {"jsb": "jsb_chorales.npz", "nottingham": "nottingham.npz", "muse": "muse_data.npz", "piano": "piano_midi.npz"}
#: Krishnan, Shalit & Sontag (2017), Table 3, JSB Chorales: test NLL per time step (nats)
PUBLISHED_JSB = [
    ("DMM (Krishnan et al. 2017), IWAE", 6.388),
    ("DMM (Krishnan et al. 2017), ELBO", 6.926),
    ("Pyro DMM example, ELBO", 6.87),
    ("RNN", 8.71),
    ("STORN", 6.91),
    ("RNN-NADE", 5.19),
]


def load_split(path: Path, split: str) -> list[np.ndarray]:
    data = np.load(path, allow_pickle=False)
    rolls, lengths = data[f"{split}_rolls"], data[f"{split}_lengths"]
    return [s.astype(np.float64) for s in np.split(rolls, np.cumsum(lengths)[:-1])]


def dataset_path(name: str, data_dir: Path | None) -> Path:
    if name not in FILES:
        raise SystemExit(f"--dataset must be one of {sorted(FILES)}; got {name!r}.")
    if data_dir is None:
        if name != "jsb":
            raise SystemExit(f"--dataset {name} is not shipped with tsgen: pass --data-dir "
                             "(e.g. ../shared/datasets/polyphonic).")
        return ROOT / "datasets" / FILES[name]
    return data_dir / FILES[name]


def seconds_per_epoch(settings: dict, train: list[np.ndarray], n_batches: int = 3) -> float:
    """Seconds per epoch of the public ``fit``, from a one-epoch fit on ``n_batches`` random minibatches
    of sequences (the whole call, so its fixed costs are in the estimate too)."""
    rng = np.random.default_rng(0)
    size = min(len(train), n_batches * settings["batch_size"])
    subset = [train[i] for i in rng.choice(len(train), size, replace=False)]
    started = time.perf_counter()
    DeepMarkovModel(**settings, max_epochs=1).fit(subset)
    return (time.perf_counter() - started) * len(train) / size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="jsb", help=f"one of {sorted(FILES)}")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget in minutes")
    parser.add_argument("--max-epochs", type=int, default=5000)
    parser.add_argument("--inference", default="dks", choices=["dks", "st-l", "st-lr", "mf-lr"])
    parser.add_argument("--iafs", type=int, default=0)
    parser.add_argument("--latent-dim", type=int, default=100)
    parser.add_argument("--emission-dim", type=int, default=100)
    parser.add_argument("--transition-dim", type=int, default=200)
    parser.add_argument("--hidden-dim", type=int, default=600, help="inference RNN size")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--iwae-samples", type=int, default=100)
    parser.add_argument("--elbo-samples", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    path = dataset_path(args.dataset, args.data_dir)
    train, test = load_split(path, "train"), load_split(path, "test")
    test_steps = sum(len(s) for s in test)
    settings = dict(
        emission="bernoulli", latent_dim=args.latent_dim, emission_dim=args.emission_dim,
        transition_dim=args.transition_dim, hidden_dim=args.hidden_dim, inference=args.inference, iafs=args.iafs,
        batch_size=args.batch_size, learning_rate=args.learning_rate, grad_clip=10.0, patience=None,
        random_state=args.seed, device=args.device, progress=False,
    )
    epoch_seconds = seconds_per_epoch(settings, train)
    epochs = int(max(1, min(args.max_epochs, 60 * args.minutes / epoch_seconds)))
    # KL annealing from 0.2 over the first tenth of the expected epochs, as Pyro's example
    # anneals; training stops at the budget (the machine's load may change the epoch time)
    model = DeepMarkovModel(**settings, max_epochs=args.max_epochs, kl_annealing_epochs=max(1, epochs // 10),
                            kl_annealing_start=0.2, max_seconds=60 * args.minutes)
    print(f"{args.dataset}: {len(train)} training sequences ({sum(map(len, train))} steps), {len(test)} test "
          f"sequences ({test_steps} steps); torch threads {torch.get_num_threads()}")
    print(f"estimated {epoch_seconds:.2f} s/epoch -> {epochs} epochs for a {args.minutes:g}-minute budget")
    started = time.perf_counter()
    model.fit(train)  # stops after the epoch that exhausts the budget (max_seconds)
    train_minutes = (time.perf_counter() - started) / 60
    n_epochs = len(model.training_history_)
    print(f"trained {n_epochs:.1f} epochs in {train_minutes:.1f} min (public fit on the list of arrays)")

    started = time.perf_counter()
    nll_iwae = -model.log_likelihood(test, method="iwae", n_samples=args.iwae_samples) / test_steps
    nll_elbo = -model.log_likelihood(test, method="elbo", n_samples=args.elbo_samples) / test_steps
    eval_minutes = (time.perf_counter() - started) / 60
    print(f"evaluation (public log_likelihood on {len(test)} arrays, IWAE and ELBO) took {eval_minutes:.1f} min\n")
    print(f"test NLL per time step (nats; lower is better), {args.dataset}")
    print(f"{'model':44s}{'IWAE K=' + str(args.iwae_samples):>14s}{'ELBO':>10s}")
    label = f"tsgen DMM ({args.inference}, {n_epochs:.0f} epochs, {train_minutes:.0f} min)"
    print(f"{label:44s}{nll_iwae:14.3f}{nll_elbo:10.3f}")
    if args.dataset == "jsb":
        print("published (Krishnan, Shalit & Sontag 2017, Table 3; Pyro examples/dmm.py):")
        for name, value in PUBLISHED_JSB:
            print(f"  {name:42s}{value:14.3f}")
    else:
        print("published figures: see Krishnan, Shalit & Sontag (2017), Table 3")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
