"""GLIDE's noised CLIP: an image encoder that reads *noisy* 64×64 images x_t and their timestep t,
and a text encoder, trained contrastively so that CLIP guidance works along the whole reverse
process (Nichol et al. 2021, GLIDE §2.3 and §3.2). The paper's "CLIP-guided GLIDE" baseline.

Checkpoint-compatible with the official ``clip_image_enc.pt`` (188 entries, 86.4 M parameters)
and ``clip_text_enc.pt`` (185 entries, 71.7 M): the state-dict names are the reference's
(``blocks.input``, ``blocks.block_i.f_attn.f_q`` ..., ``blocks.output``; LayerNorm gains ``g``
and biases ``b``; linear weights ``w`` and biases ``b``).

Architecture (``glide_text2im/clip/encoders.py``):

* image: (x_t + 1)·127.5, normalised by CLIP's pixel mean/std, 4×4 patches → 768-d tokens; the
  first token is a learned embedding of the timestep t (``w_t``, 1000 rows), plus positions and a
  LayerNorm; 12 pre-norm transformer blocks (12 heads); LayerNorm and a 768→512 projection of
  the first token;
* text: token + position embeddings, 12 causal transformer blocks (8 heads, width 512); the
  output at the last real token (index ``len − 1``), LayerNorm, 512→512 projection;
* both embeddings are unit-normalised: z / (‖z‖ + 1e−12).

The reference computes attention over a context padded to blocks of 32 with a −1e10 bias on the
padding (and a causal bias for text): that is exactly full (image) and causal (text) attention
over the real tokens, which is what we compute with ``scaled_dot_product_attention``. (Its
``zero_key_bias_grad`` only filters *parameter* gradients during training; it has no effect here.)

CLIP guidance (paper eq. 4 with the noised CLIP as the classifier): the mean is shifted by
Σ · s · ∇_x [exp(logit_scale) · z_i(x_t, t) · z_text], :func:`romlib.guidance.clip.clip_gradient`. The ROM
authors' copy subtracts the referring prompt's embedding, z_text = z(c_target) − z(c_ref)
(``ref_prompts``); their script always passes it, so :mod:`romlib.guidance.clip` does too.

Tokens: CLIP's own BPE (``bpe_simple_vocab_16e6.txt.gz``, 49,408 ids; the embedding table has
65,536 rows), ``[start] + tokens[:75] + [end]`` padded with 0 to 77, with the length. The
tokenizer shipped inside open_clip gives the same ids as GLIDE's ``SimpleTokenizer`` (checked on
tricky prompts in ``tests/fixtures/baselines``); the one difference is a prompt containing the
literal special-token text (``<|startoftext|>`` / ``<start_of_text>`` and the end twins).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import hub

__all__ = ["NoisedClipConfig", "NoisedClip", "NoisedClipImageEncoder", "NoisedClipTextEncoder", "ClipTokenizer",
           "ByteClipTokenizer", "create_noised_clip", "load_noised_clip"]

# CLIP's pixel statistics on the 0..255 scale (the reference's constants)
IMAGE_CHANNEL_MEANS = (122.77093945, 116.74601272, 104.09373519)
IMAGE_CHANNEL_STDS = (68.50053285, 66.63215831, 70.32316309)


@dataclass
class NoisedClipConfig:
    """The reference ``clip/config.yaml`` (field names kept)."""

    logit_scale: float = 100.0
    beta_schedule: str = "squaredcos_cap_v2"
    n_timesteps: int = 1000
    image_size: int = 64
    patch_size: int = 4
    n_vocab: int = 65536
    max_text_len: int = 77
    n_embd: int = 512
    n_head_state_text: int = 64
    n_head_text: int = 8
    n_xf_blocks_text: int = 12
    n_head_state_image: int = 64
    n_head_image: int = 12
    n_xf_blocks_image: int = 12

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- building blocks
class LayerNorm(nn.Module):
    """LayerNorm in float32 with the reference's parameter names ``g`` (gain) and ``b``."""

    def __init__(self, n_state: int, eps: float = 1e-5):
        super().__init__()
        self.n_state, self.eps = n_state, eps
        self.g = nn.Parameter(torch.ones(n_state))
        self.b = nn.Parameter(torch.zeros(n_state))

    def forward(self, x):
        return F.layer_norm(x.float(), (self.n_state,), self.g, self.b, self.eps)


