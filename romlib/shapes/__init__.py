"""ShapesWorld: a tiny closed world where every stage of ROM is a real, trained model shipped in
the package, and an exact oracle measures what the paper showed with pictures.

* :mod:`~romlib.shapes.backend` — the ``shapes`` backend: the shipped weights, loaded (no trainer import);
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

from .backend import BASE_STEPS, BEST_SCALES, VARIANTS, WEIGHTS_DIR, load_backend, load_inpaint_model, load_ranker, weights_path
from .oracle import Region, describe_region, judge, object_region
from .scenes import COLOURS, SHAPES, SIZE, VOCAB, Obj, Scene, WordTokenizer, describe, make_scene, parse_text, referring_expressions

__all__ = ["WEIGHTS_DIR", "VARIANTS", "load_backend", "load_inpaint_model", "load_ranker", "weights_path", "BASE_STEPS", "BEST_SCALES", "make_scene", "Scene", "Obj",
           "describe", "referring_expressions", "parse_text", "WordTokenizer", "describe_region", "object_region", "judge",
           "Region", "COLOURS", "SHAPES", "SIZE", "VOCAB"]

_SUBMODULES = ("backend", "bench", "cases", "cli", "demo", "figures", "measure", "oracle", "ranker", "scenes", "segmenter", "train",
               "train_data")


def __getattr__(name):
    """``rl.shapes.bench`` and the other submodules, imported when first used (the trainer stays unimported)."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
