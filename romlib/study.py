"""The user study (Table 1 of the paper): raw rankings, average rank, win probabilities, confidence
intervals, an internal-consistency check, a simulator and the blinded in-class ranking widget.

Used by notebook ``06_user_study``. The paper's study: 60 users each rank the 4 outputs
(Blended, GLIDE CLIP-guided, GLIDE CF-guided, Ours CCF) of the same 20 cases, i.e.
60 × 20 = 1200 rankings, rank 1 = best. For one ranking r (a permutation of 1..M) of M methods:

    average rank      R̄_i = mean over rankings of r_i
    win probability   P_ij = mean over rankings of 1[r_i < r_j]     ("row i beats column j")

and, because r_i = 1 + #{j : r_j < r_i} in every ranking without ties, averaging gives the two
identities :func:`consistency_check` tests on a published table:

    P_ij + P_ji = 1            and        R̄_i = 1 + Σ_{j≠i} P_ji.

Only numpy and the standard library are needed; matplotlib and ipywidgets are imported inside the
functions that draw or display.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field, replace
from itertools import permutations
from pathlib import Path
from statistics import NormalDist
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np

__all__ = [
    "METHODS", "SHORT_NAMES", "Rankings", "Estimate", "StudyTable", "ConsistencyReport", "StudyCase", "RankingSession",
    "load_csv", "save_csv", "average_rank", "win_probability", "summarize", "paper_table1", "table_ci",
    "consistency_check", "fit_strengths", "simulate_rankings", "ci_vs_users", "format_table", "plot_average_rank",
    "plot_win_matrix", "plot_ci_vs_users",
]

log = logging.getLogger(__name__)

#: The four methods of Table 1, in the paper's order.
METHODS = ("Blended", "GLIDE (CLIP-guided)", "GLIDE (CF-guided)", "Ours (CCF-guided)")
#: Column headers of Table 1.
SHORT_NAMES = {"Blended": "Blend", "GLIDE (CLIP-guided)": "G-CLIP", "GLIDE (CF-guided)": "G-CF",
               "Ours (CCF-guided)": "Ours"}
CSV_COLUMNS = ("user", "case", "method", "rank")


def _short(name: str) -> str:
    return SHORT_NAMES.get(name, name)


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level!r}: a confidence level must lie in (0, 1), e.g. 0.95")
    return float(level)


# ----------------------------------------------------------------------------------------------
# Data model: a table of (user, case, method, rank)
# ----------------------------------------------------------------------------------------------


def _check_permutation(ranks: Mapping[str, Any], what: str) -> dict[str, int]:
    """``{key: rank}`` must be a permutation of 1..M (rank 1 = best, no ties); returns int ranks."""
    m = len(ranks)
    out = {}
    for k, r in ranks.items():
        try:
            ri = int(r)
        except (TypeError, ValueError):
            raise ValueError(f"{what}: rank {r!r} of {k!r} is not an integer in 1..{m}") from None
        if ri != r and str(ri) != str(r).strip():
            raise ValueError(f"{what}: rank {r!r} of {k!r} is not an integer in 1..{m}")
        out[k] = ri
    got = sorted(out.values())
    if got != list(range(1, m + 1)):
        used = {v: got.count(v) for v in got}
        twice = sorted(v for v, c in used.items() if c > 1)
        missing = [v for v in range(1, m + 1) if v not in used]
        outside = sorted(v for v in used if not 1 <= v <= m)
        why = "; ".join(s for s in (twice and f"used more than once: {twice}", missing and f"missing: {missing}",
                                    outside and f"outside 1..{m}: {outside}") if s)
        raise ValueError(f"{what}: ranks {dict(out)} are not a permutation of 1..{m} (each rank exactly once, "
                         f"1 = best, no ties) — {why}")
    return out


@dataclass(frozen=True)
class Rankings:
    """Raw study results: ``ranks[u, c, m]`` is the rank (1 = best) user ``users[u]`` gave method
    ``methods[m]`` on case ``cases[c]``; NaN where that user did not rank that case.

    Every ranked (user, case) pair ranks all M methods with a permutation of 1..M (checked)."""

    methods: tuple[str, ...]
    users: tuple[str, ...]
    cases: tuple[str, ...]
    ranks: np.ndarray

    def __post_init__(self):
        r = np.asarray(self.ranks, dtype=float)
        shape = (len(self.users), len(self.cases), len(self.methods))
        if r.shape != shape:
            raise ValueError(f"ranks has shape {r.shape}; expected (users, cases, methods) = {shape}")
        object.__setattr__(self, "ranks", r)
        present = ~np.isnan(r)
        partial = present.any(-1) & ~present.all(-1)
        if partial.any():
            u, c = np.argwhere(partial)[0]
            raise ValueError(f"user {self.users[u]!r}, case {self.cases[c]!r} ranks only some of the methods "
                             f"{self.methods}; a ranking must rank all of them")
        full = r[present.all(-1)]
        if full.size and not (np.sort(full, -1) == np.arange(1, len(self.methods) + 1)).all():
            bad = full[~(np.sort(full, -1) == np.arange(1, len(self.methods) + 1)).all(-1)][0]
            raise ValueError(f"ranks {bad.tolist()} are not a permutation of 1..{len(self.methods)}")

    @property
    def present(self) -> np.ndarray:
        """``[U, C]`` bool: which (user, case) pairs were ranked."""
        return ~np.isnan(self.ranks[..., 0])

    @property
    def n_rankings(self) -> int:
        return int(self.present.sum())

    def __len__(self) -> int:
        return self.n_rankings

    def __str__(self) -> str:
        return (f"Rankings: {len(self.users)} users × {len(self.cases)} cases, {self.n_rankings} rankings of "
                f"{len(self.methods)} methods ({', '.join(self.methods)})")

    @classmethod
    def from_records(cls, records: Iterable, methods: Sequence[str] | None = None) -> "Rankings":
        """From ``(user, case, method, rank)`` tuples or dicts with those keys. Users, cases and
        (unless ``methods`` is given) methods keep their order of first appearance."""
        rows = []
        for rec in records:
            if isinstance(rec, Mapping):
                try:
                    rec = tuple(rec[k] for k in CSV_COLUMNS)
                except KeyError as e:
                    raise ValueError(f"record {dict(rec)} lacks the column {e.args[0]!r}; needed: {CSV_COLUMNS}") from None
            if len(rec) != 4:
                raise ValueError(f"record {rec!r} must be (user, case, method, rank)")
            rows.append((str(rec[0]), str(rec[1]), str(rec[2]), rec[3]))
        users = tuple(dict.fromkeys(r[0] for r in rows))
        cases = tuple(dict.fromkeys(r[1] for r in rows))
        seen = tuple(dict.fromkeys(r[2] for r in rows))
        if methods is None:
            methods = seen
        else:
            methods = tuple(methods)
            if unknown := [m for m in seen if m not in methods]:
                raise ValueError(f"methods {unknown} in the records are not among methods={methods}")
        ui, ci, mi = ({n: i for i, n in enumerate(x)} for x in (users, cases, methods))
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        for u, c, m, r in rows:
            g = groups.setdefault((u, c), {})
            if m in g:
                raise ValueError(f"user {u!r}, case {c!r} ranks method {m!r} twice")
            g[m] = r
        ranks = np.full((len(users), len(cases), len(methods)), np.nan)
        for (u, c), g in groups.items():
            if set(g) != set(methods):
                raise ValueError(f"user {u!r}, case {c!r} ranks {sorted(g)}; every ranking must rank all of {methods}")
            for m, r in _check_permutation(g, f"user {u!r}, case {c!r}").items():
                ranks[ui[u], ci[c], mi[m]] = r
        return cls(methods, users, cases, ranks)

    def records(self) -> list[tuple[str, str, str, int]]:
        """The long table: one ``(user, case, method, rank)`` row per ranked output."""
        out = []
        for u, c in np.argwhere(self.present):
            for m, name in enumerate(self.methods):
                out.append((self.users[u], self.cases[c], name, int(self.ranks[u, c, m])))
        return out

    def subset(self, users: Sequence[str] | None = None, cases: Sequence[str] | None = None) -> "Rankings":
        """The rankings of some users and/or cases."""
        ui = [self.users.index(u) for u in users] if users is not None else list(range(len(self.users)))
        ci = [self.cases.index(c) for c in cases] if cases is not None else list(range(len(self.cases)))
        return Rankings(self.methods, tuple(self.users[i] for i in ui), tuple(self.cases[i] for i in ci),
                        self.ranks[np.ix_(ui, ci)])

    @staticmethod
    def concat(parts: Sequence["Rankings"]) -> "Rankings":
        """Merge studies (e.g. one CSV per student); a (user, case) pair may appear only once."""
        recs = [r for p in parts for r in p.records()]
        return Rankings.from_records(recs, methods=parts[0].methods if parts else None)


def save_csv(rankings: Rankings, path: str | Path) -> Path:
    """Write ``rankings`` as a CSV with the header ``user,case,method,rank`` (one row per output)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        w.writerows(rankings.records())
    log.info("saved %d rankings to %s", rankings.n_rankings, path)
    return path


