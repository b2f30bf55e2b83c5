"""MDETR for referring segmentation (Kamath et al. 2021, "MDETR – Modulated Detection for End-to-End
Multi-Modal Understanding"), written for romlib and checkpoint-compatible with the official PhraseCut
files ``phrasecut_EB3_checkpoint.pth`` and ``phrasecut_resnet101_checkpoint.pth`` (``strict=True``).

The network, in the order :meth:`MDETRSegmentation.forward` runs it:

1. a timm CNN (EfficientNet-B3 or ResNet-101) gives features at strides 4, 8, 16 and 32; its batch
   norms are frozen (:class:`FrozenBatchNormAct2d`) and *keep* their fused activation;
2. the stride-32 map is projected to ``hidden_dim`` (``input_proj``), flattened to tokens and given
   DETR's 2-D sine position encoding (:func:`sine_position_encoding`);
3. RoBERTa encodes the phrase; a linear layer + LayerNorm (``resizer``) maps its states to ``hidden_dim``;
4. a post-norm transformer encoder reads image and text tokens together (text tokens get zero position);
5. a decoder turns ``num_queries`` learned queries into ``hs``; ``class_embed`` gives 256 logits per
   query whose last one is "no object" (score = 1 − p(no-object)), ``bbox_embed`` a sigmoid box
   (cx, cy, w, h) normalised to the image;
6. ``bbox_attention`` is each query's softmax attention map over the stride-32 memory (one per head);
   the ``mask_head`` (an FPN of 3×3 convs and GroupNorm) turns [projected features ‖ attention maps]
   into mask logits at stride 4, adding the stride-16, 8 and 4 backbone features on the way up.

Each query's mask depends on that query alone, so ``queries="best"`` computes one mask instead of 100.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..hub.manifests import LEGACY_KEYS  # re-exported: the MDETR loader (romlib.segment) drops them

__all__ = ["MDETRConfig", "MDETRSegmentation", "FrozenBatchNormAct2d", "freeze_batchnorm_", "official_config",
           "sine_position_encoding", "ROBERTA_BASE", "LEGACY_KEYS"]

#: transformers' ``RobertaConfig`` arguments of ``roberta-base`` (its hub ``config.json``).
ROBERTA_BASE = dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, hidden_act="gelu", max_position_embeddings=514, type_vocab_size=1,
                    layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)



@dataclass
class MDETRConfig:
    """Sizes of the segmentation model (defaults: the official PhraseCut EfficientNet-B3 model).

    ``backbone`` is a timm model name (created with ``pretrained=False``; the weights come from the
    MDETR checkpoint); ``out_indices`` its stride-4/8/16/32 feature levels. ``num_classes + 1``
    logits per query. ``text_encoder`` holds ``RobertaConfig`` arguments.
    """

    backbone: str = "tf_efficientnet_b3.ns_jft_in1k"
    out_indices: tuple[int, ...] = (1, 2, 3, 4)
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 2048
    num_queries: int = 100
    num_classes: int = 255
    bn_eps: float = 1e-5  # the reference's frozen BN (the checkpoint was trained with it), not timm's 1e-3
    text_encoder: dict = field(default_factory=lambda: dict(ROBERTA_BASE))

    def __post_init__(self):
        self.out_indices = tuple(self.out_indices)
        if len(self.out_indices) != 4:
            raise ValueError(f"out_indices must name 4 feature levels (strides 4..32), got {self.out_indices}")
        if self.hidden_dim % 128 or self.hidden_dim % self.nheads:
            raise ValueError(f"hidden_dim must be a multiple of 128 (the mask head's GroupNorm(8, hidden_dim/16)) "
                             f"and of nheads={self.nheads}; got {self.hidden_dim}")

    def to_dict(self) -> dict:
        return asdict(self)


def official_config(name: Literal["phrasecut-eb3", "phrasecut-r101"]) -> MDETRConfig:
    """The published PhraseCut models: EfficientNet-B3 (154 M parameters) or ResNet-101 backbone."""
    if name == "phrasecut-eb3":
        return MDETRConfig()
    if name == "phrasecut-r101":
        return MDETRConfig(backbone="resnet101")
    raise ValueError(f"unknown MDETR model {name!r}; expected 'phrasecut-eb3' or 'phrasecut-r101'")


# ----------------------------------------------------------------------------- backbone
class FrozenBatchNormAct2d(nn.Module):
    """Batch norm with fixed statistics and affine terms, then the activation it was fused with:
    y = act((x − μ) · γ / √(σ² + ε) + β). The weights are buffers, as in the official files."""

    def __init__(self, num_features: int, eps: float = 1e-5, act: nn.Module | None = None, device=None):
        super().__init__()
        self.eps = eps
        for name, value in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((num_features,), value, device=device))
        self.act = act if act is not None else nn.Identity()

    def forward(self, x):
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return self.act(x * scale[None, :, None, None] + shift[None, :, None, None])


def freeze_batchnorm_(module: nn.Module, eps: float = 1e-5) -> nn.Module:
    """Replace every ``BatchNorm2d`` (timm's ``BatchNormAct2d`` included) by a
    :class:`FrozenBatchNormAct2d` that keeps its activation (the reference's swap drops it)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            act = getattr(child, "act", None)
            frozen = FrozenBatchNormAct2d(child.num_features, eps, act, device=child.running_mean.device)
            with torch.no_grad():
                for b in ("weight", "bias", "running_mean", "running_var"):
                    getattr(frozen, b).copy_(getattr(child, b))
            setattr(module, name, frozen)
        else:
            freeze_batchnorm_(child, eps)
    return module


class FeatureBackbone(nn.Module):
    """A timm CNN (``features_only``) with frozen batch norms; returns 4 maps, strides 4 → 32."""

    def __init__(self, cfg: MDETRConfig):
        super().__init__()
        import timm

        self.body = timm.create_model(cfg.backbone, pretrained=False, features_only=True, out_indices=cfg.out_indices)
        freeze_batchnorm_(self.body, cfg.bn_eps)
        self.channels = list(self.body.feature_info.channels())

    def forward(self, x):
        return self.body(x)


def sine_position_encoding(h: int, w: int, num_pos_feats: int = 128, temperature: float = 10000.0,
                           device=None) -> torch.Tensor:
    """DETR's 2-D sine encoding of an unpadded h×w map, as [h·w, 2·num_pos_feats] (row-major).

    With y = row/h · 2π and x = col/w · 2π (rows and columns counted from 1) and frequencies
    f_k = temperature^(−2⌊k/2⌋ / num_pos_feats), channel k of the y half is sin(y·f_k) for even k and
    cos(y·f_k) for odd k; the x half likewise. The y half comes first.
    """
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, h + 1, dtype=torch.float32, device=device)
    x = torch.arange(1, w + 1, dtype=torch.float32, device=device)
    y = y / (h + eps) * scale
    x = x / (w + eps) * scale
    k = torch.arange(num_pos_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * (k // 2) / num_pos_feats)

    def encode(t):  # [n] → [n, num_pos_feats]: (sin, cos) pairs of one frequency each
        p = t[:, None] / dim_t
        return torch.stack((p[:, 0::2].sin(), p[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(y)[:, None, :].expand(h, w, num_pos_feats)
    pos_x = encode(x)[None, :, :].expand(h, w, num_pos_feats)
    return torch.cat((pos_y, pos_x), dim=2).reshape(h * w, 2 * num_pos_feats)


# ----------------------------------------------------------------------------- transformer
class Attention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter names, batch first:
    softmax(q Wq (k Wk)ᵀ / √d) v Wv per head, then ``out_proj``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, q, k, v, key_padding_mask=None):
        """q [B, N, C], k and v [B, S, C]; ``key_padding_mask`` [B, S], True = ignore that key."""
        B, N, C = q.shape
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)

        def heads(t, w, b):
            return F.linear(t, w, b).reshape(B, t.shape[1], self.heads, C // self.heads).transpose(1, 2)

        mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(heads(q, wq, bq), heads(k, wk, bk), heads(v, wv, bv), attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(B, N, C))


class EncoderLayer(nn.Module):
    """Post-norm: x ← LN(x + Attn(x + pos, x + pos, x)); x ← LN(x + W₂ ReLU(W₁ x))."""

    def __init__(self, d: int, heads: int, ff: int):
        super().__init__()
        self.self_attn = Attention(d, heads)
        self.linear1, self.linear2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, x, pos, key_padding_mask=None):
        qk = x + pos
        x = self.norm1(x + self.self_attn(qk, qk, x, key_padding_mask))
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


class DecoderLayer(nn.Module):
    """Post-norm: self-attention of the queries, cross-attention to the image+text memory, FFN
    (the official names: ``norm1``, ``norm3``, ``norm4``; MDETR removed a text cross-attention)."""

    def __init__(self, d: int, heads: int, ff: int):
        super().__init__()
        self.self_attn = Attention(d, heads)
        self.cross_attn_image = Attention(d, heads)
        self.linear1, self.linear2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.norm1, self.norm3, self.norm4 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, tgt, query_pos, memory, pos, key_padding_mask=None):
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.self_attn(q, q, tgt))
        tgt = self.norm3(tgt + self.cross_attn_image(tgt + query_pos, memory + pos, memory, key_padding_mask))
        return self.norm4(tgt + self.linear2(F.relu(self.linear1(tgt))))


class Encoder(nn.Module):
    def __init__(self, d, heads, ff, n):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d, heads, ff) for _ in range(n))

    def forward(self, x, pos, key_padding_mask=None):
        for layer in self.layers:
            x = layer(x, pos, key_padding_mask)
        return x


