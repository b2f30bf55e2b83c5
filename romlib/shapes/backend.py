"""The ``shapes`` backend: the shipped ShapesWorld weights loaded into the pipeline's stages.

Reading the weights needs only the models, never the trainer (:mod:`romlib.shapes.train` writes them).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ..contracts import Backend
from ..hub import UnsafeCheckpoint, safe_load
from ..io import check_file
from ..models.glide import GlideConfig, GlideUNet
from .ranker import ShapesRanker
from .scenes import WordTokenizer
from .segmenter import ShapesSegmenter

__all__ = ["WEIGHTS_DIR", "BASE_STEPS", "BEST_SCALES", "VARIANTS", "REMOVAL", "weights_path", "read_weights", "load_inpaint_model",
           "load_ranker", "load_backend", "load_spec"]

#: where the shipped weights live (``romlib shapes-train --install`` writes here)
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BASE_STEPS = "25"  # default respacing of the 1000 training steps for sampling
# default guidance scales of the shipped model: the best of each rule on `romlib shapes-bench`
# (docs/shapesworld.md); the paper's s = 15 (CCF) is tuned for GLIDE and oversaturates here
BEST_SCALES = {"cf": 3.0, "ccf": 3.0, "ccf-direction": 5.0, "cf-original": 3.0}

#: the shipped inpainting models: ``"default"`` (run B) and ``"removal"`` (run D, trained with
#: ``romlib shapes-train --p-remove 0.1 --p-partial 0.4``: an empty target removes the object, the paper's
#: Fig. 8, used by notebook 03 — but its ∅ branch became "background", so CF breaks above s = 1; see
#: docs/shapesworld.md). Each: (folder, default guidance scales = the best of each rule on 100 cases). The
#: ranker (``ranker.pt``) is shared.
VARIANTS = {
    "default": (WEIGHTS_DIR, BEST_SCALES),
    "removal": (WEIGHTS_DIR / "removal", {"cf": 1.0, "ccf": 3.0, "ccf-direction": 5.0, "cf-original": 1.0}),
}
#: the variant an empty target is handed to by the default model loaded without a variant named
#: (``ROMPipeline.from_pretrained("shapes")``, ``romlib edit --backend shapes``; Backend.extras["removal"])
REMOVAL = "removal"  # = romlib.specs.BACKENDS["shapes"].removal_variant (tests/test_removal.py checks)


def weights_path(name: str, weights_dir: str | Path | None = None) -> Path:
    """The shipped ``inpaint.pt`` / ``ranker.pt`` (or those in ``weights_dir``); raises with the
    command that recreates them when missing."""
    p = Path(weights_dir or WEIGHTS_DIR) / name
    try:
        return check_file(p, "ShapesWorld weights")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; recreate them with 'romlib shapes-train --install' (about 45 min on 2 CPU "
                                "cores)") from None


def read_weights(path: str | Path, build, *, advice: str = "write it again with romlib shapes-train", **load):
    """``build(checkpoint)`` on the file at ``path`` read weights-only; a file that cannot be read
    as such (garbage, truncated, missing keys, wrong shapes, non-finite weights: anything ``build``
    fails on) raises one ValueError naming it as damaged, with ``advice``. A file that asks to run
    code stays :class:`romlib.hub.UnsafeCheckpoint`."""
    import pickle
    import zipfile


    unreadable = (RuntimeError, OSError, pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError,
                  AttributeError, IndexError, zipfile.BadZipFile)  # OSError: torch reading a cut archive
    try:
        ckpt = safe_load(path, **load)
    except (UnsafeCheckpoint, PermissionError, FileNotFoundError, IsADirectoryError):
        raise  # each says what it is
    except unreadable as e:  # garbage, an HTML page, a cut file: torch's own text is long and about pickles
        raise ValueError(f"{path} is damaged: it cannot be read as a torch weights file ({type(e).__name__}); "
                         f"{advice}") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} is damaged or is not a ShapesWorld file of this model: expected a dict, got a "
                         f"{type(ckpt).__name__}; {advice}")
    try:
        return build(ckpt)
    except unreadable as e:
        detail = " ".join(str(e).split())[:160]
        raise ValueError(f"{path} is damaged or is not a ShapesWorld file of this model ({type(e).__name__}: "
                         f"{detail}); {advice}") from None


def _float_state(state: dict) -> dict:
    """The state dict in float32; non-finite weights are refused."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(v.float().isfinite().all())]
    if bad:
        raise ValueError(f"non-finite values (NaN or inf) in {bad[:3]}")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_inpaint_model(weights_dir: str | Path | None = None, device="cpu"):
    """The trained tiny GLIDE inpainting UNet (EMA weights, float32, eval mode); damaged weights are named."""
    def build(ckpt):
        model = GlideUNet(GlideConfig(**ckpt["config"]))
        model.load_state_dict(_float_state(ckpt["state_dict"]), strict=True)
        model.meta = dict(ckpt.get("meta", {}))
        return model

    model = read_weights(weights_path("inpaint.pt", weights_dir), build)
    return model.to(device).eval().requires_grad_(False)


