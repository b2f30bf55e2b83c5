"""The ``shapes`` backend: the shipped ShapesWorld weights loaded into the pipeline's stages.

Reading the weights needs only the models, never the trainer (:mod:`romlib.shapes.train` writes them).
"""
from __future__ import annotations

from pathlib import Path

from .scenes import WordTokenizer

__all__ = ["WEIGHTS_DIR", "BASE_STEPS", "BEST_SCALES", "VARIANTS", "weights_path", "load_inpaint_model", "load_ranker",
           "load_backend"]

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


def weights_path(name: str, weights_dir: str | Path | None = None) -> Path:
    """The shipped ``inpaint.pt`` / ``ranker.pt`` (or those in ``weights_dir``); raises with the
    command that recreates them when missing."""
    p = Path(weights_dir or WEIGHTS_DIR) / name
    if not p.is_file():
        raise FileNotFoundError(f"ShapesWorld weights not found: {p}; recreate them with "
                                "'romlib shapes-train --install' (about 45 min on 2 CPU cores)")
    return p


def load_inpaint_model(weights_dir: str | Path | None = None, device="cpu"):
    """The trained tiny GLIDE inpainting UNet (EMA weights, float32, eval mode)."""
    from ..models.glide import GlideConfig, GlideUNet
    from ..hub import safe_load

    ckpt = safe_load(weights_path("inpaint.pt", weights_dir))
    model = GlideUNet(GlideConfig(**ckpt["config"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}, strict=True)
    model.meta = ckpt.get("meta", {})
    return model.to(device).eval().requires_grad_(False)


def load_ranker(weights_dir: str | Path | None = None, device="cpu"):
    """The trained tiny CLIP (:class:`~romlib.shapes.ranker.ShapesRanker`), eval mode."""
    from ..hub import safe_load
    from .ranker import ShapesRanker

    ckpt = safe_load(weights_path("ranker.pt", weights_dir))
    ranker = ShapesRanker()
    ranker.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()}, strict=True)
    ranker.meta = ckpt.get("meta", {})
    return ranker.to(device).eval().requires_grad_(False)


def load_backend(device="cpu", weights_dir: str | Path | None = None, *, variant: str = "default"):
    """The ``"shapes"`` :class:`romlib.contracts.Backend`: rule-based segmenter, the trained tiny
    GLIDE inpainting model (no upsampler: results stay 32×32), the word tokenizer and the
    trained tiny CLIP ranker; cosine schedule of 1000 steps sampled with :data:`BASE_STEPS`.
    ``variant``: which shipped model (:data:`VARIANTS`; its guidance scales are the defaults);
    ``weights_dir``: your own ``romlib shapes-train`` output instead (the shipped ranker is used
    when the folder has no ``ranker.pt``)."""
    from ..contracts import Backend
    from .segmenter import ShapesSegmenter

    if variant not in VARIANTS:
        raise ValueError(f"unknown ShapesWorld variant {variant!r}; expected one of {sorted(VARIANTS)}")
    folder, scales = VARIANTS[variant]
    folder = Path(weights_dir) if weights_dir is not None else folder
    model = load_inpaint_model(folder, device)
    ranker_dir = folder if (folder / "ranker.pt").is_file() else WEIGHTS_DIR
    return Backend(name="shapes", segmenter=ShapesSegmenter(), segmenter_name="shapes", base_model=model,
                   tokenizer=WordTokenizer(),
                   ranker=load_ranker(ranker_dir, device), upsampler=None,
                   base_schedule=tuple(model.meta.get("schedule", ("squaredcos_cap_v2", 1000))), base_steps=BASE_STEPS,
                   extras={"meta": model.meta, "variant": variant}, default_scales=dict(scales))
