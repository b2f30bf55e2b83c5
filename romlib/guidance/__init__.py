"""Guidance: how each method turns the model's predictions into an edit.

* :mod:`romlib.guidance.methods` — ``METHODS``, the registry every other part of romlib reads.
* :mod:`romlib.guidance.cfg` — the classifier-free rules, CF (eq. 6) and the paper's CCF (eq. 8),
  and the two one-change ablations; the heart of the project.
* :mod:`romlib.guidance.clip` — CLIP-guided GLIDE (the "G-CLIP" baseline, eq. 4).
* :mod:`romlib.guidance.blended` — Blended Diffusion (the "Blend" baseline).
"""
from ..lazy import lazy_names

#: ``romlib.guidance.<name>``, imported on first use, so that importing the rules (``romlib.guidance.cfg``, which
#: the samplers build on) does not import the methods (which build on the samplers)
_NAMES = {"RULES": "cfg", "GuidanceRule": "cfg", "GuidanceSpec": "cfg", "GuidedModel": "cfg", "guided_eps": "cfg",
          "known_region_fn": "cfg", "METHODS": "methods", "Method": "methods"}

__all__ = ["METHODS", "Method", "RULES", "GuidanceRule", "GuidanceSpec", "GuidedModel", "guided_eps", "known_region_fn"]


__getattr__, __dir__ = lazy_names(__name__, _NAMES, globals())
