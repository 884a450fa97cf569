"""Latent sequence models and the RNN on polyphonic music: test NLL per time step next to the published rows.

Trains every latent model (``tsgen.DeepMarkovModel``, ``VRNN``, ``STORN``,
``SRNN``, ``LSTMSSM``) and ``tsgen.RNNForecaster`` with a Bernoulli emission
over the 88 keys on the training split of a Boulanger-Lewandowski piano-roll
dataset, each for the same budget: a wall-clock budget (``--seconds``, the
estimators' ``max_seconds``: training stops after the epoch that exhausts
it) or a number of epochs (``--epochs``: exactly that many, no clock), then
prints the test
negative log-likelihood per time step, ``sum_i -log p(x_i) / sum_i T_i``
(Krishnan et al.'s convention; SRNN/STORN/FIVO report its negative), by

- IWAE with K = 100 draws of each model's guide (an upper bound on the NLL),
- SMC with N = 100 particles: the guided particle filter where the model's
  proposal reads only ``x_{<=t}``, else the estimator's default
  (``causal_proposal``: the bootstrap filter), named in the table,
- the exact likelihood for the RNN (no latent variables),

beside the independent-Bernoulli baseline (per-key frequencies of the
training split, ignoring time) and the published rows.

Usage::

    python benchmarks/polyphonic.py                       # 60 s per model, all 77 test sequences
    python benchmarks/polyphonic.py --seconds 600 --device cuda
    python benchmarks/polyphonic.py --test-sequences 20   # score a subset (printed as such)
    python benchmarks/polyphonic.py --models dmm,vrnn --seconds 45
    python benchmarks/polyphonic.py --epochs 30 --patience 0   # issue 11's small budget: 30 epochs, batch 20
    python benchmarks/polyphonic.py --models dmm,dmm-nade,rnn,rnn-nade --seconds 300   # issue 12's rows

``dmm-nade``, ``dmm-made``, ``rnn-nade`` and ``rnn-made`` replace the factorised Bernoulli
emission by an autoregressive one over the 88 keys (NADE with RNN-NADE's
conditioning, or MADE; :mod:`tsgen.components.autoregressive`), the rows
of DMM-Aug-NADE (5.118) and RNN-NADE (5.19). They are not in the default
``--models``. Measured on 2 shared CPU cores (load average 10-14, one torch
thread), all 77 test sequences, test NLL per step (IWAE K=100 / SMC N=100 /
exact for the RNNs):

- ``--models dmm,dmm-made,dmm-nade,rnn,rnn-nade --seconds 240``: dmm 8.128 /
  8.186 (78 epochs), dmm-made 6.885 / 6.878 (104 epochs), dmm-nade 10.378 /
  10.370 (16 epochs; NADE's hidden units of every key, rows x 88 x 88, cost
  about 25 times MADE's masked matrix products per epoch on the CPU, and
  scoring took 775 s), rnn 8.969 (217 epochs), rnn-nade 9.898 (9 epochs);
- ``--models dmm-made,rnn-made --seconds 600 --patience 0
  --validation-fraction 0`` (before early stopping): dmm-made 5.817 / 5.830
  (538 epochs), rnn-made 9.211 (634 epochs: the RNN over-fits the 229
  training chorales).

Every row trains with the estimators' own early stopping: ``fit`` holds
out ``--validation-fraction`` (0.1) of the training sequences at random
(``validation_fraction``; 23 chorales), stops after ``--patience`` (200)
epochs without a better held-out loss and keeps the best epoch's weights
(``patience``), all within the ``--seconds``/``--epochs`` budget, which is
then a ceiling. The table prints the epochs run and the epoch whose weights
were kept, the log the held-out loss along the run (``--history FILE``
keeps every epoch's). ``--patience 0`` trains to the budget and keeps the
last weights. With early stopping (``--models dmm-made`` and ``--models
rnn-made`` as two processes at a time, ``--seconds`` 2700-4200, which only
the ``--patience 0`` run used up):

- rnn-made: best epoch 165, 5.841 exact (stopped at 185 epochs with
  ``--patience 20``, 215 with 50; 419-506 s): early stopping removes the
  over-fit (9.211 above). Training NLL 4.38 against 5.94 held out by epoch 215.
- dmm-made: ``--patience 20`` stopped at 241 epochs (best 221, 624 s) with
  6.347 / 6.335; 50 at 347 (best 297, 921 s) with 6.174 / 6.165; 200 at 731
  (best 531, 1726 s) with 5.974 / 5.985. ``--patience 0 --seconds 2700``
  (same hold-out, last weights): 1544 epochs, 5.814 / 5.836, although its
  held-out ELBO had risen from 6.28 (epoch 531) to 6.43. The held-out ELBO (one guide draw per step) stops the DMM at the
  ELBO's optimum, and the IWAE K=100 NLL still improves after it: for the
  latent models, early stopping costs about 0.16 nats here.

Where training lands at these sizes (latent 16, hidden 64): the DMM-MADE's
test NLL is 5.817 after 538 epochs (all 229 chorales) and 5.814 after 1544
(206), and its held-out
ELBO, averaged over 50 epochs, is flat from epoch 550 on (6.388, 6.373,
6.369, 6.373 for epochs 501-700); the RNN-MADE's held-out NLL has its
minimum at epoch 165. Neither reaches the published 5.118 / 5.19 by
training longer: that needs the papers' models (larger networks, NADE's
conditioning; NADE costs about 25 times MADE per epoch on the CPU), which
the CPU budget here does not reach.

Everything is trained and scored through the public estimator API on the
list of ``(T_i, 88)`` arrays a user passes: ``fit(train)`` (wall clock of the
whole call) and ``log_likelihood(test, method=...)``. Only the sizes, the
batch and the budget are set (and the learning rate when ``--learning-rate``
is given); every other setting (the objective, KL annealing, the guide) is
the estimator's default. The default budget keeps
a full run under about 10 minutes on 2 CPU cores, which is far from the
papers' training (hundreds of epochs on a GPU): the figures show where each
model is after the budget, not what it can reach.

The data are read from ``--data-dir`` (default ``../shared/datasets/polyphonic``
beside the repository, whose README gives the source and the papers'
normalisations); JSB Chorales also ships in ``datasets/``.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import tsgen

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets" / "polyphonic"
FILES = {"jsb": "jsb_chorales.npz", "nottingham": "nottingham.npz", "muse": "muse_data.npz", "piano": "piano_midi.npz"}
MODELS = ("dmm", "vrnn", "storn", "srnn", "lstm-ssm", "rnn")
#: the autoregressive emissions over the keys (tsgen.components.autoregressive); run when named in --models
AUTOREGRESSIVE = ("dmm-nade", "dmm-made", "rnn-nade", "rnn-made")
IWAE_SAMPLES = 100
SMC_PARTICLES = 100
#: JSB Chorales, test NLL per time step (nats), as published: (model key, source, value)
PUBLISHED_JSB = [
    ("storn", "STORN (Bayer & Osendorfer 2014)", 6.91),
    ("dmm", "DMM (Krishnan, Shalit & Sontag 2017, Table 3), IWAE", 6.388),
    ("dmm", "DMM (Krishnan, Shalit & Sontag 2017, Table 3), ELBO", 6.926),
    ("rnn", "RNN (as tabulated by Krishnan et al. 2017)", 8.71),
    ("srnn", "SRNN (Fraccaro et al. 2016)*", 4.74),
    ("vrnn", "VRNN trained by FIVO (Maddison et al. 2017, Table 1)", None),
    ("dmm-nade", "DMM-Aug-NADE (Krishnan, Shalit & Sontag 2017, Table 3), IWAE", 5.118),
    ("rnn-nade", "RNN-NADE (Boulanger-Lewandowski et al. 2012)", 5.19),
]
PUBLISHED_NOTES = (
    "* SRNN's release renders the pieces from MIDI on its own time grid (JSB test: 9,396 steps vs 4,725 here),\n"
    "  so its figure is not strictly comparable (../shared/datasets/polyphonic/README.md).\n"
    "  VRNN under FIVO: Maddison et al. (2017), Table 1; not printed because the figure could not be confirmed\n"
    "  from a primary source when this script was written (the FIVO code's README gives none).\n"
    "  LSTMSSM: Zheng et al. (2017) report no polyphonic-music figures."
)



def load_split(path: Path, split: str) -> list[np.ndarray]:
    data = np.load(path, allow_pickle=False)
    rolls, lengths = data[f"{split}_rolls"], data[f"{split}_lengths"]
    return [s.astype(np.float64) for s in np.split(rolls, np.cumsum(lengths)[:-1])]


def dataset_path(name: str, data_dir: Path | None) -> Path:
    if name not in FILES:
        raise SystemExit(f"--dataset must be one of {sorted(FILES)}; got {name!r}.")
    for folder in ([data_dir] if data_dir is not None else [SHARED, ROOT / "datasets"]):
        if (folder / FILES[name]).exists():
            return folder / FILES[name]
    raise SystemExit(f"{FILES[name]} not found in {data_dir or f'{SHARED} or datasets/'}: pass --data-dir.")


def build(name: str, args) -> object:
    """The estimator ``name`` at the benchmark's sizes; everything not set here is the estimator's default."""
    # early stopping as the estimators define it: the loop holds out `validation_fraction` of the training
    # sequences, stops after `patience` epochs without a better held-out loss and keeps the best weights
    common = dict(emission="bernoulli", batch_size=args.batch_size,
                  max_epochs=args.epochs or args.max_epochs, validation_fraction=args.validation_fraction,
                  patience=args.patience or None, max_seconds=args.seconds,
                  random_state=args.seed, device=args.device, progress=False)
    if args.learning_rate is not None:
        common["learning_rate"] = args.learning_rate
    sizes = dict(latent_dim=args.latent_dim, hidden_dim=args.hidden_dim)
    if name == "dmm":
        return tsgen.DeepMarkovModel(**common, **sizes, emission_dim=args.hidden_dim,
                                     transition_dim=args.hidden_dim)
    if name == "vrnn":
        return tsgen.VRNN(**common, **sizes, feature_dim=args.hidden_dim)
    if name == "storn":
        return tsgen.STORN(**common, **sizes, feature_dim=args.hidden_dim)
    if name == "srnn":
        return tsgen.SRNN(**common, **sizes, feature_dim=args.hidden_dim)
    if name == "lstm-ssm":
        return tsgen.LSTMSSM(**common, **sizes, feature_dim=args.hidden_dim)
    if name == "rnn":
        return tsgen.RNNForecaster(**common, hidden_dim=args.hidden_dim)
    if name in AUTOREGRESSIVE:
        # the emission over the 88 keys is autoregressive: NADE (weights shared along the keys, RNN-NADE's
        # biases from the state) or MADE; the DMM's emission MLP and the RNN's state feed it
        common["emission"] = name.split("-")[1]
        if name.startswith("dmm"):
            return tsgen.DeepMarkovModel(**common, **sizes, emission_dim=args.hidden_dim,
                                         transition_dim=args.hidden_dim)
        return tsgen.RNNForecaster(**common, hidden_dim=args.hidden_dim)
    raise SystemExit(f"--models: unknown model {name!r}; expected some of {list(MODELS + AUTOREGRESSIVE)}.")


def describe(name: str, model) -> str:
    """The settings that distinguish a model's row (its training objective and guide)."""
    if name.startswith("rnn"):
        return f"{model.cell}, {model.num_layers} layers, emission={model.emission}"
    parts = [f"objective={model.objective}"]
    if name in AUTOREGRESSIVE:
        parts.append(f"emission={model.emission}")
    if getattr(model, "inference", None) is not None:
        parts.append(f"inference={model.inference}")
    return ", ".join(parts)


