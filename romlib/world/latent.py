"""The world's *latent* model (notebook 07 offline): a small VAE and a latent inpainting UNet of Stable
Diffusion's own classes, trained on the world, so "pixel versus latent" is taught on pictures, not random weights.

=============  ==========================================================================================
``vae``        diffusers' ``AutoencoderKL`` (:func:`vae_config`): 64×64×3 frame ↔ 8×16×16 latents (÷4 per
               side, 8 channels: 6 times fewer values; SD's VAE is ÷8 with 4 channels, 48 times fewer). L1 + MSE
               reconstruction and a small KL term; its ``scaling_factor`` (1 / the latents' std, as SD's
               0.18215) is measured on the data when it is saved.
``latent``     diffusers' ``UNet2DConditionModel`` with 17 input channels (SD's 9 is 4 + 1 + 4) (:func:`unet_config`) and
               transformers' ``CLIPTextModel`` (:func:`text_config`), trained together on the world's
               inpainting data (:mod:`romlib.world.data`, the pixel base model's recipe) in the VAE's
               latents: ε-prediction MSE on SD's scaled-linear schedule, weight 1 in the hole and 0.1 outside.
               The image latents it is shown are those of the data's ``source`` (a paired counterfactual or
               the blanked image), so CCF's original-image input acts here as on the pixel model.
=============  ==========================================================================================

The tokenizer is transformers' ``CLIPTokenizer`` over the world's vocabulary (:func:`world_clip_tokenizer`:
each word one token through BPE merges built for it). The sampling loop and the guidance are romlib's
(:mod:`romlib.sampling.latent`), the same code that runs Stable Diffusion 1.5 inpainting: backend
``world-latent`` (:data:`romlib.specs.BACKENDS`). Trained by ``python -m romlib.world.train --what vae`` then
``--what latent`` (docs/world_training.md).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..models.sd import SCHEDULER_CONFIG, LatentInpainter, clip_tokenizer, require_diffusers
from ..shapes.backend import read_weights
from ..training import half_state
from .language import VOCAB
from .models import FULL_SIZE

__all__ = ["FACTOR", "LATENT_SIZE", "vae_config", "unet_config", "text_config", "world_clip_vocab",
           "world_clip_tokenizer", "build_vae", "build_latent", "alphas_cumprod", "latent_mask", "load_vae",
           "load_latent"]

#: the VAE's downsampling per side (three levels) and the latent grid of the 64×64 frame
FACTOR = 4
LATENT_SIZE = FULL_SIZE // FACTOR
#: the VAE's latent channels (SD's: 4)
LATENT_CHANNELS = 8
#: words + <start> + <end>: the world's longest expression (11 words) fits
MAX_TOKENS = 16


def vae_config() -> dict:
    """``AutoencoderKL`` keywords: three levels (16, 32, 32 channels), one block each, **8 latent channels** (0.24 M
    parameters; a step at batch 32 costs ~0.5 s on 2 cores, 32-64-64 channels 1.4 s). With SD's 4 channels, 15
    minutes of training gave a 25 dB round trip that blurred the floor's tiles and turned a cone into a blob
    (docs/world_training.md)."""
    return dict(in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, block_out_channels=(16, 32, 32), layers_per_block=1,
                down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                norm_num_groups=8, sample_size=FULL_SIZE, scaling_factor=1.0)


def unet_config() -> dict:
    """``UNet2DConditionModel`` keywords: 16×16 latents, 17 input channels (8 + 1 + 8), two levels (48, 96 channels),
    cross-attention to the text at 8×8 and in the middle, width-64 text states (2.2 M parameters; ~0.55 s a step
    at batch 32 on 2 cores; cross-attention at 16×16 too doubled it)."""
    return dict(sample_size=LATENT_SIZE, in_channels=2 * LATENT_CHANNELS + 1, out_channels=LATENT_CHANNELS, layers_per_block=1, block_out_channels=(48, 96),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=64,
                attention_head_dim=8, norm_num_groups=16)


def text_config() -> dict:
    """``CLIPTextConfig`` keywords: 2 layers of width 64 over the world's vocabulary (:func:`world_clip_vocab`)."""
    vocab, _ = world_clip_vocab()
    return dict(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_attention_heads=4,
                num_hidden_layers=2, max_position_embeddings=MAX_TOKENS, bos_token_id=0, eos_token_id=1,
                pad_token_id=1, projection_dim=64)


