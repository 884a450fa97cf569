"""Automatic ARIMA order selection (Hyndman & Khandakar 2008, R's ``auto.arima``), batched.

1. ``D``: seasonal differencing when the seasonal strength of an STL
   decomposition, ``max(0, 1 - Var(R) / Var(S + R))``, exceeds 0.64 (R's
   ``nsdiffs(test="seas")``).
2. ``d``: difference while the KPSS level-stationarity test rejects at 5%
   (statistic > 0.463, Newey-West long-run variance with
   ``floor(3 sqrt(n) / 13)`` lags, as R's ``ndiffs`` and statsforecast).
3. Stepwise search by AICc: four starting models, then repeatedly the
   neighbours (each of p, q, P, Q by +-1, (p, q) and (P, Q) jointly by +-1,
   the constant toggled) of each series' ``BEAM`` = 2 best models so far,
   until those have all been expanded. R expands the best model only; the
   second one costs little here (every round is one batched fit) and finds
   the lower-AICc model where the two paths part (97% of the benchmark
   series no worse than statsforecast's AutoARIMA, against 90%). Models with
   an AR or MA root within 1.01 of the unit circle are rejected; a fit
   rejected only for its MA roots is replaced by the same fit with those
   roots pushed out to 1.02, scored exactly (see :func:`_admissible`).
   Each series searches within R's bounds for its length n (p, q <= n/3,
   P, Q <= n/(3s): a lag the data barely cover cannot be estimated), and the
   parts of the order the user fixed are kept as given.

All series that share (d, D) run one search together: each round collects
every series' untried neighbours, groups them by order, and fits each
order once for all series that want it (:func:`fit_spec` is batched).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from tsgen.models._arima_fit import FitResult, check_identifiable, difference, fit_spec, regressors
from tsgen.models._arima_spec import ArimaSpec
from tsgen.models._arima_start import hannan_rissanen
from tsgen.models._arima_statespace import lag_polynomial

KPSS_CRITICAL_5PCT = 0.463
#: exact Riccati steps before the gain is frozen while ranking candidates
SEARCH_TRANSIENT = 40
#: BFGS iterations per candidate while ranking (winners are refitted with max_iter)
SEARCH_MAX_ITER = 40
SEASONAL_STRENGTH_THRESHOLD = 0.64
#: the stepwise search expands the neighbours of each series' BEAM best models, not only of the best
BEAM = 2


@dataclass(frozen=True)
class AutoOptions:
    order: tuple | None  # fixed (p, d, q) or None to search
    seasonal_order: tuple | None  # fixed (P, D, Q, s) or None to search with `period`
    period: int
    trend: str | None
    max_p: int = 5
    max_q: int = 5
    max_P: int = 2
    max_Q: int = 2
    max_d: int = 2
    max_D: int = 1
    max_order: int = 5
    max_iter: int = 200


# ----------------------------------------------------------------- unit roots
def kpss_statistic(x: np.ndarray, n_lags: int | None = None) -> float:
    """KPSS level-stationarity statistic ``sum_t S_t^2 / (n^2 lambda^2)``.

    ``S_t`` are partial sums of ``x - mean(x)`` and ``lambda^2`` the Newey-West
    long-run variance with Bartlett weights ``1 - j/(L+1)``.
    """
    n = len(x)
    if n_lags is None:
        n_lags = int(math.floor(3.0 * math.sqrt(n) / 13.0))
    e = x - x.mean()
    s = np.cumsum(e)
    lrv = e @ e / n
    for j in range(1, min(n_lags, n - 1) + 1):
        lrv += 2.0 * (1.0 - j / (n_lags + 1.0)) * (e[j:] @ e[:-j]) / n
    if lrv <= 0:
        return 0.0
    return float(s @ s / (n * n * lrv))


def seasonal_strength(x: np.ndarray, period: int) -> float:
    """``max(0, 1 - Var(remainder) / Var(seasonal + remainder))`` of a robust STL."""
    from statsmodels.tsa.seasonal import STL

    result = STL(x, period=period, robust=True).fit()
    resid = result.resid
    denom = np.var(result.seasonal + resid, ddof=1)
    return 0.0 if denom <= 0 else max(0.0, 1.0 - np.var(resid, ddof=1) / denom)


def _observed(y: Tensor, length: int) -> np.ndarray:
    x = y[:length].numpy()
    return x[np.isfinite(x)]


def choose_D(x: np.ndarray, period: int, max_D: int) -> int:
    if max_D < 1 or period < 2 or len(x) < 2 * period + 2 or np.ptp(x) == 0:
        return 0
    return int(seasonal_strength(x, period) > SEASONAL_STRENGTH_THRESHOLD)


def choose_d(x: np.ndarray, max_d: int) -> int:
    d = 0
    while d < max_d and len(x) > 3 and np.ptp(x) > 0 and kpss_statistic(x) > KPSS_CRITICAL_5PCT:
        x = np.diff(x)
        d += 1
    return d


# ----------------------------------------------------------------- search
def _roots_ok(spec: ArimaSpec, params: Tensor) -> Tensor:
    """False where an AR or MA polynomial has a root with modulus below 1.01."""
    b = spec.blocks
    ok = torch.ones(params.shape[0], dtype=torch.bool)
    polys = [
        (lag_polynomial(params[:, b["ar"]], params[:, b["sar"]], spec.s, -1.0), -1.0),
        (lag_polynomial(params[:, b["ma"]], params[:, b["sma"]], spec.s, 1.0), 1.0),
    ]
    for coef, sign in polys:
        if coef.shape[-1] == 0:
            continue
        for i, c in enumerate(coef.numpy()):
            poly = np.concatenate([[1.0], sign * c])[::-1]  # highest power first
            nz = np.flatnonzero(np.abs(poly) > 0)
            poly = poly[nz[0]:] if nz.size else poly
            if len(poly) > 1 and np.min(np.abs(np.roots(poly))) < 1.01:
                ok[i] = False
    return ok


#: MA roots inside this radius are pushed out to it when a fit is rejected (see _admissible)
PROJECTED_MA_RADIUS = 1.02


def _push_roots_out(coef: np.ndarray, radius: float) -> np.ndarray:
    """Coefficients ``c`` of ``1 + sum_j c_j z^j`` with every root inside ``radius``
    moved radially onto it (the others kept)."""
    poly = np.concatenate([[1.0], coef])
    nz = np.flatnonzero(np.abs(poly) > 0)
    roots = np.roots(poly[: nz[-1] + 1][::-1])
    if roots.size == 0:
        return coef.copy()
    mod = np.abs(roots)
    roots = np.where(mod < radius, roots * radius / np.maximum(mod, 1e-12), roots)
    # prod_i (1 - z / r_i): ascending coefficients are np.poly(1 / r_i)
    out = np.zeros_like(coef)
    out[: roots.size] = np.real(np.poly(1.0 / roots))[1:]
    return out


def _admissible(spec: ArimaSpec, params: Tensor) -> Tensor:
    """``params`` with the MA and seasonal MA roots pushed out to PROJECTED_MA_RADIUS.

    Why: exact ML of an over-differenced series piles its MA roots up at the
    unit circle, which the search rejects, so whole MA branches (e.g. every
    (p, 2, q > 0) of an I(1) series with d = 2) would be unreachable. The
    projected point is an admissible model whose likelihood is then evaluated
    exactly; R/statsforecast reach similar points because their optimiser
    stops short of the boundary.
    """
    b = spec.blocks
    out = params.clone()
    for name, radius in (("ma", PROJECTED_MA_RADIUS), ("sma", PROJECTED_MA_RADIUS ** max(spec.s, 1))):
        block = b[name]
        if block.stop == block.start:
            continue
        coef = params[:, block].numpy()
        out[:, block] = torch.as_tensor(np.stack([_push_roots_out(c, radius) for c in coef]), dtype=params.dtype)
    return out


def series_options(opts: AutoOptions, n_observed: int, s: int) -> AutoOptions:
    """``opts`` with the search bounds of one series of ``n_observed`` values (R's
    ``auto.arima``): p, q <= n / 3 and P, Q <= n / (3 s), so that every lag a
    candidate uses has data; user-fixed parts are never clipped, and
    ``max_order`` bounds only the part that is searched."""
    third = n_observed // 3
    seasonal_third = n_observed // (3 * s) if s >= 2 else 0
    fixed_p, fixed_q = (opts.order[0], opts.order[2]) if opts.order is not None else (0, 0)
    fixed_P, fixed_Q = (opts.seasonal_order[0], opts.seasonal_order[2]) if opts.seasonal_order is not None else (0, 0)
    return replace(
        opts,
        max_p=max(min(opts.max_p, third), fixed_p), max_q=max(min(opts.max_q, third), fixed_q),
        max_P=max(min(opts.max_P, seasonal_third), fixed_P), max_Q=max(min(opts.max_Q, seasonal_third), fixed_Q),
        max_order=opts.max_order + fixed_p + fixed_q + fixed_P + fixed_Q,
    )


def _neighbours(spec: ArimaSpec, opts: AutoOptions, s: int, trend_allowed: str | None) -> list[ArimaSpec]:
    """The stepwise moves from ``spec`` that ``opts`` allows; seasonal moves when ``s >= 2``
    (``spec`` itself may be non-seasonal, i.e. carry s = 0: the period comes from ``s``)."""
    p, q, P, Q = spec.p, spec.q, spec.P, spec.Q
    moves = [(1, 0, 0, 0), (-1, 0, 0, 0), (0, 1, 0, 0), (0, -1, 0, 0), (1, 1, 0, 0), (-1, -1, 0, 0),
             (1, -1, 0, 0), (-1, 1, 0, 0)]
    if s >= 2:
        moves += [(0, 0, 1, 0), (0, 0, -1, 0), (0, 0, 0, 1), (0, 0, 0, -1), (0, 0, 1, 1), (0, 0, -1, -1)]
    out = []
    for dp, dq, dP, dQ in moves:
        cand = (p + dp, q + dq, P + dP, Q + dQ)
        if _allowed(cand, opts, s):
            out.append(_make(spec, cand, spec.trend, s))
    if trend_allowed is not None:
        out.append(_make(spec, (p, q, P, Q), None if spec.trend else trend_allowed, s))
    return out


def _allowed(cand, opts: AutoOptions, s: int) -> bool:
    p, q, P, Q = cand
    if min(cand) < 0 or p > opts.max_p or q > opts.max_q or P > opts.max_P or Q > opts.max_Q:
        return False
    if s < 2 and (P or Q):
        return False
    if opts.order is not None and (p, q) != (opts.order[0], opts.order[2]):
        return False
    if opts.seasonal_order is not None and (P, Q) != (opts.seasonal_order[0], opts.seasonal_order[2]):
        return False
    return p + q + P + Q <= opts.max_order


def _make(base: ArimaSpec, cand, trend, s: int) -> ArimaSpec:
    """``base``'s d, D and regressors with the orders ``cand`` = (p, q, P, Q) at period ``s``."""
    p, q, P, Q = cand
    seasonal = bool(P or Q or base.D)
    return ArimaSpec(p, base.d, q, P, base.D, Q, s if seasonal else 0, trend, base.n_exog)


