"""Table 1 statistics: average rank, win probabilities, their intervals and the consistency check."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from itertools import permutations
from statistics import NormalDist
from typing import Literal, Sequence

import numpy as np

from .data import METHODS, Rankings, _check_level, _short

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Estimate:
    """A statistic (vector of average ranks ``[M]`` or win-probability matrix ``[M, M]``, diagonal
    NaN) with an optional ``level`` confidence interval ``[low, high]`` and how it was made."""

    value: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    level: float = 0.95
    how: str = "no interval"

    @property
    def half_width(self) -> np.ndarray | None:
        return None if self.low is None else (self.high - self.low) / 2


@dataclass(frozen=True)
class StudyTable:
    """Table 1's content: methods, average rank (``[M]``) and win probability ``P[i, j]`` = P(row
    method i ranked better than column method j), as fractions."""

    methods: tuple[str, ...]
    avg_rank: Estimate
    win_prob: Estimate
    n_users: int | None = None
    n_cases: int | None = None
    source: str = ""
    notes: tuple[str, ...] = ()  # what the reader must know before trusting the intervals (printed under the table)

    def __str__(self) -> str:
        return format_table(self)


def _per_ranking(rankings: Rankings, stat: Literal["rank", "win"]) -> tuple[np.ndarray, np.ndarray]:
    """``Y[u, c, k]`` (the statistic of each ranking, 0 where missing) and ``n[u, c]`` (0/1)."""
    r = rankings.ranks
    n = rankings.present.astype(float)
    if stat == "rank":
        y = np.nan_to_num(r)
    else:
        with np.errstate(invalid="ignore"):
            y = (r[..., :, None] < r[..., None, :]).astype(float)  # [U, C, i, j]: i ranked better than j
        y = y.reshape(*r.shape[:2], -1) * n[..., None]
    return y, n


def _estimate(rankings: Rankings, stat: Literal["rank", "win"], ci: str, level: float, n_boot: int,
              resample: str, seed: int) -> Estimate:
    level = _check_level(level)
    if rankings.n_rankings == 0:
        raise ValueError("no rankings recorded yet")
    m = len(rankings.methods)
    keep = rankings.present.any(1)  # users who ranked something (the clusters)
    y, n = _per_ranking(rankings.subset(users=[u for u, k in zip(rankings.users, keep) if k]), stat)
    value = y.sum((0, 1)) / n.sum()
    low = high = None
    how = "no interval"
    n_users, n_cases = n.shape
    if ci == "bootstrap":
        if resample not in ("users", "cases", "both"):
            raise ValueError(f"resample={resample!r}; expected 'users', 'cases' or 'both'")
        if n_boot < 2:
            raise ValueError(f"n_boot={n_boot}; need at least 2 bootstrap resamples (1000+ for a 95% interval)")
        rng = np.random.default_rng(seed)
        wu = (rng.multinomial(n_users, np.full(n_users, 1 / n_users), size=n_boot) if resample != "cases"
              else np.ones((n_boot, n_users)))
        wc = (rng.multinomial(n_cases, np.full(n_cases, 1 / n_cases), size=n_boot) if resample != "users"
              else np.ones((n_boot, n_cases)))
        tot = np.einsum("bu,bc,uck->bk", wu, wc, y, optimize=True)
        cnt = np.einsum("bu,bc,uc->b", wu, wc, n, optimize=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = tot / cnt[:, None]
        a = (1 - level) / 2
        low, high = np.nanquantile(boot, [a, 1 - a], axis=0)
        what = {"users": "users (each user's cases kept together)", "cases": "cases (all users of a case kept together)",
                "both": "users and cases independently (two-way bootstrap)"}[resample]
        how = f"percentile bootstrap over {what}, {n_boot} resamples, seed {seed}"
    elif ci == "cluster":
        if n_users < 2:
            raise ValueError("ci='cluster' needs at least 2 users")
        t_u, k_u = y.sum(1), n.sum(1)  # per-user totals
        resid = t_u - value[None, :] * k_u[:, None]
        se = np.sqrt(n_users / (n_users - 1) * (resid ** 2).sum(0)) / k_u.sum()
        z = NormalDist().inv_cdf(0.5 + level / 2)
        low, high = value - z * se, value + z * se
        if stat == "win":
            low, high = np.clip(low, 0, 1), np.clip(high, 0, 1)
        how = "normal interval with a cluster-robust (by user) standard error"
    elif ci != "none":
        raise ValueError(f"ci={ci!r}; expected 'bootstrap', 'cluster' or 'none'")
    if stat == "win":
        value, low, high = (None if a is None else a.reshape(m, m).copy() for a in (value, low, high))
        for a in (value, low, high):
            if a is not None:
                np.fill_diagonal(a, np.nan)
    return Estimate(value, low, high, level, how)


def average_rank(rankings: Rankings, *, ci: Literal["bootstrap", "cluster", "none"] = "bootstrap",
                 level: float = 0.95, n_boot: int = 2000, resample: Literal["users", "cases", "both"] = "users",
                 seed: int = 0) -> Estimate:
    """Average rank of each method, R̄_i = (1/N) Σ_rankings r_i (1 = best), with a ``level`` interval.

    The rankings of one user are not independent (a user who likes a method likes it in all cases), so
    ``ci="bootstrap"`` resamples whole users with replacement, keeping their cases together
    (``resample="both"`` also resamples cases, for inference beyond these cases); ``ci="cluster"`` is
    the normal interval with a cluster-robust (by user) standard error. In the paper's design, 60 users
    × 20 cases = 1200 rankings; each resample redraws 60 users. Deterministic for a given ``seed``."""
    return _estimate(rankings, "rank", ci, level, n_boot, resample, seed)


def win_probability(rankings: Rankings, *, ci: Literal["bootstrap", "cluster", "none"] = "bootstrap",
                    level: float = 0.95, n_boot: int = 2000, resample: Literal["users", "cases", "both"] = "users",
                    seed: int = 0) -> Estimate:
    """Win probabilities ``P[i, j]`` = fraction of all (user, case) rankings in which method i is ranked
    better than method j (diagonal NaN), with a ``level`` interval per entry.

    Intervals as in :func:`average_rank` (bootstrap over users by default: in the paper's design 60 users ×
    20 cases = 1200 rankings, resampled as 60 clusters of 20). The bootstrap uses the same resamples for
    every entry (same ``seed``), so :func:`average_rank` with the same seed is computed on the same draws."""
    return _estimate(rankings, "win", ci, level, n_boot, resample, seed)


def summarize(rankings: Rankings, *, ci: Literal["bootstrap", "cluster", "none"] = "bootstrap", level: float = 0.95,
              n_boot: int = 2000, resample: Literal["users", "cases", "both"] = "users", seed: int = 0,
              source: str = "") -> StudyTable:
    """Table 1 computed from raw rankings (average rank and win probabilities with intervals).

    A summary says what its intervals cannot show, in :attr:`StudyTable.notes` (printed under the table)
    and as a logged warning: with **one user** an interval over users does not exist (it is left out rather
    than shown as a zero-width [x, x], which would read as certainty), and resampling that user's cases
    says nothing about other people; and a **zero-width** interval (every resample agreed, e.g. a handful
    of rankings that all order two methods the same way) is flagged as a small-sample artefact."""
    kw = dict(ci=ci, level=level, n_boot=n_boot, resample=resample, seed=seed)
    present = rankings.present
    n_users = int(present.any(1).sum())
    notes = []
    if n_users == 1 and ci != "none":
        if ci == "cluster" or resample == "users":
            kw["ci"] = "none"
            notes.append("one user: no interval is shown — an interval over users needs at least 2 users, and a "
                         "bootstrap of one user has zero width, which is not certainty. These are one person's "
                         "preferences; pool several users' CSVs (load_csv) for a study.")
        else:
            notes.append(f"one user: the intervals resample this user's {int(present.sum())} rankings over cases only; "
                         "they say nothing about how other people would rank. Pool several users' CSVs (load_csv).")
    elif n_users == 1:
        notes.append("one user: these are one person's preferences, not a study; pool several users' CSVs (load_csv).")
    avg, win = average_rank(rankings, **kw), win_probability(rankings, **kw)
    zero = [name for name, e in (("average rank", avg), ("win probability", win))
            if e.low is not None and (np.nan_to_num(e.high - e.low, nan=1.0) <= 1e-12).any()]
    if zero:
        notes.append(f"some {' and '.join(zero)} intervals have zero width: every resample agreed because there are "
                     "few rankings, not because the value is certain.")
    for note in notes:
        log.warning("summarize: %s", note)
    return StudyTable(rankings.methods, avg, win, n_users=n_users, n_cases=int(present.any(0).sum()),
                      source=source or f"{rankings.n_rankings} rankings", notes=tuple(notes))


# ----------------------------------------------------------------------------------------------
# The paper's Table 1 and intervals for it
# ----------------------------------------------------------------------------------------------


def paper_table1() -> StudyTable:
    """Table 1 of the paper as published: 60 users, 20 cases, average rank and win probability of the row
    method against the column method (as fractions; columns Blend, G-CLIP, G-CF, Ours). No intervals:
    see :func:`table_ci`."""
    avg = np.array([2.40, 2.82, 2.57, 2.20])
    win = np.array([[np.nan, 0.578, 0.514, 0.456],
                    [0.422, np.nan, 0.466, 0.342],
                    [0.486, 0.574, np.nan, 0.416],
                    [0.544, 0.658, 0.584, np.nan]])
    return StudyTable(METHODS, Estimate(avg, how="published"), Estimate(win, how="published"),
                      n_users=60, n_cases=20, source="paper, Table 1")


def table_ci(table: StudyTable, n_users: int = 60, n_cases: int = 20, *, level: float = 0.95,
             icc_user: float = 0.0, icc_case: float = 0.0, rank_var: float | None = None) -> StudyTable:
    """Approximate ``level`` intervals for a published table, from its numbers and the design alone.

    Model (balanced, fully crossed: every one of ``n_users`` users ranks the same ``n_cases`` cases;
    the paper: 60 × 20 = 1200 rankings). A per-ranking outcome y (the indicator 1[i beats j], or the
    rank r_i) has variance σ², split into a user part ``icc_user``·σ², a case part ``icc_case``·σ² and
    the rest. The mean over the design then has

        Var(ȳ) = σ² · (icc_user / n_users + icc_case / n_cases + (1 − icc_user − icc_case) / (n_users·n_cases))
               = σ² / n_eff,   design effect = n_users·n_cases / n_eff.

    ``icc_user = icc_case = 0`` (default) treats the 1200 rankings as independent: the narrowest,
    most optimistic interval. Cases shared by all users (``icc_case > 0``) do not average out with more
    users: e.g. ``icc_case=0.1`` gives n_eff ≈ 174 for the paper's design.

    - win probability p: σ² = p(1 − p) (Bernoulli); Wilson score interval with n_eff.
    - average rank: σ² = ``rank_var``, by default (M² − 1)/12 = 1.25 for M = 4, the variance of a rank
      uniform on 1..M (the table shows no method far from the middle rank); normal interval.
    """
    level = _check_level(level)
    for name, v in (("icc_user", icc_user), ("icc_case", icc_case)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name}={v!r}: an intra-class correlation must lie in [0, 1]")
    if icc_user + icc_case > 1.0:
        raise ValueError(f"icc_user + icc_case = {icc_user + icc_case:g} > 1: they are shares of one variance")
    if n_users < 1 or n_cases < 1:
        raise ValueError(f"n_users={n_users}, n_cases={n_cases}: both must be >= 1")
    m = len(table.methods)
    n = n_users * n_cases
    n_eff = 1.0 / (icc_user / n_users + icc_case / n_cases + (1.0 - icc_user - icc_case) / n)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = np.asarray(table.win_prob.value, dtype=float)
    centre = (p + z * z / (2 * n_eff)) / (1 + z * z / n_eff)
    half = z / (1 + z * z / n_eff) * np.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff ** 2))
    rv = (m * m - 1) / 12 if rank_var is None else float(rank_var)
    if rv <= 0:
        raise ValueError(f"rank_var={rank_var!r} must be > 0")
    r = np.asarray(table.avg_rank.value, dtype=float)
    hr = z * np.sqrt(rv / n_eff)
    why = (f"{n_users} users × {n_cases} cases = {n} rankings, icc_user={icc_user:g}, icc_case={icc_case:g}: "
           f"n_eff = {n_eff:.0f} (design effect {n / n_eff:.2f})")
    how = f"{why}; average rank: normal with rank variance {rv:g}; win prob: Wilson"
    return replace(table,
                   avg_rank=Estimate(r, r - hr, r + hr, level, how),
                   win_prob=Estimate(p, centre - half, centre + half, level, how),
                   n_users=n_users, n_cases=n_cases)


# ----------------------------------------------------------------------------------------------
# Internal consistency
# ----------------------------------------------------------------------------------------------


@dataclass
class ConsistencyReport:
    """What :func:`consistency_check` found. ``ok`` is True when every identity holds within tolerance."""

    methods: tuple[str, ...]
    reported_rank: np.ndarray
    rank_from_column: np.ndarray  # 1 + Σ_j P(j beats i)
    rank_from_row: np.ndarray  # M − Σ_j P(i beats j)   (equal to the above when the pairs add up)
    pair_sum: np.ndarray  # P_ij + P_ji
    tol_rank: float
    tol_pair: float
    bad_pairs: list[tuple[str, str, float]] = field(default_factory=list)
    bad_ranks: list[tuple[str, float, float]] = field(default_factory=list)
    rank_sum_ok: bool = True
    cycles: list[tuple[str, str, str, float]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.bad_pairs or self.bad_ranks or self.cycles) and self.rank_sum_ok

    @property
    def rank_discrepancy(self) -> np.ndarray:
        """Reported minus expected (from the columns) average rank, per method."""
        return self.reported_rank - self.rank_from_column

    def rows(self) -> list[dict]:
        """Per method: reported and expected average rank and the discrepancy (rounded), for printing."""
        return [{"method": n, "reported": round(float(r), 4), "1 + Σ_j P(j beats i)": round(float(c), 4),
                 "reported − expected": round(float(r - c), 4), "M − Σ_j P(i beats j)": round(float(w), 4)}
                for n, r, c, w in zip(self.methods, self.reported_rank, self.rank_from_column, self.rank_from_row)]

    def __str__(self) -> str:
        m = len(self.methods)
        lines = [f"P(i beats j) + P(j beats i) = 1 (tolerance ±{self.tol_pair:g}):"]
        for i in range(m):
            for j in range(i + 1, m):
                s = self.pair_sum[i, j]
                flag = "ok" if abs(s - 1) <= self.tol_pair + 1e-9 else f"DOES NOT ADD UP ({(s - 1) * 100:+.1f} points)"
                lines.append(f"  {_short(self.methods[i]):>6} vs {_short(self.methods[j]):<6} "
                             f"{s * 100:6.1f}%  {flag}")
        lines.append(f"average rank = 1 + Σ_j P(j beats i) (tolerance ±{self.tol_rank:g}):")
        lines.append(f"  {'method':<20} {'reported':>8} {'expected':>8} {'diff':>7}   {'M − Σ_j P(i beats j)':>20}")
        for n, r, c, w in zip(self.methods, self.reported_rank, self.rank_from_column, self.rank_from_row):
            flag = "ok" if abs(r - c) <= self.tol_rank + 1e-9 else "DOES NOT ADD UP"
            lines.append(f"  {n:<20} {r:8.3f} {c:8.3f} {r - c:+7.3f}   {w:20.3f}  {flag}")
        total = m * (m + 1) / 2
        lines.append(f"sum of average ranks: reported {self.reported_rank.sum():.3f}, expected {total:g} "
                     f"(1 + ... + {m}); from the columns {self.rank_from_column.sum():.3f}: "
                     + ("ok" if self.rank_sum_ok else "DOES NOT ADD UP"))
        if self.cycles:
            lines += [f"  impossible cycle {a} > {b} > {c} > {a}: P sum {s:.3f} > 2" for a, b, c, s in self.cycles]
        else:
            lines.append("3-cycles P_ij + P_jk + P_ki <= 2 (some rankings could produce these pairs): ok")
        lines.append("verdict: " + ("consistent" if self.ok else
                                    f"INCONSISTENT — {len(self.bad_pairs)} pair(s) and {len(self.bad_ranks)} average "
                                    f"rank(s) off"))
        return "\n".join(lines)


def consistency_check(avg_rank, win_prob=None, *, methods: Sequence[str] | None = None, tol_rank: float = 0.0065,
                      tol_pair: float = 0.001) -> ConsistencyReport:
    """Check a study table against the identities every set of complete rankings without ties obeys:

    1. P_ij + P_ji = 1 for every pair (each ranking orders i and j one way);
    2. R̄_i = 1 + Σ_{j≠i} P_ji  (r_i = 1 + number of methods ranked better than i, averaged);
    3. Σ_i R̄_i = M(M + 1)/2;
    4. P_ij + P_jk + P_ki <= 2 for every 3-cycle (no ranking has i > j > k > i). With (1), these are
       exactly the conditions for some distribution of rankings to produce P when M <= 5
       (Grötschel, Jünger & Reinelt 1985, the linear-ordering polytope).

    Ties would make P_ij + P_ji < 1, never > 1. Default tolerances are half a unit of the rounding of
    Table 1 (ranks to 0.01, probabilities to 0.1 %): ``tol_pair`` = 2 × 0.0005,
    ``tol_rank`` = 0.005 + 3 × 0.0005; the rank sum allows M × 0.005.

    ``avg_rank``/``win_prob``: arrays (fractions; diagonal ignored), :class:`Estimate` or, for
    ``avg_rank``, a whole :class:`StudyTable`."""
    if isinstance(avg_rank, StudyTable):
        methods = methods or avg_rank.methods
        avg_rank, win_prob = avg_rank.avg_rank, avg_rank.win_prob
    if win_prob is None:
        raise ValueError("win_prob is needed (or pass a whole StudyTable as the first argument)")
    r = np.asarray(getattr(avg_rank, "value", avg_rank), dtype=float)
    p = np.asarray(getattr(win_prob, "value", win_prob), dtype=float).copy()
    m = r.shape[0]
    if p.shape != (m, m):
        raise ValueError(f"win_prob has shape {p.shape}; expected ({m}, {m}) for {m} average ranks")
    off = ~np.eye(m, dtype=bool)
    if np.nanmax(p[off]) > 1.0 + 1e-9 or np.nanmin(p[off]) < -1e-9:
        raise ValueError(f"win probabilities must be fractions in [0, 1] (got max {np.nanmax(p[off]):g}); "
                         "divide percentages by 100")
    np.fill_diagonal(p, 0.0)
    methods = tuple(methods or (METHODS if m == len(METHODS) else [f"method {i}" for i in range(m)]))
    pair_sum = p + p.T
    np.fill_diagonal(pair_sum, np.nan)
    col = 1.0 + p.sum(0)
    row = m - p.sum(1)
    eps = 1e-9
    rep = ConsistencyReport(methods, r, col, row, pair_sum, tol_rank, tol_pair)
    rep.bad_pairs = [(methods[i], methods[j], float(pair_sum[i, j])) for i in range(m) for j in range(i + 1, m)
                     if abs(pair_sum[i, j] - 1) > tol_pair + eps]
    rep.bad_ranks = [(methods[i], float(r[i]), float(col[i])) for i in range(m) if abs(r[i] - col[i]) > tol_rank + eps]
    rep.rank_sum_ok = bool(abs(r.sum() - m * (m + 1) / 2) <= m * 0.005 + eps)
    rep.cycles = [(methods[i], methods[j], methods[k], float(p[i, j] + p[j, k] + p[k, i]))
                  for i, j, k in permutations(range(m), 3) if i < j and i < k
                  and p[i, j] + p[j, k] + p[k, i] > 2 + 3 * tol_pair / 2 + eps]
    return rep


def format_table(table: StudyTable, *, ci: bool = True) -> str:
    """Table 1 as text (the numbers behind :func:`plot_average_rank` and :func:`plot_win_matrix`)."""
    m = len(table.methods)
    a, w = table.avg_rank, table.win_prob
    show = ci and a.low is not None

    def rank(i):
        return f"{a.value[i]:.2f}" + (f" [{a.low[i]:.2f}, {a.high[i]:.2f}]" if show else "")

    def win(i, j):
        if i == j:
            return "–"
        s = f"{w.value[i, j] * 100:.1f}%"
        return s + (f" [{w.low[i, j] * 100:.1f}, {w.high[i, j] * 100:.1f}]" if show and w.low is not None else "")

    head = ["method", "avg rank ↓"] + [f"beats {_short(n)}" for n in table.methods]
    body = [[n, rank(i)] + [win(i, j) for j in range(m)] for i, n in enumerate(table.methods)]
    widths = [max(len(r[k]) for r in [head] + body) for k in range(len(head))]

    def fmt(r):
        return "  ".join(c.ljust(wd) if k == 0 else c.rjust(wd) for k, (c, wd) in enumerate(zip(r, widths)))

    title = table.source or "study"
    if table.n_users and table.n_cases:
        title += f" — {table.n_users} users × {table.n_cases} cases"
    lines = [title, fmt(head)] + [fmt(r) for r in body]
    if show:
        lines.append(f"{a.level:.0%} intervals" + (f": {a.how}" if w.how == a.how else
                                                  f" — avg rank: {a.how}\n  win prob: {w.how}"))
    lines += [f"NOTE: {n}" for n in table.notes]
    return "\n".join(lines)
