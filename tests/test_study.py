import importlib.util
import re
import itertools

import numpy as np
import pytest

import romlib.study as st

# A study small enough to do by hand: 3 methods, user u1 ranks cases c1 and c2, user u2 only c1.
HAND = [("u1", "c1", "X", 1), ("u1", "c1", "Y", 2), ("u1", "c1", "Z", 3),
        ("u1", "c2", "X", 2), ("u1", "c2", "Y", 1), ("u1", "c2", "Z", 3),
        ("u2", "c1", "X", 1), ("u2", "c1", "Y", 3), ("u2", "c1", "Z", 2)]


def _by_definition(records, methods):
    """Average rank and P(i ranked better than j), straight from the definitions with loops."""
    rankings = {}
    for u, c, m, r in records:
        rankings.setdefault((u, c), {})[m] = r
    n = len(rankings)
    avg = [sum(rk[m] for rk in rankings.values()) / n for m in methods]
    win = [[np.nan if a == b else sum(rk[a] < rk[b] for rk in rankings.values()) / n for b in methods]
           for a in methods]
    return np.array(avg), np.array(win)


def test_hand_example_average_rank_and_win_probability():
    r = st.Rankings.from_records(HAND)
    assert r.methods == ("X", "Y", "Z") and r.n_rankings == 3 and np.isnan(r.ranks[1, 1]).all()
    avg = st.average_rank(r, ci="none").value
    win = st.win_probability(r, ci="none").value
    np.testing.assert_allclose(avg, [4 / 3, 2, 8 / 3])  # X: (1+2+1)/3, Y: (2+1+3)/3, Z: (3+3+2)/3
    np.testing.assert_allclose(win, [[np.nan, 2 / 3, 1], [1 / 3, np.nan, 2 / 3], [0, 1 / 3, np.nan]])
    exp_avg, exp_win = _by_definition(HAND, r.methods)
    np.testing.assert_allclose(avg, exp_avg)
    np.testing.assert_allclose(win, exp_win)


