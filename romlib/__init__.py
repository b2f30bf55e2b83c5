"""romlib — Referring Object Manipulation: edit the object a text refers to so it matches a target text.

Import is cheap: torch and the models load only when used.  The main entry points::

    import romlib as rl
    result = rl.edit("photo.jpg", "the red car", "a blue truck")   # real models (GPU)
    pipe = rl.ROMPipeline.from_pretrained("shapes")                 # embedded, offline backend
"""
__version__ = "0.1.0"

_LAZY = {
    "edit": "romlib.pipeline",
    "ROMPipeline": "romlib.pipeline",
    "EditResult": "romlib.pipeline",
}


_SUBMODULES = {"nb", "study", "toy", "viz", "masks", "guidance", "diffusion", "glide", "segment", "rank", "shapes",
               "hub", "pipeline", "bench", "io", "adm", "noised_clip", "blended", "clip_guidance", "baselines", "speed",
               "inpaint", "tokenizer", "backend", "backends", "testing", "mdetr"}


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"romlib.{name}")
    raise AttributeError(f"module 'romlib' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY) + list(_SUBMODULES))