def bernoulli_baseline(train: list[np.ndarray], test: list[np.ndarray]) -> float:
    """NLL per step of independent Bernoulli keys at their training frequencies (a model that ignores time)."""
    rolls = np.concatenate(train)
    # add-one smoothing: keys never pressed in training would otherwise give log(0) on test
    p = (rolls.sum(0) + 1.0) / (len(rolls) + 2.0)
    x = np.concatenate(test)
    return float(-(x * np.log(p) + (1 - x) * np.log1p(-p)).sum() / len(x))


def run_model(name: str, args, train, test, test_steps) -> dict:
    model = build(name, args)
    row = {"name": name, "settings": describe(name, model)}
    try:
        started = time.perf_counter()
        model.fit(train)
        row["train_s"] = time.perf_counter() - started
        history = model.training_history_
        row["history"] = history
        row["epochs"] = len(history)
        row["train_loss"] = history[-1]["train_loss"] if history else math.nan
        row.update(best_epoch(history, args))
        started = time.perf_counter()
        if name.startswith("rnn"):
            row["exact"] = -model.log_likelihood(test) / test_steps
        else:
            row["iwae"] = -model.log_likelihood(test, method="iwae", n_samples=IWAE_SAMPLES) / test_steps
            row["proposal"] = getattr(model.module_, "causal_proposal", "guided")
            row["smc"] = -model.log_likelihood(test, method="smc", n_particles=SMC_PARTICLES) / test_steps
        row["eval_s"] = time.perf_counter() - started
    except Exception as error:  # report and go on: one model's failure should not hide the others' rows
        row["error"] = f"{type(error).__name__}: {error}"
    return row


