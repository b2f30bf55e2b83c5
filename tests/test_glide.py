import json
import logging

import pytest
import torch

from romlib.models.glide import GlideConfig, build_model, create_model
from romlib.models.tiny import tiny_glide


@pytest.mark.parametrize("name,entries,params", [("base-inpaint", 783, 385_037_638), ("upsample-inpaint", 797, 398_368_198)])
def test_official_sizes_match_manifests(ref, name, entries, params):
    model = create_model(name, device="meta")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    manifest = json.loads((ref / f"glide_{name}_state_dict_shapes.json").read_text())
    assert len(ours) == entries
    assert ours == manifest
    assert sum(v.numel() for v in model.state_dict().values()) == params


@pytest.mark.parametrize("fname", ["glide_inpaint64_golden.pt", "glide_superres_inpaint256_golden.pt"])
def test_golden_outputs(ref, fname):
    g = torch.load(ref / fname, weights_only=True)
    cfg = dict(g["config"], inpaint=True, super_res="SuperRes" in g["model_class"])
    model = build_model(cfg).eval()
    model.load_state_dict(g["state_dict"], strict=True)
    with torch.no_grad():
        out = model(**g["inputs"])
    reference = g["output"]
    assert out.shape == reference.shape
    assert (out - reference).abs().max() <= 1e-5 * reference.abs().max()


def test_config_accepts_reference_keys_and_keeps_unknown(ref):
    g = torch.load(ref / "glide_inpaint64_golden.pt", weights_only=True)
    cfg = GlideConfig.from_dict({**g["config"], "some_future_key": 1})
    assert cfg.n_vocab == 100 and cfg.attention_resolutions == (2, 4, 8) and cfg.extra == {"some_future_key": 1}


def _inputs(model, b=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    kw = dict(x=torch.randn(b, 3, size, size, generator=g), timesteps=torch.tensor([10, 500][:b]),
              tokens=torch.randint(0, 100, (b, cfg.text_ctx), generator=g), mask=torch.ones(b, cfg.text_ctx, dtype=torch.bool),
              inpaint_image=torch.rand(b, 3, size, size, generator=g) * 2 - 1, inpaint_mask=(torch.rand(b, 1, size, size, generator=g) > 0.5).float())
    kw["mask"][:, 5:] = False
    if cfg.super_res:
        kw["low_res"] = torch.rand(b, 3, size // 4, size // 4, generator=g) * 2 - 1
    return kw


def test_precomputed_text_embedding_gives_the_same_output():
    model = tiny_glide()
    kw = _inputs(model)
    with torch.no_grad():
        a = model(**kw)
        emb = model.encode_text(kw["tokens"], kw["mask"])
        b = model(**{k: v for k, v in kw.items() if k not in ("tokens", "mask")}, text_emb=emb)
    assert torch.equal(a, b)
    assert a.shape == (2, 6, 64, 64)


def test_mask_inpaint_input_flag():
    official = tiny_glide(mask_inpaint_input=True)
    rom = tiny_glide(mask_inpaint_input=False)
    kw = _inputs(official)
    with torch.no_grad():
        a = official(**kw)
        b = rom(**{**kw, "inpaint_image": kw["inpaint_image"] * kw["inpaint_mask"]})
        c = rom(**kw)
    assert torch.allclose(a, b, atol=1e-6)  # official = ROM model given the masked image
    assert not torch.allclose(a, c, atol=1e-3)  # ROM model sees the original pixels


def test_fp16_runs_the_reference_layers_in_half():
    model = tiny_glide().convert_to_fp16()
    assert model.input_blocks[0][0].weight.dtype == torch.float16
    assert model.transformer.resblocks[0].attn.c_qkv.weight.dtype == torch.float16
    assert model.token_embedding.weight.dtype == torch.float16
    for p in (model.time_embed[0].weight, model.out[2].weight, model.input_blocks[1][0].emb_layers[1].weight,
              model.input_blocks[1][0].in_layers[0].weight, model.positional_embedding, model.final_ln.weight):
        assert p.dtype == torch.float32
    kw = _inputs(model)
    full = tiny_glide()
    with torch.no_grad():
        half, ref32 = model(**kw), full(**kw)
    assert half.dtype == torch.float32
    assert (half - ref32).abs().max() < 2e-2 * ref32.abs().max()


def test_fp16_nan_guard_falls_back_to_fp32(caplog):
    model = tiny_glide().convert_to_fp16()
    conv = model.input_blocks[1][0].in_layers[2]
    conv.weight.data.fill_(3000.0)  # representable in half, but activations overflow 65504 (glide-text2im #31)
    kw = _inputs(model)
    with caplog.at_level(logging.WARNING), torch.no_grad():
        out = model(**kw)
    assert "non-finite" in caplog.text
    assert torch.isfinite(out).all()  # the fp32 rerun is finite
    assert model.dtype == torch.float32 and conv.weight.dtype == torch.float32


def test_bad_inputs_are_named():
    model = tiny_glide()
    kw = _inputs(model)
    with pytest.raises(ValueError, match="text_ctx"):
        model.encode_text(kw["tokens"][:, :5], kw["mask"][:, :5])
    with pytest.raises(ValueError, match="token mask"):
        model.encode_text(kw["tokens"], None)
    up = tiny_glide("upsample-inpaint")
    with pytest.raises(ValueError, match="low_res"):
        up(**{**_inputs(up, b=1, size=256), "low_res": None})
    with pytest.raises(ValueError, match="unknown GLIDE model"):
        create_model("base", device="meta")


@pytest.mark.parametrize("fname", ["glide_inpaint64_golden.pt", "glide_superres_inpaint256_golden.pt"])
def test_fast_path_is_bitwise_the_plain_path_in_fp32(ref, fname):
    """The fast eager path (default) only changes half-precision arithmetic: on the golden models
    in float32 it gives exactly the plain path's output."""
    g = torch.load(ref / fname, weights_only=True)
    cfg = dict(g["config"], inpaint=True, super_res="SuperRes" in g["model_class"])
    model = build_model(cfg).eval()
    model.load_state_dict(g["state_dict"], strict=True)
    assert model.fast
    with torch.no_grad():
        fast = model(**g["inputs"])
        plain = model.set_fast(False)(**g["inputs"])
    assert not model.fast
    assert torch.equal(fast, plain)
