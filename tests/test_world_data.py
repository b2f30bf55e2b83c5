"""The embedded world's training batches: the documented keys, shapes, ranges and recipes."""
import numpy as np
import pytest
import torch

from romlib.world.data import (N_MAX, VOCAB, counterfactual, inpaint_batch, inpaint_example, rank_batch, segment_batch,
                               tokenizer)
from romlib.world.language import parse_text, resolve
from romlib.world.render import render_float, render_masks
from romlib.world.scene import make_scene


@pytest.mark.parametrize("size", [64, 32])
def test_inpaint_batch_keys_shapes_ranges(size):
    b = inpaint_batch(np.random.default_rng(0), 12, size=size)
    for key in ("image", "source"):
        assert b[key].shape == (12, 3, size, size) and b[key].dtype == torch.float32
        assert b[key].min() >= -1 and b[key].max() <= 1
    keep = b["keep"]
    assert keep.shape == (12, 1, size, size) and set(keep.unique().tolist()) <= {0.0, 1.0}
    assert (keep == 0).any(dim=(1, 2, 3)).all()  # every example has a hole
    assert len(b["text"]) == 12 and b["size"] == size
    outside = keep.bool().expand(-1, 3, -1, -1)
    assert torch.equal(b["image"][outside], b["source"][outside])  # the source differs only under the hole


def test_batches_are_deterministic():
    a, b = inpaint_batch(np.random.default_rng(3), 6), inpaint_batch(np.random.default_rng(3), 6)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["source"], b["source"]) and a["text"] == b["text"]
    s1, s2 = segment_batch(np.random.default_rng(3), 4), segment_batch(np.random.default_rng(3), 4)
    assert torch.equal(s1["masks_all"], s2["masks_all"]) and s1["text"] == s2["text"]


def test_size_32_is_the_64_scene_downsampled():
    e64 = inpaint_example(np.random.default_rng(5), size=64)
    e32 = inpaint_example(np.random.default_rng(5), size=32)
    assert e64["scene"] == e32["scene"] and e64["text"] == e32["text"]
    assert np.allclose(e32["image"], e64["image"].reshape(32, 2, 32, 2, 3).mean((1, 3)), atol=1e-3)
    assert (~e32["keep"] == (~e64["keep"]).reshape(32, 2, 32, 2).any((1, 3))).all()


def test_recipes_kinds_and_empty_texts():
    b = inpaint_batch(np.random.default_rng(1), 120, p_remove=0.2, p_background=0.15)
    kinds = b["kind"]
    assert {"edit", "drop", "remove", "background"} <= set(kinds)
    for k, text in zip(kinds, b["text"]):
        assert (text == "") == (k in ("drop", "remove", "background"))
        if text:
            parse_text(text)  # every caption is in the language
    for j, k in enumerate(kinds):
        hole = b["keep"][j, 0] == 0
        if k in ("remove", "background"):  # blank hole
            assert torch.allclose(b["source"][j][:, hole], torch.zeros(()), atol=1e-6)
        if k == "remove":  # x0 under the hole is the room without the object
            scene = b["scenes"][j]
            want = torch.from_numpy(render_float(scene.without(b["index"][j]))).permute(2, 0, 1) / 127.5 - 1
            assert torch.allclose(b["image"][j][:, hole], want[:, hole], atol=1e-4)


def test_paired_source_keeps_what_the_caption_does_not_name():
    rng = np.random.default_rng(2)
    changed = 0
    for seed in range(40):
        scene = make_scene(seed)
        i = int(rng.integers(len(scene.objects)))
        text = ["a red one", "a cube", "a large shiny one", "a striped sphere"][seed % 4]
        src = counterfactual(rng, scene, i, text, p_change=1.0).objects[i]
        o = scene.objects[i]
        named = parse_text(text).named
        for key in ("shape", "colour", "material"):
            assert (getattr(src, key) != getattr(o, key)) == (key in named)
        assert (src.size_word != o.size_word) == ("size" in named)
        assert src.angle == o.angle and src.x == o.x and abs(src.base - o.base) < 1e-9 and src.brightness == o.brightness
        if "size" not in named:
            assert src.size == o.size
        changed += 1
    assert changed == 40


def test_an_edit_hole_follows_the_object_that_is_there_not_the_target():
    """At inference the hole is the *old* object's mask; an edit example's hole follows its source's outline (and
    holds the target), so a mask-shaped hole never tells the model the shape to draw."""
    from romlib.world.data import dilate
    from romlib.world.render import render_all

    rng = np.random.default_rng(4)
    shapes_differ = 0
    for _ in range(60):
        e = inpaint_example(rng, p_background=0, p_remove=0, p_drop=0, p_pair=0.5, edit_hole="source")
        assert e["kind"] == "edit" and e["source_scene"] is not None
        i, hole = e["index"], ~e["keep"]
        _, vis, _ = render_all(e["scene"])
        _, src_vis, _ = render_all(e["source_scene"])
        others = np.zeros_like(hole)
        for j in range(len(vis)):
            if j != i:
                others |= dilate(vis[j] > 0.5, 1)
        assert not ((vis[i] > 0.02) & ~hole).any()  # the target fits in the hole
        assert not ((src_vis[i] > 0.5) & ~others & ~hole).any()  # so does the source's outline
        shapes_differ += e["source_scene"].objects[i].shape != e["scene"].objects[i].shape
    assert shapes_differ > 5
    old = inpaint_example(np.random.default_rng(4), p_background=0, p_remove=0, p_drop=0, edit_hole="target")
    assert old["kind"] == "edit" and old["source_scene"] is None
    with pytest.raises(ValueError, match="edit_hole must be 'source' or 'target', got 'both'"):
        inpaint_example(rng, edit_hole="both")


def test_segment_batch_masks_boxes_and_texts():
    b = segment_batch(np.random.default_rng(4), 16)
    assert b["image"].shape == (16, 3, 64, 64) and b["mask"].shape == (16, 1, 64, 64)
    assert b["masks_all"].shape == (16, N_MAX, 64, 64) and b["boxes"].shape == (16, N_MAX, 4)
    for j in range(16):
        scene, n, i = b["scenes"][j], int(b["count"][j]), int(b["index"][j])
        assert n == len(scene.objects) and resolve(scene, b["text"][j])[0] == i
        assert torch.equal(b["mask"][j, 0], b["masks_all"][j, i])
        assert torch.equal(b["masks_all"][j, :n], torch.from_numpy(render_masks(scene)[0] > 0.5).float())
        assert not b["masks_all"][j, n:].any() and not b["boxes"][j, n:].any()
        ys, xs = torch.nonzero(b["mask"][j, 0], as_tuple=True)
        assert torch.allclose(b["boxes"][j, i], torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / 64.0)
    assert b["context"].any()  # some expressions need a relation to pass a look-alike


def test_rank_batch_and_vocab():
    images, texts = rank_batch(np.random.default_rng(6), 8)
    assert images.shape == (8, 3, 32, 32) and images.min() >= 0 and images.max() <= 1 and len(texts) == 8
    assert all(len(parse_text(t).named) == 4 for t in texts)
    assert tokenizer().n_vocab == len(VOCAB)
