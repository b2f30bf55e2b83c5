"""The paper's baselines: CLIP-guided GLIDE (noised CLIP) and Blended Diffusion (ADM + CLIP).

Fixtures in tests/fixtures/baselines/ were made with the public reference code (see its README):
reduced configurations, random weights, the reference's inputs, randomness and outputs.
"""
import json
from pathlib import Path

import pytest
import torch

from romlib.models import adm
from romlib.guidance.baselines import adm_diffusion
from romlib.guidance.blended import (AugmentParams, BackgroundBlend, BlendedGuidance, ImageAugmentations, blended_sample,
                            blended_sample_progressive, range_loss)
from romlib.guidance.clip import prepare_clip_base
from romlib.sampling.diffusion import create_diffusion, sample_generators
from romlib.models.glide import GlideUNet, build_model
from romlib.sampling.inpaint import sample_base
from romlib.masks import to_keep_mask
from romlib.models.noised_clip import ClipTokenizer, NoisedClip, NoisedClipConfig, create_noised_clip
from romlib.backends import tiny_clip_ranker
from romlib.guidance.clip import clip_gradient
from romlib.models.tiny import tiny_adm, tiny_glide, tiny_noised_clip
from romlib.guidance.methods import METHODS
from romlib.rank import ClipRanker
from romlib.models.tokenizers import ByteTokenizer, TextTokenizer

FIX = Path(__file__).parent / "fixtures" / "baselines"


def _load(name):
    return torch.load(FIX / name, weights_only=True)


def _f32(state):
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _rel(a, b):
    """max |a − b| / max |b|."""
    return ((a - b).abs().max() / b.abs().max()).item()


# ----------------------------------------------------------------------------- checkpoint compatibility
@pytest.mark.parametrize("part,manifest,entries,params", [
    ("image_encoder", "glide_clip_image_encoder", 188, 86_443_776),
    ("text_encoder", "glide_clip_text_encoder", 185, 71_679_488),
])
def test_noised_clip_matches_manifests(ref, part, manifest, entries, params):
    model = getattr(create_noised_clip(device="meta"), part)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert len(ours) == entries
    assert ours == json.loads((ref / f"{manifest}_state_dict_shapes.json").read_text())
    assert sum(v.numel() for v in model.state_dict().values()) == params


def test_adm_matches_manifest(ref):
    model = adm.create_model(device="meta")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert len(ours) == 566
    assert ours == json.loads((ref / "adm_256x256_diffusion_uncond_state_dict_shapes.json").read_text())
    assert sum(v.numel() for v in model.state_dict().values()) == 552_814_086


# ----------------------------------------------------------------------------- noised CLIP
def test_clip_tokenizer_gives_glide_clip_ids():
    rows = json.loads((FIX / "clip_tokenizer_golden.json").read_text())
    tok = ClipTokenizer()
    for row in rows:
        tokens, length = tok.padded_tokens_and_len(tok.encode(row["prompt"]), 77)
        assert (tokens, length) == (row["tokens"], row["len"]), row["prompt"]
    assert any(r["len"] == 77 for r in rows)  # truncation is exercised


@pytest.fixture(scope="module")
def clip_golden():
    g = _load("noised_clip_golden.pt")
    from romlib.models.noised_clip import ByteClipTokenizer

    model = NoisedClip(NoisedClipConfig(**g["config"]), tokenizer=ByteClipTokenizer()).eval()
    model.image_encoder.load_state_dict(_f32(g["image_state"]), strict=True)
    model.text_encoder.load_state_dict(_f32(g["text_state"]), strict=True)
    return g, model


def test_noised_clip_embeddings_match_reference(clip_golden):
    g, model = clip_golden
    tokens, lens = model.tokenize(g["prompts"])
    assert torch.equal(tokens, g["tokens"]) and torch.equal(lens, g["lens"])
    with torch.no_grad():
        assert _rel(model.image_encoder((g["images"] + 1) * 127.5, g["t"]), g["image_raw"]) < 1e-4
        assert _rel(model.text_encoder(tokens, lens), g["text_raw"]) < 1e-4
        assert _rel(model.image_embeddings(g["images"], g["t"]), g["image_emb"]) < 1e-4
        assert _rel(model.text_embeddings(g["prompts"]), g["text_emb"]) < 1e-4
    # the timestep matters (its own token), so a wrong t would be caught
    with torch.no_grad():
        other = model.image_embeddings(g["images"], torch.tensor([1, 500, 998]))
    assert _rel(other, g["image_emb"]) > 1e-3


class FixedTokenizer(TextTokenizer):
    """GLIDE-tokenizer stand-in giving the fixture's token ids for its one target prompt (the
    padded positions are replaced by the learned padding embedding, so their ids do not matter)."""

    def __init__(self, prompt, ids):
        self.prompt, self.ids, self.end_token, self.n_vocab = prompt, ids, 99, 100

    def encode(self, text):
        assert text == self.prompt
        return list(self.ids)


