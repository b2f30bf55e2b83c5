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