def best_epoch(history: list[dict], args) -> dict:
    """The epoch whose weights the model keeps and why training ended.

    The loop restores the weights of the epoch with the lowest held-out loss
    (training loss without a hold-out) when ``patience`` is set; ``stop``
    says which limit ended training: ``patience``, ``seconds`` or ``epochs``.
    """
    if not history:
        return {"best": None, "best_valid": None, "stop": "-"}
    key = "valid_loss" if history[0]["valid_loss"] is not None else "train_loss"
    # under a partial KL weight the training loss is another objective (the loop skips those epochs too)
    candidates = [h for h in history if key == "valid_loss" or h["kl_weight"] >= 1.0] or history
    best = min(candidates, key=lambda h: h[key])
    last = history[-1]["epoch"]
    if args.patience and last - best["epoch"] >= args.patience:
        stop = "patience"
    elif last >= (args.epochs or args.max_epochs):
        stop = "epochs"
    else:
        stop = "seconds"
    return {"best": best["epoch"] if args.patience else last, "best_valid": best[key], "stop": stop}


def stopping(args) -> str:
    """The early-stopping settings in words, as the caption prints them."""
    if not args.patience:
        return "off (the last epoch's weights)"
    held = (f"{args.validation_fraction:g} of the training sequences held out" if args.validation_fraction
            else "no hold-out (the training loss)")
    return f"{held}, patience {args.patience}, the best epoch's weights kept"


