import pytest
import torch
import torch.nn.functional as F

from romlib.rank import ClipRanker, clip_distance, rank_samples, ranking_inputs


def _frames(b=3, s=32, seed=0):
    return torch.rand(b, 3, s, s, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_local_inputs_are_the_enlarged_box_crop_resized():
    x = _frames()
    got = ranking_inputs(x, "local", box=(8, 4, 16, 24), size=40)
    # box x1.3 about its centre (12, 14): 6.8..17.2 x 1.0..27.0 -> pixels [6:18] x [1:28] (inclusive ends)
    crop = (x.add(1).div(2))[:, :, 1:28, 6:18]
    expected = F.interpolate(crop, size=(40, 40), mode="bilinear", align_corners=False, antialias=True)
    assert got.shape == (3, 3, 40, 40) and torch.allclose(got, expected)


def test_masked_inputs_zero_everything_but_the_edit():
    x = _frames()
    edit = torch.zeros(1, 1, 32, 32)
    edit[..., 10:20, 5:15] = 1
    got = ranking_inputs(x, "masked", edit_mask=edit, size=32)
    expected = x.add(1).div(2) * edit
    assert torch.allclose(got, expected, atol=1e-6)
    with pytest.raises(ValueError, match="needs the edit mask"):
        ranking_inputs(x, "masked")
    with pytest.raises(ValueError, match="needs the object's box"):
        ranking_inputs(x, "local")


def test_clip_distance_is_spherical():
    t = torch.tensor([[1.0, 0.0]])
    imgs = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    d = clip_distance(imgs, t)
    assert d[0] == pytest.approx(0.0, abs=1e-6)
    assert d[1] == pytest.approx(2 * torch.asin(torch.tensor(2 ** 0.5 / 2)).item() ** 2, rel=1e-5)
    assert d[2] == pytest.approx(2 * (torch.pi / 2) ** 2, rel=1e-5)


class _SpyModel(torch.nn.Module):
    """Records what CLIP receives; its image embedding is the mean colour."""

    def __init__(self):
        super().__init__()
        self.visual = torch.nn.Linear(1, 1)
        self.seen = []

    def encode_image(self, x):
        self.seen.append(x.clone())
        return x.mean(dim=(2, 3))

    def encode_text(self, tokens):
        return torch.tensor([[1.0, 0.0, 0.0]]).expand(tokens.shape[0], 3)


def test_ranker_receives_exactly_the_intended_pixels_and_orders_by_score():
    spy = _SpyModel()
    ranker = ClipRanker(spy, lambda texts: torch.zeros(len(texts), 4, dtype=torch.long), image_size=16)
    x = _frames(4)
    x[2] = torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1)  # pure red: closest to the "text" direction
    r = rank_samples(ranker, x, "red", "local", box=(0, 0, 32, 32))
    assert torch.allclose(spy.seen[0], ranking_inputs(x, "local", box=(0, 0, 32, 32), size=16))
    assert r.order[0] == 2
    assert r.ranked_scores == sorted(r.scores)
    assert [r.scores[i] for i in r.order] == r.ranked_scores
    spy.seen.clear()
    ClipRanker(spy, ranker.tokenizer, image_size=16, normalize=True).encode_image(torch.full((1, 3, 16, 16), 0.5))
    assert not torch.allclose(spy.seen[0], torch.full((1, 3, 16, 16), 0.5))  # mean/std applied only on request
    none = rank_samples(ranker, x, "red", "none")
    assert none.order == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="rank must be"):
        rank_samples(ranker, x, "red", "global")
