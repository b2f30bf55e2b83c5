"""Named backends for :meth:`romlib.pipeline.ROMPipeline.from_pretrained`.

* ``"glide"`` — the paper's models: MDETR EfficientNet-B3 (PhraseCut), GLIDE (filtered)
  base-inpaint and upsample-inpaint, CLIP ViT-B/16; about 5.5 GB downloaded once through
  :mod:`romlib.hub` (every file is checked before any model is built); fp16 on a GPU.
* ``"shapes"`` — ShapesWorld: small, really trained models shipped inside the package (offline, CPU).
* ``"tiny"`` — tiny random-weight models of the same architectures (tests and CPU benchmarks).
* ``"sd"`` — Stable Diffusion 1.5 inpainting (latent, 512×512 frame; diffusers' classes, ``pip install
  romlib[sd]``), CLIPSeg masks (MDETR on request), CLIP ViT-B/16 ranking; about 3.3 GB through :mod:`romlib.hub`;
  fp16 on a GPU. Licence: CreativeML OpenRAIL-M, to be accepted by the user.
* ``"tiny-sd"`` — random tiny models of the SD classes and a tiny tokenizer, made locally (tests, seconds on a CPU).

Every backend can also segment with the other referring segmenter (``segmenter="mdetr"`` or ``"clipseg"``),
loaded on first use; ShapesWorld segments with its own.
"""
from __future__ import annotations

import logging

import torch

from .config import BACKEND_NAMES
from .contracts import Backend

__all__ = ["load", "NAMES", "files"]

log = logging.getLogger(__name__)
NAMES = BACKEND_NAMES  # stated in romlib.config, which the command line's help reads without torch
#: each backend's family (:attr:`romlib.contracts.Backend.family`): which guidance methods run on it
FAMILIES = {"glide": "pixel", "shapes": "pixel", "tiny": "pixel", "sd": "latent", "tiny-sd": "latent"}


def load(name: str, *, device="cpu", dtype: torch.dtype | None = None, progress: bool = True, baselines: bool = False,
         variant: str | None = None, segmenter: str | None = None) -> Backend:
    """Backend ``name``; ``variant`` picks one of ShapesWorld's shipped models (:data:`romlib.shapes.VARIANTS`);
    ``segmenter`` (another segmenter a run will ask for): its files are checked with the backend's, before any model
    is built (it still loads on first use)."""
    device = torch.device(device)
    if variant is not None and name != "shapes":
        raise ValueError(f"variant={variant!r} applies to the 'shapes' backend only, not {name!r}")
    if name == "glide":
        return _glide(device, dtype, progress, baselines, segmenter)
    if name == "shapes":
        from .shapes import load_backend

        return load_backend(device=device, variant=variant)  # None: the default model, empty targets to "removal"
    if name == "tiny":
        from .models.tiny import tiny_backend

        backend = tiny_backend(device=device, baselines=baselines)
        backend.segmenters["clipseg"] = lambda: _tiny_clipseg(device)
        backend.extras["removal"] = None  # random weights: an empty target inpaints noise (a warning says so)
        return backend
    if name in ("sd", "tiny-sd") and baselines:
        raise ValueError(f"the baselines (guidance clip, blended) run on GLIDE-family backends only; the {name!r} "
                         "backend, a latent model, runs cf, ccf, ccf-direction and cf-original")
    if name == "sd":
        return _sd(device, dtype, progress, segmenter)
    if name == "tiny-sd":
        from .models.sd import require_diffusers

        require_diffusers()
        return _tiny_sd(device)
    raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(NAMES)}")


def _glide(device, dtype, progress, baselines, segmenter=None) -> Backend:
    """Every file first (one :class:`romlib.hub.CheckpointUnavailable` listing all that are missing,
    before any model is built), then the models, each memory-mapped from the cache."""
    from . import hub

    log.info("checking the glide backend's files (first run downloads about 5.5 GB into %s)", hub.cache_dir())
    hub.ensure(files("glide", baselines=baselines, segmenter=segmenter), progress=progress)

    from .models.glide import load_model
    from .models.tokenizers import GlideTokenizer
    from .rank import load_clip_ranker
    from .segment import load_segmenter

    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    log.info("loading MDETR, GLIDE base/upsampler and CLIP")
    ranker = load_clip_ranker(device=device, progress=progress)
    extras = {}
    if baselines:
        from .guidance.baselines import load_baselines

        extras = load_baselines(ranker=ranker, device=device, dtype=dtype, progress=progress)
    return Backend(
        name="glide",
        segmenter=load_segmenter("phrasecut-eb3", device=device, progress=progress),
        segmenters={"clipseg": lambda: _clipseg(device, dtype, progress)},
        base_model=load_model("base-inpaint", device=device, dtype=dtype, progress=progress),
        upsampler=load_model("upsample-inpaint", device=device, dtype=dtype, progress=progress),
        tokenizer=GlideTokenizer.default(),
        ranker=ranker,
        extras=extras,
    )


