import pytest
import torch

from romlib import masks as M


def test_dilation_of_a_known_mask():
    m = torch.zeros(7, 7)
    m[3, 3] = 1
    d3 = M.dilate(m, 3)
    expected = torch.zeros(7, 7)
    expected[2:5, 2:5] = 1
    assert torch.equal(d3, expected)
    d5 = M.dilate(m, 5)
    assert d5.sum() == 25 and d5[1:6, 1:6].all()
    assert torch.equal(M.dilate(m, 1), m)  # k = 1 is a no-op
    corner = torch.zeros(5, 5)
    corner[0, 0] = 1
    assert M.dilate(corner, 3).sum() == 4  # clipped at the border, values clamped to 1
    assert M.dilate(torch.ones(4, 4), 3).max() == 1


@pytest.mark.parametrize("k", [0, 2, 4, -1, 3.0, True])
def test_even_or_bad_dilation_is_rejected(k):
    with pytest.raises(ValueError, match="odd integer"):
        M.dilate(torch.zeros(4, 4), k)


def test_conventions_convert_in_one_place():
    edit = torch.tensor([[1, 0], [0, 1]], dtype=torch.bool)
    keep = M.to_keep_mask(edit)
    assert keep.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    assert torch.equal(M.to_edit_mask(keep), edit.float())


def test_prepare_masks_dilates_at_64_and_upsamples_nearest():
    edit = torch.zeros(64, 64)
    edit[30:34, 30:34] = 1
    keep64, keep256 = M.prepare_masks(edit, dilation=3)
    assert keep64.shape == (1, 1, 64, 64) and keep256.shape == (1, 1, 256, 256)
    assert (1 - keep64).sum() == 36  # 4x4 grown by one pixel on each side
    assert torch.equal(keep256, keep64.repeat_interleave(4, -1).repeat_interleave(4, -2))
    with pytest.raises(ValueError, match="nothing to edit"):
        M.prepare_masks(torch.zeros(64, 64))


def test_enlarge_box_and_clip_at_borders():
    assert M.enlarge_box((10, 10, 20, 30), 1.3, 100, 100) == pytest.approx((8.5, 7.0, 21.5, 33.0))
    assert M.enlarge_box((0, 0, 50, 100), 1.3, 100, 100) == pytest.approx((0.0, 0.0, 57.5, 100.0))
    assert M.enlarge_box((90, 95, 100, 100), 2.0, 100, 100) == pytest.approx((85.0, 92.5, 100.0, 100.0))
    assert M.box_to_pixels((9.5, 7.0, 20.5, 33.9)) == (9, 7, 20, 33)


def test_logits_to_edit_mask_is_resize_then_sigmoid_threshold():
    logits = torch.full((1, 8, 8), -5.0)
    logits[0, 2:6, 2:6] = 5.0
    m = M.logits_to_edit_mask(logits, size=16)
    assert m.shape == (1, 16, 16) and m[0, 4:12, 4:12].all() and m.sum() == 64


def test_feather_never_touches_pixels_outside_the_mask():
    edit = torch.zeros(20, 20)
    edit[5:15, 5:15] = 1
    a = M.feather(edit, 3)
    assert (a[edit == 0] == 0).all()
    assert a[10, 10] == 1 and 0 < a[5, 10] < 1 and a[5, 10] == pytest.approx(0.25)
    assert torch.equal(M.feather(edit, 0), edit)
    full = torch.ones(6, 6)
    assert (M.feather(full, 2) == 1).all()  # the image border does not erode


def test_erode_is_the_dual_of_dilate():
    m = torch.zeros(9, 9)
    m[2:7, 2:7] = 1
    e = M.erode(m, 3)
    assert e.sum() == 9 and e[3:6, 3:6].all()
    assert torch.equal(M.dilate(e, 3), m)  # opening a square gives it back


def _feather_by_erosions(edit, radius):
    """The definition: the mean of the mask and its 1..radius-fold 3x3 erosions (border = inside)."""
    m = edit.float()[None, None]
    acc, cur = m.clone(), m
    for _ in range(radius):
        cur = -torch.nn.functional.max_pool2d(-cur, 3, stride=1, padding=1)
        acc = acc + cur
    return (acc / (radius + 1))[0, 0]


@pytest.mark.parametrize("seed", range(6))
def test_feather_by_distance_equals_the_repeated_erosions(seed):
    g = torch.Generator().manual_seed(seed)
    H, W = torch.randint(1, 30, (2,), generator=g).tolist()
    edit = M.dilate((torch.rand(H, W, generator=g) > 0.6).float(), 3)
    for r in (1, 2, 4, 9):
        assert torch.allclose(M.feather(edit, r), _feather_by_erosions(edit, r), atol=1e-6)


def test_chessboard_distance_of_a_square():
    edit = torch.zeros(9, 9)
    edit[1:8, 1:8] = 1
    d = M.chessboard_distance(edit)
    assert d[4, 4] == 4 and d[1, 4] == 1 and d[2, 2] == 2 and d[0, 0] == 0
    assert M.chessboard_distance(edit, limit=2).max() == 2
