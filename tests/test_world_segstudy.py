"""Notebook 02 on the world: the segmenter study (records, table, figures) on untrained weights, the example rule
(:func:`romlib.world.cases.select_case`), the missing phrase, and ``rl.nb.setup(offline=...)``."""
import json

import numpy as np
import pytest
import torch

import romlib as rl
from romlib import pipeline as P
from romlib.pipeline import ROMPipeline
from romlib.world import backend as WB
from romlib.world import segstudy as S
from romlib.world.cases import CHOICES, KINDS, make_case, missing_phrase, select_case


@pytest.fixture(scope="module")
def pipe(untrained_world):
    return untrained_world


def test_the_study_measures_each_case_on_the_pipelines_own_path(pipe):
    records = S.study(pipe, n=6, seed=3)
    assert [r["index"] for r in records] == list(range(6))
    for r in records:
        case = make_case(3, r["index"])
        seg = pipe.segment(case.pil(), case.ref, best_anyway=True)
        m = seg.mask.numpy()
        assert r["iou"] == pytest.approx((m & case.mask).sum() / max((m | case.mask).sum(), 1), abs=1e-4)
        assert all(r[f"true_covered_{k}"] <= r[f"true_covered_{j}"] for k, j in zip(S.KS, S.KS[1:]))
        covered = [r[f"covered_{k}"] for k in S.KS]
        extra = [r[f"extra_{k}"] for k in S.KS]
        assert covered == sorted(covered) and extra == sorted(extra)  # a larger window covers and adds more
        assert all(0 <= c <= 1 for c in covered)
    t = S.table(records)
    assert t["n"] == 6 and t["failure"]["n"] == 6 and t["wrong"]["n"] == 6
    assert [d["k"] for d in t["dilation"]] == list(S.KS)
    right = sum(not r["wrong"] for r in records)
    assert all(d["whole"]["n"] == right for d in t["dilation"])
    text = S.format_table(t)
    assert "wrong object picked" in text and "covered whole" in text


def test_the_table_counts_wrong_picks_and_whole_objects():
    base = {"objects": 2, "context": False, "score": 0.9, "ref": "x"}
    true = {"true_covered_1": 0.9, "true_covered_3": 1.0}
    recs = [{**base, **true, "index": 0, "iou": 0.9, "wrong": False, "covered_1": 0.8, "extra_1": 0.0,
             "covered_3": 1.0, "extra_3": 0.5},
            {**base, **true, "index": 1, "iou": 0.1, "wrong": True, "covered_1": 0.0, "extra_1": 1.0, "covered_3": 0.0,
             "extra_3": 2.0},
            {**base, **true, "index": 2, "iou": 0.6, "wrong": False, "covered_1": 0.96, "extra_1": 0.1,
             "covered_3": 0.94, "extra_3": 0.7, "objects": 1}]
    t = S.table(recs, ks=(1, 3))
    assert t["part_missed"]["pct"] == 50  # the right pick whose k = 3 mask leaves 6 % out
    assert [d["true_whole"]["pct"] for d in t["dilation"]] == [0, 100]  # every case, the wrong pick's too
    assert t["failure"]["pct"] == pytest.approx(100 / 3, abs=0.1) and t["wrong"]["pct"] == pytest.approx(100 / 3, abs=0.1)
    assert t["wrong_by_objects"]["1"]["pct"] == 0 and t["wrong_by_objects"]["2"]["pct"] == 50
    k1, k3 = t["dilation"]
    assert (k1["whole"]["pct"], k3["whole"]["pct"]) == (50, 50)  # the wrong pick is left out
    assert k3["extra"] == pytest.approx(0.6) and k1["covered"] == pytest.approx(0.88)


def test_the_shipped_table_is_what_the_notebook_prints_and_rerun_needs_the_pipeline(pipe):
    with pytest.raises(ValueError, match="rerun=True needs"):
        S.notebook_table(rerun=True)
    t = S.notebook_table()
    assert t["n"] == S.N_CASES and json.loads(S.TABLE_FILE.read_text()) == t


def test_the_shipped_weights_reproduce_the_shipped_table(monkeypatch):
    """Notebook 02 prints the stored table; recomputed on the shipped segmenter (about 7 s) it is the same up to
    a case or two whose IoU sits on a threshold on another CPU."""
    monkeypatch.delenv(WB.WEIGHTS_ENV, raising=False)
    shipped = ROMPipeline(WB.load_backend())
    again, stored = S.notebook_table(shipped, rerun=True), S.notebook_table()
    assert again["n"] == stored["n"] and abs(again["mean_iou"] - stored["mean_iou"]) <= 0.01
    for key in ("failure", "wrong"):
        assert abs(again[key]["pct"] - stored[key]["pct"]) <= 1.0, key
    for a, b in zip(again["dilation"], stored["dilation"]):
        assert a["k"] == b["k"] and abs(a["whole"]["pct"] - b["whole"]["pct"]) <= 1.2 and abs(a["extra"] - b["extra"]) <= 0.02


