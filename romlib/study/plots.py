"""Table 1 as text and figures: average-rank bars, the win-probability matrix, interval width vs users."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .data import _short
from .stats import StudyTable



# ----------------------------------------------------------------------------------------------
# Tables and figures
# ----------------------------------------------------------------------------------------------


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
    """The rows of :func:`ci_vs_users`: mean interval half-width against the number of users (log–log).
    Without case variance the width shrinks like 1/√users (the dotted line, through the largest study;
    with very few users the percentile bootstrap is too narrow, so the smallest studies fall below it);
    with case variance it flattens onto the floor that no number of users removes (the dashed line,
    ``"floor ± pp"``; the dotted line then starts at the smallest study)."""
    import matplotlib
    import matplotlib.pyplot as plt

    fig, ax = (plt.subplots(figsize=(6.0, 3.8)) if ax is None else (ax.figure, ax))
    n = np.array([r["users"] for r in rows], dtype=float)
    pp = np.array([r["win prob ± pp (mean)"] for r in rows])
    ax.loglog(n, pp, "o-", label="win probability (± pp)")
    floor = float(rows[0].get("floor ± pp", 0.0))
    anchor = 0 if floor > 0 else -1
    ax.loglog(n, pp[anchor] * np.sqrt(n[anchor] / n), "k:", lw=0.8, label="∝ 1/√users")
    if floor > 0:
        ax.axhline(floor, color="C3", ls="--", lw=1, label=f"floor from case variance ({floor:g} pp)")
        pp = np.append(pp, floor)  # keep the floor within the ticks
    ax.set_xticks(n, [f"{v:g}" for v in n])
    ticks = [v for v in (0.5, 1, 1.5, 2, 3, 4, 5, 7, 10, 15, 20, 30) if pp.min() / 1.3 <= v <= pp.max() * 1.3]
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_yticks(ticks, [f"{v:g}" for v in ticks])
    ax.set_xlabel("users")
    ax.set_ylabel("mean 95% half-width")
    ax.set_title("does adding users still narrow the interval? (the same cases in every study)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# the in-class ranking widget lives in romlib.study.session (re-exported here)
