"""Stable Diffusion 1.5 inpainting as a romlib model: diffusers' UNet, VAE and schedulers, transformers'
CLIP text encoder and tokenizer, in the official layout of ``stable-diffusion-v1-5/stable-diffusion-inpainting``.

A *latent* inpainting model: the VAE maps a 512×512 frame to 4×64×64 latents (×``scaling_factor``), and
the UNet (9 input channels) denoises ``cat([z_t, mask, masked_image_latents])``, where ``mask`` is the
edit mask (1 = edit, diffusers' convention) at 64×64 and ``masked_image_latents`` the VAE latents of the
image the model sees (the masked image for CF; the *original* image for CCF). The sampling loop and the
guidance are romlib's (:mod:`romlib.sampling.latent`); this module only loads and wraps the networks.

``diffusers`` is an optional extra (``pip install romlib[sd]``); nothing here imports it at import time.
Used by the ``sd`` and ``tiny-sd`` backends (:mod:`romlib.backends`) and notebook 07.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import hub
from ..checks import parse_latent_steps
from .tiny import randomize_

__all__ = ["LatentConfig", "LatentInpainter", "require_diffusers", "parse_steps", "link_layout", "load_inpainter", "make_scheduler",
           "tiny_sd_configs", "tiny_clip_vocab", "clip_tokenizer", "tiny_clip_tokenizer", "tiny_inpainter", "save_layout", "SCHEDULER_CONFIG"]

#: scheduler/scheduler_config.json of stable-diffusion-v1-5/stable-diffusion-inpainting (a PNDM config; romlib
#: builds DDIM or DPM-Solver++ from it, as ``Scheduler.from_config`` does in diffusers)
SCHEDULER_CONFIG = {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                    "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": False,
                    "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None, "clip_sample": False}


def require_diffusers():
    """``import diffusers``, or an ImportError that says how to install it."""
    try:
        import diffusers
    except ImportError as e:
        raise ImportError("the sd and tiny-sd backends need diffusers, an optional extra: pip install romlib[sd] "
                          f"(or pip install diffusers); import failed: {e}") from e
    return diffusers


@dataclass(frozen=True)
class LatentConfig:
    """``image_size``: the latent grid's side (the masks' resolution, as GLIDE's 64×64 base);
    ``frame_size``: the pixel frame (512 for SD 1.5); ``latent_channels``; ``scaling_factor``: the VAE's."""

    image_size: int
    frame_size: int
    latent_channels: int = 4
    scaling_factor: float = 0.18215


class LatentInpainter(torch.nn.Module):
    """UNet + VAE + text encoder of a latent inpainting model, with the three steps romlib's loop needs:
    :meth:`encode_text`, :meth:`encode_image` (pixels → scaled latents) and :meth:`decode`."""

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler_config: dict | None = None):
        super().__init__()
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config or SCHEDULER_CONFIG)
        c = int(vae.config.latent_channels)
        if unet.config.in_channels != 2 * c + 1:
            raise ValueError(f"an inpainting UNet on {c}-channel latents takes {2 * c + 1} input channels (latents, "
                             f"mask, masked-image latents), not in_channels={unet.config.in_channels}")
        vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        side = int(unet.config.sample_size)
        self.cfg = LatentConfig(image_size=side, frame_size=side * vae_factor,
                                latent_channels=int(vae.config.latent_channels),
                                scaling_factor=float(vae.config.scaling_factor))

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """[N, L, D] CLIP text states, padded to the tokenizer's length (as diffusers' ``encode_prompt``)."""
        tok = self.tokenizer(list(texts), padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        dev = next(self.text_encoder.parameters()).device
        mask = tok.attention_mask.to(dev) if getattr(self.text_encoder.config, "use_attention_mask", False) else None
        return self.text_encoder(tok.input_ids.to(dev), attention_mask=mask)[0].to(self.dtype)

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Pixels [B, 3, S, S] in [-1, 1] → latents [B, 4, S/8, S/8] × ``scaling_factor``: a draw from the
        VAE's posterior with ``generator`` (what diffusers' pipeline does), its mean when ``generator`` is None."""
        dist = self.vae.encode(image.to(self.vae.device, self.vae.dtype)).latent_dist
        z = dist.sample(generator) if generator is not None else dist.mode()
        return self.cfg.scaling_factor * z

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents × ``scaling_factor`` → pixels [B, 3, S, S] in [-1, 1] (float32)."""
        x = self.vae.decode(latents.to(self.vae.dtype) / self.cfg.scaling_factor).sample
        return x.float().clamp(-1, 1)


#: a latent model's steps: 'N' (DPM-Solver++(2M)) or 'ddimN' (the check lives with the other value checks)
parse_steps = parse_latent_steps


