"""The backends of :meth:`romlib.pipeline.ROMPipeline.from_pretrained`, assembled from their models.

What each backend *is* (family, frame, files, example, removal model, default scales) is its entry of
:data:`romlib.specs.BACKENDS`; this module only builds them, one loader each:

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
loaded on first use; ShapesWorld segments with its own. :func:`default_backend` picks one when none is named.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import socket
from functools import partial

import torch

from . import hub
from .clipseg import load_clipseg, tiny_clipseg
from .contracts import Backend
from .guidance.baselines import BlendedBaseline, ClipGuidedBaseline
from .guidance.methods import METHODS
from .models.glide import load_model
from .models import sd as sd_models
from .models.sd import link_layout, load_inpainter, tiny_inpainter
from .models.tiny import tiny_adm, tiny_clip_model, tiny_glide, tiny_mdetr, tiny_noised_clip, tiny_roberta_tokenizer
from .models.tokenizers import ByteTokenizer, GlideTokenizer
from .rank import ClipRanker, load_clip_ranker
from .segment import MDETRSegmenter, load_segmenter
from .specs import BACKENDS, METHOD_SPECS, BackendSpec, backend_spec

__all__ = ["load", "NAMES", "FAMILIES", "files", "default_backend", "OFFLINE_DEFAULT", "OFFLINE", "choose", "tiny_segmenter", "tiny_clip_ranker",
           "tiny_baselines", "tiny_backend"]

log = logging.getLogger(__name__)
NAMES = tuple(BACKENDS)
#: each backend's family (:attr:`romlib.specs.BackendSpec.family`)
FAMILIES = {name: spec.family for name, spec in BACKENDS.items()}
#: the host whose reachability says whether the real models can be downloaded (default_backend's probe)
PROBE_HOST = ("openaipublic.blob.core.windows.net", 443)
#: the optional packages a spec may require (:attr:`romlib.specs.BackendSpec.requires`): each a check that says how
#: to install it
REQUIREMENTS = {"diffusers": lambda: sd_models.require_diffusers()}  # looked up on use (tests replace it)


def load(name: str, *, device="cpu", dtype: torch.dtype | None = None, progress: bool = True, baselines: bool = False,
         variant: str | None = None, segmenter: str | None = None) -> Backend:
    """Backend ``name`` (:data:`romlib.specs.BACKENDS`); ``variant`` picks one of ShapesWorld's shipped models
    (:data:`romlib.shapes.VARIANTS`); ``segmenter`` (another segmenter a run will ask for): its files are checked
    with the backend's, before any model is built (it still loads on first use)."""
    spec = backend_spec(name)
    device = torch.device(device)
    if variant is not None and not spec.variants:
        with_variants = " / ".join(repr(n) for n, s in BACKENDS.items() if s.variants)
        raise ValueError(f"variant={variant!r} applies to the {with_variants} backend only, not {name!r}")
    if baselines and not spec.baselines:
        raise ValueError(f"the baselines (guidance clip, blended) run on GLIDE-family backends only; the {name!r} "
                         f"backend, a {spec.family} model, runs the classifier-free methods")
    for package in spec.requires:
        REQUIREMENTS[package]()
    paths = {}
    if files(name, baselines=baselines, segmenter=segmenter):  # every file first: one error lists all missing
        log.info("checking the %s backend's files (first run downloads %s into %s)", name, spec.size, hub.cache_dir())
        paths = hub.ensure(files(name, baselines=baselines, segmenter=segmenter), progress=progress)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    backend = _named(spec.loader)(spec, device=device, dtype=dtype, progress=progress, baselines=baselines,
                                  variant=variant, paths=paths)
    # the stages a loader leaves out are the spec's: its own segmenter now, the others on first use, CLIP ranking
    stage = dict(device=device, dtype=dtype, progress=progress)
    own = backend.segmenter if backend.segmenter is not None else SEGMENTER_LOADERS[spec.segmenter](**stage)
    others = {**{n: partial(SEGMENTER_LOADERS[n], **stage) for n in spec.segmenters}, **backend.segmenters}
    ranker = backend.ranker if backend.ranker is not None else load_clip_ranker(device=device, progress=progress)
    extras = dict(backend.extras)
    if baselines:  # the methods' own networks that the loader did not build, each by its method's loader
        for m in METHODS.values():
            if m.loader and m.needs not in extras and spec.family in m.families:
                extras[m.needs] = _named(m.loader)(spec, ranker=ranker, **stage)
    return dataclasses.replace(backend, name=spec.name, family=spec.family, segmenter_name=spec.segmenter,
                               segmenter=own, segmenters=others, ranker=ranker, extras=extras,
                               default_scales={**spec.default_scales, **backend.default_scales})


