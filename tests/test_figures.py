"""The figures agree with their numbers: masks drawn so the object's colour stays readable, small images
enlarged sharply, boxes with a legend, traces on one common scale (romlib.teach.viz, romlib.teach.nb)."""
import numpy as np
import pytest
import torch


def test_outline_mask_keeps_the_colour_inside_and_enlarges_sharply():
    from romlib.teach.viz import MASK_COLOUR, enlarge, overlay_mask

    img = np.zeros((32, 32, 3), np.uint8)
    img[8:20, 8:20] = (150, 50, 210)  # a purple square
    mask = np.zeros((32, 32), bool)
    mask[6:22, 6:22] = True
    out = overlay_mask(img, mask)
    assert out.shape == (256, 256, 3)  # 32 px x 8, nearest
    assert (out[14 * 8:15 * 8, 14 * 8:15 * 8] == (150, 50, 210)).all()  # the object's colour, untouched
    assert (out[6 * 8, 10 * 8] == MASK_COLOUR).all() and (out[0, 0] == 0).all()  # the outline; outside untouched
    big = enlarge(img)
    assert big.shape == (256, 256, 3) and (big[::8, ::8] == img).all() and (big[7::8, 7::8] == img).all()
    assert enlarge(np.zeros((300, 200, 3), np.uint8)).shape == (300, 200, 3)
    tint = overlay_mask(img, mask, style="tint")
    assert tint.shape == img.shape and not (tint[14, 14] == (150, 50, 210)).all()
    with pytest.raises(ValueError, match="style='hatch'"):
        overlay_mask(img, mask, style="hatch")


def _trace(diff_sizes):
    g = torch.Generator().manual_seed(0)
    out = []
    for i, d in enumerate(diff_sizes):
        base = torch.randn(3, 8, 8, generator=g) * 0.5
        out.append({"t": 999 - i, "index": len(diff_sizes) - 1 - i, "x_t": torch.zeros(3, 8, 8), "pred_xstart": torch.zeros(3, 8, 8),
                    "eps_base": base, "eps_cond": base + d, "eps": base})
    return out


def test_trace_panels_share_one_scale_across_steps():
    """A difference 4x larger at one step is drawn 4x brighter (one scale for the trace, stated in the titles)."""
    from romlib.teach.nb import plot_trace, trace_scales

    trace = _trace([0.01, 0.04])
    sc = trace_scales(trace)
    assert sc["diff"] == pytest.approx(0.04, rel=1e-4)
    titles = [[a.get_title() for a in plot_trace(trace, i).axes] for i in range(2)]
    assert "= 25%" in titles[0][3] and "= 100%" in titles[1][3] and "÷ 0.040" in titles[0][3]
    both = trace_scales(trace, _trace([0.08]))
    assert both["diff"] == pytest.approx(0.08, rel=1e-4)
    with pytest.raises(ValueError, match="non-empty"):
        trace_scales([])


def test_edit_grid_names_every_box_and_the_mask():
    import romlib as rl

    pipe = rl.nb.pipeline("shapes")
    image, ref, target = rl.nb.chosen_case(pipe, "both")
    r = pipe.edit(image, ref, target, samples=2, steps=3, progress=False)
    fig = r.grid(top=2)
    labels = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert any("object box" in x for x in labels) and any("×1.3" in x for x in labels) and any("edit mask" in x for x in labels)


# ----------------------------------------------------------------------------- the ablations' figures (ShapesWorld)
def test_dilation_figure_shows_the_tables_samples_with_their_verdicts():
    """Case 0 of the dilation table: at k = 1 the rim lies outside the mask, so the whole old outline is left
    (rim 1.0, not removed) — a known answer; every panel's title carries its verdict."""
    from romlib.shapes.figures import dilation_figure

    fig, rows = dilation_figure(0, ks=(1, 7))
    assert len(fig.axes) == 5 * 2  # mask + 2 empty-target + 2 target samples, per k
    k1, k7 = rows
    assert k1["k"] == 1 and k1["leftover px"] > 20 and k7["leftover px"] == 0 and k7["over px"] > k1["over px"]
    assert all(e["rim"] == 1.0 and not e["removed"] for e in k1["empty"])
    titles = [a.get_title() for a in fig.axes]
    assert all("removed" in t for t in titles[2:6]) and all("target" in t for t in titles[6:10])
    assert titles[2].count("removed ✗") == 1 and "outline left 100%" in titles[2]  # k = 1, sample 1
    with pytest.raises(ValueError, match="case=99"):
        dilation_figure(99)