class Affine(nn.Module):
    """y = x Wᵀ + b with the reference's names ``w`` [out, in] and ``b``."""

    def __init__(self, n_in: int, n_out: int, use_bias: bool = True):
        super().__init__()
        self.w = nn.Parameter(torch.empty(n_out, n_in))
        nn.init.normal_(self.w, std=1 / math.sqrt(n_in))  # the checkpoint overwrites it; finite until then
        self.b = nn.Parameter(torch.zeros(n_out)) if use_bias else None

    def forward(self, x):
        b = self.b.to(x.dtype) if self.b is not None else None
        return F.linear(x, self.w.to(x.dtype), b)


class AttentionResblock(nn.Module):
    """m + W_c · attention(LN(m)); full attention for images, causal for text (no bias on keys)."""

    def __init__(self, n_state: int, n_head: int, causal: bool):
        super().__init__()
        self.n_head, self.causal = n_head, causal
        self.ln = LayerNorm(n_state)
        self.f_q = Affine(n_state, n_state)
        self.f_k = Affine(n_state, n_state, use_bias=False)
        self.f_v = Affine(n_state, n_state)
        self.f_c = Affine(n_state, n_state)

    def forward(self, m):
        b, n, width = m.shape
        r = self.ln(m)

        def heads(z):
            return z.view(b, n, self.n_head, width // self.n_head).transpose(1, 2)  # [b, h, n, d]

        out = F.scaled_dot_product_attention(heads(self.f_q(r)), heads(self.f_k(r)), heads(self.f_v(r)),
                                             is_causal=self.causal)
        return m + self.f_c(out.transpose(1, 2).reshape(b, n, width))


class FullyConnectedResblock(nn.Module):
    """m + W_2 · GELU(W_1 · LN(m))."""

    def __init__(self, n_state: int):
        super().__init__()
        self.ln = LayerNorm(n_state)
        self.f_1 = Affine(n_state, 4 * n_state)
        self.f_2 = Affine(4 * n_state, n_state)

    def forward(self, m):
        return m + self.f_2(F.gelu(self.f_1(self.ln(m))))


class TransformerBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int, causal: bool):
        super().__init__()
        self.f_attn = AttentionResblock(n_state, n_head, causal)
        self.f_mlp = FullyConnectedResblock(n_state)

    def forward(self, x):
        return self.f_mlp(self.f_attn(x))


class TextEmbedding(nn.Module):
    def __init__(self, n_vocab: int, n_context: int, n_state: int):
        super().__init__()
        self.w_voc = nn.Parameter(torch.randn(n_vocab, n_state) * 0.02)
        self.w_pos = nn.Parameter(torch.randn(n_context, n_state) * 0.01)

    def forward(self, tokens):
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, {self.w_pos.shape[0]}], got shape {tuple(tokens.shape)}")
        return F.embedding(tokens, self.w_voc) + self.w_pos[None]


