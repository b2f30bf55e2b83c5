"""Notebook 04 on the world: the guidance study (every rule at every scale with the push, what a free attribute's
"kept" means, best and matched scales, paired differences, the shipped table, the example figure agreeing with
the records the table counts)."""
import json

import pytest

from romlib.world import bench as B
from romlib.world import guidestudy as G

FAST = {"steps": "2", "upsample_steps": "2"}
SCALES = (1.0, 4.0)


@pytest.fixture(scope="module")
def pipe(untrained_world):
    return untrained_world


@pytest.fixture(scope="module")
def journal(tmp_path_factory):
    return tmp_path_factory.mktemp("guidance_journal") / "records.jsonl"


@pytest.fixture(scope="module")
def records(pipe, journal):
    return G.study(pipe, n=3, scales=SCALES, journal=journal, **FAST)


def test_the_study_edits_each_case_under_each_rule_and_scale_with_its_push(pipe, records, journal, monkeypatch):
    cases = G.cases(3)
    assert [c.kind for c in cases] == list(G.KINDS)  # one case of each kind
    got = sorted((r["case"], r["rule"], r["scale"], r["sample"]) for r in records)
    assert got == sorted((c.index, g, s, i) for c in cases for g in G.RULES for s in SCALES for i in range(G.SAMPLES))
    assert all(r["push"] is not None and r["push"] >= 0 and r["dilation"] == G.DILATION for r in records)
    for g in G.RULES:  # the push is s·|eps(c) - eps_base|: with the same seeds it grows with s
        for c in cases:
            low, high = ([r["push"] for r in records if r["rule"] == g and r["case"] == c.index and r["scale"] == s]
                         for s in SCALES)
            assert sum(high) > sum(low), (g, c.index)
    monkeypatch.setattr(B, "case_records", lambda *a, **k: pytest.fail("the journal holds every edit"))
    assert G.study(pipe, n=3, scales=SCALES, journal=journal, **FAST) == records
    with pytest.raises(ValueError, match="holds records of seed \\[0\\], not 5"):
        G.study(pipe, n=3, seed=5, scales=SCALES, journal=journal, **FAST)


def _rec(**kw):
    base = {"case": 2, "seed": 0, "kind": "shape", "rule": "cf", "scale": 3.0, "sample": 0, "target": "a cube",
            "success": True, "area": 200, "colour": "green", "shape": "cube", "material": "matte", "push": 0.1,
            "angle_err": 5.0, "size_ratio": 1.1, "shift": 1.0, "psnr_bg": 25.0}
    return {**base, **kw}


def test_kept_reads_only_the_attributes_the_target_leaves_free():
    o = G.cases(3)[1].scene.objects[G.cases(3)[1].i]  # case 2: a green matte cylinder -> 'a cube'
    assert (o.colour, o.material, o.shape) == ("green", "matte", "cylinder")
    (r,) = G.annotate([_rec()])
    assert r["kept_colour"] is True and r["kept_material"] is True and "kept_shape" not in r  # the target names it
    assert r["size_err"] == pytest.approx(0.1)
    (r,) = G.annotate([_rec(colour="red", material=None)])
    assert r["kept_colour"] is False and r["kept_material"] is None  # another colour; material unreadable
    (r,) = G.annotate([_rec(area=5, colour=None, material=None)])
    assert r["kept_colour"] is False and r["kept_material"] is False  # nothing drawn keeps nothing
    assert G.annotate([_rec(sample=None, error="NoObjectFound")]) == []  # a refused edit has no sample
    # an unchanged object keeps its colour too: "reached & kept" needs the target reached as well
    assert [r["reached_kept_colour"] for r in G.annotate([_rec(), _rec(success=False), _rec(success=None),
                                                           _rec(colour=None)])] == [True, False, None, None]


