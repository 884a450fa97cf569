"""Start-up costs a user sees: import, CLI help, and the first ARIMA calls from a cold numba cache.

Each measurement runs in a fresh interpreter, timed by wall clock and by the
CPU time of that process (the CPU time is what compiling costs; the wall
time also counts waiting for a core on a shared machine). ARIMA runs twice:
first with ``NUMBA_CACHE_DIR`` pointing at an empty folder, so its first calls
compile the kernels (what a user pays once after installing tsgen, or after
the kernel module changes), then in a new process reusing the cache just
written (every later session).

    python benchmarks/startup.py --repeat 2
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STAGES = r"""
import json, sys, time
times = {}
def stage(name, fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    times[name] = (time.perf_counter() - wall, time.process_time() - cpu)
    return out
np, pd = stage("import numpy, pandas", lambda: (__import__("numpy"), __import__("pandas")))
frame = pd.read_csv(sys.argv[1])
y = pd.Series(np.log(frame["passengers"].to_numpy(float)), index=pd.PeriodIndex(frame["month"], freq="M"))
tsgen = stage("import tsgen", lambda: __import__("tsgen"))
ARIMA = stage("tsgen.ARIMA (imports torch, sklearn, numba)", lambda: tsgen.ARIMA)
m = stage("first fit, ARIMA(2,1,1)", lambda: ARIMA(order=(2, 1, 1)).fit(y))
stage("first predict(12)", lambda: m.predict(12))
stage("first sample(12, 100)", lambda: m.sample(12, n_samples=100))
stage("first log_likelihood", lambda: m.log_likelihood(y))
stage("second fit, ARIMA(2,1,1)", lambda: ARIMA(order=(2, 1, 1)).fit(y))
stage("first seasonal fit (0,1,1)(0,1,1,12)", lambda: ARIMA(order=(0, 1, 1), seasonal_order=(0, 1, 1, 12)).fit(y))
stage("first automatic fit", lambda: ARIMA(order="auto", seasonal_order="auto", period=12).fit(y))
from numba.core.registry import CPUDispatcher
from tsgen.models import _arima_kernels as kernels
compiled = {n: len(f.overloads) for n, f in vars(kernels).items() if isinstance(f, CPUDispatcher) and f.overloads}
print(json.dumps({"times": times, "compiled": compiled}))
"""


def timed(argv: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run ``argv``; returns the result, its wall time and its CPU time (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return done, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    data = str(ROOT / "datasets" / "airline_passengers.csv")
    print(f"{'':<46} {'wall':>7} {'cpu':>7}")
    for rep in range(args.repeat):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            print(f"--- run {rep + 1}")
            for label, argv in (("python -c pass", ["-c", "pass"]),
                                ("python -c 'import tsgen'", ["-c", "import tsgen"]),
                                ("python -m tsgen.cli --help", ["-m", "tsgen.cli", "--help"])):
                _, wall, cpu = timed([sys.executable, *argv], env)
                print(f"{label:<46} {wall:7.2f} {cpu:7.2f}")
            for label in ("empty numba cache (compiles)", "cache written by the run above"):
                done, wall, cpu = timed([sys.executable, "-c", STAGES, data], env)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"ARIMA process, {label + ':':<31} {wall:7.2f} {cpu:7.2f}")
                for name, (w, c) in result["times"].items():
                    print(f"    {name:<42} {w:7.2f} {c:7.2f}")
            compiled = result["compiled"]
            print(f"    compiled kernels: {len(compiled)} top-level, {sum(compiled.values())} specialisations")


if __name__ == "__main__":
    main()
