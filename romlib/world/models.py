"""The embedded world's model sizes: one builder per model, and the loader of their weight files.

* **base** — romlib's GLIDE inpainting UNet (:class:`romlib.models.glide.GlideUNet`) at 32×32:
  :func:`base_config`;
* **upsampler** — the same class with ``super_res=True`` and ``inpaint=True`` (GLIDE's
  upsample-inpaint: the noisy 64×64 image, the masked 64×64 source and the keep mask, and the
  32×32 sample bilinearly upsampled, concatenated): :func:`upsampler_config`. It has **no
  spatial attention** (``attention_resolutions=()`` and the middle block's attention removed,
  :func:`build_upsampler`), so it is fully convolutional and the text reaches it through the
  timestep embedding only; that is what makes training it on 32×32 crops of the 64×64 image
  legitimate (docs/world_training.md);
* **segmenter** — :class:`romlib.world.segmenter.WorldSegmenterNet`: :func:`segmenter_config`;
* **ranker** — :class:`WorldRanker`, ShapesWorld's tiny CLIP over the world's vocabulary.

The numbers chosen here come from the step-time study in docs/world_training.md.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..models.glide import GlideConfig, GlideUNet
from ..models.glide_blocks import TimestepSequential
from ..shapes.ranker import ShapesRanker

__all__ = ["TEXT_CTX", "BASE_SIZE", "FULL_SIZE", "base_config", "upsampler_config", "build_base", "build_upsampler",
           "segmenter_config", "WorldRanker", "n_params", "weights_bytes", "load_unet", "BASE_SCHEDULE",
           "UPSAMPLE_SCHEDULE"]

#: word tokens the text encoders read (the world's referring expressions are up to ~12 words)
TEXT_CTX = 16
BASE_SIZE = 32
FULL_SIZE = 64
#: (noise schedule, training steps): GLIDE's choices for the base model and the upsampler
BASE_SCHEDULE = ("squaredcos_cap_v2", 1000)
UPSAMPLE_SCHEDULE = ("linear", 1000)


def _text(n_vocab: int) -> dict:
    return dict(text_ctx=TEXT_CTX, xf_width=64, xf_layers=2, xf_heads=4, xf_final_ln=True, xf_padding=True,
                n_vocab=int(n_vocab))


def base_config(n_vocab: int, *, channels: int = 32, channel_mult=(1, 2, 2), num_res_blocks: int = 1) -> GlideConfig:
    """The 32×32 base inpainting model: attention at 8×8 only (and in the middle block), a 2-layer
    width-64 text transformer over :data:`TEXT_CTX` word tokens, ``mask_inpaint_input=False`` (CCF's
    original image reaches it, as in the ROM authors' GLIDE)."""
    return GlideConfig(**_text(n_vocab), model_channels=channels, channel_mult=tuple(channel_mult),
                       num_res_blocks=num_res_blocks, attention_resolutions=(BASE_SIZE // 8,), num_head_channels=32,
                       dropout=0.0, inpaint=True, mask_inpaint_input=False, image_size=BASE_SIZE,
                       use_scale_shift_norm=True, resblock_updown=True)


def upsampler_config(n_vocab: int, *, channels: int = 32, channel_mult=(1, 2, 2), num_res_blocks: int = 1) -> GlideConfig:
    """The 32→64 inpainting upsampler: no attention (see the module docstring), the same text
    transformer as the base model (its last token, projected, joins the timestep embedding)."""
    return GlideConfig(**_text(n_vocab), model_channels=channels, channel_mult=tuple(channel_mult),
                       num_res_blocks=num_res_blocks, attention_resolutions=(), num_head_channels=32, dropout=0.0,
                       inpaint=True, super_res=True, mask_inpaint_input=True, image_size=FULL_SIZE,
                       use_scale_shift_norm=True, resblock_updown=True)


def build_base(cfg: GlideConfig) -> GlideUNet:
    return GlideUNet(cfg)


def build_upsampler(cfg: GlideConfig, *, middle_attention: bool = False) -> GlideUNet:
    """The upsampler; without ``middle_attention`` the middle block is its two residual blocks only."""
    model = GlideUNet(cfg)
    if not middle_attention:
        res_a, _, res_b = model.middle_block
        model.middle_block = TimestepSequential(res_a, res_b)
    return model


def segmenter_config(n_vocab: int, **overrides) -> dict:
    """The learned referring segmenter's size (:class:`romlib.world.segmenter.WorldSegmenterNet`)."""
    cfg = dict(n_vocab=int(n_vocab), text_ctx=TEXT_CTX, width=64, queries=8, enc_layers=2, dec_layers=2, heads=4,
               image_size=FULL_SIZE, film=True, dense=True)
    cfg.update(overrides)
    return cfg


class WorldRanker(ShapesRanker):
    """ShapesWorld's tiny CLIP (:class:`romlib.shapes.ranker.ShapesRanker`: five convolutions over a
    crop, a word-embedding MLP) reading the world's vocabulary and :data:`TEXT_CTX` tokens."""

    def __init__(self, tokenizer, image_size: int = 32, dim: int = 64, width: int = 64):
        super().__init__(image_size=image_size, dim=dim, width=width)
        self.tokenizer = tokenizer
        self.token_embedding = nn.Embedding(tokenizer.n_vocab, width)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        tokens, mask = self.tokenizer.batch(list(texts), TEXT_CTX, device=self.device)
        mask = mask.clone()
        mask[:, 0] |= ~mask.any(1)  # an empty text reads its (end) token
        emb = self.token_embedding(tokens) * mask[..., None]
        return self.text_mlp(emb.sum(1) / mask.sum(1, keepdim=True))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weights_bytes(model: nn.Module) -> int:
    """Bytes of the state dict stored as float16 (how the weights ship)."""
    return sum(v.numel() * (2 if v.is_floating_point() else v.element_size()) for v in model.state_dict().values())


def load_unet(path: str | Path, *, device="cpu") -> GlideUNet:
    """A base or upsampler weight file written by :mod:`romlib.world.train` (float16 EMA weights,
    ``config``, ``meta``), loaded strictly in float32, in eval mode; its ``meta`` (recipe, schedule, steps) as
    ``model.meta``."""
    from ..shapes.backend import read_weights

    def build(c):
        cfg = GlideConfig.from_dict(c["config"])
        model = build_upsampler(cfg, middle_attention=c["meta"].get("middle_attention", True)) if cfg.super_res \
            else build_base(cfg)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in c["state_dict"].items()},
                              strict=True)
        model.meta = dict(c.get("meta", {}))
        return model

    model = read_weights(path, build, advice="write it again with the world's trainer (romlib.world.train)")
    return model.to(device).eval().requires_grad_(False)
