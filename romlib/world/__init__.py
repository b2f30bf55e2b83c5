"""The embedded world (successor of ShapesWorld): a CLEVR-like 64×64 procedural world.

* :mod:`~romlib.world.scene` — the scene description (objects, background, light), ``make_scene(seed)``;
* :mod:`~romlib.world.render` — the anti-aliased renderer: scenes, backgrounds, masks, shadows;
* :mod:`~romlib.world.language` — the closed vocabulary, descriptions, referring expressions, resolver;
* :mod:`~romlib.world.oracle` — what the eye sees in an edited image, with margins and abstention;
* :mod:`~romlib.world.data` — training batches (inpainting, segmentation, ranking);
* :mod:`~romlib.world.preview` — a figure of scenes, expressions, masks, backgrounds and paired sources;
* :mod:`~romlib.world.models`, :mod:`~romlib.world.segmenter`, :mod:`~romlib.world.train` — the models (32×32 base,
  32→64 upsampler, learned referring segmenter, tiny CLIP ranker) and their resumable trainers.

See docs/world.md and docs/world_training.md.
"""

import importlib as _importlib
import importlib.util as _importlib_util


def __getattr__(name: str):
    """``rl.world.<submodule>`` without an import of its own: any module of this package, loaded on first use."""
    if not name.startswith("_") and _importlib_util.find_spec(f"{__name__}.{name}") is not None:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