class ImageEmbedding(nn.Module):
    """Patches of the normalised image, after a learned timestep token (``w_t[t]``)."""

    def __init__(self, image_size: int, patch_size: int, n_state: int, n_timestep: int):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.image_size, self.patch_size, self.n_timestep = image_size, patch_size, n_timestep
        n_patch = image_size // patch_size
        self.patch_proj = nn.Parameter(torch.randn(n_state, 3, patch_size, patch_size) * math.sqrt(2 / (n_state * patch_size**2)))
        self.w_pos = nn.Parameter(torch.randn(1 + n_patch**2, n_state) / math.sqrt(n_state))
        self.w_t = nn.Parameter(torch.randn(n_timestep, n_state) / math.sqrt(n_state))
        self.ln = LayerNorm(n_state)

    def forward(self, x, t):
        b = x.shape[0]
        if x.ndim != 4 or x.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(f"images must be [B, 3, {self.image_size}, {self.image_size}], got {tuple(x.shape)}")
        if t.shape != (b,):
            raise ValueError(f"t must have shape ({b},), got {tuple(t.shape)}")
        mean = torch.tensor(IMAGE_CHANNEL_MEANS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGE_CHANNEL_STDS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        x = F.conv2d((x - mean) / std, self.patch_proj.to(x.dtype), stride=self.patch_size)
        x = x.flatten(2).transpose(1, 2)  # [b, patches, n_state]
        sot = F.embedding(t, self.w_t)[:, None].to(x.dtype)
        return self.ln(torch.cat([sot, x], dim=1) + self.w_pos[None])


class TextFeatureExtractor(nn.Module):
    def __init__(self, n_state: int, n_embd: int):
        super().__init__()
        self.ln = LayerNorm(n_state)
        self.f = Affine(n_state, n_embd, use_bias=False)

    def forward(self, h, text_len):
        last = h[torch.arange(h.shape[0], device=h.device), text_len - 1]  # output at the end token
        return self.f(self.ln(last))


class ImageFeatureExtractor(nn.Module):
    def __init__(self, n_state: int, n_embd: int):
        super().__init__()
        self.ln = LayerNorm(n_state)
        self.f = Affine(n_state, n_embd, use_bias=False)

    def forward(self, h):
        return self.f(self.ln(h[:, 0]))


# ----------------------------------------------------------------------------- the two encoders
class NoisedClipTextEncoder(nn.Module):
    """``(tokens [B, 77], text_len [B]) -> [B, n_embd]`` (not normalised); ``clip_text_enc.pt``."""

    def __init__(self, cfg: NoisedClipConfig):
        super().__init__()
        self.max_text_len = cfg.max_text_len
        n_state = cfg.n_head_text * cfg.n_head_state_text
        blocks = {"input": TextEmbedding(cfg.n_vocab, cfg.max_text_len, n_state)}
        blocks.update({f"block_{i}": TransformerBlock(n_state, cfg.n_head_text, causal=True)
                       for i in range(cfg.n_xf_blocks_text)})
        blocks["output"] = TextFeatureExtractor(n_state, cfg.n_embd)
        self.blocks = nn.ModuleDict(blocks)
        self.n_blocks = cfg.n_xf_blocks_text

    def forward(self, tokens, text_len):
        if text_len.shape != tokens.shape[:1]:
            raise ValueError(f"text_len must have shape ({tokens.shape[0]},), got {tuple(text_len.shape)}")
        h = self.blocks["input"](tokens)
        for i in range(self.n_blocks):
            h = self.blocks[f"block_{i}"](h)
        return self.blocks["output"](h, text_len)


class NoisedClipImageEncoder(nn.Module):
    """``(x [B, 3, 64, 64] in 0..255 scale, t [B]) -> [B, n_embd]`` (not normalised); ``clip_image_enc.pt``."""

    def __init__(self, cfg: NoisedClipConfig):
        super().__init__()
        n_state = cfg.n_head_image * cfg.n_head_state_image
        blocks = {"input": ImageEmbedding(cfg.image_size, cfg.patch_size, n_state, cfg.n_timesteps)}
        blocks.update({f"block_{i}": TransformerBlock(n_state, cfg.n_head_image, causal=False)
                       for i in range(cfg.n_xf_blocks_image)})
        blocks["output"] = ImageFeatureExtractor(n_state, cfg.n_embd)
        self.blocks = nn.ModuleDict(blocks)
        self.n_blocks = cfg.n_xf_blocks_image

    def forward(self, image, timesteps):
        h = self.blocks["input"](image, timesteps)
        for i in range(self.n_blocks):
            h = self.blocks[f"block_{i}"](h)
        return self.blocks["output"](h)


# ----------------------------------------------------------------------------- tokenizers
class ClipTokenizer:
    """CLIP's BPE (open_clip's copy of ``bpe_simple_vocab_16e6.txt.gz``), padded as GLIDE's CLIP does."""

    def __init__(self, bpe=None):
        if bpe is None:
            from open_clip.tokenizer import SimpleTokenizer

            bpe = SimpleTokenizer()
        self._bpe = bpe
        self.start_token, self.end_token = bpe.sot_token_id, bpe.eot_token_id
        self.n_vocab = bpe.vocab_size

    def encode(self, text: str) -> list[int]:
        return self._bpe.encode(text)

    def padded_tokens_and_len(self, tokens: list[int], text_ctx: int) -> tuple[list[int], int]:
        """``[start] + tokens[:text_ctx − 2] + [end]``, padded with 0 to ``text_ctx``; and its length."""
        tokens = [self.start_token] + list(tokens)[: text_ctx - 2] + [self.end_token]
        return tokens + [0] * (text_ctx - len(tokens)), len(tokens)

    def batch(self, texts: list[str] | str, text_ctx: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens [N, text_ctx] long, lengths [N] long)``."""
        if isinstance(texts, str):
            texts = [texts]
        rows = [self.padded_tokens_and_len(self.encode(t), text_ctx) for t in texts]
        return (torch.tensor([r[0] for r in rows], dtype=torch.long, device=device),
                torch.tensor([r[1] for r in rows], dtype=torch.long, device=device))


class ByteClipTokenizer(ClipTokenizer):
    """UTF-8 bytes of the lower-cased text, start 256, end 257 (offline, for tiny test models)."""

    def __init__(self):
        self.start_token, self.end_token, self.n_vocab = 256, 257, 258

    def encode(self, text: str) -> list[int]:
        return list(text.lower().encode("utf-8"))


# ----------------------------------------------------------------------------- the model
class NoisedClip(nn.Module):
    """Both encoders, the tokenizer and the guidance function.

    ``image_embeddings(x_t, t)`` and ``text_embeddings(prompts)`` are unit vectors; the classifier-guidance
    gradient built on them is :func:`romlib.guidance.clip.clip_gradient`.
    """

    def __init__(self, cfg: NoisedClipConfig | None = None, tokenizer=None):
        super().__init__()
        self.cfg = cfg or NoisedClipConfig()
        self.image_encoder = NoisedClipImageEncoder(self.cfg)
        self.text_encoder = NoisedClipTextEncoder(self.cfg)
        self._tokenizer = tokenizer
        # the reference keeps log(100) as a float32 tensor and exponentiates it at every call
        self.logit_scale = float(torch.tensor(math.log(self.cfg.logit_scale), dtype=torch.float32, device="cpu").exp())

    @property
    def tokenizer(self):
        """CLIP's BPE (:class:`ClipTokenizer`) unless another was given; loaded on first use."""
        if self._tokenizer is None:
            self._tokenizer = ClipTokenizer()
        return self._tokenizer

    @property
    def device(self):
        return self.image_encoder.blocks["input"].w_pos.device

    @staticmethod
    def _unit(z):
        return z / (torch.linalg.norm(z, dim=-1, keepdim=True) + 1e-12)

    def tokenize(self, prompts: list[str] | str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokenizer.batch(prompts, self.cfg.max_text_len, device=self.device)

    def text_embeddings_from_tokens(self, tokens: torch.Tensor, text_len: torch.Tensor) -> torch.Tensor:
        return self._unit(self.text_encoder(tokens, text_len))

    def text_embeddings(self, prompts: list[str] | str) -> torch.Tensor:
        """z = f_text(c) / ‖f_text(c)‖, [N, 512]."""
        return self.text_embeddings_from_tokens(*self.tokenize(prompts))

    def image_embeddings(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """z = f_img(x_t, t) / ‖·‖ for noisy images x_t (the [−1, 1] scale) at *original* timesteps t."""
        if t.is_floating_point():
            t = t.round()
        t = t.long()
        if t.min() < 0 or t.max() >= self.cfg.n_timesteps:
            raise ValueError(f"timesteps must be in [0, {self.cfg.n_timesteps}), got {t.tolist()}")
        return self._unit(self.image_encoder((x_t + 1) * 127.5, t))

    def guidance_direction(self, prompts: list[str] | str, ref_prompts: list[str] | str | None = None) -> torch.Tensor:
        """z(c_target), or z(c_target) − z(c_ref) when ``ref_prompts`` is given (the ROM authors' copy)."""
        with torch.no_grad():
            z_text = self.text_embeddings(prompts)
            if ref_prompts is not None:
                z_text = z_text - self.text_embeddings(ref_prompts)
        return z_text


def create_noised_clip(*, device="cpu", config: NoisedClipConfig | str | None = None, tokenizer=None) -> NoisedClip:
    """A noised CLIP with uninitialised weights (``device="meta"`` costs no memory).

    ``config``: a :class:`NoisedClipConfig` (e.g. :func:`romlib.models.tiny.tiny_noised_clip_config`)
    or ``None``/``"official"`` (the released sizes).
    """
    if config is None or config == "official":
        config = NoisedClipConfig()
    elif not isinstance(config, NoisedClipConfig):
        raise ValueError(f"config must be a NoisedClipConfig, 'official', got {config!r}")
    with torch.device(device):
        model = NoisedClip(config, tokenizer=tokenizer)
    return model.eval().requires_grad_(False)


def load_noised_clip(*, device="cpu", progress: bool = True) -> NoisedClip:
    """Download (once) and load ``clip_image_enc.pt`` and ``clip_text_enc.pt`` strictly (float32, as the reference)."""
    model = create_noised_clip(device="meta")
    for part, name in ((model.image_encoder, "glide/clip-image-enc"), (model.text_encoder, "glide/clip-text-enc")):
        part.load_state_dict(hub.load_checkpoint(name, progress=progress), strict=True, assign=True)
    return model.float().to(device).eval().requires_grad_(False)