class Decoder(nn.Module):
    """The layers, then a final LayerNorm (only the last layer's output is used at inference)."""

    def __init__(self, d, heads, ff, n):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(d, heads, ff) for _ in range(n))
        self.norm = nn.LayerNorm(d)

    def forward(self, tgt, query_pos, memory, pos, key_padding_mask=None):
        for layer in self.layers:
            tgt = layer(tgt, query_pos, memory, pos, key_padding_mask)
        return self.norm(tgt)


class FeatureResizer(nn.Module):
    """Text states → ``hidden_dim``: LayerNorm(W h + b) (ε = 1e-12, as the reference)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)
        self.layer_norm = nn.LayerNorm(d_out, eps=1e-12)

    def forward(self, x):
        return self.layer_norm(self.fc(x))


class Transformer(nn.Module):
    """RoBERTa text encoder + ``resizer``, the joint image-text encoder and the query decoder."""

    def __init__(self, cfg: MDETRConfig):
        super().__init__()
        from transformers import RobertaConfig, RobertaModel

        d = cfg.hidden_dim
        self.encoder = Encoder(d, cfg.nheads, cfg.dim_feedforward, cfg.enc_layers)
        self.decoder = Decoder(d, cfg.nheads, cfg.dim_feedforward, cfg.dec_layers)
        self.text_encoder = RobertaModel(RobertaConfig(**cfg.text_encoder))
        self.resizer = FeatureResizer(cfg.text_encoder["hidden_size"], d)

    def encode_text(self, input_ids, attention_mask):
        """RoBERTa's last hidden states, resized: [B, T, hidden_dim]."""
        states = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.resizer(states)