def test_figures_draw_the_queries_the_errors_and_the_dilation(pipe):
    case = select_case("distractors")
    seg = pipe.segment(case.pil(), case.ref, best_anyway=True)
    fig, rows = S.queries_figure(case.pil(), seg)
    assert len(rows) == len(seg.scores) and [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)
    no_masks = type(seg)(mask=seg.mask, box=seg.box, score=seg.score, scores=seg.scores, text=seg.text)
    with pytest.raises(ValueError, match="per-query masks"):
        S.queries_figure(case.pil(), no_masks)
    records = S.study(pipe, n=8)
    S.errors_figure(pipe, records)
    S.dilation_figure(S.table(records))


def test_select_case_follows_its_rule():
    assert set(KINDS) < set(CHOICES)
    d = select_case("distractors", seed=2)
    assert d.context and len(d.scene.objects) == 3
    earlier = [make_case(2, i) for i in range(d.index)]
    assert not any(c.context and len(c.scene.objects) == 3 for c in earlier)
    for kind in KINDS:
        c = select_case(kind)
        assert c.kind == kind and c.index == KINDS.index(kind)
    assert select_case("colour", skip=1).index == KINDS.index("colour") + len(KINDS)
    assert select_case("removal").target == ""
    with pytest.raises(ValueError, match="unknown example kind 'gold'"):
        select_case("gold")


def test_the_missing_phrase_names_a_colour_no_object_has():
    for i in range(6):
        case = make_case(0, i)
        phrase = missing_phrase(case.pil())
        colour = phrase.split()[1]
        assert colour not in {o.colour for o in case.scene.objects}, (i, phrase)


def test_setup_offline_picks_the_embedded_backend_and_pipeline_follows(monkeypatch):
    monkeypatch.delenv("ROMLIB_BACKEND", raising=False)
    monkeypatch.setattr(rl.nb, "default_backend", lambda: "shapes")
    assert rl.nb.setup(quiet=True, offline="world").backend == "world"
    assert rl.nb._CHOSEN["backend"] == "world"
    class Loaded(Exception):
        pass

    def get_pipeline(backend, **kw):
        raise Loaded(backend)

    monkeypatch.setattr(rl.nb, "get_pipeline", get_pipeline)
    with pytest.raises(Loaded, match="world"):
        rl.nb.pipeline()
    monkeypatch.setattr(rl.nb, "default_backend", lambda: "glide")  # the real models win where they are at hand
    assert rl.nb.setup(quiet=True, offline="world").backend == "glide"
    monkeypatch.setenv("ROMLIB_BACKEND", "shapes")
    monkeypatch.setattr(rl.nb, "default_backend", lambda: "shapes")
    assert rl.nb.setup(quiet=True, offline="world").backend == "shapes"  # an explicit choice wins
    monkeypatch.setenv("ROMLIB_BACKEND", "offline")  # how the tests and tools run the notebooks
    assert rl.nb.setup(quiet=True, offline="world").backend == "world"
    assert rl.backends.choose("glide", "shapes", env="ROMLIB_BACKEND") == "shapes"
    with pytest.raises(ValueError, match="offline='glide' is not an embedded backend"):
        rl.nb.setup(quiet=True, offline="glide")
    rl.nb.setup(quiet=True)
    assert rl.nb._CHOSEN["backend"] == "shapes"


def test_segmentation_figure_draws_duplicate_queries_as_one_box_with_each_score():
    from romlib.contracts import Segmentation

    boxes = torch.tensor([[10.0, 10, 30, 30], [40, 40, 60, 60], [10.5, 10, 30, 30.5], [0, 0, 5, 5]])
    scores = torch.tensor([0.86, 0.20, 0.87, 0.01])
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[10:30, 10:30] = True
    seg = Segmentation(mask=mask, box=tuple(boxes[2].tolist()), score=0.87, scores=scores, boxes=boxes, index=2,
                       text="the cube")
    fig, rows = rl.viz.segmentation_figure(np.zeros((64, 64, 3), np.uint8), seg, top=3)
    assert [r[0] for r in rows] == [2, 0, 1]  # every query listed, best first
    labels = sorted(t.get_text() for t in fig.axes[0].texts)
    assert labels == ["0.20", "0.87, 0.86"]  # the chosen query's duplicate shares its box and its label
