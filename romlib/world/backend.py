"""The ``world`` backend: the embedded world's four trained models loaded into the pipeline's stages; and
``world-latent`` (:func:`load_latent_backend`), the world's latent model (:mod:`romlib.world.latent`: SD's classes,
``vae.pt`` + ``latent.pt``) with the same segmenter and ranker (notebook 07 offline).

=============  =========================  =======================================================================
stage          file (:data:`WEIGHT_FILES`)  model
=============  =========================  =======================================================================
base           ``base.pt``                32×32 GLIDE inpainting UNet (:func:`romlib.world.models.base_config`)
upsampler      ``upsampler.pt``           32→64 GLIDE inpainting upsampler (:func:`~romlib.world.models.upsampler_config`)
segmenter      ``segmenter.pt``           the learned referring segmenter (:class:`romlib.world.segmenter.WorldSegmenter`)
ranker         ``ranker.pt``              the tiny CLIP (:class:`romlib.world.models.WorldRanker`)
=============  =========================  =======================================================================

Sampling is GLIDE's real path (:class:`romlib.guidance.families.PixelFamily`): the guided base run at 32×32,
then :func:`romlib.sampling.inpaint.sample_upsample` to 64×64. Texts are the world's closed language
(:class:`romlib.world.language.WorldTokenizer`: an unknown word is named with the vocabulary).

**Removal** (an empty target): the world's data recipe (:mod:`romlib.world.data`) teaches the base model that
an empty caption over a blank hole means background (``p_remove`` and ``p_background`` examples), so the base
model itself removes (``Backend.extras["removal"] = "self"``); a base model trained with ``p_remove=0`` hands an
empty target to no other model: the pipeline warns that it may draw something there.

**Weights folder** (:func:`weights_dir`): the argument, else ``$ROMLIB_WORLD_WEIGHTS``, else the shipped
:data:`WEIGHTS_DIR` (``romlib/world/weights/``: its README says which are shipped). A missing file is named
with the command that trains it (:func:`check_weights`).
"""
from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path

import torch

from ..contracts import Backend
from ..shapes.backend import read_weights
from ..specs import BACKENDS
from . import data
from .language import WorldTokenizer
from .models import BASE_SCHEDULE, UPSAMPLE_SCHEDULE, WorldRanker, load_unet
from .recipes import LATENT_MODELS, PIXEL_MODELS, TRAIN_COMMAND, WEIGHT_FILES
from .segmenter import WorldSegmenter, load_segmenter

__all__ = ["WEIGHTS_DIR", "WEIGHTS_ENV", "WEIGHT_FILES", "BASE_STEPS", "UPSAMPLE_STEPS", "DEFAULT_SCALES", "weights_dir",
           "check_weights", "load_ranker", "load_backend", "load_spec", "load_latent_backend", "load_latent_spec",
           "LATENT_STEPS", "LATENT_SCALES", "MissingWorldWeights"]

log = logging.getLogger(__name__)

#: the shipped weights (package data; base and upsampler so far: its README.md)
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: the environment variable naming another weights folder (e.g. a ``romlib world-train --out`` folder): the spec's
WEIGHTS_ENV = BACKENDS["world"].env[0]
#: default respacing of the 1000 training steps (base: cosine schedule; upsampler: GLIDE's fast27 on the linear one)
BASE_STEPS, UPSAMPLE_STEPS = "50", "fast27"
#: provisional guidance scales (ShapesWorld's measured best; the paper's s = 15 oversaturates a small model) until the
#: world's bench (:mod:`romlib.world.bench`) measures each rule's best scale on the trained weights
DEFAULT_SCALES = {"cf": 3.0, "ccf": 3.0, "ccf-direction": 5.0, "cf-original": 3.0}


class MissingWorldWeights(FileNotFoundError):
    """Some of the world's weight files are missing; ``missing`` lists them."""

    def __init__(self, folder: Path, missing: list[str], source: str):
        self.folder, self.missing = folder, missing
        how = "; ".join(f"{WEIGHT_FILES[m]}: {TRAIN_COMMAND} --out DIR --what {m}" for m in missing)
        super().__init__(
            f"the world backend's weights folder {folder} ({source}) lacks {', '.join(WEIGHT_FILES[m] for m in missing)}. "
            f"Train them ({how}; or all at once: {TRAIN_COMMAND} --out DIR, or romlib world-train --out DIR) and point "
            f"${WEIGHTS_ENV} at DIR")


def weights_dir(folder: str | Path | None = None) -> tuple[Path, str]:
    """The weights folder and where it came from: ``folder``, else ``$ROMLIB_WORLD_WEIGHTS``, else the shipped one."""
    if folder is not None:
        return Path(folder), "given"
    if os.environ.get(WEIGHTS_ENV):
        return Path(os.environ[WEIGHTS_ENV]), f"${WEIGHTS_ENV}"
    return WEIGHTS_DIR, "the shipped weights"


def check_weights(folder: str | Path | None = None, models=PIXEL_MODELS) -> dict[str, Path]:
    """Each of ``models``' weight file in the weights folder (:func:`weights_dir`), before any is read; raises
    :class:`MissingWorldWeights` naming each missing one with the command that trains it."""
    root, source = weights_dir(folder)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"the world backend's weights folder {root} ({source}) is a file; give a folder "
                                 f"holding {', '.join(WEIGHT_FILES[m] for m in models)}")
    missing = [m for m in models if not (root / WEIGHT_FILES[m]).is_file()]
    if missing:
        raise MissingWorldWeights(root, missing, source)
    return {m: root / WEIGHT_FILES[m] for m in models}


