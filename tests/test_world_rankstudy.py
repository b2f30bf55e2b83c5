"""Notebook 05 on the world: the ranking study (context cases, each sample in both rankings, the paired picks, the
shipped table, the example figure agreeing with the records the table counts)."""
import json

import pytest

from romlib.world import bench as B
from romlib.world import rankstudy as R

FAST = {"steps": "2", "upsample_steps": "2"}


@pytest.fixture(scope="module")
def pipe(untrained_world):
    return untrained_world


@pytest.fixture(scope="module")
def journal(tmp_path_factory):
    return tmp_path_factory.mktemp("ranking_journal") / "records.jsonl"


@pytest.fixture(scope="module")
def records(pipe, journal):
    return R.study(pipe, n=2, journal=journal, **FAST)


def test_the_cases_need_their_context_and_come_in_order():
    cs = R.cases(10)
    assert all(c.context and c.kind in R.KINDS for c in cs)
    assert [c.index for c in cs] == sorted(c.index for c in cs) and R.cases(4) == cs[:4]
    both = R.cases(5, kinds=("both",))  # the held-out P3's cases: only one kind
    assert all(c.context and c.kind == "both" for c in both) and [c for c in cs if c.kind == "both"] == both[:len(
        [c for c in cs if c.kind == "both"])]
    with pytest.raises(ValueError, match="remove unknown"):
        R.cases(3, kinds=("remove",))


def test_the_study_ranks_the_same_samples_both_ways(pipe, records, journal, monkeypatch):
    cases = [c.index for c in R.cases(2)]
    assert sorted({r["case"] for r in records}) == cases
    for c in cases:
        recs = [r for r in records if r["case"] == c]
        assert sorted(r["sample"] for r in recs) == list(range(R.SAMPLES))
        for mode in ("local", "masked"):  # each ranking is an order of the same samples
            assert sorted(r[f"rank_{mode}"] for r in recs) == list(range(R.SAMPLES))
    monkeypatch.setattr(B, "case_records", lambda *a, **k: pytest.fail("the journal holds every edit"))
    assert R.study(pipe, n=2, journal=journal, **FAST) == records
    with pytest.raises(ValueError, match="holds records of seed \\[0\\], not 3"):
        R.study(pipe, n=2, seed=3, journal=journal, **FAST)


def _recs(case, kind, hits, local_top, masked_top):
    """Records of one case: sample i reached the target when hits[i]; the two rankings' top-1 samples given."""
    out = []
    for i, h in enumerate(hits):
        rl = 0 if i == local_top else 1 + sum(j != local_top for j in range(i))
        rm = 0 if i == masked_top else 1 + sum(j != masked_top for j in range(i))
        out.append({"case": case, "seed": 0, "kind": kind, "target": "a red one", "sample": i, "success": h,
                    "rank_local": rl, "rank_masked": rm, "psnr_bg": 20.0 + i})
    return out


def test_the_table_counts_picks_and_discordant_pairs():
    recs = (_recs(0, "colour", [True, False, True, True], 0, 1)      # differ: local right, masked wrong
            + _recs(1, "colour", [False, True, True, False], 2, 1)   # differ, both right
            + _recs(2, "shape", [False, False, False, False], 0, 3)  # differ, both wrong: not mixed
            + _recs(3, "both", [True, None, True, False], 3, 3))     # agree
    t = R.table(recs)
    a = t["all"]
    assert a["cases"] == 4 and a["disagree"]["k"] == 3
    assert (a["local_only"], a["masked_only"], a["both_same"]) == (1, 0, 2)
    assert a["decidable"] == 2  # cases 0 and 1 differ and are mixed; case 2 differs, every sample wrong
    assert a["top1_local"]["k"] == 2 and a["top1_masked"]["k"] == 1 and a["first"]["k"] == 2
    assert a["mean_sample"] == pytest.approx(100 * (3 / 4 + 2 / 4 + 0 + 2 / 3) / 4, abs=0.1)
    assert t["mixed"]["cases"] == 3 and t["by_kind"]["shape"]["cases"] == 1
    assert t["example_case"] == 0 and t["example_told_apart"]  # the first case where the oracle prefers one pick
    d = t["all"]["differences"]  # local's pick minus masked's, over the 3 cases where they differ
    assert d["psnr_bg"]["n"] == 3 and d["psnr_bg"]["mean"] == pytest.approx((-1 + 1 - 3) / 3, abs=1e-3)
    assert d["shift"]["n"] == 0  # never measured here
    text = R.format_table(t)
    assert list(t["by_kind"]) == ["colour", "shape", "both"]  # the kinds present, in KINDS order
    assert text.count("\n") + 1 == 3 + 2 + len(t["by_kind"]) + 2 + 2
    t = R.table(_recs(0, "colour", [True, True, False, False], 0, 1))  # the picks differ, the oracle cannot choose
    assert t["example_case"] == 0 and not t["example_told_apart"]
    assert list(t["by_kind"]) == ["colour"] and t["scale"] == R.SCALE  # only the kinds studied; records lack a scale
    assert R.table([{**r, "scale": 8.0} for r in recs])["scale"] == 8.0  # the records' scale, not the default
    assert R.table(_recs(0, "colour", [True, True, False, False], 1, 1))["example_case"] is None


def test_the_figure_titles_each_sample_with_the_records_the_table_counts(pipe, records):
    case = R.cases(1)[0].index
    fig, rows = R.example_figure(pipe, case, **FAST)
    want = [{"sample": r["sample"], "rank_local": r["rank_local"], "rank_masked": r["rank_masked"],
             "reached": r["success"]} for r in sorted((r for r in records if r["case"] == case), key=lambda r: r["sample"])]
    assert rows == want
    with pytest.raises(ValueError, match="picks differ: nothing to show"):
        R.example_figure(pipe, None)


def test_the_shipped_table_is_what_the_notebook_prints():
    with pytest.raises(ValueError, match="rerun=True needs"):
        R.notebook_table(rerun=True)
    t = R.notebook_table()
    assert json.loads(R.TABLE_FILE.read_text()) == t
    assert t["n_cases"] == R.N_CASES and t["samples"] == R.SAMPLES and len(t["cases"]) == R.N_CASES


@pytest.mark.parametrize("argv, message", [(["--cases", "0"], "--cases must be >= 1, got 0"),
                                           (["--threads", "0"], "--threads must be >= 1, got 0"),
                                           (["--scale", "0"], "--scale=0.0 is out of range"),
                                           (["--scale", "big"], "--scale='big' is not a number"),
                                           (["--kinds", "both,remove"], "remove unknown")])
def test_the_command_names_a_bad_value(argv, message, capsys):
    with pytest.raises(SystemExit):
        R.main(argv)
    assert message in capsys.readouterr().err