def test_clip_guided_glide_step_matches_reference(clip_golden):
    g, clip = clip_golden
    s = g["step"]
    model = build_model({**s["glide_config"], "inpaint": True, "mask_inpaint_input": False}).eval()
    model.load_state_dict(_f32(s["glide_state"]), strict=True)
    n_real = int(s["glide_mask"].sum())
    tok = FixedTokenizer(s["target"], s["glide_tokens"][0, :n_real].tolist())
    setup = prepare_clip_base(model, tok, clip, image=s["image"], keep_mask=s["keep_mask"], target=s["target"],
                              ref=s["ref"], scale=s["scale"])
    d = create_diffusion(1000, "squaredcos_cap_v2", "100")
    grad = d._model(setup.cond_fn)(s["x_t"], s["t"])
    assert _rel(grad, s["cond_grad"]) < 1e-4
    with torch.no_grad():
        out = d.p_sample(setup.model_fn, s["x_t"], s["t"], clip_denoised=True, denoised_fn=setup.denoised_fn,
                         cond_fn=setup.cond_fn, noise=s["noise"])
        unguided = d.p_mean_variance(setup.model_fn, s["x_t"], s["t"], denoised_fn=setup.denoised_fn)
    assert _rel(unguided["mean"], s["unguided_mean"]) < 1e-4
    assert _rel(out["pred_xstart"], s["pred_xstart"]) < 1e-4
    assert _rel(out["sample"], s["sample"]) < 1e-4
    # the guidance term is a visible part of the step (so the comparison tests it)
    assert (s["variance"] * s["cond_grad"]).abs().max() > 1e-3 * s["unguided_mean"].abs().max()


def test_cond_fn_goes_through_condition_mean_with_original_timesteps():
    clip = tiny_noised_clip()
    d = create_diffusion(1000, "squaredcos_cap_v2", "10")
    cond_fn = clip_gradient(clip, ["a red ball"], 3.0, ref_prompts=["a cat"])
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([9, 4])
    p = {"mean": torch.zeros_like(x), "variance": torch.full_like(x, 0.5)}
    with torch.no_grad():  # the sampler's loop runs without grad; cond_fn enables it itself
        got = d.condition_mean(cond_fn, p, x, t)
    original = torch.tensor([d.timestep_map[i] for i in t.tolist()])
    with torch.enable_grad():
        x_var = x.clone().requires_grad_(True)
        z_text = clip.text_embeddings(["a red ball"]) - clip.text_embeddings(["a cat"])
        (clip.logit_scale * (clip.image_embeddings(x_var, original) * z_text).sum()).backward()
    assert torch.allclose(got, 0.5 * 3.0 * x_var.grad, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="timesteps must be in"):
        clip.image_embeddings(x, torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match="images must be"):
        clip.image_embeddings(x[..., :32, :32], torch.tensor([0, 1]))


# ----------------------------------------------------------------------------- ADM
@pytest.fixture(scope="module")
def adm_golden():
    g = _load("adm_golden.pt")
    diffusion_args = ("diffusion_steps", "noise_schedule", "timestep_respacing", "use_kl", "predict_xstart",
                      "rescale_timesteps", "rescale_learned_sigmas")
    cfg = {k: v for k, v in g["config"].items() if k not in diffusion_args}
    model = GlideUNet(adm.config_from_guided_diffusion(**cfg)).eval()
    model.load_state_dict(_f32(g["state"]), strict=True)
    return g, model


def test_adm_forward_matches_reference(adm_golden):
    g, model = adm_golden
    with torch.no_grad():
        out = model(g["x"], g["timesteps"])
    assert out.shape == g["output"].shape == (2, 6, 32, 32)
    assert _rel(out, g["output"]) < 1e-4


def test_adm_fp16_layers_and_gradient_checkpointing(adm_golden):
    _, model = adm_golden
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), requires_grad=True)
    t = torch.tensor([5, 900])
    grads = []
    for ckpt in (False, True):
        model.gradient_checkpointing = ckpt
        x.grad = None
        model(x, t).square().sum().backward()
        grads.append(x.grad.clone())
    model.gradient_checkpointing = False
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-6)
    half = tiny_adm(32).convert_to_fp16()
    assert half.input_blocks[0][0].weight.dtype == torch.float16
    assert half.input_blocks[1][0].emb_layers[1].weight.dtype == torch.float32  # as guided-diffusion
    assert half.out[2].weight.dtype == torch.float32 and half.time_embed[0].weight.dtype == torch.float32


