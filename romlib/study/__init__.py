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
from .data import CSV_COLUMNS, METHODS, SHORT_NAMES, TABLE1_GUIDANCE, Rankings, load_csv, save_csv
from .plots import plot_average_rank, plot_ci_vs_users, plot_win_matrix
from .session import STAND_INS, RankingSession, StudyCase, StudyMethods, study_methods
from .simulate import case_floor, ci_vs_users, fit_strengths, simulate_rankings
from .stats import (ConsistencyReport, Estimate, StudyTable, average_rank, consistency_check, format_table, paper_table1,
                    summarize, table_ci, win_probability)

__all__ = [
    "METHODS", "TABLE1_GUIDANCE", "SHORT_NAMES", "CSV_COLUMNS", "Rankings", "Estimate", "StudyTable", "ConsistencyReport", "StudyCase",
    "RankingSession", "StudyMethods", "study_methods", "STAND_INS", "load_csv", "save_csv", "average_rank", "win_probability", "summarize", "paper_table1", "table_ci",
    "consistency_check", "fit_strengths", "simulate_rankings", "ci_vs_users", "case_floor", "format_table", "plot_average_rank",
    "plot_win_matrix", "plot_ci_vs_users",
]