def test_ranking_paired_counts_on_a_known_table():
    from romlib.shapes.figures import ranking_example_case, ranking_paired

    picks = [{"case": 0, "ok": [True, False], "local": 0, "masked": 1},   # differ, local right
             {"case": 1, "ok": [True, True], "local": 0, "masked": 1},    # differ, both right
             {"case": 2, "ok": [True, False], "local": 0, "masked": 0},   # same pick
             {"case": 3, "ok": [False, True], "local": 0, "masked": 1}]   # differ, masked right
    p = ranking_paired({"cases": picks})
    assert p["top-1 differ"] == 3 and p["local right, masked wrong"] == 1 and p["masked right, local wrong"] == 1
    assert p["both right"] == 1 and p["both wrong"] == 0 and p["discordant"] == 2
    assert p["local preferred among discordant %"][0] == 50.0 and p["differ %"][0] == 75.0
    assert ranking_example_case({"cases": picks}) == 0 and ranking_example_case({"cases": picks[1:3]}) == 0
    assert ranking_example_case({"cases": picks[2:3]}) == 0
    with pytest.raises(ValueError, match="no per-case picks"):
        ranking_paired({"rows": []})


def test_shipped_ranking_table_carries_its_picks():
    from romlib.shapes.figures import ranking_paired
    from romlib.shapes.tables import notebook_table

    t = notebook_table("ranking")
    local = [p["ok"][p["local"]] for p in t["cases"]]
    assert sum(local) == t["rows"][0]["top-1 success"]["k"]  # the picks are the table's own
    p = ranking_paired(t)
    assert p["cases"] == 24 and 0 <= p["discordant"] <= p["top-1 differ"] <= 24


def test_keeps_figure_draws_both_models_from_their_counts():
    from romlib.shapes.figures import RUN_E_FREE_KEPT, keeps_figure

    fig, numbers = keeps_figure()
    default, run_e = numbers.values()
    assert run_e["ccf"][:3] == (103, 201, 51.2) and default["ccf"][2] == 23.4 and default["cf"][2] == 35.8
    assert run_e["ccf"][2] > run_e["cf"][2] and default["ccf"][2] < default["cf"][2]  # both sides of the claim
    bars = [p for p in fig.axes[0].patches]
    assert len(bars) == 8 and sorted(round(b.get_height(), 1) for b in bars) == sorted(
        v[2] for m in numbers.values() for v in m.values())
    assert set(RUN_E_FREE_KEPT) == set(default)


# ----------------------------------------------------------------------------- the paper's story
@pytest.fixture(scope="module")
def shapes_result():
    import romlib as rl

    pipe = rl.nb.pipeline("shapes")
    image, ref, target = rl.nb.chosen_case(pipe, "both")
    return pipe, pipe.edit(image, ref, target, samples=3, steps=3, progress=False)


def test_pipeline_figure_draws_every_stage_on_shapes(shapes_result):
    import romlib as rl

    _, r = shapes_result
    fig, n = rl.viz.pipeline_figure(r)
    assert len(fig.axes) == 5 + 3
    assert n["dilated px"] == int((1 - r.keep_mask_base).sum()) and n["mask px"] == int(r.segmentation.mask.sum())
    assert n["distances (ranked)"] == [round(x, 4) for x in r.scores] and n["crop box (frame px)"][0] < r.rank_box[0]
    assert "score 1.00" in fig.axes[1].get_title()


def test_samples_grid_drawn_into_an_earlier_figure_gives_the_same_pixels(shapes_result):
    """The explorer's clicks redraw into the figure of the last one (romlib.plots.samples_grid(fig=)): the PNG must
    be byte for byte a new figure's, whatever the earlier figure showed; another number of samples gets a new one."""
    import romlib as rl
    from romlib.plots import png, samples_grid

    pipe, first = shapes_result
    case = rl.nb.chosen_case(pipe, "both")
    other = pipe.edit(*case, samples=3, steps=3, seed=5, guidance="cf", rank="masked", progress=False)
    fewer = pipe.edit(*case, samples=2, steps=3, progress=False)
    fig = samples_grid(first)
    assert png(fig) == png(samples_grid(first))
    again = samples_grid(other, fig=fig)
    assert again is fig and png(again) == png(samples_grid(other))  # the same axes, the other edit's pixels
    assert png(again) != png(samples_grid(first))
    new = samples_grid(fewer, fig=fig)
    assert new is not fig and len(new.axes) != len(fig.axes) and png(new) == png(samples_grid(fewer))