def _start_specs(d: int, D: int, s: int, opts: AutoOptions, trend: str | None, n_exog: int) -> list[ArimaSpec]:
    seasonal = s >= 2
    starts = [(2, 2, 1, 1), (0, 0, 0, 0), (1, 0, 1, 0), (0, 1, 0, 1)] if seasonal else [
        (2, 2, 0, 0), (0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0)]
    base = ArimaSpec(0, d, 0, 0, D, 0, s if D else 0, trend, n_exog)
    specs = []
    for cand in starts:
        spec = _make(base, _clip(cand, opts, s), trend, s)
        if spec not in specs:
            specs.append(spec)
    if trend is not None:
        no_trend = _make(base, _clip((0, 0, 0, 0), opts, s), None, s)
        if no_trend not in specs:
            specs.append(no_trend)
    return specs


def _clip(cand, opts: AutoOptions, s: int):
    """``cand`` = (p, q, P, Q) inside the bounds of ``opts``, the fixed parts as given."""
    p, q, P, Q = cand
    if opts.order is not None:
        p, q = opts.order[0], opts.order[2]
    if opts.seasonal_order is not None:
        P, Q = opts.seasonal_order[0], opts.seasonal_order[2]
    p, q = min(p, opts.max_p), min(q, opts.max_q)
    P, Q = (min(P, opts.max_P), min(Q, opts.max_Q)) if s >= 2 else (0, 0)
    fixed_pq, fixed_PQ = opts.order is not None, opts.seasonal_order is not None
    while p + q + P + Q > opts.max_order:
        if not fixed_pq and q > 0 and q >= p:
            q -= 1
        elif not fixed_pq and p > 0:
            p -= 1
        elif not fixed_PQ and Q > 0:
            Q -= 1
        elif not fixed_PQ and P > 0:
            P -= 1
        else:
            break
    return p, q, P, Q


