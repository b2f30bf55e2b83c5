"""The embedded world's trainers and learned segmenter (romlib.world.train / .segmenter / .models).

Runs on the world's own batches (romlib.world.data)."""
import argparse
import itertools

import numpy as np
import pytest
import torch

from romlib.models.glide_blocks import AttentionBlock
from romlib.contracts import NoObjectFound, Segmentation, Segmenter
from romlib.sampling.diffusion import create_diffusion
from romlib.sampling.inpaint import sample_upsample
from romlib.world import models as M
from romlib.world import train as T
from romlib.world.segmenter import (WorldSegmenter, WorldSegmenterNet, assignment, load_segmenter, mask_boxes,
                                    pooled_score, segmenter_loss)
from romlib.world import data as batches


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _fixed_loss(setup, batch_size):
    torch.manual_seed(1)
    return setup.loss_fn(setup.model, np.random.default_rng(1), batch_size)["loss"]


@pytest.mark.parametrize("name,batch_size,lr,steps", [("base", 4, 2e-3, 6), ("upsampler", 4, 2e-3, 6),
                                                       ("segmenter", 4, 2e-3, 6), ("ranker", 16, 3e-3, 12)])
def test_steps_change_weights_and_lower_the_loss_on_a_fixed_batch(name, batch_size, lr, steps):
    s = T.SETUPS[name](batches, eval_n=0) if name in ("segmenter", "ranker") else T.SETUPS[name](batches)
    before = [p.detach().clone() for p in s.model.parameters()]
    opt = torch.optim.AdamW(s.model.parameters(), lr=lr)
    first = _fixed_loss(s, batch_size).item()
    for _ in range(steps):
        loss = _fixed_loss(s, batch_size)
        opt.zero_grad()
        loss.backward()
        opt.step()
    changed = sum(not torch.equal(a, b) for a, b in zip(before, s.model.parameters()))
    assert changed > len(before) // 2
    assert _fixed_loss(s, batch_size).item() < 0.9 * first


def _losses(out):
    import csv

    with open(out / "base_loss.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path):
    kw = dict(steps=4, batch_size=2, save_every=2, progress=False)
    T.train("base", tmp_path / "a", batches=batches, **kw)
    assert T.train("base", tmp_path / "b", batches=batches, pause_at=2, **kw) is None
    assert len(_losses(tmp_path / "b")) == 2
    T.train("base", tmp_path / "b", batches=batches, resume=True, **kw)
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert len(a) == len(b) == 4
    np.testing.assert_allclose(b, a, rtol=1e-5)
    model = M.load_unet(tmp_path / "b" / "base.pt")
    assert model.cfg.image_size == M.BASE_SIZE and not model.training


def _args(out, **kw):
    p = argparse.ArgumentParser()
    T.add_train_args(p)
    return p.parse_args(["--out", str(out), "--quiet", *itertools.chain.from_iterable(
        [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)]) for k, v in kw.items())])


def test_refuses_to_overwrite_a_run_without_resume_or_overwrite(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "_default_batches", lambda: batches)
    (tmp_path / "ranker_loss.csv").write_text("step,loss\n1,2.0\n")
    with pytest.raises(FileExistsError, match="ranker_loss.csv"):
        T.train_command(_args(tmp_path, what="ranker", ranker_steps=2, batch_size=8))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        T.train_command(_args(tmp_path, what="ranker", resume=True))
    with pytest.raises(ValueError, match="exclude each other"):
        T.train_command(_args(tmp_path, what="ranker", resume=True, overwrite=True))
    assert T.train_command(_args(tmp_path, what="ranker", ranker_steps=2, batch_size=8, overwrite=True)) == 0
    for n in T.RUN_FILES["ranker"]:
        assert (tmp_path / n).is_file(), n
    assert (tmp_path / "base.pt").exists() is False


def test_hungarian_assignment_is_optimal():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 5))
        c = rng.random((n, 8))
        best = min(sum(c[i, p[i]] for i in range(n)) for p in itertools.permutations(range(8), n))
        pairs = assignment(c)
        assert sorted(i for i, _ in pairs) == list(range(n)) and len({j for _, j in pairs}) == n
        assert sum(c[i, j] for i, j in pairs) == pytest.approx(best)