def make_scheduler(config: dict, steps: str | int, device=None):
    """A diffusers scheduler for a romlib ``steps`` string, its timesteps set: ``"N"`` → DPM-Solver++(2M)
    with N steps (``DPMSolverMultistepScheduler``), ``"ddimN"`` → DDIM with N steps (η = 0)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    kind, n = parse_steps(steps, int(config.get("num_train_timesteps", 1000)))
    cls = DDIMScheduler if kind == "ddim" else DPMSolverMultistepScheduler
    scheduler = cls.from_config(config)
    scheduler.set_timesteps(n, device=device)
    return scheduler


# ---------------------------------------------------------------------------------------------- loading
def link_layout(paths: dict, prefix: str, folder: str | os.PathLike | None = None) -> Path:
    """A folder in the official layout made of links to cached files: ``paths`` maps registry names
    ``"<prefix>/<path in the layout>"`` to cached files (flat names, as every file of :mod:`romlib.hub`);
    an ``.fp16.`` file is linked as the default variant. ``folder``: default ``<cache>/layouts/<prefix>``
    (a temporary folder when the cache is read-only). Symbolic links, else hard links, else copies."""
    import shutil


    if folder is None:
        folder = hub.cache_dir() / "layouts" / prefix
        if not os.access(hub.cache_dir(), os.W_OK):
            folder = Path(tempfile.mkdtemp(prefix=f"romlib-{prefix}-"))
    folder = Path(folder)
    for name, src in paths.items():
        if not name.startswith(prefix + "/"):
            raise ValueError(f"{name!r} is not a file of {prefix!r}")
        dest = folder / name[len(prefix) + 1:].replace(".fp16.", ".")
        src = Path(src).resolve()
        if dest.is_file() and dest.resolve() == src:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        try:
            os.symlink(src, dest)
        except OSError:
            try:
                os.link(src, dest)
            except OSError:
                shutil.copyfile(src, dest)
    return folder


def load_inpainter(folder: str | os.PathLike, *, device="cpu", dtype: torch.dtype = torch.float32) -> LatentInpainter:
    """The model in a folder of the official diffusers layout (``unet/``, ``vae/``, ``text_encoder/``,
    ``tokenizer/``, ``scheduler/``), each part with diffusers' or transformers' own ``from_pretrained``."""
    require_diffusers()
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    missing = [p for p in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if not (folder / p).is_dir()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a diffusers inpainting folder: missing {', '.join(missing)}/")
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype)
    vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=dtype)
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=dtype)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    model = LatentInpainter(unet, vae, text_encoder, tokenizer, scheduler_config)
    return model.to(device).eval()


def save_layout(model: LatentInpainter, folder: str | os.PathLike, *, variant: str | None = None) -> Path:
    """Write ``model`` in the official diffusers layout (``model_index.json`` included), e.g. for a mirror
    rehearsal or for ``StableDiffusionInpaintPipeline.from_pretrained``."""
    folder = Path(folder)
    model.unet.save_pretrained(folder / "unet", variant=variant)
    model.vae.save_pretrained(folder / "vae", variant=variant)
    model.text_encoder.save_pretrained(folder / "text_encoder", variant=variant)
    model.tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(model.scheduler_config, indent=1))
    index = {"_class_name": "StableDiffusionInpaintPipeline", "feature_extractor": [None, None],
             "safety_checker": [None, None], "requires_safety_checker": False,
             "scheduler": ["diffusers", model.scheduler_config.get("_class_name", "PNDMScheduler")],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}
    (folder / "model_index.json").write_text(json.dumps(index, indent=1))
    return folder


# ---------------------------------------------------------------------------------------------- tiny
def tiny_sd_configs(frame_size: int = 64) -> dict:
    """Configs of a tiny SD-inpainting family (diffusers' test sizes): a 4-level VAE (÷8 as SD's), a
    2-level UNet with 9 input channels and cross-attention, a 2-layer CLIP text encoder."""
    latent = frame_size // 8
    unet = dict(sample_size=latent, in_channels=9, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
    vae = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
               down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8,
               sample_size=frame_size)
    text = dict(vocab_size=len(tiny_clip_vocab()[0]), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=32)
    return {"unet": unet, "vae": vae, "text_encoder": text}


def tiny_clip_vocab() -> tuple[dict, str]:
    """A character vocabulary in CLIP's format (letters, digits, a few marks, each also as a word end ``</w>``;
    ``<|startoftext|>`` = 0, ``<|endoftext|>`` = 1) and a ``merges.txt`` of one merge ("q x</w>", its token last in
    the vocabulary; no test prompt holds it: a merges file with no merge is refused as damaged by
    :mod:`romlib.hub.formats`)."""
    import string

    chars = list(string.ascii_lowercase + string.digits + ".,'-!?")
    vocab: dict[str, int] = {}
    for tok in ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]:
        vocab[tok] = len(vocab)
    vocab["qx</w>"] = len(vocab)
    return vocab, "#version: 0.2\nq x</w>\n"


def clip_tokenizer(vocab: dict, merges: str, max_length: int):
    """transformers' ``CLIPTokenizer`` over a vocabulary and merges in CLIP's format (``<|endoftext|>`` pads)."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as d:
        Path(d, "vocab.json").write_text(json.dumps(vocab))
        Path(d, "merges.txt").write_text(merges)
        return CLIPTokenizer(str(Path(d, "vocab.json")), str(Path(d, "merges.txt")), model_max_length=max_length,
                             unk_token="<|endoftext|>", pad_token="<|endoftext|>")


def tiny_clip_tokenizer(max_length: int = 16):
    """A CLIPTokenizer over :func:`tiny_clip_vocab`: the real tokenizer's class and special tokens, small enough
    for tests."""
    return clip_tokenizer(*tiny_clip_vocab(), max_length)


def tiny_inpainter(seed: int = 0, frame_size: int = 64) -> LatentInpainter:
    """Random tiny UNet, VAE and text encoder of the SD classes (deterministic for a ``seed``; seconds on a CPU)."""
    require_diffusers()
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel


    cfg = tiny_sd_configs(frame_size)
    torch.manual_seed(seed)
    unet = randomize_(UNet2DConditionModel(**cfg["unet"]), seed=seed)
    vae = randomize_(AutoencoderKL(**cfg["vae"]), seed=seed + 1)
    text_encoder = randomize_(CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"])), seed=seed + 2)
    return LatentInpainter(unet, vae, text_encoder, tiny_clip_tokenizer(cfg["text_encoder"]["max_position_embeddings"]),
                           SCHEDULER_CONFIG).eval()