def test_pipeline_figure_works_on_the_tiny_backend():
    import romlib as rl

    pipe = rl.nb.pipeline("tiny")
    image, ref, target = rl.nb.example(pipe)
    r = pipe.edit(image, ref, target, samples=2, steps="2", upsample_steps="2", progress=False)
    fig, n = rl.viz.pipeline_figure(r, top=2)
    assert len(fig.axes) == 5 + 2 and n["base size"] == r.keep_mask_base.shape[-1] and n["frame size"] == r.images.shape[-1]


def test_targets_figure_runs_every_target_with_the_oracles_verdict(shapes_result):
    import romlib as rl

    pipe, _ = shapes_result
    fig, rows = rl.viz.targets_figure(pipe, samples=2, steps=3)
    assert len(fig.axes) == 1 + 4 and [r["target"] for r in rows][-1] == ""
    assert rows[-1]["model"] == "removal" and "removed" in rows[-1]["verdict"] and 0 <= rows[-1]["rim"] <= 1
    assert all("target" in r["verdict"] for r in rows[:-1])
    with pytest.raises(ValueError, match="needs image="):
        rl.viz.targets_figure(rl.nb.pipeline("tiny"))


def test_targets_figure_on_the_world_names_one_attribute_at_a_time_and_judges_the_shown_edit():
    import romlib as rl
    from romlib.teach.story import default_targets
    from romlib.world import cases, oracle

    case = cases.select_case("both")  # 'the large shiny blue one on the right' (a blue shiny cone) -> 'a purple cylinder'
    o = case.scene.objects[case.i]
    assert (o.colour, o.shape, o.material) == ("blue", "cone", "shiny")
    assert default_targets(case) == [case.target, "a red one", "a cube", "a matte one", ""]  # the first that differ
    shape_case = cases.select_case("shape")
    assert default_targets(shape_case).count(shape_case.target) == 1  # its own target is not repeated
    pipe = rl.nb.pipeline("world")
    fig, rows = rl.viz.targets_figure(pipe, targets=["a red one", ""], case=case, samples=1, steps="3",
                                      upsample_steps="3")
    assert len(fig.axes) == 1 + 2 and [r["model"] for r in rows] == ["default", "default"]  # the world removes itself
    r = pipe.edit(case.pil(), case.ref, "a red one", samples=1, seed=0, steps="3", upsample_steps="3", progress=False)
    hole = r.edit_mask.bool().numpy()
    j = oracle.judge(r.best, case.scene, case.i, hole, "a red one")
    assert rows[0]["ok"] == j["success"] and rows[0]["seen"] in rows[0]["verdict"]
    assert rows[1]["left_px"] == int((case.mask & ~hole).sum()) and "removed" in rows[1]["verdict"]


def test_mask_iou_counts_overlap_over_union():
    from romlib.teach.story import mask_iou

    a, b = torch.zeros(8, 8, dtype=torch.bool), torch.zeros(8, 8, dtype=torch.bool)
    a[0:4, 0:4] = True  # 16 px
    b[2:6, 0:4] = True  # 16 px, 8 of them shared
    assert mask_iou(a, b) == 8 / 24 and mask_iou(a, a) == 1.0 and mask_iou(a, ~a) == 0.0
    assert np.isnan(mask_iou(a & False, b & False))
    with pytest.raises(ValueError, match=r"\(8, 8\) and \(4, 4\)"):
        mask_iou(a, b[:4, :4])


def test_segmenters_figure_puts_mdetr_and_clipseg_side_by_side_on_the_tiny_backend():
    """Each panel is its segmenter's own answer (tiny MDETR, tiny random CLIPSeg): pixels, score, box and the
    IoU between them as each segmenter computes them directly."""
    from PIL import Image

    import romlib as rl
    from romlib.teach.viz import MASK_COLOUR

    pipe = rl.nb.pipeline("tiny")
    img = Image.new("RGB", (96, 72), (40, 110, 190))
    img.paste((220, 40, 40), (30, 20, 60, 50))
    fig, n = rl.viz.segmenters_figure(pipe, img, "the red ball")
    direct = {name: pipe.backend.segmenter_for(name).segment(img, "the red ball") for name in ("mdetr", "clipseg")}
    assert direct["clipseg"].extra["segmenter"] == "clipseg"
    for (name, seg), ax in zip(direct.items(), fig.axes):
        m = seg.mask.bool()
        assert m.shape == (72, 96) and n[name] == {"mask px": int(m.sum()), "score": round(float(seg.score), 3),
                                                   "box": tuple(round(float(v), 1) for v in seg.box)}
        assert ax.get_title().startswith(f"{name}: score {seg.score:.2f}") and f"{int(m.sum())} px" in ax.get_title()
        drawn = ax.get_images()[0].get_array()
        assert (np.asarray(drawn)[..., :3] == MASK_COLOUR).all(-1).any()  # the mask's outline is drawn
    a, b = direct["mdetr"].mask.bool(), direct["clipseg"].mask.bool()
    want = round(int((a & b).sum()) / int((a | b).sum()), 3)
    assert n["iou"] == {"mdetr/clipseg": want} and f"IoU mdetr/clipseg = {want:.2f}" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match=r"unknown \['sam'\].*mdetr, clipseg"):
        rl.viz.segmenters_figure(pipe, img, "the red ball", segmenters=("mdetr", "sam"))


