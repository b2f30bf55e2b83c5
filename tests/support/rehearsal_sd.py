"""A rehearsal of the ``sd`` backend's real path without the real weights (as :mod:`tests.support.rehearsal` for glide).

:func:`build_sd_mirror` writes, under their cache file names, stand-ins for every file the ``sd`` backend reads:
SD 1.5 inpainting in the official diffusers layout (``unet/diffusion_pytorch_model.fp16.safetensors``,
``vae/…``, ``text_encoder/model.fp16.safetensors``, configs, a CLIP tokenizer's ``vocab.json`` and ``merges.txt``,
``model_index.json``), CLIPSeg's files as the ``CIDAS/clipseg-rd64-refined`` repository has them
(``pytorch_model.bin``, ``preprocessor_config.json``, tokenizer files), CLIP ViT-B/16 and the example photo.
Weights are random; ``full_size=True`` uses SD 1.5's and CLIPSeg's real sizes (1.7 GB UNet), ``False`` the tiny
family (seconds). Served by :class:`tests.support.mirror.MirrorServer`, they go through :mod:`romlib.hub` (mirror,
cache, records) and diffusers' / transformers' ``from_pretrained`` exactly as the real files would.
Used by ``tests/test_sd_rehearsal.py``; nothing here is needed to use romlib.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

from romlib import hub

from .rehearsal import build_file

__all__ = ["full_inpainter", "build_sd_mirror", "build_clipseg_mirror", "FULL_UNET", "FULL_VAE", "FULL_TEXT"]

#: SD 1.5 inpainting's configs (what differs from diffusers' / transformers' defaults)
FULL_UNET = dict(sample_size=64, in_channels=9, out_channels=4, cross_attention_dim=768, attention_head_dim=8,
                 block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
FULL_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512)
FULL_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                 num_hidden_layers=12, max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu",
                 bos_token_id=0, eos_token_id=1, pad_token_id=1)
_SPECIAL = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>"}


def full_inpainter(seed: int = 0):
    """SD 1.5 inpainting's three networks at full size with random weights (diffusers' own initialisation)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from romlib.models.sd import SCHEDULER_CONFIG, LatentInpainter, tiny_clip_tokenizer

    torch.manual_seed(seed)
    return LatentInpainter(UNet2DConditionModel(**FULL_UNET), AutoencoderKL(**FULL_VAE),
                           CLIPTextModel(CLIPTextConfig(**FULL_TEXT)), tiny_clip_tokenizer(77), SCHEDULER_CONFIG).eval()


def _tokenizer_files(folder: Path, max_length: int) -> None:
    """``vocab.json``, ``merges.txt``, ``tokenizer_config.json``, ``special_tokens_map.json`` as the official repositories."""
    from romlib.models.sd import tiny_clip_vocab

    vocab, merges = tiny_clip_vocab()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text(merges)
    (folder / "tokenizer_config.json").write_text(json.dumps({**_SPECIAL, "tokenizer_class": "CLIPTokenizer",
                                                              "model_max_length": max_length, "do_lower_case": True}))
    (folder / "special_tokens_map.json").write_text(json.dumps(_SPECIAL))


def _clipseg_files(folder: Path, full_size: bool, seed: int) -> None:
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    if full_size:
        cfg, side = CLIPSegConfig(extract_layers=[3, 6, 9], reduce_dim=64), 352
        cfg.text_config.eos_token_id = 1
    else:
        from romlib.clipseg import tiny_clipseg

        cfg, side = tiny_clipseg().model.config, 32
    torch.manual_seed(seed)
    model = CLIPSegForImageSegmentation(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # the repository's main branch has only the .bin
    _tokenizer_files(folder, cfg.text_config.max_position_embeddings)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225], "image_processor_type": "ViTImageProcessor",
        "processor_class": "CLIPSegProcessor", "resample": 2, "rescale_factor": 1 / 255,
        "size": {"height": side, "width": side}}))


def _copy_in(names, sources: dict[str, Path], folder: Path, out: dict[str, Path]) -> None:
    """Copy each registry file ``prefix/path`` from ``sources[prefix] / path`` to its cache file name in ``folder``."""
    for name in names:
        prefix, path = name.split("/", 1)
        if prefix not in sources:
            continue
        src = sources[prefix] / path
        if not src.is_file():
            raise FileNotFoundError(f"the stand-in layout lacks {path} (for {name})")
        out[name] = Path(shutil.copyfile(src, folder / hub.REGISTRY[name].filename))


def build_clipseg_mirror(folder: str | Path, *, full_size: bool = True, seed: int = 0) -> dict[str, Path]:
    """Stand-ins for CLIPSeg's files (:data:`romlib.hub.CLIPSEG`) in ``folder``, under their cache file names: what
    ``segmenter="clipseg"`` reads on the glide backend (notebook 02's side-by-side masks). Returns ``{name: path}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        _clipseg_files(Path(tmp), full_size, seed)
        _copy_in(hub.CLIPSEG, {"clipseg": Path(tmp)}, folder, out)
    return out


def build_sd_mirror(folder: str | Path, *, full_size: bool = False, seed: int = 0) -> dict[str, Path]:
    """Stand-ins for every file of :data:`romlib.hub.SD_BACKEND`, :data:`~romlib.hub.CLIPSEG` and the example photo
    in ``folder``, under their cache file names. Returns ``{name: path}``."""
    from romlib.models.sd import save_layout, tiny_inpainter

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        layout = Path(tmp) / "sd"
        model = full_inpainter(seed) if full_size else tiny_inpainter(seed)
        model = model.half()  # the fp16 variant, as the official files
        save_layout(model, layout, variant="fp16")
        del model
        _tokenizer_files(layout / "tokenizer", 77 if full_size else 16)
        _copy_in(hub.SD_BACKEND, {"sd15-inpaint": layout}, folder, out)
    out.update(build_clipseg_mirror(folder, full_size=full_size, seed=seed))
    for name in ("clip/vit-b-16-openai",) + hub.EXAMPLES:
        out[name] = build_file(name, folder, reference=folder, seed=seed)
    return out
