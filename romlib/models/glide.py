"""GLIDE's text-conditional UNets, written for romlib and checkpoint-compatible with the official
``base_inpaint.pt`` (64×64) and ``upsample_inpaint.pt`` (64→256) files (``strict=True``).

Architecture (Nichol et al. 2021, "GLIDE"; Dhariwal & Nichol 2021, ADM UNet):

* a text transformer (width 512, 16 layers) reads the 128 BPE tokens; its last token, projected,
  is added to the timestep embedding, and every attention layer of the UNet also attends to all
  token outputs (``encoder_kv``);
* an ADM UNet: residual blocks with scale-shift norm (FiLM) on the timestep embedding, residual
  up/down-sampling, multi-head self-attention at the resolutions in ``attention_resolutions``;
* inpainting: the input also holds the known image and the mask (1 = keep, 0 = edit, GLIDE's
  convention) as extra channels; the upsampler also gets the 64×64 sample, bilinearly upsampled.

Output: 6 channels, ε (3) and the learned-range variance value v (3), see :mod:`romlib.sampling.diffusion`.

One deliberate choice: the official model multiplies ``inpaint_image`` by the mask itself, so the
original pixels under the mask can never reach it. The paper's CCF feeds the *original* image
(the authors removed that multiplication in their copy). ``GlideConfig.mask_inpaint_input``
says which: ``True`` (the official code, used by the golden tests) or ``False`` (the authors'
ROM code; :func:`create_model` uses it, and :mod:`romlib.guidance` masks the image itself for CF).

Speed: the text transformer runs once per sampling call (:meth:`GlideUNet.encode_text`, then
``text_emb=`` on every step); attention uses ``scaled_dot_product_attention``; in half precision
the fast eager path (:meth:`GlideUNet.set_fast`, on by default) normalises without float32 copies
and fuses the FiLM scale-shift (docs/performance.md).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import hub
from .glide_blocks import (AttentionBlock, Downsample, GroupNorm32, LayerNorm32, ResBlock, TimestepSequential,  # noqa: F401
                           Transformer, Upsample, timestep_embedding)

__all__ = ["GlideConfig", "GlideUNet", "build_model", "create_model", "load_model", "official_config", "timestep_embedding"]

log = logging.getLogger(__name__)

ModelName = Literal["base-inpaint", "upsample-inpaint"]


@dataclass
class GlideConfig:
    """The reference constructor's arguments (``Text2ImUNet`` and friends), plus ``n_vocab`` and
    the class flags ``inpaint`` / ``super_res``. ``attention_resolutions`` are downsampling
    rates (2 = attention at half resolution); ``in_channels`` counts image channels only."""

    text_ctx: int = 128
    xf_width: int = 512
    xf_layers: int = 16
    xf_heads: int = 8
    xf_final_ln: bool = True
    xf_padding: bool = True
    in_channels: int = 3
    model_channels: int = 192
    out_channels: int = 6
    num_res_blocks: int = 3
    attention_resolutions: tuple[int, ...] = (2, 4, 8)
    dropout: float = 0.0
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    use_fp16: bool = False
    num_heads: int = 1
    num_head_channels: int = 64
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    cache_text_emb: bool = False  # accepted for compatibility; romlib passes text_emb= instead
    n_vocab: int = 50257
    inpaint: bool = True
    super_res: bool = False
    mask_inpaint_input: bool = True  # True: official (image * mask inside); False: the ROM authors' copy
    image_size: int | None = None  # informational
    extra: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.attention_resolutions = tuple(int(a) for a in self.attention_resolutions)
        self.channel_mult = tuple(self.channel_mult)

    @classmethod
    def from_dict(cls, d: dict, **overrides) -> "GlideConfig":
        """Build from a reference ``config`` dict (unknown keys are kept in ``extra``)."""
        names = {f.name for f in fields(cls)}
        d = {**d, **overrides}
        known = {k: v for k, v in d.items() if k in names}
        known["extra"] = {k: v for k, v in d.items() if k not in names}
        return cls(**known)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        return d

    @property
    def input_channels(self) -> int:
        """Channels of the first convolution: x, [image, mask], [low_res]."""
        c = self.in_channels
        if self.inpaint:
            c += self.in_channels + 1
        if self.super_res:
            c += self.in_channels
        return c


# ----------------------------------------------------------------------------- the model
class GlideUNet(nn.Module):
    """GLIDE's text-conditional (inpainting / super-resolution) UNet.

    ``model(x_t, t, tokens=, mask=, inpaint_image=, inpaint_mask=, low_res=, text_emb=)`` → [B, 6, H, W].
    ``inpaint_mask`` uses GLIDE's convention, 1 = keep, 0 = edit.

    With ``xf_width=0``, ``inpaint=False`` and ``super_res=False`` it is guided-diffusion's plain
    (unconditional) ADM UNet, state-dict compatible with it (:mod:`romlib.models.adm`).
    """

    def __init__(self, cfg: GlideConfig):
        super().__init__()
        self.cfg = cfg
        mc = cfg.model_channels
        emb_dim = mc * 4
        enc_ch = cfg.xf_width or None
        heads_up = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def res(ch_in, ch_out=None, **kw):
            return ResBlock(ch_in, emb_dim, cfg.dropout, ch_out, cfg.use_scale_shift_norm, **kw)

        def attn(ch, heads):
            return AttentionBlock(ch, heads, cfg.num_head_channels, enc_ch)

        ch = input_ch = int(cfg.channel_mult[0] * mc)
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(cfg.input_channels, ch, 3, padding=1))])
        skip_chans, ds = [ch], 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers = [res(ch, int(mult * mc))]
                ch = int(mult * mc)
                if ds in cfg.attention_resolutions:
                    layers.append(attn(ch, cfg.num_heads))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(TimestepSequential(res(ch, ch, down=True) if cfg.resblock_updown else Downsample(ch)))
                skip_chans.append(ch)
                ds *= 2
        self.middle_block = TimestepSequential(res(ch), attn(ch, cfg.num_heads), res(ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), int(mc * mult))]
                ch = int(mc * mult)
                if ds in cfg.attention_resolutions:
                    layers.append(attn(ch, heads_up))
                if level and i == cfg.num_res_blocks:
                    layers.append(res(ch, ch, up=True) if cfg.resblock_updown else Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(ch, True), nn.Identity(), nn.Conv2d(input_ch, cfg.out_channels, 3, padding=1))

        if cfg.xf_width:
            self.transformer = Transformer(cfg.xf_width, cfg.xf_layers, cfg.xf_heads)
            self.final_ln = LayerNorm32(cfg.xf_width) if cfg.xf_final_ln else None
            self.token_embedding = nn.Embedding(cfg.n_vocab, cfg.xf_width)
            self.positional_embedding = nn.Parameter(torch.empty(cfg.text_ctx, cfg.xf_width))
            self.transformer_proj = nn.Linear(cfg.xf_width, emb_dim)
            if cfg.xf_padding:
                self.padding_embedding = nn.Parameter(torch.empty(cfg.text_ctx, cfg.xf_width))
            for p in (self.positional_embedding, getattr(self, "padding_embedding", None)):
                if p is not None:
                    nn.init.normal_(p, std=0.01)  # the checkpoint overwrites these; finite until then
        self.dtype = torch.float32
        self.nan_guard = True
        self.gradient_checkpointing = False  # recompute each block in the backward pass (romlib.models.adm)
        self._core = self._forward  # romlib.perf.accelerate may swap in a compiled version
        if cfg.use_fp16:
            self.convert_to_fp16()

    # -- speed -----------------------------------------------------------------------------------
    @property
    def fast(self) -> bool:
        """Whether the fast eager path is on (the default; see :class:`GroupNorm32`)."""
        return all(m.fast for m in self.modules() if isinstance(m, GroupNorm32))

    def set_fast(self, enabled: bool = True) -> "GlideUNet":
        """Switch the fast eager path on (default) or off (the plain path, as the reference computes).

        Fast: GroupNorm + SiLU read and write half precision with float32 statistics (no float32
        copy of the activations), the FiLM scale-shift in one ``addcmul``, SiLU and the residual
        add in place when autograd does not need their inputs. It changes results only in half
        precision, by half-precision rounding; in float32 both paths are bitwise identical."""
        for m in self.modules():
            if isinstance(m, GroupNorm32):
                m.fast = bool(enabled)
        return self

    # -- precision ---------------------------------------------------------------------------
    def _half_modules(self):
        """The layers the reference runs in float16: the UNet torso's convolutions and the text
        transformer's linear layers, its projection and the token embedding. Norms, the
        timestep MLP, the FiLM linears and the output head stay in float32."""
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            yield from (m for m in part.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d)))
        if self.cfg.xf_width:
            yield from (m for m in self.transformer.modules() if isinstance(m, nn.Linear))
            yield self.transformer_proj
            yield self.token_embedding

    def convert_to_fp16(self):
        """Run the torso and the text transformer in half precision, as the reference does."""
        for m in self._half_modules():
            m.half()
        self.dtype = torch.float16
        return self

    def convert_to_fp32(self):
        for m in self._half_modules():
            m.float()
        self.dtype = torch.float32
        self._core = self._forward  # a compiled graph would be for the old dtypes
        return self

    # -- text ----------------------------------------------------------------------------------
    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        """Run the text transformer once: ``{"xf_proj": [B, 4C], "xf_out": [B, width, L]}``.
        Pass the result as ``text_emb=`` to every sampling step (it does not change)."""
        if not self.cfg.xf_width:
            return {"xf_proj": None, "xf_out": None}
        if tokens.shape[-1] != self.cfg.text_ctx:
            raise ValueError(f"tokens must have length text_ctx={self.cfg.text_ctx}, got {tokens.shape[-1]}")
        xf_in = self.token_embedding(tokens.long()) + self.positional_embedding[None]
        if self.cfg.xf_padding:
            if mask is None:
                raise ValueError("this model pads with a learned embedding: pass the token mask")
            xf_in = torch.where(mask[..., None], xf_in, self.padding_embedding[None])
        xf_out = self.transformer(xf_in.to(self.dtype))
        if self.final_ln is not None:
            xf_out = self.final_ln(xf_out)
        xf_proj = self.transformer_proj(xf_out[:, -1])
        return {"xf_proj": xf_proj, "xf_out": xf_out.permute(0, 2, 1)}

    # -- forward ---------------------------------------------------------------------------------
    def _inputs(self, x, inpaint_image, inpaint_mask, low_res):
        parts = [x]
        if self.cfg.inpaint:
            if inpaint_image is None:
                inpaint_image = torch.zeros_like(x)
            if inpaint_mask is None:
                inpaint_mask = torch.zeros_like(x[:, :1])
            inpaint_mask = inpaint_mask.to(x.dtype)
            image = inpaint_image * inpaint_mask if self.cfg.mask_inpaint_input else inpaint_image
            parts += [image.to(x.dtype), inpaint_mask.expand(x.shape[0], 1, *x.shape[2:])]
        if self.cfg.super_res:
            if low_res is None:
                raise ValueError("the upsampler needs low_res= (the 64×64 sample in [-1, 1])")
            parts.append(F.interpolate(low_res.to(x.dtype), x.shape[2:], mode="bilinear", align_corners=False))
        return torch.cat(parts, dim=1)

    def _forward(self, x, timesteps, tokens, mask, inpaint_image, inpaint_mask, low_res, text_emb):
        emb = self.time_embed(timestep_embedding(timesteps, self.cfg.model_channels))
        xf_out = None
        if self.cfg.xf_width:
            if text_emb is None:
                if tokens is None:
                    raise ValueError("pass tokens= (and mask=) or a precomputed text_emb=")
                text_emb = self.encode_text(tokens, mask)
            xf_out = text_emb["xf_out"]
            emb = emb + text_emb["xf_proj"].to(emb)
        h = self._inputs(x, inpaint_image, inpaint_mask, low_res).to(self.dtype)
        skips = []
        for block in self.input_blocks:
            h = self._run(block, h, emb, xf_out)
            skips.append(h)
        h = self._run(self.middle_block, h, emb, xf_out)
        for block in self.output_blocks:
            h = self._run(block, torch.cat([h, skips.pop()], dim=1), emb, xf_out)
        return self.out(h.to(x.dtype))

    def _run(self, block, h, emb, xf_out):
        """One UNet block; with ``gradient_checkpointing`` (and grad enabled) its activations are
        recomputed in the backward pass instead of kept (Blended Diffusion backpropagates
        through the 550 M-parameter ADM)."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(block, h, emb, xf_out, use_reentrant=False)
        return block(h, emb, xf_out)

    def forward(self, x, timesteps, tokens=None, mask=None, inpaint_image=None, inpaint_mask=None, low_res=None, text_emb=None):
        out = self._core(x, timesteps, tokens, mask, inpaint_image, inpaint_mask, low_res, text_emb)
        if self.dtype == torch.float16 and self.nan_guard and not torch.isfinite(out).all():
            # glide-text2im #31: some GPUs give NaN / black images in half precision
            log.warning("GLIDE produced non-finite values in float16 (glide-text2im #31); "
                        "switching this model to float32 for the rest of the run")
            self.convert_to_fp32()
            if text_emb is not None and tokens is None:
                raise FloatingPointError("non-finite fp16 output with a precomputed text_emb; "
                                         "re-encode the text after the switch to float32")
            out = self._forward(x, timesteps, tokens, mask, inpaint_image, inpaint_mask, low_res, None)
        return out


