"""The notebooks' figures, as ``rl.viz.<name>``: the figures of edits (:mod:`romlib.plots`) and the paper's story
figures (:mod:`romlib.teach.story`). Each returns the ``Figure``; the notebooks print the numbers behind every
figure next to it."""
from __future__ import annotations

from ..plots import *  # noqa: F401,F403
from ..plots import __all__ as _PLOTS
from ..plots import _box, _full_mask, _imshow  # noqa: F401  (the story figures' and ShapesWorld's drawing helpers)
from .story import default_targets, forward_figure, mask_iou, pipeline_figure, segmenters_figure, targets_figure

__all__ = [*_PLOTS, "default_targets", "forward_figure", "mask_iou", "pipeline_figure", "segmenters_figure",
           "targets_figure"]
