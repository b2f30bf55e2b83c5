"""Simulated studies: method strengths fitted to a win matrix, rankings drawn from them, interval width vs users."""
from __future__ import annotations

from statistics import NormalDist
from typing import Literal, Sequence

import numpy as np

from .data import METHODS, Rankings
from .stats import summarize



# ----------------------------------------------------------------------------------------------
# Simulated studies
# ----------------------------------------------------------------------------------------------


def fit_strengths(win_prob, *, model: Literal["thurstone", "plackett-luce"] = "thurstone") -> np.ndarray:
    """Method strengths whose pairwise probabilities best match ``win_prob`` (least squares, centred).

    Thurstone case V (unit normal noise per method): P_ij = Φ((s_i − s_j)/√2), so s_i − s_j = √2 Φ⁻¹(P_ij);
    Plackett–Luce (Gumbel noise): P_ij = σ(s_i − s_j), so s_i − s_j = logit(P_ij). With the
    differences d_ij, the least-squares solution is s_i = mean_j d_ij. P_ij and 1 − P_ji are averaged
    first (they differ where the table does not add up)."""
    p = np.asarray(getattr(win_prob, "value", win_prob), dtype=float).copy()
    m = p.shape[0]
    np.fill_diagonal(p, 0.5)
    q = np.clip((p + 1 - p.T) / 2, 1e-6, 1 - 1e-6)
    if model == "thurstone":
        nd = NormalDist()
        d = np.sqrt(2) * np.vectorize(nd.inv_cdf)(q)
    elif model == "plackett-luce":
        d = np.log(q / (1 - q))
    else:
        raise ValueError(f"model={model!r}; expected 'thurstone' or 'plackett-luce'")
    s = d.sum(1) / m
    return s - s.mean()


def simulate_rankings(strengths: Sequence[float], *, n_users: int = 60, n_cases: int = 20,
                      model: Literal["thurstone", "plackett-luce"] = "thurstone", user_sd: float = 0.0,
                      case_sd: float = 0.0, methods: Sequence[str] | None = None, seed: int = 0,
                      case_effects: np.ndarray | None = None) -> Rankings:
    """A constructed study: every user ranks every case (the paper's design: 60 × 20 = 1200 rankings).

    User u sees method i on case c with utility  s_i + a_ui + b_ci + e_uci  and ranks by decreasing
    utility; a_ui ~ N(0, user_sd²) (taste), b_ci ~ N(0, case_sd²) (the method's luck on that case),
    e ~ N(0, 1) for Thurstone, standard Gumbel for Plackett–Luce (then P(i ranked first) ∝ exp(s_i)
    when user_sd = case_sd = 0). Continuous utilities: no ties. Deterministic for a given ``seed``.

    ``case_effects`` ([n_cases, M]): the b_ci themselves instead of drawing them (``case_sd`` is then not
    used), so studies of different sizes can share the same cases (:func:`ci_vs_users`)."""
    s = np.asarray(strengths, dtype=float)
    m = s.shape[0]
    methods = tuple(methods) if methods is not None else (METHODS if m == len(METHODS) else
                                                          tuple(f"method {i}" for i in range(m)))
    if len(methods) != m:
        raise ValueError(f"{len(methods)} method names for {m} strengths")
    if n_users < 1 or n_cases < 1:
        raise ValueError(f"n_users={n_users}, n_cases={n_cases}: both must be >= 1")
    rng = np.random.default_rng(seed)
    shape = (n_users, n_cases, m)
    if model == "thurstone":
        noise = rng.standard_normal(shape)
    elif model == "plackett-luce":
        noise = rng.gumbel(size=shape)
    else:
        raise ValueError(f"model={model!r}; expected 'thurstone' or 'plackett-luce'")
    user = user_sd * rng.standard_normal((n_users, 1, m))
    if case_effects is None:
        case = case_sd * rng.standard_normal((1, n_cases, m))
    else:
        case = np.asarray(case_effects, dtype=float)[None]
        if case.shape != (1, n_cases, m):
            raise ValueError(f"case_effects has shape {case.shape[1:]}; expected (n_cases, methods) = ({n_cases}, {m})")
    util = s + noise + user + case
    ranks = np.argsort(np.argsort(-util, axis=-1), axis=-1) + 1.0
    w = max(2, len(str(max(n_users, n_cases) - 1)))
    return Rankings(methods, tuple(f"u{u:0{w}d}" for u in range(n_users)), tuple(f"c{c:0{w}d}" for c in range(n_cases)),
                    ranks)