def curve(history: list[dict], points: int = 8) -> str:
    """The held-out loss at a few epochs spread over the run: where training was heading.

    It is the estimator's training loss on the held-out sequences: the
    negative bound per time step for the latent models, the NLL per observed
    key (per step / 88) for the RNN.
    """
    valid = [h for h in history if h["valid_loss"] is not None]
    if not valid:
        return "no hold-out"
    picks = sorted({valid[round(i * (len(valid) - 1) / (points - 1))]["epoch"] for i in range(points)})
    by_epoch = {h["epoch"]: h for h in valid}
    return ", ".join(f"{e}: {by_epoch[e]['valid_loss']:.3f}" for e in picks)


def budget(args) -> str:
    """The training budget in words, as the table's caption prints it."""
    parts = []
    if args.epochs is not None:
        parts.append(f"{args.epochs} epochs")
    if args.seconds is not None:
        parts.append(f"{args.seconds:g} s of training (max_seconds: stops after the epoch that exhausts it)")
    return " or ".join(parts) + ("" if args.seconds is not None else " (no wall-clock limit)")


def published(name: str) -> str:
    """The published JSB figures of model ``name`` (the table's last column)."""
    name = name.replace("-made", "-nade")  # MADE's nearest published row is the NADE one
    values = [value for key, _, value in PUBLISHED_JSB if key == name]
    return " / ".join("n.c." if v is None else f"{v:.3f}" for v in values) or "-"