def _trend_for(d_total: int, option: str | None) -> str | None:
    """The trend the search starts from: ``"auto"`` includes a mean (d + D = 0) or a
    drift (d + D = 1), as R's ``auto.arima``; a fixed trend is kept where the
    differencing leaves it identifiable."""
    if option == "auto":
        return {0: "c", 1: "t"}.get(d_total)
    if option in (None, "n"):
        return None
    lowest = min({"c": 0, "t": 1, "ct": 0}[option], 1)
    return option if lowest >= d_total or (option == "t" and d_total <= 1) else None


def _super_spec(specs) -> ArimaSpec:
    """The smallest order that contains every spec of a round (same d, D, s, exog)."""
    first = specs[0]
    trends = {spec.trend for spec in specs} - {None}
    return ArimaSpec(
        max(s.p for s in specs), first.d, max(s.q for s in specs),
        max(s.P for s in specs), first.D, max(s.Q for s in specs),
        max(s.s for s in specs), trends.pop() if trends else None, first.n_exog,
    )


def _embedding(spec: ArimaSpec, outer: ArimaSpec) -> np.ndarray:
    """Positions in ``outer``'s parameter vector of ``spec``'s parameters."""
    ob, sb = outer.blocks, spec.blocks
    index = []
    outer_trend = list(outer.trend_degrees)
    index += [ob["beta"].start + outer_trend.index(k) for k in spec.trend_degrees]
    index += [ob["beta"].start + len(outer_trend) + j for j in range(spec.n_exog)]
    for name in ("ar", "ma", "sar", "sma"):
        index += [ob[name].start + j for j in range(sb[name].stop - sb[name].start)]
    index.append(ob["sigma2"].start)
    return np.array(index)


