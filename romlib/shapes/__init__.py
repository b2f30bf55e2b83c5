"""ShapesWorld: a tiny closed world where every stage of ROM is a real, trained model shipped in
the package, and an exact oracle measures what the paper showed with pictures.

* :mod:`~romlib.shapes.scenes` — the scene generator, the language and its word tokenizer;
* :mod:`~romlib.shapes.oracle` — exact colour and shape of a region, from the pixels;
* :mod:`~romlib.shapes.segmenter` — the referring segmenter (rules over the rendering);
* :mod:`~romlib.shapes.ranker` — a tiny learned CLIP (dual encoder), never the oracle;
* :mod:`~romlib.shapes.train` — ``romlib shapes-train``: the GLIDE inpainting UNet (tiny) and the ranker;
* :mod:`~romlib.shapes.bench` — ``romlib shapes-bench``: CF vs CCF (and its two changes) by the oracle;
* :mod:`~romlib.shapes.demo` — ``romlib demo``.

>>> import romlib as rl
>>> pipe = rl.ROMPipeline.from_pretrained("shapes", device="cpu")
>>> scene = rl.shapes.make_scene(0)
>>> result = pipe.edit(scene.pil(), "the red circle", "a blue square", samples=8)
"""
from __future__ import annotations

from pathlib import Path

from .oracle import Region, describe_region, judge, object_region
from .scenes import COLOURS, SHAPES, SIZE, VOCAB, Obj, Scene, WordTokenizer, describe, make_scene, parse_text, referring_expressions

__all__ = ["load_backend", "load_inpaint_model", "load_ranker", "weights_path", "BASE_STEPS", "BEST_SCALES", "make_scene", "Scene", "Obj",
           "describe", "referring_expressions", "parse_text", "WordTokenizer", "describe_region", "object_region", "judge",
           "Region", "COLOURS", "SHAPES", "SIZE", "VOCAB"]

BASE_STEPS = "25"  # default respacing of the 1000 training steps for sampling
# default guidance scales of the shipped model: the best of each rule on `romlib shapes-bench`
# (docs/shapesworld.md); the paper's s = 15 (CCF) is tuned for GLIDE and oversaturates here
BEST_SCALES = {"cf": 3.0, "ccf": 3.0, "ccf-direction": 5.0, "cf-original": 3.0}


def weights_path(name: str, weights_dir: str | Path | None = None) -> Path:
    """The shipped ``inpaint.pt`` / ``ranker.pt`` (or those in ``weights_dir``); raises with the
    command that recreates them when missing."""
    from .train import WEIGHTS_DIR

    p = Path(weights_dir or WEIGHTS_DIR) / name
    if not p.is_file():
        raise FileNotFoundError(f"ShapesWorld weights not found: {p}; recreate them with "
                                "'romlib shapes-train --install' (about 45 min on 2 CPU cores)")
    return p


def load_inpaint_model(weights_dir: str | Path | None = None, device="cpu"):
    """The trained tiny GLIDE inpainting UNet (EMA weights, float32, eval mode)."""
    from ..glide import GlideConfig, GlideUNet
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


def load_backend(device="cpu", weights_dir: str | Path | None = None):
    """The ``"shapes"`` :class:`romlib.backend.Backend`: rule-based segmenter, the trained tiny
    GLIDE inpainting model (no upsampler: results stay 32×32), the word tokenizer and the
    trained tiny CLIP ranker; cosine schedule of 1000 steps sampled with :data:`BASE_STEPS`;
    guidance scales default to :data:`BEST_SCALES`."""
    from ..backend import Backend
    from .segmenter import ShapesSegmenter

    model = load_inpaint_model(weights_dir, device)
    return Backend(name="shapes", segmenter=ShapesSegmenter(), base_model=model, tokenizer=WordTokenizer(),
                   ranker=load_ranker(weights_dir, device), upsampler=None,
                   base_schedule=tuple(model.meta.get("schedule", ("squaredcos_cap_v2", 1000))), base_steps=BASE_STEPS,
                   extras={"meta": model.meta}, default_scales=dict(BEST_SCALES))
