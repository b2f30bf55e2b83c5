import time

import pytest
import torch

from romlib.sampling.diffusion import create_diffusion
from romlib.guidance.cfg import RULES, guided_eps, known_region_fn
from romlib.sampling.inpaint import encode_prompts, prepare_base, sample_base
from romlib.models.tiny import tiny_glide


@pytest.fixture(scope="module")
def setup(gpt2_tokenizer):
    model = tiny_glide()
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    keep = torch.ones(1, 1, 64, 64)
    keep[..., 16:44, 20:48] = 0
    return model, gpt2_tokenizer, image, keep, create_diffusion(1000, "squaredcos_cap_v2", "10")


def test_guided_eps_is_eq6_and_eq8():
    base, cond = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert torch.allclose(guided_eps(cond, base, 1.0), cond)
    assert torch.equal(guided_eps(cond, base, 0.0), base)
    assert torch.allclose(guided_eps(cond, base, 5.0), base + 5 * (cond - base))


@pytest.mark.parametrize("rule", ["cf", "ccf"])
def test_sampling_is_fast_and_bit_identical(setup, rule):
    model, tok, image, keep, diffusion = setup
    start = time.perf_counter()
    s = prepare_base(model, tok, image=image, keep_mask=keep, target="a blue truck", ref="the red car", rule=rule, scale=3.0)
    a = sample_base(s, diffusion, samples=2, seed=0)
    elapsed = time.perf_counter() - start
    b = sample_base(s, diffusion, samples=2, seed=0)
    c = sample_base(s, diffusion, samples=2, seed=1)
    assert elapsed < 20, f"{rule} took {elapsed:.1f}s"
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (2, 3, 64, 64) and a.abs().max() <= 1
    # the known region is the input's, exactly
    assert torch.equal(a * keep, (image * keep).expand_as(a))


def test_rules_feed_the_intended_branches(setup):
    model, tok, image, keep, _ = setup
    ccf = prepare_base(model, tok, image=image, keep_mask=keep, target="a blue truck", ref="the red car", rule="ccf", scale=3.0)
    cf = prepare_base(model, tok, image=image, keep_mask=keep, target="a blue truck", ref="the red car", rule="cf", scale=3.0)
    assert torch.equal(ccf.inpaint_image, image) and ccf.info == {"base_prompt": "the red car", "inpaint_input": "original"}
    assert torch.equal(cf.inpaint_image, image * keep) and cf.info == {"base_prompt": "", "inpaint_input": "masked"}
    # empty target: CCF is plain inpainting on the masked image
    empty = prepare_base(model, tok, image=image, keep_mask=keep, target="", ref="the red car", rule="ccf", scale=3.0)
    assert torch.equal(empty.inpaint_image, image * keep)
    for name in ("ccf-direction", "cf-original"):
        s = prepare_base(model, tok, image=image, keep_mask=keep, target="a cat", ref="a dog", rule=name, scale=3.0)
        assert s.info["inpaint_input"] == RULES[name].inpaint_input
    with pytest.raises(ValueError, match="unknown guidance rule"):
        prepare_base(model, tok, image=image, keep_mask=keep, target="a", ref="b", rule="cfg", scale=3.0)


def test_scale_one_is_the_pure_target_branch(setup):
    model, tok, image, keep, diffusion = setup
    s = prepare_base(model, tok, image=image, keep_mask=keep, target="a blue truck", ref="the red car", rule="ccf", scale=1.0)
    guided = sample_base(s, diffusion, samples=2, seed=3)
    (emb,) = encode_prompts(model, tok, ["a blue truck"])

    def target_only(x, t):
        return model(x, t, text_emb={k: v.expand(x.shape[0], *v.shape[1:]) for k, v in emb.items()},
                     inpaint_image=image.expand(x.shape[0], -1, -1, -1), inpaint_mask=keep.expand(x.shape[0], -1, -1, -1))

    x, t = torch.randn(2, 3, 64, 64), torch.tensor([999, 400])
    with torch.no_grad():
        one_step, reference = s.model_fn(x, t), target_only(x, t)
    assert (one_step - reference).abs().max() <= 1e-5 * reference.abs().max()
    s.model_fn = target_only
    plain = sample_base(s, diffusion, samples=2, seed=3)
    # batch-of-4 vs batch-of-2 convolutions round differently; 10 steps amplify it a little
    assert (guided - plain).abs().max() < 1e-2


def test_ccf_with_empty_ref_and_masked_input_equals_cf(setup):
    model, tok, image, keep, diffusion = setup
    cf = prepare_base(model, tok, image=image, keep_mask=keep, target="a blue truck", ref="the red car", rule="cf", scale=5)
    ccf = prepare_base(model, tok, image=image, keep_mask=keep, target="a blue truck", ref="", rule="ccf-direction", scale=5)
    assert torch.equal(sample_base(cf, diffusion, samples=2, seed=0), sample_base(ccf, diffusion, samples=2, seed=0))


def test_guided_model_records_branches(setup):
    model, tok, image, keep, _ = setup
    s = prepare_base(model, tok, image=image, keep_mask=keep, target="a cat", ref="a dog", rule="ccf", scale=15, record=True)
    x, t = torch.randn(2, 3, 64, 64), torch.tensor([500, 500])
    with torch.no_grad():
        out = s.model_fn(x, t)
    last = s.model_fn.last
    assert torch.allclose(last["eps"], last["eps_base"] + 15 * (last["eps_cond"] - last["eps_base"]), atol=1e-5)
    assert torch.equal(out[:, :3], last["eps"])


def test_known_region_fn():
    image, keep = torch.ones(1, 3, 4, 4), torch.zeros(1, 1, 4, 4)
    keep[..., :2] = 1
    out = known_region_fn(image, keep)(torch.full((2, 3, 4, 4), -0.5))
    assert (out[..., :2] == 1).all() and (out[..., 2:] == -0.5).all()
