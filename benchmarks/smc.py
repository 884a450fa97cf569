"""Bootstrap particle filters: tsgen versus the `particles` library, Pyro's SMCFilter and plain numpy.

Every filter is the bootstrap filter with N = 10^4 particles, systematic
resampling when the effective sample size falls below N/2 (the default of
all four), on T = 1000 steps of

  lds       x_t = 0.9 x_{t-1} + v_t, y_t = x_t + w_t, v, w ~ N(0, 1),
            x_1 from the stationary law N(0, 1 / (1 - 0.9^2));
            the exact log-evidence comes from the Kalman filter
  kitagawa  the nonlinear growth model (Kitagawa 1996): x_t = x_{t-1}/2 +
            25 x_{t-1}/(1 + x_{t-1}^2) + 8 cos(1.2 t) + v_t, y_t = x_t^2/20 + w_t

on one series and on 100 series at once.

tsgen: the public estimators on pandas input (``LinearGaussianSSM.from_params
(...).log_likelihood(y, method="smc", n_particles=N)`` and the Kitagawa
estimator's ``log_likelihood``), pandas conversion included; the particle
filter kernel (``tsgen.inference.smc.particle_filter`` on ready tensors) is
printed beside it. 100 series: one call on a list of 100 ``pd.Series``.
particles: ``particles.SMC(fk=Bootstrap(ssm=...))`` with the library's own
``kalman.LinearGauss`` and a ``StateSpaceModel`` subclass for the Kitagawa
model. Pyro: ``pyro.infer.SMCFilter`` with a model and a guide that both
draw from the transition (the bootstrap); SMCFilter keeps no evidence, so
the model's step adds the log mean weight of the observation (one
``log_prob`` and a ``logsumexp`` over the particles, inside the timed
region). numpy: a 25-line vectorised bootstrap filter. For 100 series the
peers run in a loop over the first ``--loop-series`` series (all would take
minutes) and are reported per series, after one untimed run that keeps their
imports and first-call costs out; tsgen's one call on all 100 is timed once
(at that size the first call is the steady time).

Beside the wall times: the process's CPU time of the same call (other load
on a shared machine inflates wall times far more than CPU times), ns per
particle-step (the time per series over N x T), and for tsgen the time of
the transition noise alone (T draws of N x B standard normals by
torch.randn in float32, as the models draw them): what random-number
generation costs any torch filter before any arithmetic.

Each (library, case) runs in a fresh process: the time of the first call
(imports done, nothing else warm) and the best of the repeats after it. The
log-evidence column is the mean over those runs and its spread their
standard deviation: against the Kalman value on the LDS (error), and as
the estimate itself on the Kitagawa model, where no exact value exists
(the implementations must agree within their spread).

    OMP_NUM_THREADS=1 python benchmarks/smc.py [--quick] [--loop-series K] [--only lds,kitagawa,lds100,kitagawa100]
                                               [--libraries tsgen,particles,pyro,numpy]

``particles`` is in the ``bench`` extra (``pip install ".[bench]"``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP runtime

import numpy as np

N_PARTICLES = 10_000
N_TIMES = 1000
N_SERIES = 100
ESS_THRESHOLD = 0.5

# LDS: x_t = RHO x_{t-1} + N(0, SIGMA_X^2), y_t = x_t + N(0, SIGMA_Y^2), x_1 stationary
RHO, SIGMA_X, SIGMA_Y = 0.9, 1.0, 1.0
SIGMA_0 = SIGMA_X / math.sqrt(1 - RHO**2)
# Kitagawa: x_1 ~ N(0, KIT_VAR_0), transition noise var KIT_VAR_V, observation noise var KIT_VAR_W
KIT_VAR_0, KIT_VAR_V, KIT_VAR_W = 5.0, 10.0, 1.0


def kitagawa_drift(x: np.ndarray, step: int):
    """Mean of x at 0-based step ``step`` (>= 1) given x at step - 1; the cosine is of the 1-based time."""
    return 0.5 * x + 25.0 * x / (1.0 + x * x) + 8.0 * math.cos(1.2 * (step + 1))


# ----------------------------------------------------------------------------- data
def simulate(model: str, num_series: int, rng: np.random.Generator) -> np.ndarray:
    """``(num_series, N_TIMES)`` observations of ``model``."""
    y = np.empty((num_series, N_TIMES))
    if model == "lds":
        x = rng.normal(scale=SIGMA_0, size=num_series)
        for t in range(N_TIMES):
            if t:
                x = RHO * x + SIGMA_X * rng.normal(size=num_series)
            y[:, t] = x + SIGMA_Y * rng.normal(size=num_series)
    else:
        x = rng.normal(scale=math.sqrt(KIT_VAR_0), size=num_series)
        for t in range(N_TIMES):
            if t:
                x = kitagawa_drift(x, t) + math.sqrt(KIT_VAR_V) * rng.normal(size=num_series)
            y[:, t] = x * x / 20.0 + math.sqrt(KIT_VAR_W) * rng.normal(size=num_series)
    return y


def case_data(case: str) -> tuple[str, np.ndarray]:
    model = case.removesuffix("100")
    num_series = N_SERIES if case.endswith("100") else 1
    rng = np.random.default_rng({"lds": 0, "kitagawa": 1}[model])
    return model, simulate(model, num_series, rng)


def as_pandas(values: np.ndarray):
    import pandas as pd

    index = pd.date_range("2000-01-01", periods=values.shape[1], freq="D")
    series = [pd.Series(v, index=index.copy(), name="y") for v in values]
    return series[0] if len(series) == 1 else series


def kalman_log_evidence(values: np.ndarray) -> np.ndarray:
    """Exact log p(y) per series by tsgen's Kalman filter (checked against statsmodels in benchmarks/kalman.py)."""
    import tsgen

    model = tsgen.LinearGaussianSSM.from_params(**lds_params())
    return np.array([model.log_likelihood(as_pandas(v[None])) for v in values])


