"""Tiny random-weight models of every architecture romlib carries (same code, toy sizes).

Used by the ``tiny`` backends (assembled in :mod:`romlib.backends`, ``ROMPipeline.from_pretrained("tiny")``), by
``romlib bench`` on the CPU, and by the tests. Every parameter is redrawn from a seeded generator,
so no output is trivially zero and two calls with the same seed give the same model.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .adm import config_from_guided_diffusion
from .glide import GlideConfig, GlideUNet
from .mdetr import FrozenBatchNormAct2d, MDETRConfig, MDETRSegmentation
from .noised_clip import ByteClipTokenizer, create_noised_clip, NoisedClipConfig

if TYPE_CHECKING:
    from .glide import GlideConfig, GlideUNet
    from .noised_clip import NoisedClip, NoisedClipConfig

__all__ = ["randomize_", "randomize_buffers_", "tiny_glide_config", "tiny_glide", "tiny_mdetr_config",
           "tiny_roberta_tokenizer", "tiny_mdetr", "tiny_clip_model", "tiny_adm_config", "tiny_adm",
           "tiny_noised_clip_config", "tiny_noised_clip"]


def tiny_glide_config(kind: str = "base-inpaint", n_vocab: int = 50257, text_ctx: int = 16):
    """A small GLIDE config of the same family (about 1 M parameters)."""
    common = dict(text_ctx=text_ctx, xf_width=32, xf_layers=1, xf_heads=2, model_channels=32, num_res_blocks=1,
                  num_head_channels=16, n_vocab=n_vocab, inpaint=True, mask_inpaint_input=False, dropout=0.0)
    if kind == "base-inpaint":
        return GlideConfig(**common, channel_mult=(1, 1, 2, 2), attention_resolutions=(4, 8), image_size=64)
    if kind == "upsample-inpaint":
        return GlideConfig(**common, channel_mult=(1, 1, 1, 1, 2, 2), attention_resolutions=(16, 32), image_size=256,
                           super_res=True)
    raise ValueError(f"unknown kind {kind!r}")


def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Redraw every parameter from N(0, std²) (norm gains around 1), deterministically."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g) * std
            if p.ndim == 1 and ("norm" in name or "ln" in name or name.endswith("in_layers.0.weight")
                                or name.endswith("out_layers.0.weight") or name.startswith("out.0")):
                r = r + (1.0 if name.endswith("weight") else 0.0)
            p.copy_(r.to(p.dtype))
    return model


def tiny_glide(kind: str = "base-inpaint", seed: int = 0, **overrides):
    """A tiny random-weight GLIDE inpainting model (``kind``: base-inpaint or upsample-inpaint)."""
    cfg = tiny_glide_config(kind)
    if overrides:
        cfg = GlideConfig(**{**cfg.to_dict(), **overrides})
    return randomize_(GlideUNet(cfg), seed).eval().requires_grad_(False)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of the 256 bytes to printable characters (RoBERTa's byte-level BPE)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = dict(zip(printable, printable)), 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {b: chr(c) for b, c in sorted(chars.items())}


def tiny_roberta_tokenizer():
    """An offline RoBERTa-style tokenizer: byte-level BPE over the 256 bytes with a few merges,
    the usual special tokens (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2), 267 ids in all."""
    import json
    import tempfile

    from transformers import RobertaTokenizer

    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>"])}
    for ch in _bytes_to_unicode().values():
        vocab[ch] = len(vocab)
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "r"), ("e", "d"), ("Ġr", "ed")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<mask>"] = len(vocab)
    with tempfile.TemporaryDirectory() as tmp:  # vocab.json + merges.txt: the form every transformers reads
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                              encoding="utf-8")
        return RobertaTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"))


def tiny_mdetr_config():
    """A small MDETR of the same family (about 1 M parameters): timm's ``test_efficientnet``
    backbone, width 128, 2 + 2 transformer layers, 10 queries, a 2-layer RoBERTa of width 32
    reading at most 30 tokens, 267-token vocabulary (:func:`tiny_roberta_tokenizer`)."""
    text = dict(vocab_size=267, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                hidden_act="gelu", max_position_embeddings=32, type_vocab_size=1, layer_norm_eps=1e-5,
                pad_token_id=1, bos_token_id=0, eos_token_id=2)
    return MDETRConfig(backbone="test_efficientnet", hidden_dim=128, nheads=8, enc_layers=2, dec_layers=2,
                       dim_feedforward=256, num_queries=10, text_encoder=text)


def randomize_buffers_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Draw frozen batch-norm statistics and affine terms (γ ≈ 1, β ≈ 0, μ ≈ 0, σ² ∈ [0.5, 1.5])."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, FrozenBatchNormAct2d):
            n = m.weight.shape[0]
            m.weight.copy_(1 + 0.1 * torch.randn(n, generator=g))
            m.bias.copy_(0.1 * torch.randn(n, generator=g))
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model


def tiny_adm_config(image_size: int = 64) -> GlideConfig:
    """A small ADM of the same family (about 1 M parameters) for tests and CPU demos."""
    mult = {32: (1, 2, 2), 64: (1, 1, 2, 2), 128: (1, 1, 2, 2, 2), 256: (1, 1, 1, 2, 2, 2)}
    if image_size not in mult:
        raise ValueError(f"tiny ADM image_size must be one of {sorted(mult)}, got {image_size}")
    return config_from_guided_diffusion(image_size, 32, 1, channel_mult=",".join(map(str, mult[image_size])),
                                        learn_sigma=True, attention_resolutions=f"{image_size // 4},{image_size // 8}",
                                        num_head_channels=16, use_scale_shift_norm=True, resblock_updown=True)


def tiny_adm(image_size: int = 64, seed: int = 0) -> GlideUNet:
    """A tiny random-weight ADM (every parameter redrawn, so no output is trivially zero)."""
    return randomize_(GlideUNet(tiny_adm_config(image_size)), seed).eval().requires_grad_(False)


def tiny_noised_clip_config() -> NoisedClipConfig:
    """Same family, toy sizes: 64×64 images in 16×16 patches, width 32, one block each, byte vocabulary."""
    return NoisedClipConfig(image_size=64, patch_size=16, n_vocab=258, max_text_len=32, n_embd=32,
                            n_head_state_text=16, n_head_text=2, n_xf_blocks_text=1, n_head_state_image=16,
                            n_head_image=2, n_xf_blocks_image=1)


def tiny_noised_clip(seed: int = 0) -> NoisedClip:
    """A tiny random-weight noised CLIP (every parameter redrawn; LayerNorm gains around 1)."""
    model = create_noised_clip(config=tiny_noised_clip_config(), tokenizer=ByteClipTokenizer())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.1 if name.endswith(".g") else 0.3)
                    + (1.0 if name.endswith(".g") else 0.0))
    return model


def tiny_mdetr(seed: int = 0):
    """A random tiny MDETR network (:func:`tiny_mdetr_config`), the caller's random state left alone."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(seed)
        model = MDETRSegmentation(tiny_mdetr_config())
    with torch.no_grad():
        randomize_buffers_(model, seed)
    return model.eval().requires_grad_(False)


def tiny_clip_model(seed: int = 0, image_size: int = 32):
    """A random-weight CLIP of the same family (open_clip ``CLIP``) and its tokenizer; offline."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=image_size, patch_size=8, width=64, layers=2, head_width=32),
        text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
    ).eval().requires_grad_(False)
    return model, open_clip.get_tokenizer("ViT-B-16")