def load_ranker(path, tokenizer, *, device="cpu") -> WorldRanker:
    """A :class:`WorldRanker` from a ``ranker.pt`` written by :mod:`romlib.world.train`, eval mode."""
    def build(c):
        cfg = c["config"]
        if int(cfg["n_vocab"]) != tokenizer.n_vocab:
            raise ValueError(f"its vocabulary has {cfg['n_vocab']} words, the world's {tokenizer.n_vocab}")
        ranker = WorldRanker(tokenizer, image_size=int(cfg["image_size"]), dim=int(cfg["dim"]))
        ranker.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in c["state_dict"].items()},
                               strict=True)
        ranker.meta = dict(c.get("meta", {}))
        return ranker

    ranker = read_weights(path, build, advice=f"train it again ({TRAIN_COMMAND} --what ranker)")
    return ranker.to(device).eval().requires_grad_(False)


def _teaches_removal(meta: dict) -> bool:
    """Whether the base model's recipe taught "empty caption over a blank hole = background"."""
    defaults = inspect.signature(data.inpaint_example).parameters
    options = meta.get("recipe_options") or {}
    return any(float(options.get(k, defaults[k].default)) > 0 for k in ("p_remove", "p_background"))


def load_backend(device="cpu", weights: str | Path | None = None) -> Backend:
    """The ``"world"`` :class:`romlib.contracts.Backend` from the weights folder (:func:`weights_dir`)."""
    paths = check_weights(weights)
    device = torch.device(device)
    tok = WorldTokenizer()
    base, upsampler = load_unet(paths["base"], device=device), load_unet(paths["upsampler"], device=device)
    for name, model, want in (("base", base, False), ("upsampler", upsampler, True)):
        if bool(model.cfg.super_res) != want:
            raise ValueError(f"{paths[name]} holds {'an upsampler' if model.cfg.super_res else 'a base model'}, not the "
                             f"{name}; train it again ({TRAIN_COMMAND} --what {name})")
        if model.cfg.n_vocab != tok.n_vocab:
            raise ValueError(f"{paths[name]} reads {model.cfg.n_vocab} words, the world's vocabulary has {tok.n_vocab}; "
                             f"train it again ({TRAIN_COMMAND} --what {name})")
    segmenter: WorldSegmenter = load_segmenter(paths["segmenter"], tok, device=device)
    ranker = load_ranker(paths["ranker"], tok, device=device)
    removal = "self" if _teaches_removal(base.meta) else None
    log.info("world backend from %s (base %s steps, removal: %s)", paths["base"].parent, base.meta.get("steps", "?"),
             removal or "not taught")
    return Backend(name="world", segmenter=segmenter, segmenter_name="world", base_model=base, upsampler=upsampler,
                   tokenizer=tok, ranker=ranker,
                   base_schedule=tuple(base.meta.get("schedule", BASE_SCHEDULE)),
                   upsample_schedule=tuple(upsampler.meta.get("schedule", UPSAMPLE_SCHEDULE)),
                   base_steps=BASE_STEPS, upsample_steps=UPSAMPLE_STEPS,
                   extras={"meta": {"base": base.meta, "upsampler": upsampler.meta},
                           "removal": removal, "weights": str(paths["base"].parent)},
                   default_scales=dict(DEFAULT_SCALES))


def load_spec(spec, *, device, **_):
    """The loader of :data:`romlib.specs.BACKENDS` ``["world"]`` (:func:`romlib.backends.load` calls it): the weights
    of ``$ROMLIB_WORLD_WEIGHTS`` or the shipped ones (:func:`load_backend`)."""
    return load_backend(device=device)


#: the latent model's default steps (DPM-Solver++(2M)) and scales: each rule's most successful scale of a small sweep
#: (12 tuning cases of seed 0, true masks k = 3, B = 4, s in 1, 2, 3, 5: CF 2 reached 23/48, CCF 3 23/48 and 5 26/48,
#: CCF 5 with a worse background; docs/world_training.md); the two ablations take their parent rule's
LATENT_STEPS = "25"
LATENT_SCALES = {"cf": 2.0, "ccf": 3.0, "ccf-direction": 3.0, "cf-original": 2.0}


def load_latent_backend(device="cpu", weights: str | Path | None = None) -> Backend:
    """The ``"world-latent"`` backend: the world's VAE and latent UNet (:mod:`romlib.world.latent`) sampled by
    :mod:`romlib.sampling.latent` (the code that runs SD 1.5 inpainting), the world's segmenter and ranker."""
    from .latent import load_latent, load_vae

    paths = check_weights(weights, LATENT_MODELS + ("segmenter", "ranker"))
    device = torch.device(device)
    tok = WorldTokenizer()
    model = load_latent(paths["latent"], load_vae(paths["vae"], device=device), device=device)
    return Backend(name="world-latent", segmenter=load_segmenter(paths["segmenter"], tok, device=device),
                   segmenter_name="world", base_model=model, tokenizer=model.tokenizer,
                   ranker=load_ranker(paths["ranker"], tok, device=device), base_steps=LATENT_STEPS,
                   extras={"meta": {"vae": model.vae.meta, "latent": model.meta}, "removal": "self",
                           "weights": str(paths["latent"].parent)},
                   default_scales=dict(LATENT_SCALES), family="latent")


def load_latent_spec(spec, *, device, **_):
    """The loader of :data:`romlib.specs.BACKENDS` ``["world-latent"]``."""
    return load_latent_backend(device=device)
