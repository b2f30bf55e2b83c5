"""romlib — Referring Object Manipulation: edit the object a text refers to so it matches a target text.

Import is cheap: torch and the models load only when used.  The main entry points::

    import romlib as rl
    result = rl.edit("photo.jpg", "the red car", "a blue truck")   # real models (GPU)
    pipe = rl.ROMPipeline.from_pretrained("shapes")                 # embedded, offline backend

The package's folders follow the pipeline (see docs/modules.md): ``segment`` → ``masks`` →
``guidance`` + ``sampling`` (on the networks in ``models``) → ``rank`` → ``pipeline``; around them
``hub`` (downloads), ``shapes`` (the embedded world), ``study`` (Table 1) and ``teach`` (notebooks).
"""
__version__ = "0.1.0"

_LAZY = {
    "edit": "romlib.pipeline",
    "ROMPipeline": "romlib.pipeline",
    "EditResult": "romlib.pipeline",
    "EditConfig": "romlib.config",
    "METHODS": "romlib.guidance.methods",
    "check": "romlib.teach.exercises",  # rl.check("01.cf", cf_eps): the notebooks' checked exercises
    "hint": "romlib.teach.exercises",  # rl.hint("01.cf"): where to look, then the answer's shape, the formula last
}

# ``rl.<name>``: every module, by its short name, the last part of its path (the notebooks say ``rl.nb``, ``rl.viz``,
# ``rl.study``); no two modules share one (tests/test_layout.py checks it).
_SUBMODULES = {
    "pipeline": "romlib.pipeline", "config": "romlib.config", "contracts": "romlib.contracts",
    "backends": "romlib.backends", "segment": "romlib.segment", "masks": "romlib.masks", "rank": "romlib.rank",
    "io": "romlib.io", "hub": "romlib.hub", "perf": "romlib.perf", "cli": "romlib.cli",
    "guidance": "romlib.guidance", "sampling": "romlib.sampling", "models": "romlib.models",
    "study": "romlib.study", "teach": "romlib.teach", "shapes": "romlib.shapes", "world": "romlib.world",
    "segstudy": "romlib.world.segstudy", "dilstudy": "romlib.world.dilstudy", "guidestudy": "romlib.world.guidestudy", "rankstudy": "romlib.world.rankstudy", "diffusion": "romlib.sampling.diffusion", "inpaint": "romlib.sampling.inpaint", "samplers": "romlib.sampling.samplers",
    "explorer": "romlib.teach.explorer", "work": "romlib.perf.work",
    "glide": "romlib.models.glide", "mdetr": "romlib.models.mdetr", "noised_clip": "romlib.models.noised_clip",
    "adm": "romlib.models.adm", "tokenizers": "romlib.models.tokenizers", "tiny": "romlib.models.tiny",
    "nb": "romlib.teach.nb", "viz": "romlib.teach.viz", "toy": "romlib.teach.toy", "loop": "romlib.teach.loop",
    "exercises": "romlib.teach.exercises",
    "sd": "romlib.models.sd", "clipseg": "romlib.clipseg", "latent": "romlib.sampling.latent",
    "latent_model": "romlib.teach.latent_model", "specs": "romlib.specs", "checks": "romlib.checks",
    "experiments": "romlib.experiments", "plots": "romlib.plots", "families": "romlib.guidance.families",
}


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(_SUBMODULES[name])
    raise AttributeError(f"module 'romlib' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY) + list(_SUBMODULES))