def lds_params() -> dict:
    return {
        "transition_matrices": [[RHO]], "observation_matrices": [[1.0]],
        "transition_covariance": [[SIGMA_X**2]], "observation_covariance": [[SIGMA_Y**2]],
        "initial_state_mean": [0.0], "initial_state_covariance": [[SIGMA_0**2]],
    }


# ----------------------------------------------------------------------------- plain numpy
def numpy_filter(y: np.ndarray, model: str, rng: np.random.Generator) -> float:
    """Bootstrap filter for one series, vectorised over particles; returns the log-evidence estimate."""
    n = N_PARTICLES
    if model == "lds":
        x = rng.normal(scale=SIGMA_0, size=n)
    else:
        x = rng.normal(scale=math.sqrt(KIT_VAR_0), size=n)
    log_w = np.full(n, -math.log(n))  # normalised
    total = 0.0
    for t in range(N_TIMES):
        if t:
            w = np.exp(log_w)
            if 1.0 / np.dot(w, w) < ESS_THRESHOLD * n:
                cdf = np.cumsum(w)
                cdf[-1] = 1.0
                x = x[np.searchsorted(cdf, (rng.random() + np.arange(n)) / n)]
                log_w = np.full(n, -math.log(n))
            if model == "lds":
                x = RHO * x + SIGMA_X * rng.normal(size=n)
            else:
                x = kitagawa_drift(x, t) + math.sqrt(KIT_VAR_V) * rng.normal(size=n)
        if model == "lds":
            resid, var = (y[t] - x), SIGMA_Y**2
        else:
            resid, var = (y[t] - x * x / 20.0), KIT_VAR_W
        log_w = log_w - 0.5 * (resid * resid / var + math.log(2 * math.pi * var))
        top = log_w.max()
        increment = top + math.log(np.exp(log_w - top).sum())
        total += increment
        log_w -= increment
    return total


# ----------------------------------------------------------------------------- particles
def particles_filter(y: np.ndarray, model: str) -> float:
    import particles
    from particles import distributions as dists
    from particles import kalman
    from particles import state_space_models as ssms

    if model == "lds":
        ssm = kalman.LinearGauss(rho=RHO, sigmaX=SIGMA_X, sigmaY=SIGMA_Y, sigma0=SIGMA_0)
    else:
        class Kitagawa(ssms.StateSpaceModel):
            def PX0(self):
                return dists.Normal(scale=math.sqrt(KIT_VAR_0))

            def PX(self, t, xp):
                return dists.Normal(loc=kitagawa_drift(xp, t), scale=math.sqrt(KIT_VAR_V))

            def PY(self, t, xp, x):
                return dists.Normal(loc=x * x / 20.0, scale=math.sqrt(KIT_VAR_W))

        ssm = Kitagawa()
    fk = ssms.Bootstrap(ssm=ssm, data=list(y))
    alg = particles.SMC(fk=fk, N=N_PARTICLES, resampling="systematic", ESSrmin=ESS_THRESHOLD,
                        store_history=False, collect=None, verbose=False)
    alg.run()
    return float(alg.logLt)


