"""guided-diffusion's unconditional 256×256 ADM model, the diffusion model of Blended Diffusion.

Dhariwal & Nichol (2021), "Diffusion Models Beat GANs on Image Synthesis": the same UNet family
as GLIDE (residual blocks with scale-shift norm, residual up/down-sampling, multi-head
self-attention at 32, 16 and 8 pixels), without text and without inpainting channels. So it is
:class:`romlib.models.glide.GlideUNet` with ``xf_width=0``, ``inpaint=False``: its state dict is
exactly the official ``256x256_diffusion_uncond.pt`` (566 entries, 552,814,086 parameters).

Facts checked against the reference (``guided_diffusion/unet.py`` with Blended Diffusion's
``model_config``): ``attention_resolutions="32,16,8"`` (downsampling rates 8, 16, 32),
``num_channels=256``, ``num_head_channels=64``, ``num_res_blocks=2``, channel multipliers
(1, 1, 2, 2, 4, 4), ``resblock_updown``, ``use_scale_shift_norm``, ``learn_sigma`` (6 output
channels), ``use_new_attention_order=False`` (the "legacy" head layout: per head [q, k, v],
which is also GLIDE's, so the attention is shared), ``linear`` noise schedule over 1000 steps.
``use_fp16`` runs the torso's convolutions in half, as ``convert_to_fp16`` does.

Memory: Blended Diffusion backpropagates through this model at every step. Set
``model.gradient_checkpointing = True`` (what :func:`load_model` does by default) to recompute
each UNet block in the backward pass instead of keeping its activations.
"""
from __future__ import annotations

import torch

from .. import hub
from .glide import GlideConfig, GlideUNet

__all__ = ["official_config", "config_from_guided_diffusion", "create_model", "load_model"]


def config_from_guided_diffusion(image_size: int, num_channels: int, num_res_blocks: int, *, channel_mult="",
                                 learn_sigma: bool = False, class_cond: bool = False, attention_resolutions="16",
                                 num_heads: int = 1, num_head_channels: int = -1, num_heads_upsample: int = -1,
                                 use_scale_shift_norm: bool = False, dropout: float = 0.0, resblock_updown: bool = False,
                                 use_fp16: bool = False, use_new_attention_order: bool = False,
                                 use_checkpoint: bool = False) -> GlideConfig:
    """Our config from guided-diffusion's ``create_model`` arguments (``script_util.py``)."""
    if class_cond:
        raise NotImplementedError("class-conditional ADM models (label_emb) are not supported; Blended Diffusion "
                                  "at 256×256 uses the unconditional model")
    if use_new_attention_order:
        raise NotImplementedError("use_new_attention_order=True (QKVAttention) is not supported; the released "
                                  "ADM checkpoints use the legacy order")
    if channel_mult == "":
        defaults = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
        if image_size not in defaults:
            raise ValueError(f"no default channel_mult for image_size={image_size}; expected one of {sorted(defaults)}")
        channel_mult = defaults[image_size]
    elif isinstance(channel_mult, str):
        channel_mult = tuple(int(c) for c in channel_mult.split(","))
    if isinstance(attention_resolutions, str):
        attention_resolutions = [int(r) for r in attention_resolutions.split(",")]
    return GlideConfig(
        xf_width=0, xf_layers=0, xf_heads=1, text_ctx=0, inpaint=False, super_res=False, in_channels=3,
        model_channels=num_channels, out_channels=6 if learn_sigma else 3, num_res_blocks=num_res_blocks,
        attention_resolutions=tuple(image_size // r for r in attention_resolutions), dropout=dropout,
        channel_mult=tuple(channel_mult), use_fp16=use_fp16, num_heads=num_heads,
        num_head_channels=num_head_channels, num_heads_upsample=num_heads_upsample,
        use_scale_shift_norm=use_scale_shift_norm, resblock_updown=resblock_updown, image_size=image_size,
    )


def official_config() -> GlideConfig:
    """``256x256_diffusion_uncond.pt`` as Blended Diffusion builds it (``image_editor.py``)."""
    return config_from_guided_diffusion(
        256, 256, 2, learn_sigma=True, attention_resolutions="32,16,8", num_heads=4, num_head_channels=64,
        use_scale_shift_norm=True, resblock_updown=True, dropout=0.0,
    )


def create_model(*, device="cpu", dtype: torch.dtype | None = None, gradient_checkpointing: bool = False) -> GlideUNet:
    """The official-size ADM with uninitialised weights; ``device="meta"`` costs no memory."""
    with torch.device(device):
        model = GlideUNet(official_config())
    if dtype == torch.float16:
        model.convert_to_fp16()
    elif dtype not in (None, torch.float32):
        raise ValueError(f"dtype must be torch.float32 or torch.float16, got {dtype}")
    model.gradient_checkpointing = gradient_checkpointing
    return model.eval().requires_grad_(False)


def load_model(*, device="cpu", dtype: torch.dtype | None = None, gradient_checkpointing: bool = True,
               progress: bool = True) -> GlideUNet:
    """Download (once, 2.2 GB) and load the official weights strictly.

    ``dtype=torch.float16`` is the reference's ``use_fp16`` (what Blended Diffusion runs);
    ``gradient_checkpointing`` trades a second forward pass of each block for memory.
    """
    state = hub.load_checkpoint("adm/256x256-uncond", progress=progress)
    model = create_model(device="meta")
    model.load_state_dict(state, strict=True, assign=True)
    model.float()
    if dtype == torch.float16:
        model.convert_to_fp16()
    elif dtype not in (None, torch.float32):
        raise ValueError(f"dtype must be torch.float32 or torch.float16, got {dtype}")
    model.gradient_checkpointing = gradient_checkpointing
    return model.to(device).eval().requires_grad_(False)