def build_model(cfg: GlideConfig | dict, **overrides) -> GlideUNet:
    """A GLIDE UNet from a :class:`GlideConfig` or a reference ``config`` dict."""
    if isinstance(cfg, dict):
        cfg = GlideConfig.from_dict(cfg, **overrides)
    elif overrides:
        cfg = GlideConfig(**{**cfg.to_dict(), **overrides})
    return GlideUNet(cfg)


def official_config(name: ModelName) -> GlideConfig:
    """The published sizes: ``base-inpaint`` (64×64, 385 M parameters) and ``upsample-inpaint``
    (64→256, 398 M); attention at 32, 16 and 8 pixels; ROM input convention."""
    common = dict(model_channels=192, num_heads=1, num_head_channels=64, text_ctx=128, xf_width=512, xf_layers=16,
                  xf_heads=8, xf_final_ln=True, xf_padding=True, use_scale_shift_norm=True, resblock_updown=True,
                  dropout=0.0, inpaint=True, mask_inpaint_input=False)
    if name == "base-inpaint":
        return GlideConfig(**common, image_size=64, num_res_blocks=3, channel_mult=(1, 2, 3, 4),
                           attention_resolutions=(64 // 32, 64 // 16, 64 // 8))
    if name == "upsample-inpaint":
        return GlideConfig(**common, image_size=256, num_res_blocks=2, channel_mult=(1, 1, 2, 2, 4, 4),
                           attention_resolutions=(256 // 32, 256 // 16, 256 // 8), super_res=True)
    raise ValueError(f"unknown GLIDE model {name!r}; expected 'base-inpaint' or 'upsample-inpaint'")


def create_model(name: ModelName, *, device="cpu", dtype: torch.dtype | None = None) -> GlideUNet:
    """An official-size model with uninitialised weights; ``device="meta"`` costs no memory.
    ``dtype=torch.float16`` runs the layers the reference runs in half."""
    with torch.device(device):
        model = GlideUNet(official_config(name))
    if dtype == torch.float16:
        model.convert_to_fp16()
    elif dtype not in (None, torch.float32):
        raise ValueError(f"dtype must be torch.float32 or torch.float16, got {dtype}")
    return model.eval().requires_grad_(False)


def load_model(name: ModelName, *, device="cpu", dtype: torch.dtype | None = None, progress: bool = True) -> GlideUNet:
    """Download (once) and load the official GLIDE weights strictly."""
    state = hub.load_checkpoint(f"glide/{name}", progress=progress)
    model = create_model(name, device="meta", dtype=None)
    model.load_state_dict(state, strict=True, assign=True)
    model.float()  # whatever the file's dtype, norms and heads run in float32
    if dtype == torch.float16:
        model.convert_to_fp16()
    return model.to(device).eval().requires_grad_(False)