# ----------------------------------------------------------------------------- Pyro
def pyro_filter(y: np.ndarray, model: str) -> float:
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.infer import SMCFilter

    def transition(x, t):
        if model == "lds":
            return dist.Normal(RHO * x, SIGMA_X)
        drift = 0.5 * x + 25.0 * x / (1.0 + x * x) + 8.0 * math.cos(1.2 * (t + 1))
        return dist.Normal(drift, math.sqrt(KIT_VAR_V))

    def emission(x):
        if model == "lds":
            return dist.Normal(x, SIGMA_Y)
        return dist.Normal(x * x / 20.0, math.sqrt(KIT_VAR_W))

    initial = dist.Normal(0.0, SIGMA_0 if model == "lds" else math.sqrt(KIT_VAR_0))

    class Model:
        log_evidence = 0.0

        def init(self, state):
            state["x"] = pyro.sample("x_init", initial.expand([N_PARTICLES]).to_event(0))

        def step(self, state, y_t, t):
            if t:
                state["x"] = pyro.sample("x", transition(state["x"], t))
            obs = emission(state["x"])
            # SMCFilter keeps only max-shifted weights: the evidence increment is
            # log sum_i W_i g(y_t | x_i) with W the weights before this step
            prior = state._log_weights
            self.log_evidence += float(torch.logsumexp(prior + obs.log_prob(y_t), 0) - torch.logsumexp(prior, 0))
            pyro.sample("y", obs, obs=y_t)

    class Guide:
        def init(self, state):
            pyro.sample("x_init", initial.expand([N_PARTICLES]).to_event(0))

        def step(self, state, y_t, t):
            if t:
                pyro.sample("x", transition(state["x"], t))

    # float64 as the other filters; in float32 SMCFilter's systematic resampler can
    # index one past the last particle (the cumulative weights fall short of 1)
    torch.set_default_dtype(torch.float64)
    smc_model = Model()
    smc = SMCFilter(smc_model, Guide(), num_particles=N_PARTICLES, max_plate_nesting=0, ess_threshold=ESS_THRESHOLD)
    values = torch.tensor(y, dtype=torch.float64)
    with torch.no_grad():
        smc.init()
        for t in range(N_TIMES):
            smc.step(values[t], t)
    return smc_model.log_evidence


# ----------------------------------------------------------------------------- tsgen
def tsgen_estimator(model: str, y, seed: int):
    """The public estimator with the benchmark's fixed parameters (built outside the timed region)."""
    import tsgen

    if model == "lds":
        return tsgen.LinearGaussianSSM.from_params(random_state=seed, **lds_params())
    from tsgen.models.nonlinear_growth import NonlinearGrowth

    # max_iter=0: no fitting, the given variances are the model
    return NonlinearGrowth(process_variance=KIT_VAR_V, observation_variance=KIT_VAR_W, initial_variance=KIT_VAR_0,
                           max_iter=0, n_particles=N_PARTICLES, random_state=seed).fit(y)


def tsgen_kernel(values: np.ndarray, model: str):
    """The particle filter on ready tensors (no pandas, no estimator): a closure to time."""
    import torch

    from tsgen.inference.smc.filter import particle_filter

    if model == "lds":
        from tsgen.inference.kalman import KalmanParams
        from tsgen.models._lds_protocol import LinearGaussianModule

        params = lds_params()
        module = LinearGaussianModule(KalmanParams(*(torch.tensor(params[n], dtype=torch.float64) for n in (
            "transition_matrices", "observation_matrices", "transition_covariance",
            "observation_covariance", "initial_state_mean", "initial_state_covariance"))))
    else:
        from tsgen.models.nonlinear_growth import NonlinearGrowthModel
        from tsgen.models.state_space import StateSpaceProtocol

        module = StateSpaceProtocol(NonlinearGrowthModel(KIT_VAR_V, KIT_VAR_W, KIT_VAR_0).double())
    tensor = torch.tensor(values, dtype=torch.float64)[..., None]
    mask = torch.ones_like(tensor, dtype=torch.bool)

    def run() -> float:
        # as the estimators run it: no autograd, no distribution argument checks
        validate = torch.distributions.Distribution._validate_args
        torch.distributions.Distribution.set_default_validate_args(False)
        try:
            with torch.no_grad():
                return float(particle_filter(module, tensor, mask, n_particles=N_PARTICLES).log_evidence.sum())
        finally:
            torch.distributions.Distribution.set_default_validate_args(validate)

    return run


def normal_draws(num_series: int) -> None:
    """The transition noise alone: one (N, B, 1) float32 standard-normal draw per step, as the filter's
    models make it (the floor no fusion of the other arithmetic removes)."""
    import torch

    for _ in range(N_TIMES):
        torch.randn((N_PARTICLES, num_series, 1))