def test_segmenters_figure_labels_a_segmenter_the_backend_lacks(shapes_result):
    import romlib as rl

    pipe, r = shapes_result
    image, ref = r.input_image, r.settings["ref"]
    fig, n = rl.viz.segmenters_figure(pipe, image, ref, segmenters=("shapes", "clipseg"))
    assert n["clipseg"] == {"skipped": "not available on the 'shapes' backend (it has: shapes)"}
    assert n["shapes"]["mask px"] == int(pipe.segment(image, ref).mask.sum()) and n["iou"] == {}
    assert fig.axes[1].get_title() == "clipseg: skipped"
    with pytest.raises(ValueError, match="none of segmenters=\\('mdetr', 'clipseg'\\) is available on the 'shapes'"):
        rl.viz.segmenters_figure(pipe, image, ref)


def test_forward_figure_prints_alpha_bar_of_the_schedule():
    import romlib as rl

    x = torch.zeros(3, 8, 8)
    fig, ab = rl.viz.forward_figure(x, ts=(0, 500, 999))
    d = rl.diffusion.create_diffusion(1000, "squaredcos_cap_v2", "1000")
    assert ab == {t: round(float(d.alphas_cumprod[t]), 4) for t in (0, 500, 999)} and len(fig.axes) == 3
    assert f"{ab[500]:.4f}" in fig.axes[1].get_xlabel()
    with pytest.raises(ValueError, match="1000"):
        rl.viz.forward_figure(x, ts=(1000,))


def test_trace_numbers_measure_how_much_of_the_difference_is_in_the_mask():
    from romlib.teach.nb import trace_numbers

    trace = _trace([0.0, 0.0])
    for s in trace:
        s["eps_cond"] = s["eps_base"].clone()
        s["eps_cond"][:, :2, :2] += 1.0  # the whole difference in the top-left 2x2 block
    mask = torch.zeros(16, 16)
    mask[:4, :4] = 1  # the same block at twice the resolution
    rows = trace_numbers(trace, edit_mask=mask)
    assert rows[0]["share in mask"] == 1.0 and rows[0]["mask share of pixels"] == round(4 / 64, 3)
    mask2 = torch.zeros(8, 8)
    mask2[4:, 4:] = 1
    assert trace_numbers(trace, edit_mask=mask2)[1]["share in mask"] == 0.0
    assert "share in mask" not in trace_numbers(trace)[0]


def test_ranking_figure_shows_the_tables_own_picks():
    """The example is the table's: its recomputed picks and verdicts equal the ones the shipped table counted,
    the two top-1 samples differ and the oracle tells them apart (the rule of ranking_example_case)."""
    from romlib.shapes.figures import ranking_figure
    from romlib.shapes.tables import notebook_table

    fig, n = ranking_figure()
    shipped = notebook_table("ranking")["cases"][n["case"]]
    assert (n["ok"], n["local top-1"], n["masked top-1"]) == (shipped["ok"], shipped["local"], shipped["masked"])
    assert n["local top-1"] != n["masked top-1"] and n["ok"][n["local top-1"]] != n["ok"][n["masked top-1"]]
    assert n["local order"][0] == n["local top-1"] and n["masked order"][0] == n["masked top-1"]
    assert len(fig.axes) == len(n["ok"]) + 2


def test_guidance_figure_titles_carry_the_tables_metrics():
    from romlib.shapes.figures import guidance_figure
    from romlib.shapes.tables import NOTEBOOK_TABLES

    fig, rows = guidance_figure(0)
    methods = NOTEBOOK_TABLES["guidance"]["methods"]
    assert [r["rule"] for r in rows] == list(methods) and len(fig.axes) == len(methods) * 3
    titles = [a.get_title() for a in fig.axes]
    ticks = sum(t.count("target ✓") for t in titles)
    assert ticks == sum(s["success"] for r in rows for s in r["samples"])
    assert sum(t.count("keeps shape ✓") for t in titles) == sum(bool(s["preserved"]) for r in rows for s in r["samples"])