def load_csv(paths: str | Path | Sequence[str | Path], methods: Sequence[str] | None = None) -> Rankings:
    """Read one CSV written by :func:`save_csv` (or :meth:`RankingSession.save_csv`), or several
    (e.g. one per student) merged into one study."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    recs = []
    for p in paths:
        with open(p, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
                raise ValueError(f"{p}: header {reader.fieldnames} is not {list(CSV_COLUMNS)}")
            recs.extend(reader)
    return Rankings.from_records(recs, methods=methods)


# ----------------------------------------------------------------------------------------------
# Statistics with confidence intervals
# ----------------------------------------------------------------------------------------------


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
    """Table 1 computed from raw rankings (average rank and win probabilities with intervals)."""
    kw = dict(ci=ci, level=level, n_boot=n_boot, resample=resample, seed=seed)
    present = rankings.present
    return StudyTable(rankings.methods, average_rank(rankings, **kw), win_probability(rankings, **kw),
                      n_users=int(present.any(1).sum()), n_cases=int(present.any(0).sum()),
                      source=source or f"{rankings.n_rankings} rankings")


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
                      case_sd: float = 0.0, methods: Sequence[str] | None = None, seed: int = 0) -> Rankings:
    """A constructed study: every user ranks every case (the paper's design: 60 × 20 = 1200 rankings).

    User u sees method i on case c with utility  s_i + a_ui + b_ci + e_uci  and ranks by decreasing
    utility; a_ui ~ N(0, user_sd²) (taste), b_ci ~ N(0, case_sd²) (the method's luck on that case),
    e ~ N(0, 1) for Thurstone, standard Gumbel for Plackett–Luce (then P(i ranked first) ∝ exp(s_i)
    when user_sd = case_sd = 0). Continuous utilities: no ties. Deterministic for a given ``seed``."""
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
    util = (s + noise + user_sd * rng.standard_normal((n_users, 1, m))
            + case_sd * rng.standard_normal((1, n_cases, m)))
    ranks = np.argsort(np.argsort(-util, axis=-1), axis=-1) + 1.0
    w = max(2, len(str(max(n_users, n_cases) - 1)))
    return Rankings(methods, tuple(f"u{u:0{w}d}" for u in range(n_users)), tuple(f"c{c:0{w}d}" for c in range(n_cases)),
                    ranks)


def ci_vs_users(strengths: Sequence[float], n_users: Sequence[int] = (5, 10, 20, 40, 60, 120), *, n_cases: int = 20,
                user_sd: float = 0.0, case_sd: float = 0.0, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """How the bootstrap intervals shrink as more users take a simulated study: per ``n_users``, the mean
    95 % half-width of the average ranks and of the win probabilities (in percentage points)."""
    rows = []
    for i, n in enumerate(n_users):
        r = simulate_rankings(strengths, n_users=n, n_cases=n_cases, user_sd=user_sd, case_sd=case_sd, seed=seed + i)
        t = summarize(r, n_boot=n_boot, seed=seed)
        rows.append({"users": n, "rankings": r.n_rankings,
                     "avg rank ± (mean)": round(float(np.mean(t.avg_rank.half_width)), 4),
                     "win prob ± pp (mean)": round(float(np.nanmean(t.win_prob.half_width)) * 100, 2)})
    return rows


# ----------------------------------------------------------------------------------------------
# Tables and figures
# ----------------------------------------------------------------------------------------------


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
    return "\n".join(lines)


def _tables(tables) -> dict[str, StudyTable]:
    if isinstance(tables, StudyTable):
        return {tables.source or "study": tables}
    return dict(tables)


def plot_average_rank(tables: StudyTable | Mapping[str, StudyTable], *, ax=None):
    """Bars of the average rank (1 = best) per method with their intervals; several tables (e.g. the
    paper and the class) side by side. Returns the figure; :func:`format_table` prints the numbers."""
    import matplotlib.pyplot as plt

    tables = _tables(tables)
    methods = next(iter(tables.values())).methods
    fig, ax = (plt.subplots(figsize=(1.6 + 1.3 * len(methods), 3.2)) if ax is None else (ax.figure, ax))
    width = 0.8 / len(tables)
    x = np.arange(len(methods))
    for k, (label, t) in enumerate(tables.items()):
        if t.methods != methods:
            raise ValueError(f"table {label!r} has methods {t.methods}; expected {methods}")
        a = t.avg_rank
        err = None if a.low is None else np.vstack([a.value - a.low, a.high - a.value])
        bars = ax.bar(x + (k - (len(tables) - 1) / 2) * width, a.value - 1, width, bottom=1, yerr=err, capsize=3,
                      label=label)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in a.value], fontsize=7, padding=2, label_type="center")
    ax.axhline((len(methods) + 1) / 2, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, [_short(n) for n in methods])
    ax.set_ylim(1, len(methods))
    ax.set_ylabel("average rank (1 = best) ↓")
    with_ci = [t.avg_rank for t in tables.values() if t.avg_rank.low is not None]
    ax.set_title("average rank" + (f", {with_ci[0].level:.0%} intervals" if with_ci else ""), fontsize=9)
    if len(tables) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_win_matrix(table: StudyTable, *, ax=None):
    """Heatmap of P(row method ranked better than column method), each cell with its percentage and,
    if present, its interval. Returns the figure; :func:`format_table` prints the numbers."""
    import matplotlib.pyplot as plt

    w = table.win_prob
    m = len(table.methods)
    fig, ax = (plt.subplots(figsize=(1.2 + 1.25 * m, 0.8 + 1.0 * m)) if ax is None else (ax.figure, ax))
    im = ax.imshow(np.ma.masked_invalid(w.value * 100), cmap="RdBu", vmin=25, vmax=75)
    for i in range(m):
        for j in range(m):
            if i == j:
                ax.text(j, i, "–", ha="center", va="center", color="grey")
                continue
            s = f"{w.value[i, j] * 100:.1f}%"
            if w.low is not None:
                s += f"\n[{w.low[i, j] * 100:.0f}, {w.high[i, j] * 100:.0f}]"
            ax.text(j, i, s, ha="center", va="center", fontsize=8)
    names = [_short(n) for n in table.methods]
    ax.set_xticks(range(m), names)
    ax.set_yticks(range(m), names)
    ax.set_xlabel("column method")
    ax.set_ylabel("row method")
    ax.set_title(f"P(row ranked better than column) — {table.source}" if table.source else
                 "P(row ranked better than column)", fontsize=9)
    fig.colorbar(im, ax=ax, label="%", shrink=0.8)
    fig.tight_layout()
    return fig


def plot_ci_vs_users(rows: list[dict], *, ax=None):
    """The rows of :func:`ci_vs_users`: mean interval half-width against the number of users (log–log;
    a bootstrap over independent users shrinks like 1/√users; with very few users the percentile
    bootstrap is too narrow, so the smallest studies fall below the line)."""
    import matplotlib
    import matplotlib.pyplot as plt

    fig, ax = (plt.subplots(figsize=(4.2, 3.0)) if ax is None else (ax.figure, ax))
    n = np.array([r["users"] for r in rows], dtype=float)
    pp = np.array([r["win prob ± pp (mean)"] for r in rows])
    ax.loglog(n, pp, "o-", label="win probability (± pp)")
    ax.loglog(n, pp[-1] * np.sqrt(n[-1] / n), "k:", lw=0.8, label="∝ 1/√users")
    ax.set_xticks(n, [f"{v:g}" for v in n])
    ticks = [v for v in (0.5, 1, 1.5, 2, 3, 4, 5, 7, 10, 15, 20, 30) if pp.min() / 1.3 <= v <= pp.max() * 1.3]
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_yticks(ticks, [f"{v:g}" for v in ticks])
    ax.set_xlabel("users")
    ax.set_ylabel("mean 95% half-width")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# the in-class ranking widget lives in romlib.study_session (re-exported here)
from .study_session import RankingSession, StudyCase  # noqa: E402