def fit_round(wanted: dict, y: Tensor, covariates: Tensor | None, opts: AutoOptions):
    """Fit every (spec, series) pair of ``wanted`` in ONE batched fit.

    All specs sit inside their common super-order; each row estimates only its
    own spec's parameters (the others are pinned at 0 on the free scale, which
    is exactly the lower-order model), started from Hannan-Rissanen. Returns
    ``{spec: (params, aicc)}`` with params in ``spec``'s own layout.
    """
    specs = list(wanted)
    outer = _super_spec(specs)
    T = y.shape[1]
    pieces = []  # (spec, series indices, start in outer layout, mask)
    for spec in specs:
        members = torch.tensor(wanted[spec])
        ys = y[members]
        cov = None if covariates is None else covariates[members]
        X = regressors(spec, T, cov, len(members))
        start = hannan_rissanen(spec, difference(spec, ys), difference(spec, X))
        where = torch.as_tensor(_embedding(spec, outer))
        embedded = torch.zeros(len(members), outer.n_params, dtype=y.dtype)
        embedded[:, -1] = 1.0
        embedded[:, where] = start
        mask = torch.zeros(len(members), outer.n_params, dtype=torch.bool)
        mask[:, where] = True
        pieces.append((spec, members, embedded, mask))
    members = torch.cat([m for _, m, _, _ in pieces])
    cov = None if covariates is None else covariates[members]
    result = fit_spec(outer, y[members], cov, start=torch.cat([e for _, _, e, _ in pieces]),
                      max_iter=min(opts.max_iter, SEARCH_MAX_ITER), max_transient=SEARCH_TRANSIENT,
                      free_mask=torch.cat([k for _, _, _, k in pieces]))
    aicc_all = result.aicc
    out, offset = {}, 0
    for spec, member, _, _ in pieces:
        sl = slice(offset, offset + len(member))
        offset += len(member)
        where = torch.as_tensor(_embedding(spec, outer))
        params = result.params[sl][:, where]
        ok = _roots_ok(spec, params) & torch.isfinite(aicc_all[sl])
        if (spec.q or spec.Q) and not bool(ok.all()):
            params, ok, aicc_all = _rescue(spec, params, ok, aicc_all, sl, y[member],
                                             None if covariates is None else covariates[member])
        aicc = torch.where(ok, aicc_all[sl], torch.full_like(aicc_all[sl], math.inf))
        out[spec] = (params, aicc)
    return out