def _named(target: str):
    """The function a spec names as ``"module:function"``, imported."""
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def files(name: str, *, baselines: bool = False, segmenter: str | None = None) -> tuple[str, ...]:
    """Every :mod:`romlib.hub` file that backend ``name`` needs (with the baselines' and ``segmenter``'s, when it is
    not the backend's own), so that one check can list all that are missing before any model is loaded; empty for
    the backends made locally (shapes, tiny, tiny-sd)."""
    spec = backend_spec(name)
    if not spec.files and not spec.downloads:
        return ()
    groups = spec.files + (spec.baseline_files if baselines else ())
    own = tuple(d["name"] for d in spec.downloads)
    if baselines:  # the methods' own downloads (romlib.specs.MethodSpec.downloads) on this backend's family
        own += tuple(d["name"] for m in METHOD_SPECS.values() if spec.family in m.families for d in m.downloads)
    extra = {"clipseg": hub.CLIPSEG, "mdetr": hub.MDETR}.get(segmenter or "", ())
    return tuple(dict.fromkeys(sum((getattr(hub, g) for g in groups), ()) + own + extra))


# ---------------------------------------------------------------------------------------------- choosing one
def choose(real: str, stand_in: str, *, env: str, probe: bool = True) -> str:
    """``$env`` if set (``offline``: :data:`OFFLINE`, the stand-in); else ``real`` on a GPU whose files are reachable
    (every file cached, a ``$ROMLIB_MIRROR``, or network access: with ``probe`` a connection to :data:`PROBE_HOST`
    is tried), else ``stand_in``."""
    chosen = os.environ.get(env)
    if chosen:
        return stand_in if chosen == OFFLINE else chosen
    if not torch.cuda.is_available():
        return stand_in
    if hub.mirror() or all(hub.cached(n) for n in files(real)):
        return real
    if os.environ.get("ROMLIB_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        return stand_in
    if not probe:
        return real
    try:
        socket.create_connection(PROBE_HOST, timeout=3).close()
        return real
    except OSError:
        return stand_in


#: the backend :func:`default_backend` falls back to where the real models are not at hand (offline, CPU)
OFFLINE_DEFAULT = "shapes"
#: ``$ROMLIB_BACKEND=offline``: the embedded backend wherever the real models would be chosen — a notebook's own
#: (``rl.nb.setup(offline=...)``), else :data:`OFFLINE_DEFAULT` (how the tests and tools run the notebooks)
OFFLINE = "offline"


def default_backend() -> str:
    """``$ROMLIB_BACKEND`` if set; else ``"glide"`` on a GPU whose files are reachable (every file
    cached, a ``$ROMLIB_MIRROR``, or network access), else :data:`OFFLINE_DEFAULT`."""
    return choose("glide", OFFLINE_DEFAULT, env="ROMLIB_BACKEND")


# ---------------------------------------------------------------------------------------------- the loaders
def _mdetr(*, device, progress, **_):
    hub.ensure(hub.MDETR, progress=progress)
    return load_segmenter("phrasecut-eb3", device=device, progress=progress)


#: the referring segmenters a spec names (:attr:`romlib.specs.BackendSpec.segmenter` and ``segmenters``), built by
#: :func:`load` where a loader leaves them out
SEGMENTER_LOADERS = {"mdetr": _mdetr, "clipseg": load_clipseg}


def load_glide(spec: BackendSpec, *, device, dtype, progress, baselines, **_) -> Backend:
    """GLIDE base/upsampler and CLIP, each memory-mapped from the cache (files checked by :func:`load`, which adds
    the spec's segmenters)."""
    log.info("loading MDETR, GLIDE base/upsampler and CLIP")
    ranker = load_clip_ranker(device=device, progress=progress)  # the baselines' models: their methods' loaders
    return Backend(
        name=spec.name,
        segmenter=None,
        base_model=load_model("base-inpaint", device=device, dtype=dtype, progress=progress),
        upsampler=load_model("upsample-inpaint", device=device, dtype=dtype, progress=progress),
        tokenizer=GlideTokenizer.default(),
        ranker=ranker,
    )


def load_tiny(spec: BackendSpec, *, device, baselines=False, **_) -> Backend:
    backend = tiny_backend(device=device, baselines=baselines)
    backend.segmenters["clipseg"] = lambda: tiny_clipseg(device=device)
    backend.extras["removal"] = None  # random weights: an empty target inpaints noise (a warning says so)
    return backend


def load_sd(spec: BackendSpec, *, device, dtype, progress, paths, **_) -> Backend:
    """Stable Diffusion 1.5 inpainting with diffusers' ``from_pretrained`` from the official layout (links into the
    cache); :func:`load` adds CLIPSeg (MDETR on request) and CLIP ViT-B/16."""
    folder = link_layout({n: p for n, p in paths.items() if n.startswith("sd15-inpaint/")}, "sd15-inpaint")
    model = load_inpainter(folder, device=device, dtype=dtype)
    return Backend(name=spec.name, segmenter=None, base_model=model, tokenizer=model.tokenizer, base_steps="25")


def load_tiny_sd(spec: BackendSpec, *, device, seed: int = 0, **_) -> Backend:
    """Random tiny SD-family models (64×64 frame, 8×8 latents), the tiny MDETR and CLIP of ``tiny``; CLIPSeg tiny on
    request."""
    model = tiny_inpainter(seed=seed).to(device)
    return Backend(name=spec.name, segmenter=tiny_segmenter(seed=seed, device=device),
                   segmenters={"clipseg": lambda: tiny_clipseg(device=device)}, base_model=model,
                   tokenizer=model.tokenizer, ranker=tiny_clip_ranker(seed=seed), base_steps="10",
                   extras={"removal": None})  # random weights: an empty target inpaints noise (a warning says so)


# ---------------------------------------------------------------------------------------------- tiny stages
def tiny_segmenter(seed: int = 0, device="cpu", size: int = 800) -> MDETRSegmenter:
    """A random tiny MDETR segmenter with an offline tokenizer (tests, the tiny backends)."""
    return MDETRSegmenter(tiny_mdetr(seed).to(device), tiny_roberta_tokenizer(), size=size)


def tiny_clip_ranker(seed: int = 0, image_size: int = 32) -> ClipRanker:
    """A random-weight CLIP ranker (open_clip ``CLIP`` of toy sizes) for tests; offline."""
    model, tokenizer = tiny_clip_model(seed, image_size)
    return ClipRanker(model, tokenizer, image_size=image_size)


def tiny_baselines(*, ranker, device="cpu", seed: int = 0) -> dict:
    """Tiny random-weight versions of both baselines (tests)."""
    return {"clip": ClipGuidedBaseline(tiny_noised_clip(seed).to(device)),
            "blended": BlendedBaseline(tiny_adm(64, seed).to(device), ranker, steps="10", skip_timesteps=3, aug_num=2)}


def tiny_backend(device="cpu", seed: int = 0, baselines: bool = False) -> Backend:
    """Random tiny models of every stage, offline (segmenter, GLIDE pair, CLIP)."""
    tok = ByteTokenizer()
    ranker = tiny_clip_ranker(seed=seed)
    return Backend(
        name="tiny",
        segmenter=tiny_segmenter(seed=seed, device=device),
        base_model=tiny_glide("base-inpaint", seed=seed, n_vocab=tok.n_vocab).to(device),
        upsampler=tiny_glide("upsample-inpaint", seed=seed + 1, n_vocab=tok.n_vocab).to(device),
        tokenizer=tok,
        ranker=ranker,
        base_steps="10",
        upsample_steps="5",
        extras=tiny_baselines(ranker=ranker, device=device, seed=seed) if baselines else {},
    )
