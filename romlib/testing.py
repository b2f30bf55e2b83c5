"""Tiny random-weight models for tests, CPU benchmarks and docs (same architectures, toy sizes).

Used by ``tests/``, ``romlib bench`` on the CPU, and the pipeline's ``from_pretrained("tiny")``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["tiny_glide_config", "tiny_glide", "randomize_", "reference_dir", "reference_tokenizer"]


def tiny_glide_config(kind: str = "base-inpaint", n_vocab: int = 50257, text_ctx: int = 16):
    """A small GLIDE config of the same family (about 1 M parameters)."""
    from .glide import GlideConfig

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
    from .glide import GlideConfig, GlideUNet

    cfg = tiny_glide_config(kind)
    if overrides:
        cfg = GlideConfig(**{**cfg.to_dict(), **overrides})
    return randomize_(GlideUNet(cfg), seed).eval().requires_grad_(False)


def reference_dir() -> Path | None:
    """``../shared/reference`` beside the repository (or ``$ROMLIB_REFERENCE``), if present."""
    env = os.environ.get("ROMLIB_REFERENCE")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent.parent
    candidates += [here.parent / "shared" / "reference", here / "shared" / "reference"]
    for c in candidates:
        if (c / "README.md").is_file():
            return c
    return None


def reference_tokenizer():
    """GLIDE's GPT-2 tokenizer from the reference copies of its vocabulary (offline)."""
    from .tokenizer import GlideTokenizer

    ref = reference_dir()
    if ref is None:
        raise FileNotFoundError("the reference folder ../shared/reference is not available")
    return GlideTokenizer.from_files(ref / "encoder.json.gz", ref / "vocab.bpe.gz")