def world_clip_vocab() -> tuple[dict, str]:
    """CLIP's vocabulary format for the world's words: ``<|startoftext|>`` = 0, ``<|endoftext|>`` = 1, the
    letters (alone and as word ends), and BPE merges that join each word of :data:`romlib.world.language.VOCAB`
    into one token. The merges are found greedily: a word is tokenized with the merges so far and, while it is
    more than one token, the merge of its first two tokens is appended (appending never changes how the words
    before it are split, since BPE applies the lowest-ranked merge first)."""
    import string

    chars = sorted(set(string.ascii_lowercase) | {c for w in VOCAB for c in w if c.isalpha()})
    vocab: dict[str, int] = {}
    for tok in ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]:
        vocab.setdefault(tok, len(vocab))
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in (w for w in VOCAB if w.isalpha()):
        while len(parts := _bpe(word, ranks)) > 1:
            pair = (parts[0], parts[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            vocab.setdefault(pair[0] + pair[1], len(vocab))
    return vocab, "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)


def _bpe(word: str, ranks: dict) -> list[str]:
    """CLIP's BPE of one word under ``ranks`` (the lowest-ranked adjacent pair merged first)."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), float("inf")), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        rank, i = min(pairs)
        if rank == float("inf"):
            break
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


def world_clip_tokenizer():
    """transformers' ``CLIPTokenizer`` over :func:`world_clip_vocab` (one token per world word)."""
    return clip_tokenizer(*world_clip_vocab(), MAX_TOKENS)


def build_vae(config: dict | None = None):
    require_diffusers()
    from diffusers import AutoencoderKL

    return AutoencoderKL(**(config or vae_config()))


def build_latent(vae, unet_cfg: dict | None = None, text_cfg: dict | None = None) -> LatentInpainter:
    """A :class:`romlib.models.sd.LatentInpainter` of the world: ``vae`` (trained) + a new UNet and text encoder."""
    require_diffusers()
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(**(unet_cfg or unet_config()))
    text = CLIPTextModel(CLIPTextConfig(**(text_cfg or text_config())))
    return LatentInpainter(unet, vae.requires_grad_(False).eval(), text, world_clip_tokenizer(), SCHEDULER_CONFIG)


def alphas_cumprod(config: dict = SCHEDULER_CONFIG) -> torch.Tensor:
    """ᾱ_t of the latent model's schedule (SD's scaled-linear betas, T = 1000)."""
    betas = torch.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, config["num_train_timesteps"],
                           dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def latent_mask(keep: torch.Tensor, size: int = LATENT_SIZE) -> torch.Tensor:
    """GLIDE's keep mask [B, 1, S, S] → the UNet's edit mask at the latent grid (1 = edit; nearest, as
    :func:`romlib.sampling.latent.prepare_latent` and diffusers' pipeline)."""
    return F.interpolate((keep < 0.5).float(), size=(size, size))


# ----------------------------------------------------------------------------- weight files
def save_vae(path: Path, vae, meta: dict, atomic_write) -> None:
    cfg = {**dict(vae.config), "scaling_factor": float(vae.config.scaling_factor)}
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items() if k in vae_config()}
    atomic_write(path, lambda tmp: torch.save({"config": cfg, "state_dict": half_state(vae), "meta": meta}, tmp))


def save_latent(path: Path, model: LatentInpainter, meta: dict, atomic_write) -> None:
    cfg = {"unet": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(model.unet.config).items()
                    if k in unet_config()},
           "text_encoder": text_config(), "vocab": list(VOCAB)}
    state = {"unet": half_state(model.unet), "text_encoder": half_state(model.text_encoder)}
    atomic_write(path, lambda tmp: torch.save({"config": cfg, "state_dict": state, "meta": meta}, tmp))


def _floats(sd: dict) -> dict:
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def load_vae(path, *, device="cpu", advice: str = "train it again (python -m romlib.world.train --what vae)"):
    """The world's VAE from a ``vae.pt``, eval mode, float32, ``meta`` attached."""
    def build(c):
        vae = build_vae({**vae_config(), **{k: tuple(v) if isinstance(v, list) else v for k, v in c["config"].items()}})
        vae.load_state_dict(_floats(c["state_dict"]), strict=True)
        vae.meta = dict(c.get("meta", {}))
        return vae

    return read_weights(path, build, advice=advice).to(device).eval().requires_grad_(False)


def load_latent(path, vae, *, device="cpu",
                advice: str = "train it again (python -m romlib.world.train --what latent)") -> LatentInpainter:
    """The world's latent inpainter from a ``latent.pt`` and its ``vae``, eval mode, ``meta`` attached."""
    def build(c):
        cfg = c["config"]
        if list(cfg.get("vocab", [])) != list(VOCAB):
            raise ValueError("its vocabulary is not the world's")
        unet_cfg = {**unet_config(), **{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["unet"].items()}}
        model = build_latent(vae, unet_cfg, cfg["text_encoder"])
        model.unet.load_state_dict(_floats(c["state_dict"]["unet"]), strict=True)
        model.text_encoder.load_state_dict(_floats(c["state_dict"]["text_encoder"]), strict=True)
        model.meta = dict(c.get("meta", {}))
        return model

    return read_weights(path, build, advice=advice).to(device).eval().requires_grad_(False)