def test_best_and_matched_scales_and_the_paired_differences():
    recs = []
    for g, pushes, hits in (("cf", {1.0: 0.1, 3.0: 0.3}, {1.0: 1, 3.0: 3}),
                            ("ccf", {1.0: 0.05, 3.0: 0.15}, {1.0: 2, 3.0: 4}),
                            ("ccf-direction", {1.0: 0.16, 3.0: 0.5}, {1.0: 2, 3.0: 2})):
        for s in (1.0, 3.0):
            recs += [_rec(rule=g, scale=s, sample=i, push=pushes[s], success=i < hits[s], colour="green" if i else "red")
                     for i in range(4)]
    t = G.table(recs, rules=("cf", "ccf-direction", "ccf"))
    assert t["best"] == {"cf": 3.0, "ccf": 3.0, "ccf-direction": 1.0}  # a tie goes to the smaller scale
    assert t["reference"] == ["ccf", 3.0] and t["matched"] == {"cf": 1.0, "ccf": 3.0, "ccf-direction": 1.0}
    p = t["paired"]["matched"]["ccf"]["success"]  # ccf s=3 (4 of 4) against cf s=1 (1 of 4), same samples
    assert (p["pairs"], p["a_only"], p["b_only"], p["diff"]) == (4, 3, 0, 0.75)
    assert t["paired"]["best"]["ccf-direction"]["success"]["diff"] == pytest.approx(2 / 4 - 3 / 4)
    row = next(r for r in t["rows"] if r["rule"] == "cf" and r["scale"] == 1.0)
    assert row["reached"]["pct"] == 25 and row["kept_colour"]["pct"] == 75 and row["push"]["mean"] == pytest.approx(0.1)
    assert row["reached_by_kind"]["shape"]["n"] == 4 and row["reached_by_kind"]["colour"]["n"] == 0
    ex = t["examples"]
    assert t["example_scale"] == G.EXAMPLE_SCALE == 3.0
    assert ex["ref_names"]["case"] == 2 and [v["sample"] for v in ex["ref_names"]["samples"]["cf"]] == [0, 1, 2, 3]
    assert ex["ref_silent"]["case"] == 17 and ex["ref_silent"]["samples"]["cf"] == []  # not in these records
    text = G.format_table(t)
    assert "at matched strength (push nearest ccf s = 3's): cf s = 1" in text
    sens = t["sensitivity"]  # ccf at each of its scales against cf at the scale of nearest push
    assert [(r["scale"], r["cf_scale"]) for r in sens] == [(1.0, 1.0), (3.0, 1.0)]
    assert sens[1]["success"]["diff"] == p["diff"] and sens[0]["success"]["diff"] == pytest.approx(2 / 4 - 1 / 4)
    assert "ccf at each scale against cf" in text
    assert text.count("\n") + 1 == 3 + 6 + 2 + 6 + 2 * (4 + 2) + (3 + 2) + (3 + 3) + 3  # sweep twice, 2 blocks, sens., split
    fig = G.table_figure(t)
    assert [a.get_xlabel() for a in fig.axes] == ["scale s"] * 3 + ["target reached, % of samples"]


def test_the_figure_titles_each_sample_with_the_records_the_table_counts(pipe, records):
    t = G.table(records, example_scale=4.0)  # case 2 ('the green cylinder on the right' -> 'a cube') is among them
    fig, rows = G.example_figure(pipe, t["example_scale"], "ref_names", **FAST)
    assert [r["rule"] for r in rows] == list(G.RULES) and len(fig.axes) == len(G.RULES) * (G.SAMPLES + 1)
    for row in rows:
        assert row["scale"] == 4.0
        assert row["samples"] == t["examples"]["ref_names"]["samples"][row["rule"]], row["rule"]
    fig, rows = G.example_figure(pipe, t["matched"], "ref_names", **FAST)  # each rule at its own scale
    assert [r["scale"] for r in rows] == [t["matched"][g] for g in G.RULES]
    assert "colour" not in G.parse_text(G.example_case("shape", 0, False).ref).named
    with pytest.raises(ValueError, match="kind must be one of"):
        G.example_case("both")
    with pytest.raises(ValueError, match="example must be one of"):
        G.example_figure(pipe, 3.0, "neither")


def test_the_shipped_table_is_what_the_notebook_prints():
    with pytest.raises(ValueError, match="rerun=True needs"):
        G.notebook_table(rerun=True)
    t = G.notebook_table()
    assert json.loads(G.TABLE_FILE.read_text()) == t
    assert t["n_cases"] == G.N_CASES and t["scales"] == list(G.SCALES) and t["rules"] == list(G.RULES)
    assert len(t["rows"]) == len(G.RULES) * len(G.SCALES) and all(r["samples"] == G.N_CASES * G.SAMPLES for r in t["rows"])
    assert set(t["matched"]) == set(G.RULES) and t["matched"]["ccf"] == t["best"]["ccf"]
    assert all(len(v) == G.SAMPLES for e in t["examples"].values() for v in e["samples"].values())


@pytest.mark.parametrize("argv, message", [(["--cases", "0"], "--cases must be >= 1, got 0"),
                                           (["--threads", "0"], "--threads must be >= 1, got 0"),
                                           (["--scales", "1,x"], "'x' is not a float")])
def test_the_command_names_a_bad_value(argv, message, capsys):
    with pytest.raises(SystemExit):
        G.main(argv)
    assert message in capsys.readouterr().err