def case_floor(strengths: Sequence[float], *, case_sd: float, n_cases: int = 20, user_sd: float = 0.0,
               level: float = 0.95) -> float:
    """The mean half-width (percentage points) that no number of users takes a win-probability interval
    below, when the same ``n_cases`` cases are ranked by everyone (Thurstone model of :func:`simulate_rankings`).

    With infinitely many users, case c's share of rankings in which i beats j is
    p_c = Φ((s_i − s_j + b_ci − b_cj) / √(2 + 2·user_sd²)), b_ci − b_cj ~ N(0, 2·case_sd²); the table's win
    probability is the mean of n_cases such p_c, so its interval keeps the half-width
    z · √(Var_c(p_c) / n_cases) however many users rank. Var_c is computed by Gauss–Hermite quadrature
    (exact to rounding); the result is averaged over the ordered pairs i ≠ j, as in :func:`ci_vs_users`.
    0 when ``case_sd`` = 0."""
    s = np.asarray(strengths, dtype=float)
    if case_sd < 0 or user_sd < 0 or n_cases < 1:
        raise ValueError(f"case_sd={case_sd!r}, user_sd={user_sd!r} must be >= 0 and n_cases={n_cases!r} >= 1")
    if case_sd == 0:
        return 0.0
    nodes, weights = np.polynomial.hermite_e.hermegauss(81)  # ∫ f(x) φ(x) dx ≈ Σ w f(x) / √(2π)
    weights = weights / weights.sum()
    nd = NormalDist()
    cdf = np.vectorize(nd.cdf)
    spread = np.sqrt(2.0 + 2.0 * user_sd ** 2)
    var = []
    for i in range(len(s)):
        for j in range(len(s)):
            if i != j:
                p = cdf((s[i] - s[j] + np.sqrt(2.0) * case_sd * nodes) / spread)
                var.append(float(weights @ p ** 2 - (weights @ p) ** 2))
    z = nd.inv_cdf(0.5 + level / 2)
    return float(np.mean(z * np.sqrt(np.maximum(var, 0.0) / n_cases)) * 100)


def ci_vs_users(strengths: Sequence[float], n_users: Sequence[int] = (5, 10, 20, 40, 60, 120), *, n_cases: int = 20,
                user_sd: float = 0.0, case_sd: float = 0.4, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """How the intervals shrink as more users rank the *same* ``n_cases`` simulated cases: per ``n_users``,
    the mean 95 % half-width of the average ranks and of the win probabilities (percentage points).

    Cases vary (``case_sd``: each method's luck on a case, drawn once and shared by every study size, so
    adding users never adds cases), and the bootstrap resamples users *and* cases. Case variance does not
    average out with more users: the width floors at ``"floor ± pp"`` (:func:`case_floor`, the same for
    every row) instead of shrinking like 1/√users; with ``case_sd=0`` it keeps shrinking. The default
    ``case_sd=0.4`` is a modest case effect: for Table 1's strengths, an intra-class correlation of about
    0.08 on the win indicators, close to the ``icc_case=0.1`` of notebook 06's intervals."""
    s = np.asarray(strengths, dtype=float)
    effects = case_sd * np.random.default_rng([seed, 1]).standard_normal((n_cases, len(s)))
    floor = round(case_floor(s, case_sd=case_sd, n_cases=n_cases, user_sd=user_sd), 2)
    rows = []
    for i, n in enumerate(n_users):
        r = simulate_rankings(s, n_users=n, n_cases=n_cases, user_sd=user_sd, case_effects=effects, seed=seed + i)
        t = summarize(r, n_boot=n_boot, resample="both", seed=seed)
        rows.append({"users": n, "rankings": r.n_rankings,
                     "avg rank ± (mean)": round(float(np.mean(t.avg_rank.half_width)), 4),
                     "win prob ± pp (mean)": round(float(np.nanmean(t.win_prob.half_width)) * 100, 2),
                     "floor ± pp": floor})
    return rows