def load_ranker(weights_dir: str | Path | None = None, device="cpu"):
    """The trained tiny CLIP (:class:`~romlib.shapes.ranker.ShapesRanker`), eval mode; damaged weights are named."""
    def build(ckpt):
        ranker = ShapesRanker()
        ranker.load_state_dict(_float_state(ckpt["state_dict"]), strict=True)
        ranker.meta = dict(ckpt.get("meta", {}))
        return ranker

    ranker = read_weights(weights_path("ranker.pt", weights_dir), build)
    return ranker.to(device).eval().requires_grad_(False)


log = logging.getLogger(__name__)
_SHIPPED_RANKER_NOTED: set[str] = set()  # weights folders already said to lack a ranker.pt (said once each)


def load_backend(device="cpu", weights_dir: str | Path | None = None, *, variant: str | None = "default"):
    """The ``"shapes"`` :class:`romlib.contracts.Backend`: rule-based segmenter, the trained tiny
    GLIDE inpainting model (no upsampler: results stay 32×32), the word tokenizer and the
    trained tiny CLIP ranker; cosine schedule of 1000 steps sampled with :data:`BASE_STEPS`.
    ``variant``: which shipped model (:data:`VARIANTS`; its guidance scales are the defaults); ``None``:
    the default model, which hands an *empty* target to the ``"removal"`` model (it was never taught that an
    empty caption means background: :data:`REMOVAL`); a variant named is that model for every target.
    ``weights_dir``: your own ``romlib shapes-train`` output instead (the shipped ranker is used
    when the folder has no ``ranker.pt``)."""
    chosen, variant = variant, variant or "default"
    if variant not in VARIANTS:
        raise ValueError(f"unknown ShapesWorld variant {variant!r}; expected one of {sorted(VARIANTS)}")
    folder, scales = VARIANTS[variant]
    folder = Path(weights_dir) if weights_dir is not None else folder
    model = load_inpaint_model(folder, device)
    ranker_dir = folder if os.path.lexists(folder / "ranker.pt") else WEIGHTS_DIR  # one there is read (or named bad)
    if weights_dir is not None and ranker_dir == WEIGHTS_DIR and str(folder) not in _SHIPPED_RANKER_NOTED:
        _SHIPPED_RANKER_NOTED.add(str(folder))
        log.warning("%s has no ranker.pt (shapes-train --what inpaint writes none): the shipped ranker ranks the "
                    "samples", folder)
    if model.meta.get("p_remove", 0) > 0:
        removal = "self"  # taught removal: an empty caption over a hole means background
    elif chosen is None and weights_dir is None:
        removal = REMOVAL
    else:
        removal = None  # the pipeline warns: this model redraws a shape under an empty caption
    return Backend(name="shapes", segmenter=ShapesSegmenter(), segmenter_name="shapes", base_model=model,
                   tokenizer=WordTokenizer(),
                   ranker=load_ranker(ranker_dir, device), upsampler=None,
                   base_schedule=tuple(model.meta.get("schedule", ("squaredcos_cap_v2", 1000))), base_steps=BASE_STEPS,
                   extras={"meta": model.meta, "variant": variant, "removal": removal}, default_scales=dict(scales))


def load_spec(spec, *, device, variant=None, **_):
    """The loader of :data:`romlib.specs.BACKENDS` ``["shapes"]`` (:func:`romlib.backends.load` calls it): the shipped
    models (:func:`load_backend`; ``variant=None``: the default model, empty targets to :data:`REMOVAL`)."""
    return load_backend(device=device, variant=variant)