def test_adm_config_errors():
    with pytest.raises(NotImplementedError, match="use_new_attention_order"):
        adm.config_from_guided_diffusion(256, 256, 2, use_new_attention_order=True)
    with pytest.raises(ValueError, match="no default channel_mult"):
        adm.config_from_guided_diffusion(48, 32, 1)
    cfg = adm.official_config()
    assert cfg.attention_resolutions == (8, 16, 32) and cfg.channel_mult == (1, 1, 2, 2, 4, 4)
    assert cfg.out_channels == 6 and cfg.num_head_channels == 64 and not cfg.xf_width and not cfg.inpaint


# ----------------------------------------------------------------------------- Blended Diffusion
def _open_clip_from_openai_state(state):
    import open_clip

    model = open_clip.model.build_model_from_openai_state_dict(_f32(state))
    return model.float().eval().requires_grad_(False)


@pytest.fixture(scope="module")
def blended_golden(adm_golden):
    g = _load("blended_step_golden.pt")
    clip_model = _open_clip_from_openai_state(g["clip_state"])
    clip = ClipRanker(clip_model, tokenizer=None, image_size=g["clip_config"]["image_resolution"], normalize=True)
    return g, adm_golden[1], clip


def test_open_clip_text_tower_is_openai_clip(blended_golden):
    g, _, clip = blended_golden
    with torch.no_grad():
        assert _rel(clip.model.encode_text(g["text_tokens"]).float(), g["text_embed"]) < 1e-4


def test_blended_step_matches_reference(blended_golden):
    g, model, clip = blended_golden
    d = adm_diffusion("100")
    b, skip = g["batch_size"], g["skip_timesteps"]
    edit_mask = g["edit_mask"]
    # the loop's start: q_sample of the input at t = 99 − skip with the initial noise
    seen = []

    def spy(x, t, **kw):
        seen.append(x.clone())
        return torch.zeros(x.shape[0], 6, *x.shape[2:])

    next(d.p_sample_loop_progressive(spy, (b, 3, 32, 32), noise=g["init_noise"], clip_denoised=False,
                                     skip_timesteps=skip, init_image=g["init_image"], device="cpu"))
    assert _rel(seen[0], g["x_start"]) < 1e-6
    assert g["t"].tolist() == [99 - skip] * b

    guidance = BlendedGuidance(model, d, clip, text_emb=g["text_embed"], edit_mask=edit_mask, aug_num=g["aug_num"])
    size = g["clip_config"]["image_resolution"]
    guidance.params = AugmentParams(**g["aug_params"], size=(size, size))
    # the augmentation parameters are what our sampler draws from the recorded seeds
    drawn = guidance.augment.sample_params(b, [torch.Generator().manual_seed(s) for s in g["aug_seeds"]])
    assert all(torch.equal(getattr(drawn, k), v) for k, v in g["aug_params"].items())

    x, t = g["x_start"], g["t"]
    grad = d._model(guidance)(x, t)
    assert _rel(grad, g["cond_grad"]) < 1e-4
    assert guidance.last["clip_loss"] == pytest.approx(g["clip_loss"], rel=1e-5)
    assert guidance.last["range_loss"] == pytest.approx(g["range_loss"], rel=1e-5)
    guidance.range_lambda = 0.0
    assert _rel(d._model(guidance)(x, t), g["cond_grad_clip_only"]) < 1e-4
    guidance.range_lambda, guidance.clip_lambda = 50.0, 0.0
    assert _rel(d._model(guidance)(x, t), g["cond_grad_range_only"]) < 1e-4
    guidance.clip_lambda = 1000.0

    with torch.no_grad():
        out = d.p_sample(model, x, t, clip_denoised=False, cond_fn=guidance, noise=g["step_noise"])
    assert _rel(out["sample"], g["sample_before_blend"]) < 1e-4
    assert _rel(out["pred_xstart"], g["pred_xstart"]) < 1e-4
    out = BackgroundBlend(d, g["init_image"], edit_mask)(out, t, noise=g["background_noise"].expand(b, -1, -1, -1))
    assert _rel(out["sample"], g["sample"]) < 1e-4


