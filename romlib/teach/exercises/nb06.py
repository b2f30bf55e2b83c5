"""Notebook 06's exercises: Table 1's average rank and win probabilities from raw rankings."""
from __future__ import annotations

import numpy as np

from ...study.data import Rankings
from ...study.stats import average_rank as library_average_rank, win_probability as library_win_probability
from .core import Exercise, Mistake, fresh_seed


def _ranking_cases(seed: int = 0):
    """Raw rankings ``ranks[user, case, method]`` (1 = best, NaN = not ranked), unbalanced on purpose."""
    rng = np.random.default_rng(fresh_seed(10, seed))
    out = []
    for users, cases, methods, missing in ((5, 4, 4, 0.3), (3, 6, 3, 0.4), (8, 5, 4, 0.0), (1, 5, 4, 0.2), (6, 3, 2, 0.3)):
        strength = np.linspace(0.8, -0.8, methods)
        util = strength + rng.standard_normal((users, cases, methods))
        r = (np.argsort(np.argsort(-util, axis=-1), axis=-1) + 1).astype(float)
        drop = rng.random((users, cases)) < missing
        drop[0, 0] = False  # every user keeps at least one ranking
        drop[:, 0] = False
        r[drop] = np.nan
        out.append((r,))
    return out


def _table(ranks):
    u, c, m = ranks.shape
    return Rankings(tuple(f"m{i}" for i in range(m)), tuple(f"u{i}" for i in range(u)), tuple(f"c{i}" for i in range(c)),
                    ranks)


def _avg_reference(ranks):
    return library_average_rank(_table(ranks), ci="none").value


def _win_reference(ranks):
    return library_win_probability(_table(ranks), ci="none").value


def average_rank(ranks):
    """Average rank per method over every (user, case) ranking present (NaN = not ranked)."""
    import numpy as np

    return np.nanmean(ranks, axis=(0, 1))


AVERAGE_RANK = Exercise(
    id="06.average-rank", title="average rank from raw rankings", function="average_rank", paper="§5.2, Table 1",
    prompt="Write average_rank(ranks): ranks[u, c, m] is the rank (1 = best) user u gave method m on case c, NaN "
           "where user u did not rank case c. Return one number per method: its mean rank over all rankings present.",
    stub='''import numpy as np

def average_rank(ranks):
    """ranks [users, cases, methods], 1 = best, NaN = not ranked -> [methods]."""
    return ...  # TODO
''',
    reference=_avg_reference, solution=average_rank, cases=_ranking_cases,
    mistakes=(
        Mistake(lambda r: np.mean(r, axis=(0, 1)),
                "NaN: a user who did not rank a case leaves NaN in the table; average over the rankings present "
                "(np.nanmean)"),
        Mistake(lambda r: np.nanmean(np.nanmean(r, axis=1), axis=0),
                "you averaged each user's own average: a user who ranked fewer cases weighs as much as one who ranked "
                "all; Table 1 averages over all rankings"),
        Mistake(lambda r: np.nanmean(r, axis=(0, 2)),
                "one value per case: average over users and cases (axes 0 and 1), one value per method"),
        Mistake(lambda r: np.nanmean(r.shape[-1] + 1 - r, axis=(0, 1)),
                "you turned ranks into scores (M + 1 − rank, higher = better); Table 1's average rank keeps rank 1 = "
                "best, lower is better"),
    ),
    checks="per-method average against romlib.study.average_rank on unbalanced studies (NaN = not ranked), 2–4 "
           "methods, one user included",
    hints=('§5.2 of the paper and Table 1: the average rank of a method over the rankings that were given.',
           'A mean over users and cases that skips the NaN (not ranked) entries: one number per method.'),
    hint="np.nanmean over axes 0 and 1 (users and cases).",
)


def win_probability(ranks):
    """P[i, j]: the share of the rankings present in which method i is ranked better (lower) than method j."""
    import numpy as np

    present = ~np.isnan(ranks[..., 0])
    r = ranks[present]  # [N rankings, M]
    return (r[:, :, None] < r[:, None, :]).mean(0)


def _nan_diagonal(p):
    """The diagonal (a method against itself) is not checked: NaN in every answer."""
    if not hasattr(p, "shape") and not isinstance(p, (list, tuple)):  # not array-like: left for the checker to report
        return p
    try:
        p = np.array(p, dtype=float)  # any array-like: an array, a tensor, a nested list
    except (TypeError, ValueError):  # ragged or not numbers: left as it is for the checker to report
        return p
    if p.ndim == 2 and p.shape[0] == p.shape[1]:
        np.fill_diagonal(p, np.nan)
    return p


def _wins(r):
    present = ~np.isnan(r[..., 0])
    return r[present]


WIN_PROBABILITY = Exercise(
    id="06.win-prob", title="win probabilities from raw rankings", function="win_probability",
    paper="§5.2, Table 1 (P(row beats column))",
    prompt="Write win_probability(ranks): the [M, M] matrix whose entry [i, j] is the fraction of rankings (those "
           "present; NaN = not ranked) in which method i is ranked better than method j (rank 1 = best). The diagonal "
           "is not checked.",
    stub='''import numpy as np

def win_probability(ranks):
    """ranks [users, cases, methods], 1 = best, NaN = not ranked -> P [methods, methods]."""
    present = ~np.isnan(ranks[..., 0])
    r = ranks[present]        # [rankings, methods]
    return ...  # TODO: P[i, j] = fraction of rankings with r_i better than r_j
''',
    reference=_win_reference, solution=win_probability, cases=_ranking_cases,
    mistakes=(
        Mistake(lambda r: (_wins(r)[:, :, None] > _wins(r)[:, None, :]).mean(0),
                "rank 1 is best: you counted wins of the other method (your P[i, j] is P(j beats i)); method i beats "
                "j when r_i < r_j"),
        Mistake(lambda r: (r[:, :, :, None] < r[:, :, None, :]).sum((0, 1)) / (r.shape[0] * r.shape[1]),
                "missing rankings counted as losses: divide by the number of rankings present, not users × cases"),
        Mistake(lambda r: 100 * (_wins(r)[:, :, None] < _wins(r)[:, None, :]).mean(0),
                "win probabilities are fractions in [0, 1]; you gave percentages"),
        Mistake(lambda r: np.nanmean(np.where(~np.isnan(r[..., :1, None]), (r[..., :, None] < r[..., None, :]), np.nan)
                                     .reshape(r.shape[0], -1, r.shape[-1], r.shape[-1]), axis=1).mean(0),
                "you averaged each user's own win rate: users who ranked fewer cases weigh as much as the others; "
                "count over all rankings"),
    ),
    checks="P against romlib.study.win_probability on the same unbalanced studies (diagonal ignored)",
    hints=("§5.2 of the paper and Table 1's 'beats' columns: over how many rankings is each fraction taken?",
           'Keep the rankings present; for each pair (i, j) count how often r_i is better (smaller) than r_j, divided by the number of rankings.'),
    hint="over the rankings present, r = ranks[present]: (r[:, :, None] < r[:, None, :]).mean(0).",
    normalise=_nan_diagonal,
)

EXERCISES = (AVERAGE_RANK, WIN_PROBABILITY)
