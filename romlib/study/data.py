"""User-study data: the methods of Table 1, one ranking per (user, case), CSV in and out."""
from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np


log = logging.getLogger(__name__)

#: The four methods of Table 1, in the paper's order.
METHODS = ("Blended", "GLIDE (CLIP-guided)", "GLIDE (CF-guided)", "Ours (CCF-guided)")
#: The same four methods as romlib's guidance methods (``romlib.guidance.methods.METHODS``), in the same order.
TABLE1_GUIDANCE = ("blended", "clip", "cf", "ccf")
#: Column headers of Table 1.
SHORT_NAMES = {"Blended": "Blend", "GLIDE (CLIP-guided)": "G-CLIP", "GLIDE (CF-guided)": "G-CF",
               "Ours (CCF-guided)": "Ours"}
CSV_COLUMNS = ("user", "case", "method", "rank")
#: A cell a spreadsheet would evaluate starts with one of these; :func:`save_csv` writes it after a ``'``.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(text: str) -> str:
    """``text`` as a CSV cell a spreadsheet shows as text: a cell starting with one of :data:`FORMULA_STARTS`
    (``=HYPERLINK(...)``, ``+cmd|...``) or with ``'`` gets a leading ``'``; :func:`unescape_cell` undoes it exactly."""
    return "'" + text if text.startswith(FORMULA_STARTS + ("'",)) else text


def unescape_cell(text: str) -> str:
    """The text :func:`escape_cell` escaped (one leading ``'`` dropped)."""
    return text[1:] if text.startswith("'") else text


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
        if isinstance(r, bool) or type(r).__name__ == "bool_":  # True == 1 in Python: never a rank
            raise ValueError(f"{what}: rank {r!r} of {k!r} is a bool, not an integer in 1..{m}")
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
    """Write ``rankings`` as a CSV with the header ``user,case,method,rank`` (one row per output). Names a
    spreadsheet would evaluate as a formula are escaped (:func:`escape_cell`); :func:`load_csv` reads them back
    unchanged."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        w.writerows((escape_cell(u), escape_cell(c), escape_cell(m), r) for u, c, m, r in rankings.records())
    log.info("saved %d rankings to %s", rankings.n_rankings, path)
    return path


def load_csv(paths: str | Path | Sequence[str | Path], methods: Sequence[str] | None = None) -> Rankings:
    """Read one CSV written by :func:`save_csv` (or :meth:`RankingSession.save_csv`), or several
    (e.g. one per student) merged into one study. Escaped names (:func:`escape_cell`) are read back unchanged;
    a row with more or fewer cells than the header is refused with its line."""
    from ..io import check_file

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise ValueError("load_csv got no file; pass a path or a list of paths of CSVs written by save_csv")
    recs = []
    for p in paths:
        check_file(p, "CSV")  # a folder, pipe or device is refused before it is opened
        try:  # utf-8-sig: a spreadsheet's byte-order mark is read and dropped
            with open(p, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
                    raise ValueError(f"{p}: header {reader.fieldnames} is not {list(CSV_COLUMNS)}")
                for row in reader:
                    cells = sum(row.get(k) is not None for k in CSV_COLUMNS) + len(row.get(None) or ())
                    if cells != len(CSV_COLUMNS):
                        raise ValueError(f"{p}, line {reader.line_num}: the row has {cells} cells where the header has "
                                         f"{len(CSV_COLUMNS)} ({', '.join(CSV_COLUMNS)})")
                    recs.append({k: unescape_cell(v) if k != "rank" else v for k, v in row.items()})
        except UnicodeDecodeError as e:
            raise ValueError(f"{p} is not UTF-8 text (byte {e.object[e.start]:#04x} at position {e.start}): save it "
                             "as UTF-8 (CSV UTF-8 in a spreadsheet) and load it again") from None
    return Rankings.from_records(recs, methods=methods)


# ----------------------------------------------------------------------------------------------
# Statistics with confidence intervals
# ----------------------------------------------------------------------------------------------