class MLP(nn.Module):
    """Linear layers with ReLU between them (``bbox_embed``: 3 layers)."""

    def __init__(self, d_in, d_hidden, d_out, n):
        super().__init__()
        dims = [d_in] + [d_hidden] * (n - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [d_out]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class MDETR(nn.Module):
    """Backbone (+ sine positions), transformer, queries and the class and box heads."""

    def __init__(self, cfg: MDETRConfig):
        super().__init__()
        d = cfg.hidden_dim
        self.backbone = nn.ModuleList([FeatureBackbone(cfg)])  # official key prefix: backbone.0.body
        self.transformer = Transformer(cfg)
        self.class_embed = nn.Linear(d, cfg.num_classes + 1)
        self.bbox_embed = MLP(d, d, 4, 3)
        self.query_embed = nn.Embedding(cfg.num_queries, d)
        self.input_proj = nn.Conv2d(self.backbone[0].channels[-1], d, kernel_size=1)


# ----------------------------------------------------------------------------- segmentation heads
class BoxAttentionMap(nn.Module):
    """Each query's attention over the image memory, per head, without values:
    softmax over pixels of (W_q h)·(W_k m) / √(d/heads) → [B, Q, heads, H, W]."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_linear, self.k_linear = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, hs, memory):
        """hs [B, Q, d]; memory [B, d, H, W]."""
        B, Q, d = hs.shape
        H, W = memory.shape[-2:]
        c = d // self.heads
        q = self.q_linear(hs).reshape(B, Q, self.heads, c) * c ** -0.5
        k = F.conv2d(memory, self.k_linear.weight[:, :, None, None], self.k_linear.bias).reshape(B, self.heads, c, H, W)
        weights = torch.einsum("bqnc,bnchw->bqnhw", q, k)
        return weights.flatten(3).softmax(-1).view(B, Q, self.heads, H, W)


class MaskHead(nn.Module):
    """FPN-style head: [features ‖ attention maps] at stride 32 → 3×3 conv + GroupNorm(8) + ReLU
    twice, then three times: upsample (nearest) + a 1×1 ``adapter`` of the next backbone level,
    3×3 conv + GroupNorm + ReLU; finally a 3×3 conv to one logit per pixel at stride 4."""

    def __init__(self, dim: int, fpn_dims: list[int], context_dim: int):
        super().__init__()
        inter = [dim, context_dim // 2, context_dim // 4, context_dim // 8, context_dim // 16]
        self.lay1, self.gn1 = nn.Conv2d(dim, dim, 3, padding=1), nn.GroupNorm(8, dim)
        for i in range(2, 6):
            setattr(self, f"lay{i}", nn.Conv2d(inter[i - 2], inter[i - 1], 3, padding=1))
            setattr(self, f"gn{i}", nn.GroupNorm(8, inter[i - 1]))
        self.out_lay = nn.Conv2d(inter[4], 1, 3, padding=1)
        for i in range(3):
            setattr(self, f"adapter{i + 1}", nn.Conv2d(fpn_dims[i], inter[i + 1], 1))

    def forward(self, x, bbox_mask, fpns):
        """x [B, C, H, W] (projected stride-32 features); bbox_mask [B, Q, heads, H, W];
        fpns: the stride-16, 8, 4 backbone maps. Returns logits [B·Q, 1, 4H', 4W']."""
        B, Q = bbox_mask.shape[:2]
        x = torch.cat([x[:, None].expand(B, Q, *x.shape[1:]), bbox_mask], 2).flatten(0, 1)
        x = F.relu(self.gn1(self.lay1(x)))
        x = F.relu(self.gn2(self.lay2(x)))
        for i, fpn in enumerate(fpns):
            f = getattr(self, f"adapter{i + 1}")(fpn)  # once per image, shared by its queries
            f = f[:, None].expand(B, Q, *f.shape[1:]).flatten(0, 1)
            x = f + F.interpolate(x, size=f.shape[-2:], mode="nearest")
            x = F.relu(getattr(self, f"gn{i + 3}")(getattr(self, f"lay{i + 3}")(x)))
        return self.out_lay(x)


class MDETRSegmentation(nn.Module):
    """The PhraseCut model: ``detr`` plus ``bbox_attention`` and ``mask_head`` (the official names)."""

    def __init__(self, cfg: MDETRConfig):
        super().__init__()
        self.cfg = cfg
        self.detr = MDETR(cfg)
        self.bbox_attention = BoxAttentionMap(cfg.hidden_dim, cfg.nheads)
        fpn_dims = self.detr.backbone[0].channels[::-1][1:]  # strides 16, 8, 4
        self.mask_head = MaskHead(cfg.hidden_dim + cfg.nheads, fpn_dims, cfg.hidden_dim)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                queries: Literal["all", "best"] | torch.Tensor = "all") -> dict[str, torch.Tensor]:
        """``images`` [B, 3, H, W] normalised, unpadded; ``input_ids`` / ``attention_mask`` [B, T] from
        the RoBERTa tokenizer (one phrase per image).

        Returns ``pred_logits`` [B, Q, num_classes + 1], ``pred_boxes`` [B, Q, 4] (cx, cy, w, h in
        [0, 1]) and ``pred_masks`` [B, K, H/4, W/4] for the queries asked for: ``"all"`` (K = Q, as
        the reference), ``"best"`` (K = 1, the highest 1 − p(no-object)), or indices [B, K];
        ``mask_queries`` [B, K] says which.
        """
        detr, tr = self.detr, self.detr.transformer
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        feats = detr.backbone[0](images)
        src = detr.input_proj(feats[-1])  # [B, d, h, w]
        B, d, h, w = src.shape
        pos = sine_position_encoding(h, w, d // 2, device=src.device).to(src.dtype)
        text = tr.encode_text(input_ids, attention_mask)  # [B, T, d]
        tokens = torch.cat([src.flatten(2).transpose(1, 2), text], 1)
        pos = torch.cat([pos[None].expand(B, -1, -1), torch.zeros_like(text)], 1)
        pad = torch.cat([torch.zeros(B, h * w, dtype=torch.bool, device=src.device), attention_mask == 0], 1)
        pad = pad if pad.any() else None
        memory = tr.encoder(tokens, pos, pad)
        query_pos = detr.query_embed.weight[None].expand(B, -1, -1)
        hs = tr.decoder(torch.zeros_like(query_pos), query_pos, memory, pos, pad)

        logits = detr.class_embed(hs)
        out = {"pred_logits": logits, "pred_boxes": detr.bbox_embed(hs).sigmoid()}
        if isinstance(queries, str):
            if queries == "all":
                queries = torch.arange(hs.shape[1], device=hs.device)[None].expand(B, -1)
            elif queries == "best":
                queries = (1 - logits.softmax(-1)[..., -1]).argmax(-1, keepdim=True)
            else:
                raise ValueError(f"queries must be 'all', 'best' or an index tensor [B, K], got {queries!r}")
        hs_k = torch.gather(hs, 1, queries[..., None].expand(-1, -1, d))
        image_memory = memory[:, : h * w].transpose(1, 2).reshape(B, d, h, w)
        bbox_mask = self.bbox_attention(hs_k, image_memory)
        masks = self.mask_head(src, bbox_mask, [feats[2], feats[1], feats[0]])
        out["pred_masks"] = masks.view(B, queries.shape[1], *masks.shape[-2:])
        out["mask_queries"] = queries
        return out