def _rescue(spec, params, ok, aicc_all, sl, y, covariates):
    """Rows rejected for MA roots: score the projected admissible point exactly."""
    bad = torch.nonzero(~ok).flatten()
    projected = _admissible(spec, params[bad])
    cov = None if covariates is None else covariates[bad]
    scored = fit_spec(spec, y[bad], cov, start=projected, max_iter=0)
    good = _roots_ok(spec, projected) & torch.isfinite(scored.aicc)
    params = params.clone()
    params[bad] = torch.where(good.unsqueeze(-1), projected, params[bad])
    ok = ok.clone()
    ok[bad] = good
    aicc_all = aicc_all.clone()
    aicc_all[torch.arange(sl.start, sl.stop)[bad]] = torch.where(good, scored.aicc, aicc_all[sl][bad])
    return params, ok, aicc_all


def stepwise_search(
    y: Tensor, covariates: Tensor | None, d: int, D: int, s: int, opts: AutoOptions, n_exog: int
) -> list[tuple[FitResult, np.ndarray]]:
    """Best model by AICc for every row of ``y`` (all rows share d and D).

    Each row searches inside its own bounds (:func:`series_options`), so a
    row's result does not depend on the other rows of the batch."""
    B = y.shape[0]
    seasonal = s >= 2 and (opts.seasonal_order is None or any(opts.seasonal_order[:3]))
    s = s if seasonal else 0
    trend = _trend_for(d + D, opts.trend)
    trend_toggle = trend if opts.trend == "auto" else None
    scored: list[dict] = [{} for _ in range(B)]  # spec -> (aicc, params) of every admissible fit
    expanded: list[set] = [set() for _ in range(B)]
    tried: list[set] = [set() for _ in range(B)]
    n_observed = torch.isfinite(y).sum(1)
    row_opts = [series_options(opts, int(n_observed[i]), s) for i in range(B)]
    wanted: dict[ArimaSpec, list[int]] = {}
    for i in range(B):
        for spec in _start_specs(d, D, s, row_opts[i], trend, n_exog):
            wanted.setdefault(spec, []).append(i)
    while wanted:
        feasible = {}
        for spec, members in wanted.items():
            for i in members:
                tried[i].add(spec)
            # AICc needs n > k + 1 observations after differencing
            members = [i for i in members if int(n_observed[i]) - spec.n_integration > spec.n_params + 1]
            if members:
                feasible[spec] = members
        if feasible:
            for spec, (params, aicc) in fit_round(feasible, y, covariates, opts).items():
                for j, i in enumerate(feasible[spec]):
                    if math.isfinite(float(aicc[j])):
                        scored[i][spec] = (float(aicc[j]), params[j])
        # expand the neighbours of each series' BEAM best models that were not expanded yet
        wanted = {}
        for i in range(B):
            for spec in sorted(scored[i], key=lambda k: scored[i][k][0])[:BEAM]:
                if spec in expanded[i]:
                    continue
                expanded[i].add(spec)
                for cand in _neighbours(spec, row_opts[i], s, trend_toggle):
                    if cand not in tried[i]:
                        wanted.setdefault(cand, []).append(i)
    best = [min(((spec, item[1]) for spec, item in sc.items()), key=lambda x: sc[x[0]][0]) if sc else None
            for sc in scored]
    return _collect(best, y, covariates, d, D, s, row_opts, trend, n_exog)