def test_augmentations_statistics_and_per_sample_randomness():
    aug = ImageAugmentations(16, n=8)
    p = aug.sample_params(200, [torch.Generator().manual_seed(i) for i in range(200)])
    assert len(p) == 7 * 200
    assert abs(p.affine_on.float().mean().item() - 0.7) < 0.03
    assert abs(p.perspective_on.float().mean().item() - 0.7) < 0.03
    assert p.angle.abs().max() <= 15 and p.angle.std() > 7
    assert p.translation.abs().max() <= 1.6 + 1e-6
    corners = torch.tensor([[0.0, 0.0], [15.0, 0.0], [15.0, 15.0], [0.0, 15.0]])
    off = (p.end_points - corners).abs()
    assert off.max() <= 0.7 * 8 + 1e-5 and off.mean() > 2.0
    # sample i's views depend only on its generator (batch composition does not matter)
    one = aug.sample_params(1, [torch.Generator().manual_seed(3)])
    assert torch.equal(one.angle, p.angle[3::200]) and torch.equal(one.end_points, p.end_points[3::200])
    # order and identity views: first B rows are the plain resized images
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    views = aug(x, [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)])
    assert views.shape == (16, 3, 16, 16)
    assert torch.allclose(views[:2], torch.nn.functional.adaptive_avg_pool2d(x, 16))
    views.sum().backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="generators for a batch"):
        aug.sample_params(3, [torch.Generator()])


def test_range_loss():
    x = torch.tensor([[[[0.5, 1.5], [-3.0, 0.0]]]])
    assert range_loss(x).tolist() == [pytest.approx((0.25 + 4.0) / 4)]


# ----------------------------------------------------------------------------- tiny end-to-end runs (CPU)
def _scene(size, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, size, size, generator=g) * 2 - 1
    edit = torch.zeros(1, 1, size, size)
    edit[..., size // 4:size // 2, size // 3:2 * size // 3] = 1
    return image, to_keep_mask(edit)


def test_tiny_clip_guided_glide_end_to_end():
    tok = ByteTokenizer()
    model = tiny_glide(n_vocab=tok.n_vocab)
    clip = tiny_noised_clip()
    image, keep = _scene(64)
    d = create_diffusion(1000, "squaredcos_cap_v2", "4")
    setup = prepare_clip_base(model, tok, clip, image=image, keep_mask=keep, target="a red ball", ref="a cat",
                              scale=METHODS["clip"].default_scale)
    assert setup.rule == "clip" and setup.scale == 2.0 and setup.cond_fn is not None
    a = sample_base(setup, d, samples=2, seed=0)
    b = sample_base(setup, d, samples=2, seed=0, batch_size=1)
    assert a.shape == (2, 3, 64, 64) and torch.isfinite(a).all()
    assert torch.allclose(a, b, atol=1e-4)  # per-sample seeds: the batch size does not matter
    # the known region is forced through x̂_0; at the last step the mean is x̂_0 + Σ_0 · grad (Σ_0 small), as in
    # the reference, where CLIP's gradient also moves the known pixels a little
    assert ((a - image) * keep).abs().max() < 0.05
    assert ((a - image) * keep).abs().max() < 0.05 * ((a - image) * (1 - keep)).abs().max()
    plain = prepare_clip_base(model, tok, clip, image=image, keep_mask=keep, target="a red ball", ref="a cat", scale=0)
    assert not torch.allclose(sample_base(plain, d, samples=2, seed=0), a, atol=1e-4)  # the guidance acts
    with pytest.raises(ValueError, match="reads 64"):
        prepare_clip_base(model, tok, clip, image=image[..., :32, :32], keep_mask=keep[..., :32, :32],
                          target="x", ref="y", scale=2.0)


def test_tiny_blended_end_to_end():
    model = tiny_adm(32)
    model.gradient_checkpointing = True
    clip = tiny_clip_ranker(image_size=16)
    image, keep = _scene(32)
    d = adm_diffusion("6")
    steps = list(blended_sample_progressive(model, d, clip, image=image, keep_mask=keep, target="a red ball",
                                            generators=sample_generators(0, 2), skip_timesteps=2, aug_num=3))
    assert [s["t"] for s in steps] == [3, 2, 1, 0]
    assert all(s["clip_loss"] > 0 and "range_loss" in s for s in steps)
    result = steps[-1]["result"]
    assert result.shape == (2, 3, 32, 32) and torch.isfinite(result).all()
    assert torch.equal(result * keep, (image * keep).expand(2, -1, -1, -1))  # the background is the input
    assert not torch.allclose(result[0], result[1])
    # blended_sample in batches of one gives the same samples: sample i depends only on (seed, i)
    # (a random tiny ADM over 6 steps amplifies the rounding differences of batched matmuls at a few pixels)
    out = blended_sample(model, d, clip, image=image, keep_mask=keep, target="a red ball", samples=2, seed=0,
                         skip_timesteps=2, aug_num=3, batch_size=1)
    assert (out - result).abs().mean() < 1e-5 and (out - result).abs().max() < 1e-2
    with pytest.raises(ValueError, match="nothing to edit"):
        blended_sample(model, d, clip, image=image, keep_mask=torch.ones_like(keep), target="x", samples=1)
    with pytest.raises(ValueError, match="skip_timesteps"):
        next(blended_sample_progressive(model, d, clip, image=image, keep_mask=keep, target="x",
                                        generators=sample_generators(0, 1), skip_timesteps=6))
