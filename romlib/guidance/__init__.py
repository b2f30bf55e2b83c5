"""Guidance: how each method turns the model's predictions into an edit.

* :mod:`romlib.guidance.methods` — ``METHODS``, the registry every other part of romlib reads.
* :mod:`romlib.guidance.cfg` — the classifier-free rules, CF (eq. 6) and the paper's CCF (eq. 8),
  and the two one-change ablations; the heart of the project.
* :mod:`romlib.guidance.clip` — CLIP-guided GLIDE (the "G-CLIP" baseline, eq. 4).
* :mod:`romlib.guidance.blended` — Blended Diffusion (the "Blend" baseline).
"""
from .cfg import RULES, GuidanceRule, GuidanceSpec, GuidedModel, guided_eps, known_region_fn
from .methods import METHODS, Method

__all__ = ["METHODS", "Method", "RULES", "GuidanceRule", "GuidanceSpec", "GuidedModel", "guided_eps", "known_region_fn"]