def fmt(value, width, digits=3) -> str:
    return f"{value:{width}.{digits}f}" if value is not None and not isinstance(value, str) else f"{'-':>{width}s}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 1)[1])
    parser.add_argument("--dataset", default="jsb", help=f"one of {sorted(FILES)}")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated, from {','.join(MODELS + AUTOREGRESSIVE)}")
    parser.add_argument("--seconds", type=float, default=None,
                        help="wall-clock training budget per model (max_seconds; default 60 without --epochs)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="train exactly this many epochs (no wall-clock budget unless --seconds is given)")
    parser.add_argument("--max-epochs", type=int, default=10_000, help="cap on epochs under a --seconds budget")
    parser.add_argument("--validation-fraction", type=float, default=0.1,
                        help="share of the training sequences held out for early stopping (0: none)")
    parser.add_argument("--patience", type=int, default=200,
                        help="stop after this many epochs without a better held-out loss and keep the best "
                             "weights (0: no early stopping, the last weights)")
    parser.add_argument("--history", type=Path, default=None,
                        help="write every model's per-epoch losses to this JSON file")
    parser.add_argument("--test-sequences", type=int, default=0,
                        help="score only the first N test sequences (0: all)")
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--hidden-dim", type=int, default=64, help="recurrent and feature sizes")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=None, help="default: each estimator's own")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        raise SystemExit(f"--epochs must be a positive integer; got {args.epochs}.")
    if not 0 <= args.validation_fraction < 1:
        raise SystemExit(f"--validation-fraction must be in [0, 1); got {args.validation_fraction}.")
    if args.patience < 0:
        raise SystemExit(f"--patience must be 0 (off) or a positive integer; got {args.patience}.")
    if args.seconds is None and args.epochs is None:
        args.seconds = 60.0
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    for name in names:
        if name not in MODELS + AUTOREGRESSIVE:
            raise SystemExit(f"--models: unknown model {name!r}; expected some of {list(MODELS + AUTOREGRESSIVE)}.")

    path = dataset_path(args.dataset, args.data_dir)
    train, test_all = load_split(path, "train"), load_split(path, "test")
    test = test_all[: args.test_sequences] if args.test_sequences > 0 else test_all
    test_steps = sum(len(s) for s in test)
    subset = "all" if len(test) == len(test_all) else f"the first {len(test)} of {len(test_all)}"
    print(f"{args.dataset} ({path}): {len(train)} training sequences ({sum(map(len, train))} steps); scoring "
          f"{subset} test sequences ({test_steps} steps); torch threads {torch.get_num_threads()}, "
          f"device {args.device}")
    print(f"budget per model: {budget(args)}; latent {args.latent_dim}, hidden/feature {args.hidden_dim}, "
          f"batch {args.batch_size}, lr {args.learning_rate or 'default'}, seed {args.seed}; early stopping: "
          f"{stopping(args)}; other settings the estimators' defaults\n")

    rows = []
    for name in names:
        row = run_model(name, args, train, test, test_steps)
        rows.append(row)
        status = row.get("error") or (f"{row['epochs']} epochs in {row['train_s']:.0f} s (stopped by "
                                      f"{row['stop']}; best epoch {row['best']}), scored in {row['eval_s']:.0f} s")
        print(f"  {name}: {status}", flush=True)
        if "history" in row:
            print(f"    held-out loss by epoch (epoch: loss): {curve(row['history'])}", flush=True)
    if args.history is not None:
        args.history.write_text(json.dumps({row["name"]: row.get("history", []) for row in rows}, indent=1))

    baseline = bernoulli_baseline(train, test)
    jsb = args.dataset == "jsb"
    print(f"\ntest NLL per time step (nats; lower is better), {args.dataset}, {subset} test sequences; "
          f"budget {budget(args)}")
    header = (f"{'model':10s}{'settings':44s}{'epochs':>7s}{'best':>6s}{'train s':>8s}{'IWAE K=100':>11s}"
              f"{'SMC N=100':>10s}{'  proposal':10s}{'exact':>8s}" + (f"{'  published':14s}" if jsb else ""))
    print(header)
    print("-" * len(header))
    for row in rows:
        if "error" in row:
            print(f"{row['name']:10s}{row['settings']:44s}  FAILED: {row['error']}")
            continue
        print(f"{row['name']:10s}{row['settings']:44s}{row['epochs']:7d}{row['best']:6d}{row['train_s']:8.0f}"
              f"{fmt(row.get('iwae'), 11)}{fmt(row.get('smc'), 10)}  {row.get('proposal', '-'):8s}"
              f"{fmt(row.get('exact'), 8)}" + (f"  {published(row['name'])}" if jsb else ""))
    print(f"{'bernoulli':10s}{'independent keys, training frequencies':44s}{'':21s}{'':21s}{'':10s}"
          f"{baseline:8.3f}")
    if jsb:
        print("\npublished, JSB Chorales, full test set (4,725 steps here):")
        for _, name, value in PUBLISHED_JSB:
            print(f"  {name:60s}{'not confirmed' if value is None else f'{value:.3f}':>14s}")
        print(PUBLISHED_NOTES)
    else:
        print("published figures: see Krishnan, Shalit & Sontag (2017), Table 3")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