def test_segmenter_follows_the_contract(tmp_path):
    tok = batches.tokenizer()
    torch.manual_seed(0)
    seg = WorldSegmenter(WorldSegmenterNet(**M.segmenter_config(tok.n_vocab)), tok)
    assert isinstance(seg, Segmenter)
    b = batches.segment_batch(np.random.default_rng(0), 1)
    image = ((b["image"][0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
    r = seg.segment(image, b["text"][0], min_score=0.0)
    assert isinstance(r, Segmentation)
    assert r.mask.dtype == torch.bool and r.mask.shape == (64, 64)
    assert r.scores.shape == (8,) and r.boxes.shape == (8, 4) and r.mask_logits.shape == (32, 32)
    assert r.extra["query_masks"].shape == (8, 64, 64) and 0 <= r.score <= 1
    assert r.index == int(r.scores.argmax()) and r.score == pytest.approx(float(r.scores[r.index]))
    if r.mask.any():
        assert r.box == tuple(mask_boxes(r.mask[None])[0].tolist())
    # the threshold knob: a lower threshold gives a superset
    lo = seg.segment(image, b["text"][0], min_score=0.0, threshold=0.2)
    hi = seg.segment(image, b["text"][0], min_score=0.0, threshold=0.8)
    assert bool((hi.mask <= lo.mask).all()) and lo.mask.sum() >= hi.mask.sum()
    big = seg.segment(np.kron(image, np.ones((2, 2, 1), np.uint8)), b["text"][0], min_score=0.0)
    assert big.mask.shape == (128, 128)
    with pytest.raises(NoObjectFound):
        seg.segment(image, b["text"][0], min_score=1.0)
    with pytest.raises(ValueError, match="threshold"):
        seg.segment(image, b["text"][0], threshold=1.5)
    with pytest.raises(ValueError, match="zebra"):
        seg.segment(image, "the zebra")
    with pytest.raises(ValueError, match="empty"):
        seg.segment(image, "  ")
    # the trained file loads back to the same outputs (float16 storage)
    T.train("segmenter", tmp_path, batches=batches, steps=1, batch_size=2, progress=False, setup_options={"eval_n": 20})
    back = load_segmenter(tmp_path / "segmenter.pt", tok)
    assert back.segment(image, b["text"][0], min_score=0.0).mask.shape == (64, 64)


@pytest.mark.parametrize("variant", [{"film": True, "dense": True}, {"film": False, "dense": True},
                                     {"film": True, "dense": False}, {"film": False, "dense": False, "align": True},
                                     {"film": True, "align": True, "dense": False},
                                     {"film": True, "attributes": True}])
def test_segmenter_variants_read_the_text_and_load_back(variant, tmp_path):
    """FiLM (the pooled text scales and shifts the backbone's features), the alignment score (a query's
    embedding against the pooled text's) and the dense score (a per-pixel map pooled under each query's mask):
    each makes the output follow the words, and loads back from its file."""
    tok = batches.tokenizer()
    b = batches.segment_batch(np.random.default_rng(3), 2)
    tokens, mask = tok.batch(b["text"], M.TEXT_CTX)
    other, other_mask = tok.batch(["the large red one", "the cube on the left"], M.TEXT_CTX)
    setup = T.SETUPS["segmenter"](batches, eval_n=0, config=variant)
    net = setup.model.eval()
    want = {**M.segmenter_config(tok.n_vocab), **variant}
    assert {k: net.config[k] for k in ("film", "align", "dense")} == {k: bool(want.get(k)) for k in ("film", "align", "dense")}
    with torch.no_grad():
        if variant.get("film"):  # FiLM starts as the identity (zero init); the words reach the CNN once it learns
            assert torch.count_nonzero(net.film_head.weight) == 0
            net.film_head.weight.normal_(0, 0.2)
            feats = {}
            net.down.register_forward_hook(lambda m, i, o: feats.setdefault(len(feats), o))
            net(b["image"], tokens, mask), net(b["image"], other, other_mask)
            assert not torch.allclose(feats[0], feats[1])  # the backbone itself read the text
        if want.get("dense"):  # the score is read off the per-pixel map, nothing else
            assert not hasattr(net, "ref_head") and not hasattr(net, "align_q")
            out = net(b["image"], tokens, mask)
            assert torch.allclose(out["ref_logits"], pooled_score(out["mask_logits"], out["ref_map"]))
        if want.get("align"):
            assert not hasattr(net, "ref_head")  # the score is the alignment, nothing else
            assert not torch.allclose(net(b["image"], tokens, mask)["ref_logits"],
                                      net(b["image"], other, other_mask)["ref_logits"])
    losses = setup.loss_fn(net, np.random.default_rng(0), 3)
    assert ("attr" in losses) is bool(variant.get("attributes")) and torch.isfinite(losses["loss"])
    if variant.get("attributes"):  # each matched query learns its object's attributes and place
        assert losses["attr"] > 0 and losses["loss"] > losses["mask"] + losses["ref"] + 0.5 * losses["obj"]
    setup.save(tmp_path / "segmenter.pt", net, {"steps": 0})
    back = load_segmenter(tmp_path / "segmenter.pt", tok)
    with torch.no_grad():
        a, c = net(b["image"], tokens, mask), back.net(b["image"], tokens, mask)
    assert back.net.config == net.config
    assert torch.allclose(a["ref_logits"], c["ref_logits"], atol=0.05)  # float16 storage


def test_dense_score_gives_duplicate_queries_one_score_and_teaches_no_unmatched_query():
    """The dense score: two queries with the same mask read the same pixels (one score, whatever the matching
    made of them); an empty mask scores the prior; a query over the referred pixels outscores one over another
    object; and the loss reaches the per-pixel map but never an unmatched query's score."""
    from romlib.world.segmenter import PRIOR_LOGIT

    ref_map = torch.full((1, 8, 8), -4.0)
    ref_map[0, :4, :4] = 4.0  # the referred object's pixels
    m = torch.full((1, 4, 8, 8), -20.0)
    m[0, 0, :4, :4] = m[0, 1, :4, :4] = 20.0  # two duplicates over the referred object
    m[0, 2, 4:, 4:] = 20.0  # another object
    s = pooled_score(m, ref_map)[0]
    assert s[0] == s[1] and s[0] > 1.5 > -2 > s[2] and abs(float(s[3]) - PRIOR_LOGIT) < 0.01
    with pytest.raises(ValueError, match="choose one"):
        WorldSegmenterNet(10, dense=True, align=True)
    setup = T.SETUPS["segmenter"](batches, eval_n=0, config={"queries": 6})
    net = setup.model.train()
    outs = {}

    def keep(mod, inputs, output):
        output.retain_grad()
        outs["map"] = output

    net.ref_pixel.register_forward_hook(keep)
    b = batches.segment_batch(np.random.default_rng(5), 2)
    tokens, mask = batches.tokenizer().batch(b["text"], M.TEXT_CTX)
    out = net(b["image"], tokens, mask)
    out["ref_logits"].retain_grad()
    orig = net.forward
    net.forward = lambda *a: out
    loss = segmenter_loss(net, b, tokens, mask)
    net.forward = orig
    loss["loss"].backward()
    assert outs["map"].grad.abs().sum() > 0
    matched = out["ref_logits"].grad != 0
    assert 0 < int(matched.sum()) <= int(b["count"].sum())  # only the matched queries' scores learn


def test_mask_boxes():
    m = torch.zeros(2, 8, 8, dtype=torch.bool)
    m[0, 2:5, 3:7] = True
    assert mask_boxes(m).tolist() == [[3, 2, 7, 5], [0, 0, 0, 0]]


def test_upsampler_trains_on_crops_and_samples_at_64(tmp_path):
    rng = np.random.default_rng(0)
    batch = batches.inpaint_batch(rng, 4, size=64)
    u = T.upsampler_inputs(rng, batch, crop=32)
    assert u["x0"].shape == (4, 3, 32, 32) and u["low_res"].shape == (4, 3, 32, 32) and u["keep"].shape == (4, 1, 32, 32)
    # the low-res crop is 8-bit levels of the 32×32 image, upsampled: its values lie on the bilinear grid of rounded pixels
    full = T.upsampler_inputs(np.random.default_rng(0), batch, crop=None, augment=False)
    assert full["x0"].shape == (4, 3, 64, 64)
    assert float((full["low_res"] - batch["image"]).abs().mean()) < 0.2
    T.train("upsampler", tmp_path, batches=batches, steps=2, batch_size=2, progress=False)
    model = M.load_unet(tmp_path / "upsampler.pt")
    assert model.cfg.super_res and not any(isinstance(m, AttentionBlock) for m in model.modules())
    check = T.crop_check(model, batches, n=8)
    assert check["n"] == 8 and check["diff_ci95"][0] <= check["diff"] <= check["diff_ci95"][1]
    assert check["mse_full_frame"] > 0 and check["mse_crop"] > 0
    diffusion = create_diffusion(1000, M.UPSAMPLE_SCHEDULE[0], "3")
    image, keep = batch["image"][:1], batch["keep"][:1]
    low = torch.nn.functional.interpolate(image, size=(32, 32), mode="area")
    out = sample_upsample(model, diffusion, batches.tokenizer(), low_res=low, image=image, keep_mask=keep,
                          target=batch["text"][0] or "a red box")
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()
    known = keep.bool().expand_as(out)
    torch.testing.assert_close(out[known], image.clamp(-1, 1)[known], atol=1e-4, rtol=0)