def test_simulated_study_obeys_the_identities_exactly():
    sim = st.simulate_rankings([0.3, -0.2, 0.0, 0.5], n_users=23, n_cases=7, user_sd=0.5, case_sd=0.5, seed=3)
    recs = [rec for k, rec in enumerate(sim.records()) if (k // 4) % 5 != 2]  # drop every 5th ranking: unbalanced
    r = st.Rankings.from_records(recs)
    assert r.n_rankings < sim.n_rankings
    t = st.summarize(r, ci="none")
    exp_avg, exp_win = _by_definition(recs, r.methods)
    np.testing.assert_allclose(t.avg_rank.value, exp_avg, atol=1e-12)
    np.testing.assert_allclose(t.win_prob.value, exp_win, atol=1e-12)
    w = np.nan_to_num(t.win_prob.value)
    np.testing.assert_allclose(t.avg_rank.value, 1 + w.sum(0), atol=1e-12)  # R_i = 1 + sum_j P(j beats i)
    off = ~np.eye(4, dtype=bool)
    np.testing.assert_allclose((w + w.T)[off], 1, atol=1e-12)
    rep = st.consistency_check(t)
    assert rep.ok, str(rep)


def test_consistency_check_passes_rounded_consistent_table_and_flags_inconsistent_ones():
    sim = st.summarize(st.simulate_rankings([0.1, -0.3, 0.0, 0.3], n_users=60, n_cases=20, seed=1), ci="none")
    avg, win = np.round(sim.avg_rank.value, 2), np.round(sim.win_prob.value, 3)  # as printed in a paper
    assert st.consistency_check(avg, win).ok
    bad_rank = avg.copy()
    bad_rank[2] += 0.05
    rep = st.consistency_check(bad_rank, win)
    assert not rep.ok and [b[0] for b in rep.bad_ranks] == [st.METHODS[2]] and not rep.bad_pairs
    assert "DOES NOT ADD UP" in str(rep)
    bad_pair = win.copy()
    bad_pair[0, 1] += 0.03
    rep = st.consistency_check(avg, bad_pair)
    assert [(a, b) for a, b, _ in rep.bad_pairs] == [(st.METHODS[0], st.METHODS[1])]
    assert rep.pair_sum[0, 1] == pytest.approx(win[0, 1] + win[1, 0] + 0.03)
    cyc = np.array([[np.nan, 0.9, 0.1], [0.1, np.nan, 0.9], [0.9, 0.1, np.nan]])  # a > b > c > a, always
    rep = st.consistency_check([2.0, 2.0, 2.0], cyc, methods=["a", "b", "c"])
    assert rep.cycles and rep.cycles[0][:3] == ("a", "b", "c") and not rep.bad_pairs and not rep.bad_ranks
    with pytest.raises(ValueError, match="fractions"):
        st.consistency_check(avg, win * 100)


def test_consistency_of_the_paper_table():
    t = st.paper_table1()
    rep = st.consistency_check(t)
    p, r = t.win_prob.value, t.avg_rank.value
    for i in range(4):
        assert rep.rank_from_column[i] == pytest.approx(1 + sum(p[j, i] for j in range(4) if j != i))
    flagged = {(a, b) for a, b, _ in rep.bad_pairs}
    expected = {(t.methods[i], t.methods[j]) for i, j in itertools.combinations(range(4), 2)
                if abs(p[i, j] + p[j, i] - 1) > 0.001}
    assert flagged == expected and len(expected) == 1
    assert {b[0] for b in rep.bad_ranks} == {t.methods[i] for i in range(4)
                                             if abs(r[i] - rep.rank_from_column[i]) > 0.0065}


def test_csv_round_trip_and_merge(tmp_path):
    sim = st.simulate_rankings([0.0, 0.2, -0.1, 0.4], n_users=6, n_cases=3, seed=0)
    path = st.save_csv(sim, tmp_path / "all.csv")
    back = st.load_csv(path)
    assert (back.methods, back.users, back.cases) == (sim.methods, sim.users, sim.cases)
    np.testing.assert_array_equal(back.ranks, sim.ranks)
    st.save_csv(sim.subset(users=sim.users[:2]), tmp_path / "a.csv")
    st.save_csv(sim.subset(users=sim.users[2:]), tmp_path / "b.csv")
    merged = st.load_csv([tmp_path / "a.csv", tmp_path / "b.csv"])
    np.testing.assert_array_equal(merged.ranks, sim.ranks)
    (tmp_path / "bad.csv").write_text("who,case,method,rank\n")
    with pytest.raises(ValueError, match="header"):
        st.load_csv(tmp_path / "bad.csv")


def test_rankings_reject_ties_and_incomplete_rankings():
    with pytest.raises(ValueError, match="not a permutation"):
        st.Rankings.from_records([("u", "c", "X", 1), ("u", "c", "Y", 1)])
    with pytest.raises(ValueError, match="must rank all"):
        st.Rankings.from_records(HAND[:-1])
    with pytest.raises(ValueError, match="twice"):
        st.Rankings.from_records(HAND + [HAND[0]])


def _cases(n=12):
    """Each method's output is a flat image of its own colour, so a test can 'see' which method it is."""
    colours = {m: (40 * k + 20,) * 3 for k, m in enumerate(st.METHODS)}
    img = lambda c: np.full((8, 8, 3), c, np.uint8)  # noqa: E731
    cases = [dict(id=f"case{i:02d}", image=img((0, 0, 0)), target=f"target {i}",
                  outputs={m: img(colours[m]) for m in st.METHODS}) for i in range(n)]
    return cases, {c[0]: m for m, c in colours.items()}


def test_ranking_session_blinds_and_recovers_methods(tmp_path):
    cases, method_of = _cases()
    s = st.RankingSession(cases, user="alice", seed=0)
    keys = [tuple(s.reveal(c["id"]).values()) for c in cases]
    assert len(set(keys)) > 1  # the order is shuffled per case
    assert keys == [tuple(st.RankingSession(cases, user="alice", seed=0).reveal(c["id"]).values()) for c in cases]
    assert keys != [tuple(st.RankingSession(cases, user="bob", seed=0).reveal(c["id"]).values()) for c in cases]
    truth = {m: k + 1 for k, m in enumerate(reversed(st.METHODS))}  # the participant's taste: Ours first
    for c in cases:
        seen = s.blinded(c["id"])
        assert [lab for lab, _ in seen] == ["A", "B", "C", "D"]
        s.record(c["id"], {lab: truth[method_of[int(im[0, 0, 0])]] for lab, im in seen})
    r = s.rankings()
    assert r.n_rankings == len(cases) and s.next_case() is None
    np.testing.assert_array_equal(r.ranks[0], np.tile([truth[m] for m in st.METHODS], (len(cases), 1)))
    back = st.load_csv(s.save_csv(tmp_path / "alice.csv"))
    np.testing.assert_array_equal(back.ranks, r.ranks)
    assert "All cases ranked" in s.text()


def test_ranking_session_rejects_invalid_rankings():
    cases, _ = _cases(2)
    s = st.RankingSession(cases, seed=1)
    with pytest.raises(ValueError, match=r"not a permutation of 1\.\.4.*used more than once: \[1\].*missing: \[2\]"):
        s.record("case00", {"A": 1, "B": 1, "C": 3, "D": 4})
    with pytest.raises(ValueError, match="outside 1..4"):
        s.record("case00", {"A": 1, "B": 2, "C": 3, "D": 5})
    with pytest.raises(ValueError, match="exactly once"):
        s.record("case00", {"A": 1, "B": 2, "C": 3})
    with pytest.raises(ValueError, match="unknown case"):
        s.record("case99", {"A": 1, "B": 2, "C": 3, "D": 4})
    assert s.n_recorded == 0 and "session.record('case00'" in s.text()
    with pytest.raises(ValueError, match="expected"):
        st.RankingSession(cases + [dict(id="x", image=None, target="t", outputs={"a": None})])


def test_ranking_widget_calls_record():
    pytest.importorskip("ipywidgets")
    cases, _ = _cases(2)
    s = st.RankingSession(cases, seed=2)
    s.widget()
    drops, submit, message = s.ui["dropdowns"], s.ui["submit"], s.ui["message"]
    for lab, d in drops.items():
        d.value = 1
    submit.click()
    assert s.n_recorded == 0 and "not a permutation" in message.value
    for k, d in enumerate(drops.values()):
        d.value = k + 1
    submit.click()
    assert s.n_recorded == 1 and s.ui["state"]["index"] == 1
    rank_of = {s.reveal("case00")[lab]: k + 1 for k, lab in enumerate(drops)}  # label A got 1, B got 2, ...
    assert s.rankings().ranks[0, 0].tolist() == [rank_of[m] for m in st.METHODS]


def test_bootstrap_ci_contains_estimate_shrinks_and_is_seeded():
    s = [0.2, -0.3, 0.0, 0.4]
    widths = []
    for n_users in (10, 160):
        r = st.simulate_rankings(s, n_users=n_users, n_cases=10, user_sd=0.3, seed=n_users)
        for ci in ("bootstrap", "cluster"):
            for e in (st.average_rank(r, ci=ci, n_boot=400), st.win_probability(r, ci=ci, n_boot=400)):
                off = ~np.isnan(e.value)
                assert (e.low[off] <= e.value[off]).all() and (e.value[off] <= e.high[off]).all(), (ci, n_users)
        widths.append(np.nanmean(st.win_probability(r, n_boot=400).half_width))
    assert widths[1] < 0.5 * widths[0]  # 16× the users: about 1/4 the width
    boot, clus = (st.win_probability(r, ci=ci, n_boot=400).half_width for ci in ("bootstrap", "cluster"))
    np.testing.assert_allclose(np.nanmean(clus), np.nanmean(boot), rtol=0.25)  # two routes, one uncertainty
    a = st.average_rank(r, n_boot=200, seed=5)
    np.testing.assert_array_equal(a.low, st.average_rank(r, n_boot=200, seed=5).low)
    assert not np.array_equal(a.low, st.average_rank(r, n_boot=200, seed=6).low)
    both = st.average_rank(r, n_boot=400, resample="both")
    assert np.mean(both.half_width) > np.mean(st.average_rank(r, n_boot=400).half_width)  # cases add uncertainty


def test_table_ci_for_published_numbers():
    t = st.paper_table1()
    naive = st.table_ci(t)
    off = ~np.eye(4, dtype=bool)
    for e in (naive.avg_rank, naive.win_prob):
        v = e.value[off] if e.value.ndim == 2 else e.value
        lo = e.low[off] if e.value.ndim == 2 else e.low
        hi = e.high[off] if e.value.ndim == 2 else e.high
        assert (lo < v).all() and (v < hi).all()
    p = t.win_prob.value[3, 0]  # 1200 independent rankings: ± 1.96 sqrt(p(1-p)/1200)
    assert naive.win_prob.half_width[3, 0] == pytest.approx(1.96 * np.sqrt(p * (1 - p) / 1200), rel=0.01)
    more = st.table_ci(t, n_users=240)
    assert (more.win_prob.half_width[off] < naive.win_prob.half_width[off]).all()
    shared_cases = st.table_ci(t, icc_case=0.1)
    assert (shared_cases.avg_rank.half_width > naive.avg_rank.half_width).all()
    n_eff = 1 / (0.1 / 20 + 0.9 / 1200)  # Var = s2 (icc_case / n_cases + (1 - icc_case) / (n_users n_cases))
    assert shared_cases.win_prob.half_width[3, 0] == pytest.approx(1.96 * np.sqrt(p * (1 - p) / n_eff), rel=0.03)
    assert shared_cases.avg_rank.half_width[0] == pytest.approx(1.96 * np.sqrt(1.25 / n_eff), rel=0.01)
    assert "[" in st.format_table(naive) and "n_eff = 1200" in st.format_table(naive)
    with pytest.raises(ValueError, match="icc_case"):
        st.table_ci(t, icc_case=1.5)


def test_simulator_and_strengths():
    s = np.log([1.0, 2.0, 3.0])  # Plackett-Luce: P(first) = 1/6, 2/6, 3/6
    r = st.simulate_rankings(s, n_users=100, n_cases=60, model="plackett-luce", methods="abc", seed=0)
    first = (r.ranks == 1).mean((0, 1))
    np.testing.assert_allclose(first, [1 / 6, 2 / 6, 3 / 6], atol=0.02)
    fitted = st.fit_strengths(st.win_probability(r, ci="none"), model="plackett-luce")
    np.testing.assert_allclose(fitted, s - s.mean(), atol=0.08)
    strengths = st.fit_strengths(st.paper_table1().win_prob)
    assert list(np.argsort(strengths)) == list(np.argsort(-st.paper_table1().avg_rank.value))


def test_plots_and_table_text():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = st.table_ci(st.paper_table1())
    fig = st.plot_win_matrix(t)
    texts = [x.get_text() for x in fig.axes[0].texts]
    assert "65.8%\n[63, 68]" in texts and texts.count("–") == 4
    fig2 = st.plot_average_rank({"paper": t, "paper again": st.paper_table1()})
    assert len(fig2.axes[0].patches) == 8
    plt.close("all")
    text = st.format_table(t)
    assert "65.8% [63.1, 68.4]" in text and "2.20 [2.14, 2.26]" in text


# ----------------------------------------------------------------------------------------------
# Issue 19, point 5: case variance in ci_vs_users, a one-user summary, which methods a class ranks
# ----------------------------------------------------------------------------------------------

TABLE1_STRENGTHS = [0.043, -0.261, -0.039, 0.258]  # fit_strengths(paper_table1().win_prob), rounded


def test_case_floor_matches_a_direct_simulation_of_many_users():
    # infinitely many users: the win rate of i over j on case c is Φ((Δ + b_ci − b_cj)/√2); its spread over
    # cases, divided by n_cases, is the variance no number of users removes
    from statistics import NormalDist

    rng = np.random.default_rng(0)
    s, sd, n_cases = np.array(TABLE1_STRENGTHS), 0.4, 20
    b = sd * rng.standard_normal((40_000, 4))
    cdf = np.vectorize(NormalDist().cdf)
    var = [np.var(cdf((s[i] - s[j] + b[:, i] - b[:, j]) / np.sqrt(2))) for i in range(4) for j in range(4) if i != j]
    direct = np.mean(1.959964 * np.sqrt(np.array(var) / n_cases)) * 100
    assert st.case_floor(s, case_sd=sd, n_cases=n_cases) == pytest.approx(direct, rel=0.02)
    assert st.case_floor(s, case_sd=0.0, n_cases=n_cases) == 0.0
    assert st.case_floor(s, case_sd=sd, n_cases=80) == pytest.approx(st.case_floor(s, case_sd=sd, n_cases=20) / 2)


def test_ci_vs_users_floors_with_case_variance_and_shrinks_without():
    users = (20, 1000)
    with_cases = st.ci_vs_users(TABLE1_STRENGTHS, users, case_sd=0.4, n_boot=400)
    floor = with_cases[0]["floor ± pp"]
    assert floor == pytest.approx(st.case_floor(TABLE1_STRENGTHS, case_sd=0.4, n_cases=20), abs=0.01) and floor > 4
    wide, many = (r["win prob ± pp (mean)"] for r in with_cases)
    assert many >= 0.8 * floor, "with case variance, 1000 users cannot shrink the interval below the case floor"
    assert many > wide / 2, "50x the users shrink a 1/sqrt(users) interval 7-fold; case variance stops that"
    without = st.ci_vs_users(TABLE1_STRENGTHS, users, case_sd=0.0, n_boot=400)
    w20, w1000 = (r["win prob ± pp (mean)"] for r in without)
    assert without[0]["floor ± pp"] == 0.0
    assert w1000 < w20 / 4 and w1000 < 0.3 * floor, "without case variance the interval keeps shrinking"


def test_ci_vs_users_rows_share_the_same_cases():
    # more users, same cases: the case effects are drawn once, so the point estimates converge to one value
    eff = 0.4 * np.random.default_rng([0, 1]).standard_normal((20, 4))
    a = st.simulate_rankings(TABLE1_STRENGTHS, n_users=5, n_cases=20, case_effects=eff, seed=1)
    b = st.simulate_rankings(TABLE1_STRENGTHS, n_users=5, n_cases=20, case_effects=eff, seed=2)
    assert not np.array_equal(a.ranks, b.ranks)
    with pytest.raises(ValueError, match="case_effects has shape"):
        st.simulate_rankings(TABLE1_STRENGTHS, n_users=5, n_cases=10, case_effects=eff)


def test_a_summary_of_one_user_warns_and_shows_no_zero_width_interval(caplog):
    one = st.simulate_rankings(TABLE1_STRENGTHS, n_users=1, n_cases=6, seed=0)
    with caplog.at_level("WARNING", logger="romlib.study.stats"):
        t = st.summarize(one, n_boot=200)
    assert any("one user" in r.message for r in caplog.records)
    assert t.notes and "one user" in t.notes[0]
    assert t.avg_rank.low is None and t.win_prob.low is None  # not a zero-width [x, x]
    text = str(t)
    assert "NOTE: one user" in text and "[" not in text.split("\n")[2]
    # cases resampled: an interval exists, and the note says it covers this user only
    t = st.summarize(one, n_boot=200, resample="cases")
    assert t.avg_rank.low is not None and "over cases only" in t.notes[0]
    t = st.summarize(one, ci="cluster")
    assert t.avg_rank.low is None and "NOTE" in str(t)
    # two users: no note about users
    two = st.simulate_rankings(TABLE1_STRENGTHS, n_users=2, n_cases=6, seed=0)
    assert not any("one user" in n for n in st.summarize(two, n_boot=200).notes)


def test_zero_width_intervals_are_flagged():
    # every user ranks the same way: the bootstrap never varies, which is a small sample, not certainty
    recs = [(u, c, m, r) for u in ("u1", "u2", "u3") for c in ("c1", "c2") for m, r in (("X", 1), ("Y", 2), ("Z", 3))]
    t = st.summarize(st.Rankings.from_records(recs), n_boot=200)
    assert any("zero width" in n for n in t.notes) and "NOTE" in str(t)


class _Backend:
    def __init__(self, name, extras=()):
        self.name, self.extras = name, {e: object() for e in extras}


def test_study_methods_are_table1s_where_the_backend_has_them():
    full = st.study_methods(_Backend("glide", ("clip", "blended")))
    assert full.ranked == st.TABLE1_GUIDANCE and full.is_table1 and not full.missing
    assert "Table 1's four methods" in full.label
    shapes = st.study_methods(_Backend("shapes"))
    assert shapes.ranked == ("cf", "ccf", "ccf-direction", "cf-original") and not shapes.is_table1
    assert shapes.missing == ("blended", "clip") and shapes.stand_ins == st.STAND_INS
    assert "Not Table 1's methods" in shapes.label and "Blended Diffusion" in shapes.label
    assert st.study_methods(_Backend("shapes"), stand_ins=False).ranked == ("cf", "ccf")
    # the registry decides: the names come from romlib.guidance.methods, not from a list here
    from romlib.guidance.methods import available
    assert set(shapes.ranked) <= set(available(_Backend("shapes")))


def test_ranking_session_says_which_methods_it_ranks():
    cases, _ = _cases(2)  # Table 1's four (by their long names)
    s = st.RankingSession(cases, seed=0)
    assert s.study_methods.is_table1 and "Table 1's four" in s.text()
    shapes_cases = [dict(id=c["id"], image=c["image"], target=c["target"],
                         outputs=dict(zip(("cf", "ccf", "ccf-direction", "cf-original"), c["outputs"].values())))
                    for c in cases]
    s = st.RankingSession(shapes_cases, seed=0)
    assert not s.study_methods.is_table1 and s.study_methods.missing == ("blended", "clip")
    assert "Blended" in s.study_methods.label  # named where the cases are built ...
    assert "Not Table 1's methods: 2 of Table 1's 4 are missing" in s.text()
    # ... never next to the blinded outputs (notebook 06's widget cell shows no method name)
    names = re.compile(r"\b(ccf-direction|cf-original|ccf|cf|clip|blended)\b", re.I)
    assert not names.findall(s.text())
    if importlib.util.find_spec("ipywidgets"):
        s.widget()
        assert "Not Table 1" in s.ui["header"].value and not names.findall(s.ui["header"].value)


def test_cases_from_pipeline_defaults_to_the_study_methods():
    from PIL import Image

    from romlib.study.session import cases_from_pipeline

    class Result:
        best = Image.new("RGB", (8, 8))

    class Pipe:
        backend = _Backend("shapes")

        def compare(self, image, ref, target, *, guidances, **kwargs):
            import matplotlib.pyplot as plt

            return {g: Result() for g in guidances}, plt.figure()

    cases = cases_from_pipeline(Pipe(), [(Image.new("RGB", (8, 8)), "the red circle", "a blue circle")])
    assert tuple(cases[0].outputs) == ("cf", "ccf", "ccf-direction", "cf-original")


def test_plot_ci_vs_users_draws_the_floor():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = st.ci_vs_users(TABLE1_STRENGTHS, (5, 20), n_boot=100)
    fig = st.plot_ci_vs_users(rows)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("floor from case variance" in s and f"{rows[0]['floor ± pp']:g}" in s for s in labels)
    plt.close(fig)
    fig = st.plot_ci_vs_users(st.ci_vs_users(TABLE1_STRENGTHS, (5, 20), case_sd=0.0, n_boot=100))
    assert not any("floor" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    plt.close(fig)
