"""The registry: every file romlib can fetch, its official address, what is known of it (size, format,
manifest); the errors of the hub.

The files several backends share (the segmenters, CLIP, the baselines' models, the examples) and those of the
glide and sd backends are listed here; a new backend's or method's own files are on its entry of
:mod:`romlib.specs` (``downloads``) and registered from there, so a new backend edits nothing here."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Literal

from ..specs import BACKENDS, METHOD_SPECS

log = logging.getLogger("romlib.hub")


_GLIDE = "https://openaipublic.blob.core.windows.net/diffusion/dec-2021/"
_ADM = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/"
_MDETR = "https://zenodo.org/record/4721981/files/"
_HF = "https://huggingface.co/"
_SD = _HF + "stable-diffusion-v1-5/stable-diffusion-inpainting/resolve/main/"
_CLIPSEG = _HF + "CIDAS/clipseg-rd64-refined/resolve/main/"
#: (path in the official layout, MB) of what the ``sd`` backend reads (fp16 weights)
_SD_FILES = (("model_index.json", 0.0005), ("scheduler/scheduler_config.json", 0.0003),
             ("unet/config.json", 0.0007), ("unet/diffusion_pytorch_model.fp16.safetensors", 1720),
             ("vae/config.json", 0.0006), ("vae/diffusion_pytorch_model.fp16.safetensors", 167),
             ("text_encoder/config.json", 0.0006), ("text_encoder/model.fp16.safetensors", 246),
             ("tokenizer/vocab.json", 1.06), ("tokenizer/merges.txt", 0.525),
             ("tokenizer/tokenizer_config.json", 0.0008), ("tokenizer/special_tokens_map.json", 0.0005))
_CLIPSEG_FILES = (("config.json", 0.0047), ("preprocessor_config.json", 0.0004), ("pytorch_model.bin", 603),
                  ("vocab.json", 1.06), ("merges.txt", 0.525), ("tokenizer_config.json", 0.001),
                  ("special_tokens_map.json", 0.0005))


#: What a file must be before it is recorded as good (see :mod:`romlib.hub.formats`).
Format = Literal["torch", "safetensors", "json", "config", "bpe", "image"]
_SUFFIX_FORMAT = {".pt": "torch", ".pth": "torch", ".bin": "torch", ".ckpt": "torch", ".safetensors": "safetensors",
                  ".json": "json", ".jpg": "image", ".jpeg": "image", ".png": "image"}


def _hf_format(path: str) -> Format | None:
    """The format of a file of a Hugging Face layout: vocabularies, merges, configs, else by suffix."""
    if path.endswith("vocab.json"):
        return "json"
    if path.endswith("merges.txt"):
        return "bpe"
    return "config" if path.endswith(".json") else None


@dataclass(frozen=True)
class Checkpoint:
    """One downloadable file: where it lives and what we know about it.

    ``file``: the name in the cache and on a mirror (default: the last part of ``url``).
    ``size``: its exact byte size, or None where it is not known (no official file's size or
    sha256 is known to romlib: the official servers could not be reached when this registry was
    written, so none is invented; ``approx_mb`` is for messages only and checks nothing).
    ``format``: what the file must be (default: from the file name's suffix, None if that says nothing).
    ``manifest``: for checkpoints, the shipped state-dict manifest whose names and shapes the file's
    state dict (``checkpoint[state_key]`` when nested) must have. ``allow``: plain non-tensor types
    the file pickles (keys of :data:`romlib.hub.SAFE_GLOBALS`)."""

    name: str
    url: str
    description: str = ""
    sha256: str | None = None  # checked after download when known
    approx_mb: float | None = None  # for messages and the README
    file: str | None = None
    size: int | None = None
    format: Format | None = None
    manifest: str | None = None
    state_key: str | None = None
    allow: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        return self.file or self.url.rsplit("/", 1)[-1].split("?")[0]

    @property
    def kind(self) -> Format | None:
        """``format``, else the format the file name's suffix implies (``.pt`` → torch), else None."""
        if self.format is not None:
            return self.format
        name = self.filename.lower()
        return next((f for s, f in _SUFFIX_FORMAT.items() if name.endswith(s)), None)

    @property
    def size_text(self) -> str:
        return f"about {human_size(self.approx_mb * 1e6)}" if self.approx_mb else "size unknown"


REGISTRY: dict[str, Checkpoint] = {}


def register(ckpt: Checkpoint) -> Checkpoint:
    """Add (or replace) a registry entry; returns it."""
    REGISTRY[ckpt.name] = ckpt
    return ckpt


for _c in [
    # size=None everywhere: the official files' exact sizes are not known here (see Checkpoint)
    Checkpoint("glide/base-inpaint", _GLIDE + "base_inpaint.pt", "GLIDE (filtered) 64x64 inpainting", approx_mb=1540,
               format="torch", manifest="glide_base-inpaint"),
    Checkpoint("glide/upsample-inpaint", _GLIDE + "upsample_inpaint.pt", "GLIDE (filtered) 64->256 inpainting upsampler",
               approx_mb=1600, format="torch", manifest="glide_upsample-inpaint"),
    Checkpoint("glide/clip-image-enc", _GLIDE + "clip_image_enc.pt", "GLIDE noised CLIP image encoder", approx_mb=346,
               format="torch", manifest="glide_clip_image_encoder"),
    Checkpoint("glide/clip-text-enc", _GLIDE + "clip_text_enc.pt", "GLIDE noised CLIP text encoder", approx_mb=287,
               format="torch", manifest="glide_clip_text_encoder"),
    Checkpoint("adm/256x256-uncond", _ADM + "256x256_diffusion_uncond.pt", "guided-diffusion 256x256 unconditional (Blended Diffusion)",
               approx_mb=2210, format="torch", manifest="adm_256x256_diffusion_uncond"),
    Checkpoint("mdetr/phrasecut-eb3", _MDETR + "phrasecut_EB3_checkpoint.pth", "MDETR EfficientNet-B3 fine-tuned on PhraseCut",
               approx_mb=1830, format="torch", manifest="mdetr_efficientnetB3_phrasecut", state_key="model",
               allow=("argparse.Namespace",)),
    # no manifest in ../shared/reference for ResNet-101: checked as a loadable checkpoint with a "model" state dict
    Checkpoint("mdetr/phrasecut-r101", _MDETR + "phrasecut_resnet101_checkpoint.pth", "MDETR ResNet-101 fine-tuned on PhraseCut",
               approx_mb=2320, format="torch", state_key="model", allow=("argparse.Namespace",)),
    # the file open_clip itself fetches for ViT-B-16 / "openai": OpenAI's weights as an open_clip state dict
    Checkpoint("clip/vit-b-16-openai", _HF + "timm/vit_base_patch16_clip_224.openai/resolve/main/open_clip_model.safetensors",
               "CLIP ViT-B/16, OpenAI weights (open_clip safetensors)", approx_mb=599, file="clip_vit_b16_openai.safetensors",
               format="safetensors"),
    Checkpoint("roberta/vocab", _HF + "FacebookAI/roberta-base/resolve/main/vocab.json",
               "RoBERTa-base BPE vocabulary (MDETR's text encoder)", approx_mb=0.9, file="roberta-base-vocab.json", format="json"),
    Checkpoint("roberta/merges", _HF + "FacebookAI/roberta-base/resolve/main/merges.txt",
               "RoBERTa-base BPE merges (MDETR's text encoder)", approx_mb=0.46, file="roberta-base-merges.txt", format="bpe"),
    # Stable Diffusion 1.5 inpainting (CreativeML OpenRAIL-M, accept it before use): the fp16 weights and the
    # configs of the official diffusers layout; the cache file names are flat, romlib.models.sd links them back
    *[Checkpoint(f"sd15-inpaint/{path}", _SD + path, f"SD 1.5 inpainting {path}", approx_mb=mb,
                 file="sd15-inpaint--" + path.replace("/", "--"),
                 format=_hf_format(path)) for path, mb in _SD_FILES],
    # CLIPSeg (rd64, refined; Apache-2.0): the referring segmenter trained on PhraseCut, as transformers reads it
    *[Checkpoint(f"clipseg/{f}", _CLIPSEG + f, f"CLIPSeg rd64-refined {f}", approx_mb=mb, file=f"clipseg-rd64-refined--{f}",
                 format=_hf_format(f))
      for f, mb in _CLIPSEG_FILES],
    Checkpoint("example/coco-39769", "http://images.cocodataset.org/val2017/000000039769.jpg",
               "COCO val2017 #39769, two cats on a couch (the notebooks' example)", approx_mb=0.17, format="image"),
]:
    register(_c)

for _spec in (*BACKENDS.values(), *METHOD_SPECS.values()):  # the files a spec alone downloads
    for _c in _spec.downloads:
        register(Checkpoint(**_c))

#: The MDETR segmenter (the ``glide`` backend's own; ``segmenter="mdetr"`` on the ``sd`` backend).
MDETR = ("mdetr/phrasecut-eb3", "roberta/vocab", "roberta/merges")
#: What the ``glide`` backend reads, in loading order.
GLIDE_BACKEND = MDETR + ("glide/base-inpaint", "glide/upsample-inpaint", "clip/vit-b-16-openai")
#: What the CLIP-guided GLIDE and Blended Diffusion baselines add.
BASELINES = ("glide/clip-image-enc", "glide/clip-text-enc", "adm/256x256-uncond")
#: What the ``sd`` backend reads: SD 1.5 inpainting in its official layout, and CLIP ViT-B/16 for the ranking.
SD_BACKEND = tuple(f"sd15-inpaint/{path}" for path, _ in _SD_FILES) + ("clip/vit-b-16-openai",)
#: The CLIPSeg segmenter (``segmenter="clipseg"``; the ``sd`` backend's own).
CLIPSEG = tuple(f"clipseg/{f}" for f, _ in _CLIPSEG_FILES)
#: The notebooks' example input.
EXAMPLES = ("example/coco-39769",)


class CheckpointUnavailable(RuntimeError):
    """Files that are not cached and cannot be fetched (offline, no mirror copy, the server failed).

    ``missing``: one ``(Checkpoint, destination, reason)`` per file."""

    def __init__(self, message: str, missing: Iterable[tuple] = ()):
        super().__init__(message)
        self.missing = list(missing)


class UnknownCheckpoint(KeyError, ValueError):
    """A name that is not in :data:`REGISTRY` (and not an address); the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class UnsafeCheckpoint(RuntimeError):
    """A checkpoint file that asks to run code when unpickled; it is refused, never executed."""


def human_size(n: float) -> str:
    """``1.5 GB``, ``600.0 MB``, ``170.0 kB``: a size in bytes for messages and tables."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"
