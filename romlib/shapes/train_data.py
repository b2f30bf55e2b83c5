"""The training examples of ShapesWorld's inpainting model: a scene, a hole, a caption, and (for the
"pairs" and removal recipes) what should appear under the hole."""
from __future__ import annotations

from typing import Literal


import numpy as np
import torch

from .scenes import (COLOURS, describe, dilate_np, make_scene, parse_text, referring_expressions, render_shape, Scene, SHAPES)


__all__ = ["make_example", "make_batch", "InpaintInput"]

#: what the model sees under the hole while training: GLIDE's masked image, or "pairs" (a counterfactual
#: source for half the examples, the recipe that makes CCF's original-image input meaningful)
InpaintInput = Literal["masked", "pairs"]


def _containing_hole(rng: np.random.Generator, obj, shape: str, size: int) -> np.ndarray:
    """The smallest ``shape`` (scaled about the object's box, shifted up or down) that contains
    the object's mask, grown by a random 0–25 %."""
    x0, y0, x1, y1 = obj.box
    cx, cy, s = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0
    extra = rng.uniform(0, 0.25)
    for f in np.arange(1.0, 2.45, 0.1):
        for dy in (0.0, -0.15, 0.15, -0.3, 0.3):
            h = s * (f + extra) / 2
            c_y = cy + dy * s * f
            m = render_shape(shape, (cx - h, c_y - h, cx + h, c_y + h), size, size)
            if (m | ~obj.mask).all():
                return m
    return dilate_np(obj.mask, 1)


def _empty_hole(rng: np.random.Generator, scene: Scene) -> np.ndarray | None:
    """A shape-shaped hole over background only (no object under it), or None if none fits."""
    size = scene.image.shape[0]
    taken = dilate_np(np.any([o.mask for o in scene.objects], axis=0), 2)
    for _ in range(20):
        s = int(rng.integers(8, 13))
        x0, y0 = int(rng.integers(0, size - s)), int(rng.integers(0, size - s))
        m = render_shape(str(rng.choice(SHAPES)), (x0, y0, x0 + s, y0 + s), size, size)
        if not (m & taken).any():
            return m
    return None


def _caption(rng: np.random.Generator, scene: Scene, i: int, p_drop: float, p_partial: float = 0.2) -> str:
    """Empty (``p_drop``); else a full description, a one-attribute one ("a circle", "a red shape":
    ``p_partial`` of the non-empty captions, half each) or (35 %) a referring expression."""
    r = rng.random()
    if r < p_drop:
        return ""
    o = scene.objects[i]
    r = (r - p_drop) / (1 - p_drop)
    full = 0.65 - p_partial
    if r < full:
        return describe(o)
    if r < full + p_partial / 2:
        return describe(o, colour=False)
    if r < 0.65:
        return describe(o, shape=False)
    refs = referring_expressions(scene, i)  # empty for the middle one of three identical shapes
    return str(rng.choice(refs)) if refs else describe(o)


def _counterfactual(rng: np.random.Generator, scene: Scene, i: int, caption: str) -> np.ndarray:
    """The scene with object ``i`` replaced by a source object in the same box that keeps every
    attribute ``caption`` does not name, and differs (with probability 3/4 each) in those it names."""
    o, named = scene.objects[i], parse_text(caption).named
    colour, shape = o.colour, o.shape
    if "colour" in named and rng.random() < 0.75:
        colour = str(rng.choice([c for c in COLOURS if c != o.colour]))
    if "shape" in named and rng.random() < 0.75:
        shape = str(rng.choice([s for s in SHAPES if s != o.shape]))
    return scene.with_object(i, colour, shape, rng).image


def make_example(rng: np.random.Generator, *, p_drop: float = 0.2, p_empty: float = 0.1,
                 inpaint_input: InpaintInput = "pairs", p_remove: float = 0.0, p_partial: float = 0.2,
                 p_source: float = 0.5) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, str]:
    """One training example: ``(x0 uint8 [H, W, 3], source uint8 or None, hole bool [H, W], caption)``;
    ``source`` is the unmasked counterfactual the model is shown (pairs), None = the masked x0.

    ``p_remove``: share of object holes whose answer is the scene without the object under an empty
    caption (removal examples). With ``p_remove`` > 0 every other empty-captioned object hole shows
    its source (the object itself: an empty caption names nothing to change), so an empty caption
    over a *blanked* hole always means "nothing here" — the empty target removes. ``p_partial``:
    share of the non-empty captions that name one attribute ("a circle", "a red shape"), the
    examples that teach keeping what the caption leaves free. ``p_source``: share of the (pairs)
    examples that show a source under the hole instead of a blank. The defaults (0, 0.2, 0.5) draw
    exactly the shipped recipe's random stream."""
    scene = make_scene(rng)
    size = scene.image.shape[0]
    if rng.random() < p_empty:
        hole = _empty_hole(rng, scene)
        if hole is not None:
            return scene.image, None, hole, ""
    i = int(rng.integers(len(scene.objects)))
    o = scene.objects[i]
    if rng.random() < 0.15:
        hole = dilate_np(o.mask, int(rng.integers(0, 3)))
    else:
        hole = dilate_np(_containing_hole(rng, o, str(rng.choice(SHAPES)), size), int(rng.integers(0, 2)))
    for j, other in enumerate(scene.objects):
        if j != i:
            hole &= ~dilate_np(other.mask, 1)
    hole |= o.mask
    if p_remove > 0 and rng.random() < p_remove:
        return scene.without_object(i).image, None, hole, ""
    caption = _caption(rng, scene, i, p_drop, p_partial)
    source = None
    if inpaint_input == "pairs" and (rng.random() < p_source or (p_remove > 0 and not caption)):
        source = _counterfactual(rng, scene, i, caption)
    return scene.image, source, hole, caption


def make_batch(rng: np.random.Generator, batch_size: int, **kwargs) -> dict:
    """A batch as tensors: ``x0`` [B, 3, H, W] in [-1, 1], ``keep`` [B, 1, H, W] (1 = keep,
    GLIDE's convention), ``inpaint_image`` (what the model is shown: x0 · keep, GLIDE's masked
    input, or an unmasked counterfactual source), ``texts`` (list of captions)."""
    ex = [make_example(rng, **kwargs) for _ in range(batch_size)]

    def img(arrays):
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1

    x0 = img([e[0] for e in ex])
    keep = torch.from_numpy(~np.stack([e[2] for e in ex]))[:, None].float()
    shown = img([e[1] if e[1] is not None else e[0] for e in ex])
    masked = torch.tensor([e[1] is None for e in ex])[:, None, None, None]
    return {"x0": x0, "inpaint_image": torch.where(masked, shown * keep, shown), "keep": keep, "texts": [e[3] for e in ex]}