# ----------------------------------------------------------------------------- one case
#: CPU seconds of this process in the last call of `timed` (best of the repeats): on a machine shared with
#: other work the wall time counts their load, the process's CPU time much less so
LAST_CPU: list[float] = [float("nan")]


def timed(fn, repeats: int) -> tuple[float, float, list[float]]:
    """Time of the first call, best of ``repeats`` further calls, and every call's result (CPU time of the
    best call in ``LAST_CPU[0]``)."""
    start, cpu = time.perf_counter(), time.process_time()
    results = [fn()]
    first = time.perf_counter() - start
    best, best_cpu = float("inf"), time.process_time() - cpu
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        results.append(fn())
        elapsed = time.perf_counter() - start
        if elapsed < best:
            best, best_cpu = elapsed, time.process_time() - cpu
    LAST_CPU[0] = best_cpu
    return first, (best if repeats else first), results


def run_case(library: str, case: str, repeats: int, loop_series: int) -> dict:
    """One library on one case, in this (fresh) process."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model, values = case_data(case)
    batched = len(values) > 1
    if batched:
        repeats = 0  # one call on 100 series runs long enough that a first call is its steady time
    out: dict = {"n_series": len(values)}
    if library == "tsgen":
        y = as_pandas(values)
        estimators = iter([tsgen_estimator(model, y, seed) for seed in range(repeats + 1)])
        if batched:
            # per_step=True takes the same route as the total (the filter's one-step terms) and keeps
            # the series apart, so that they can be compared with the peers' series one by one
            def run():
                steps = next(estimators).log_likelihood(y, per_step=True, method="smc", n_particles=N_PARTICLES)
                return [float(s.sum()) for s in steps]

            out["first"], out["best"], (estimates,) = timed(run, repeats)
            out["estimates"], out["per_series_estimates"] = [float(np.sum(estimates))], estimates
        else:
            run = lambda: float(next(estimators).log_likelihood(y, method="smc", n_particles=N_PARTICLES))  # noqa: E731
            out["first"], out["best"], out["estimates"] = timed(run, repeats)
        out["cpu"] = LAST_CPU[0]
        torch.manual_seed(0)
        _, out["kernel"], _ = timed(tsgen_kernel(values, model), repeats)
        _, out["rng"], _ = timed(lambda: normal_draws(len(values)), repeats)
        return out
    run = {
        "numpy": lambda v, k: numpy_filter(v, model, np.random.default_rng(k)),
        "particles": lambda v, k: particles_filter(v, model),
        "pyro": lambda v, k: pyro_filter(v, model),
    }[library]
    if library == "particles":
        np.random.seed(0)  # particles draws from numpy's global generator
    if library == "pyro":
        torch.manual_seed(0)
    if batched:
        # a loop over the first `loop_series` series, reported per series and scaled to all of them
        chosen = values[:loop_series]
        # one untimed run first: the imports and first-call costs stay out of the loop, as tsgen's do
        # (its estimator is built before the clock starts)
        run(values[-1], len(values))
        start, cpu = time.perf_counter(), time.process_time()
        estimates = [run(v, k) for k, v in enumerate(chosen)]
        elapsed = time.perf_counter() - start
        out["first"] = out["best"] = elapsed * len(values) / len(chosen)
        out["cpu"] = (time.process_time() - cpu) * len(values) / len(chosen)
        out["looped"] = len(chosen)
        out["estimates"] = [float(np.sum(estimates) * len(values) / len(chosen))]
        out["per_series_estimates"] = estimates
        return out
    counter = iter(range(1000))
    out["first"], out["best"], out["estimates"] = timed(lambda: run(values[0], next(counter)), repeats)
    out["cpu"] = LAST_CPU[0]
    return out


# ----------------------------------------------------------------------------- report
LIBRARIES = ["tsgen", "particles", "pyro", "numpy"]
CASES = {
    "lds": "LDS 1-D, 1 series x T=1000",
    "kitagawa": "Kitagawa, 1 series x T=1000",
    "lds100": "LDS 1-D, 100 series x T=1000",
    "kitagawa100": "Kitagawa, 100 series x T=1000",
}


def evidence_columns(case: str, result: dict, exact: dict, loop_series: int) -> str:
    """Log-evidence columns: error against Kalman (LDS) or the estimate (Kitagawa), mean and spread.

    One series: over the repeated runs. 100 series: over series, one run each; the Kitagawa
    estimates over the first ``loop_series`` series only (the peers' loop), so that all rows
    average the same series.
    """
    model = case.removesuffix("100")
    if "per_series_estimates" not in result:
        est = np.asarray(result["estimates"])
        values = est - exact[case][0] if model == "lds" else est
        note = ""
    else:
        est = np.asarray(result["per_series_estimates"])
        k = len(est) if model == "lds" else min(len(est), loop_series)
        values = est[:k] - exact[case][:k] if model == "lds" else est[:k]
        note = f"  over {k} series"
    spread = values.std(ddof=1) if len(values) > 1 else float("nan")
    return (f"{values.mean():+9.2f}" if model == "lds" else f"{values.mean():9.1f}") + f" {spread:7.2f}{note}"


def main() -> None:
    argv = sys.argv[1:]
    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return
    quick = "--quick" in argv
    repeats = 1 if quick else 3
    loop_series = int(argv[argv.index("--loop-series") + 1]) if "--loop-series" in argv else (2 if quick else 5)
    if "--case" in argv:
        library, case = argv[argv.index("--case") + 1].split(":")
        print(json.dumps(run_case(library, case, repeats, loop_series)))
        return
    cases = argv[argv.index("--only") + 1].split(",") if "--only" in argv else list(CASES)
    libraries = argv[argv.index("--libraries") + 1].split(",") if "--libraries" in argv else LIBRARIES
    import torch

    exact = {c: kalman_log_evidence(case_data(c)[1]) for c in cases if c.startswith("lds")}
    print(
        f"torch {torch.__version__}, numpy {np.__version__}, {os.cpu_count()} cores, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS')}; N={N_PARTICLES}, T={N_TIMES}, systematic resampling at "
        f"ESS < N/2; each (library, case) in a fresh process, best of {repeats} after a first call"
    )
    for case in cases:
        rows = {}
        for library in libraries:
            command = [sys.executable, __file__, "--case", f"{library}:{case}", "--loop-series", str(loop_series)]
            done = subprocess.run(command + (["--quick"] if quick else []), capture_output=True, text=True)
            if done.returncode:
                reason = (done.stderr.strip().splitlines() or ["failed"])[-1]
                rows[library] = reason
                continue
            rows[library] = json.loads(done.stdout.strip().splitlines()[-1])
        header = "log-ev error    sd" if case.startswith("lds") else "  log-ev    sd"
        print(f"\n{CASES[case]}" + (f" (exact log-evidence {exact[case].sum():.2f})" if case in exact else ""))
        print(f"  {'library':10s} {'s/series':>9s} {'cpu s':>7s} {'ns/pstep':>8s} {'first':>8s} {'kernel':>8s} "
              f"{'noise':>7s} {'vs particles':>12s} {'(cpu)':>6s} {header}")
        reference = rows.get("particles")
        for library, r in rows.items():
            if isinstance(r, str):
                print(f"  {library:10s} not run: {r}")
                continue
            per_series = r["best"] / r["n_series"]
            kernel = r.get("kernel")
            kernel_text = f"{kernel / r['n_series']:7.3f}s" if kernel else f"{'-':>8s}"
            ratio = f"{reference['best'] / r['best']:11.1f}x" if isinstance(reference, dict) else f"{'-':>12s}"
            cpu_ratio = f"{reference['cpu'] / r['cpu']:5.1f}x" if isinstance(reference, dict) else f"{'-':>6s}"
            first = f"{r['first'] / r['n_series']:7.3f}s" if "looped" not in r else f"{'-':>8s}"
            evidence = evidence_columns(case, r, exact, loop_series)
            per_step = per_series / (N_PARTICLES * N_TIMES) * 1e9
            noise = f"{r['rng'] / r['n_series']:6.3f}s" if "rng" in r else f"{'-':>7s}"
            cpu = r["cpu"] / r["n_series"]
            print(f"  {library:10s} {per_series:8.3f}s {cpu:6.3f}s {per_step:8.1f} {first} {kernel_text} {noise} "
                  f"{ratio} {cpu_ratio} {evidence}")
    print(
        "\ns/series = best wall time / number of series (peers on 100 series: a loop over the first"
        f" {loop_series}, scaled); cpu s = this process's CPU time in that call, per series (less sensitive"
        " to other load on the machine);\nvs particles = particles' time / this library's time (> 1: faster),"
        " (cpu) the same on CPU times;"
        "\nkernel = tsgen's particle_filter on ready tensors; sd = spread over repeated runs (1 series) or"
        " over series (100 series);\nns/pstep = s/series per particle-step (N x T); noise = drawing the"
        " transition's N x B standard normals alone (torch.randn, float32), per series: a floor for any torch filter."
    )


if __name__ == "__main__":
    main()