def _collect(best, y, covariates, d, D, s, row_opts, trend, n_exog):
    """Refit each row's winner exactly (from its search estimate), batched by spec;
    rows where nothing could be fitted get the smallest model the options allow
    (the fixed orders, else white noise on the differences, with the search's trend)."""
    groups: dict[tuple[ArimaSpec, bool], list[tuple[int, Tensor | None]]] = {}
    for i, item in enumerate(best):
        if item is None:
            base = ArimaSpec(0, d, 0, 0, D, 0, s if D else 0, None, n_exog)
            spec = _make(base, _clip((0, 0, 0, 0), row_opts[i], s), trend, s)
            groups.setdefault((spec, False), []).append((i, None))
        else:
            groups.setdefault((item[0], True), []).append((i, item[1]))
    out = []
    for (spec, searched), members in groups.items():
        rows = np.array([i for i, _ in members])
        rows_t = torch.as_tensor(rows)
        cov = None if covariates is None else covariates[rows_t]
        if not searched:
            out.append((fit_spec(spec, y[rows_t], cov, max_iter=row_opts[0].max_iter), rows))
            continue
        start = torch.stack([p for _, p in members])
        result = fit_spec(spec, y[rows_t], cov, start=start, max_iter=row_opts[0].max_iter)
        if spec.q or spec.Q:
            result = _keep_admissible(spec, result, start, y[rows_t], cov)
        out.append((result, rows))
    return out


def _keep_admissible(spec, result: FitResult, start: Tensor, y: Tensor, cov) -> FitResult:
    """Rows whose exact refit ran back to an MA root the search rejects keep
    their admissible search point (scored exactly)."""
    back = ~_roots_ok(spec, result.params) & _roots_ok(spec, start)
    if not bool(back.any()):
        return result
    at_start = fit_spec(spec, y, cov, start=start, max_iter=0)
    pick = back.unsqueeze(-1)
    return FitResult(
        spec, torch.where(pick, at_start.params, result.params), torch.where(back, at_start.llf, result.llf),
        result.n_obs, torch.where(back, at_start.converged, result.converged), result.n_free_rows,
    )


def auto_fit(
    y: Tensor, lengths: Tensor, covariates: Tensor | None, opts: AutoOptions, n_exog: int
) -> list[tuple[FitResult, np.ndarray]]:
    """Choose (d, D) per series by unit-root tests, then search orders per (d, D) group."""
    B = y.shape[0]
    s = opts.period if opts.seasonal_order is None else opts.seasonal_order[3]
    # user-fixed parts must be identifiable on their own (the search never drops them)
    if opts.order is not None:
        check_identifiable(ArimaSpec(*opts.order, n_exog=n_exog), y)
    if opts.seasonal_order is not None:
        check_identifiable(ArimaSpec(0, 0, 0, *opts.seasonal_order, n_exog=n_exog), y)
    groups: dict[tuple[int, int], list[int]] = {}
    for i in range(B):
        x = _observed(y[i], int(lengths[i]))
        if opts.seasonal_order is not None:
            D = opts.seasonal_order[1]
        else:
            D = choose_D(x, s, opts.max_D)
        xs = x[s * D:] - x[: len(x) - s * D] if D else x
        d = opts.order[1] if opts.order is not None else choose_d(xs, opts.max_d)
        groups.setdefault((d, D), []).append(i)
    results = []
    for (d, D), rows in groups.items():
        rows_t = torch.tensor(rows)
        cov = None if covariates is None else covariates[rows_t]
        for result, sub in stepwise_search(y[rows_t], cov, d, D, s, opts, n_exog):
            results.append((result, np.asarray(rows)[sub]))
    return results
