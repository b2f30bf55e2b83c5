"""The layers GLIDE's UNets are built from (checkpoint names kept): timestep embedding, GroupNorm32 with
the fast half-precision path, ResBlock with FiLM, attention, up/down-sampling, the text transformer."""
from __future__ import annotations

import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["timestep_embedding", "GroupNorm32", "LayerNorm32", "ResBlock", "AttentionBlock", "Downsample", "Upsample",
           "TimestepSequential", "MultiheadAttention", "MLP", "ResidualAttentionBlock", "Transformer"]

log = logging.getLogger("romlib.models.glide")


def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """Sinusoidal embedding [cos(t·f_i), sin(t·f_i)], f_i = max_period^(−i/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def _writable(x: torch.Tensor) -> bool:
    """True when ``x`` may be overwritten in place: autograd does not need it, and no compiler
    is tracing (it fuses and reuses buffers itself; ``out=`` would only cost graph breaks)."""
    return not (x.requires_grad and torch.is_grad_enabled()) and not torch.compiler.is_compiling()


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32) with float32 statistics and affine arithmetic, optionally followed by SiLU.

    Plain path (``fast = False``, the reference's): the input is cast to a float32 tensor,
    normalised, cast back, then SiLU. Fast path (the default): one ``group_norm`` kernel reads the
    half-precision input and writes half-precision output, accumulating the statistics and applying
    the affine map in float32 inside the kernel (CUDA's kernel needs the gain and bias in the
    input's dtype: half copies are cached), then SiLU in place. Both paths round once to half, so
    they agree to half-precision rounding (the gain is rounded to half too); in float32 they run
    the same operations and are bitwise identical.
    """

    fast = True

    def __init__(self, channels: int, silu: bool):
        super().__init__(32, channels)
        self.silu = silu

    def uses_fast_path(self, x: torch.Tensor) -> bool:
        return self.fast and x.dtype != self.weight.dtype

    def _affine(self, dtype: torch.dtype):
        """The gain and bias in ``dtype`` (cached; refreshed when the parameters change)."""
        w, b = self.weight, self.bias
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and w.requires_grad):
            return w.to(dtype), b.to(dtype)
        key = (dtype, w.device, w.data_ptr(), w._version, b.data_ptr(), b._version)
        if getattr(self, "_cast_key", None) != key:
            self._cast = (w.detach().to(dtype), b.detach().to(dtype))
            self._cast_key = key
        return self._cast

    def forward(self, x):
        if not self.uses_fast_path(x):
            y = super().forward(x.float()).to(x.dtype)
            return F.silu(y) if self.silu else y
        y = F.group_norm(x, self.num_groups, *self._affine(x.dtype), self.eps)
        return F.silu(y, inplace=_writable(y)) if self.silu else y


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 (fp16 inputs, fp32 gains)."""

    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


def _attention(q, k, v):
    """Softmax attention on [B, heads, T, ch]; float32 softmax for half inputs on the CPU."""
    if q.dtype == torch.float16 and q.device.type == "cpu":
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, FiLM by the embedding (scale-shift norm), GroupNorm-SiLU-dropout-conv,
    plus the skip; optionally up- or down-samples (nearest ×2 / average pool) on the way."""

    def __init__(self, channels, emb_channels, dropout, out_channels=None, use_scale_shift_norm=True, up=False, down=False):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(GroupNorm32(channels, True), nn.Identity(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.up, self.down = up, down
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels, not use_scale_shift_norm),
            nn.SiLU() if use_scale_shift_norm else nn.Identity(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def _resample(self, x):
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x, emb):
        h = self.in_layers[0](x)
        h = self.in_layers[2](self._resample(h))
        x = self._resample(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[..., None, None]
        norm = self.out_layers[0]
        if self.use_scale_shift_norm and norm.uses_fast_path(h):
            # FiLM fused: norm(h)·(1 + scale) + shift in one kernel (float32 arithmetic, one
            # rounding), written over the norm's output, then SiLU in place
            scale, shift = emb_out.chunk(2, dim=1)
            h = norm(h)
            h = torch.addcmul(shift, h, 1 + scale, out=h) if _writable(h) else torch.addcmul(shift, h, 1 + scale)
            h = self.out_layers[3](self.out_layers[2](F.silu(h, inplace=_writable(h))))
        elif self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = norm(h) * (1 + scale) + shift
            h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        else:
            h = self.out_layers(h + emb_out)
        skip = self.skip_connection(x)
        if norm.fast and _writable(h) and skip.dtype == h.dtype:
            return h.add_(skip)  # in place; IEEE addition commutes, so the same values as below
        return skip + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the pixels, whose keys and values also include the text
    tokens (``encoder_kv``), as in GLIDE. Per head, the channels are laid out [q, k, v]."""

    def __init__(self, channels, num_heads=1, num_head_channels=-1, encoder_channels=None):
        super().__init__()
        if num_head_channels != -1:
            if channels % num_head_channels:
                raise ValueError(f"channels {channels} not divisible by num_head_channels {num_head_channels}")
            num_heads = channels // num_head_channels
        self.num_heads = num_heads
        self.norm = GroupNorm32(channels, False)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        if encoder_channels is not None:
            self.encoder_kv = nn.Conv1d(encoder_channels, channels * 2, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x, encoder_out=None):
        b, c, hgt, wid = x.shape
        n = self.num_heads
        ch = c // n
        qkv = self.qkv(self.norm(x).reshape(b, c, -1))  # [b, n*3*ch, T]
        q, k, v = qkv.reshape(b, n, 3 * ch, -1).transpose(2, 3).contiguous().split(ch, dim=-1)  # [b, n, T, ch]
        if encoder_out is not None:
            ekv = self.encoder_kv(encoder_out)  # [b, n*2*ch, L]
            ek, ev = ekv.reshape(b, n, 2 * ch, -1).transpose(2, 3).contiguous().split(ch, dim=-1)
            k = torch.cat([ek, k], dim=2)
            v = torch.cat([ev, v], dim=2)
        h = _attention(q, k, v)  # [b, n, T, ch]
        h = h.transpose(2, 3).reshape(b, c, -1)
        return x + self.proj_out(h).reshape(b, c, hgt, wid)


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TimestepSequential(nn.Sequential):
    """Runs its layers, giving residual blocks the embedding and attention the text tokens."""

    def forward(self, x, emb, encoder_out=None):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, AttentionBlock):
                x = layer(x, encoder_out)
            else:
                x = layer(x)
        return x


class MultiheadAttention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.c_qkv = nn.Linear(width, width * 3)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x):
        bs, n_ctx, width = x.shape
        ch = width // self.heads
        qkv = self.c_qkv(x).view(bs, n_ctx, self.heads, 3 * ch).transpose(1, 2)  # [b, h, T, 3ch]
        q, k, v = qkv.split(ch, dim=-1)
        out = _attention(q, k, v).transpose(1, 2).reshape(bs, n_ctx, width)
        return self.c_proj(out)


class MLP(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.c_fc = nn.Linear(width, width * 4)
        self.c_proj = nn.Linear(width * 4, width)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.attn = MultiheadAttention(width, heads)
        self.ln_1 = LayerNorm32(width)
        self.mlp = MLP(width)
        self.ln_2 = LayerNorm32(width)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x):
        for block in self.resblocks:
            x = block(x)
        return x