def _clipseg(device, dtype, progress):
    from .clipseg import load_clipseg

    return load_clipseg(device=device, dtype=dtype, progress=progress)


def _tiny_clipseg(device):
    from .clipseg import tiny_clipseg

    return tiny_clipseg(device=device)


#: the scales the ``sd`` backend starts from: diffusers' 7.5 for the ∅ base branch (the model's usual CF scale);
def files(name: str, *, baselines: bool = False, segmenter: str | None = None) -> tuple[str, ...]:
    """Every :mod:`romlib.hub` file that backend ``name`` needs (with the baselines' and ``segmenter``'s, when it is
    not the backend's own), so that one check can list all that are missing before any model is loaded; empty for
    the backends made locally (shapes, tiny, tiny-sd)."""
    from . import hub

    own = {"glide": hub.GLIDE_BACKEND + (hub.BASELINES if baselines else ()), "sd": hub.SD_BACKEND + hub.CLIPSEG}
    if name not in own:
        return ()
    extra = {"clipseg": hub.CLIPSEG, "mdetr": hub.MDETR}.get(segmenter or "", ())
    return tuple(dict.fromkeys(own[name] + extra))


#: CCF and its direction-only ablation keep the paper's 15 (tuned on GLIDE, not on SD)
SD_SCALES = {"cf": 7.5, "cf-original": 7.5, "ccf": 15.0, "ccf-direction": 15.0}


def _sd(device, dtype, progress, segmenter=None) -> Backend:
    """Stable Diffusion 1.5 inpainting: every file first (one error listing all that are missing), then the
    models with diffusers' and transformers' ``from_pretrained`` from the official layout (links into the cache)."""
    from . import hub
    from .models.sd import link_layout, load_inpainter, require_diffusers

    require_diffusers()
    log.info("checking the sd backend's files (first run downloads about 3.3 GB into %s)", hub.cache_dir())
    paths = hub.ensure(files("sd", segmenter=segmenter), progress=progress)
    from .rank import load_clip_ranker

    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    folder = link_layout({n: p for n, p in paths.items() if n.startswith("sd15-inpaint/")}, "sd15-inpaint")
    model = load_inpainter(folder, device=device, dtype=dtype)
    return Backend(name="sd", family="latent", segmenter=_clipseg(device, dtype, progress), segmenter_name="clipseg",
                   segmenters={"mdetr": lambda: _mdetr(device, progress)}, base_model=model,
                   tokenizer=model.tokenizer, ranker=load_clip_ranker(device=device, progress=progress),
                   base_steps="25", default_scales=dict(SD_SCALES))


def _mdetr(device, progress):
    from . import hub
    from .segment import load_segmenter

    hub.ensure(hub.MDETR, progress=progress)
    return load_segmenter("phrasecut-eb3", device=device, progress=progress)


def _tiny_sd(device, seed: int = 0) -> Backend:
    """Random tiny SD-family models (64×64 frame, 8×8 latents), the tiny MDETR and CLIP of ``tiny``; CLIPSeg tiny on request."""
    from .models.sd import tiny_inpainter
    from .models.tiny import tiny_clip_ranker, tiny_segmenter

    model = tiny_inpainter(seed=seed).to(device)
    return Backend(name="tiny-sd", family="latent", segmenter=tiny_segmenter(seed=seed, device=device),
                   segmenters={"clipseg": lambda: _tiny_clipseg(device)}, base_model=model, tokenizer=model.tokenizer,
                   ranker=tiny_clip_ranker(seed=seed), base_steps="10", default_scales=dict(SD_SCALES),
                   extras={"removal": None})  # random weights: an empty target inpaints noise (a warning says so)
