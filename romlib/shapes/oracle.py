"""The exact ShapesWorld oracle: which colour and which shape a region of an image shows.

Rules over the pixels, no learning (so it can *measure* what the paper could only show):

1. **shape pixels**: a pixel belongs to a shape when it is saturated (channel spread max − min
   ≥ :data:`FG_SPREAD`; backgrounds are muted, spread < 40) and lies within :data:`FG_DIST` (RGB
   distance) of a palette colour; its colour is the nearest palette colour;
2. **the object**: the largest 8-connected component of shape pixels inside the region;
3. **colour**: the majority palette colour of that component;
4. **shape**: the prototype (circle, square, triangle rendered into the component's tight box by
   :func:`romlib.shapes.scenes.render_shape`) with the highest IoU, if it is ≥ :data:`MIN_IOU`
   and the box is not elongated (aspect ≤ :data:`MAX_ASPECT`); otherwise ``None``.

A region with fewer than :data:`MIN_AREA` shape pixels shows nothing (colour and shape ``None``).
The ranker (:mod:`romlib.shapes.ranker`) is a separately *learned* model and never calls this.

**What an edit keeps** (:func:`keeps`) — the paper's "keeps the pose/shape", in this world: the
edited object's **size** (the longer side of its tight box) within :data:`SIZE_TOL` px of the
original's, its **position** (the box centre) within :data:`POS_TOL` px, and every attribute the
target does not name (:func:`judge`'s ``preserved``). Objects are 8–12 px, so 2 px is about a fifth
of an object; the clean scene reads 0 px / 0 px by construction.

**Removed** (:func:`removed`, an empty target) — what the eye sees: no shape is left (fewer than
:data:`MIN_AREA` shape pixels) **and** no outline of the old object is left: fewer than :data:`RIM_MAX`
of the old object's outline pixels (its mask minus its 1-px erosion) are still closer in RGB to the old
object's colour than to the clean background there (:func:`rim_left`). The second rule sees a faint or
thin outline that the shape-pixel rule misses (a blended rim is not saturated enough to be a shape pixel).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io import to_uint8
from .scenes import COLOURS, SHAPES, Obj, Parsed, dilate_np, erode_np, parse_text, render_shape

__all__ = ["FG_SPREAD", "FG_DIST", "MIN_AREA", "MIN_IOU", "MAX_ASPECT", "SIZE_TOL", "POS_TOL", "RIM_MAX", "Region", "keeps", "removed", "rim_left", "colour_labels", "label_components",
           "largest_component", "shape_ious", "describe_component", "describe_region", "object_region", "judge"]

FG_SPREAD = 80
FG_DIST = 100.0
MIN_AREA = 6
MIN_IOU = 0.6
MAX_ASPECT = 1.5
SIZE_TOL = 2.0
POS_TOL = 2.0
RIM_MAX = 0.25
_PALETTE = np.array(list(COLOURS.values()), dtype=np.float64)
_NAMES = list(COLOURS)


@dataclass
class Region:
    """What the oracle sees in a region: ``colour``/``shape`` (None = nothing recognisable),
    ``area`` of the object component, ``iou`` of the best prototype, ``ious`` per shape, the
    ``colour_fraction`` of the majority colour, and the component ``mask``."""

    colour: str | None
    shape: str | None
    area: int
    iou: float = 0.0
    ious: dict | None = None
    colour_fraction: float = 0.0
    mask: np.ndarray | None = None


def _as_uint8(image) -> np.ndarray:
    """PIL, HxWx3 uint8 array or [3, H, W] tensor in [-1, 1] → HxWx3 uint8."""
    if hasattr(image, "detach"):
        return to_uint8(image[0] if image.ndim == 4 else image)
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got {a.dtype} {a.shape}")
    return a


def colour_labels(image) -> np.ndarray:
    """Per-pixel palette index [H, W] (order of :data:`~romlib.shapes.scenes.COLOURS`), −1 = background."""
    a = _as_uint8(image).astype(np.float64)
    spread = a.max(-1) - a.min(-1)
    d = np.linalg.norm(a[..., None, :] - _PALETTE, axis=-1)  # [H, W, 5]
    lab = d.argmin(-1)
    lab[(spread < FG_SPREAD) | (d.min(-1) > FG_DIST)] = -1
    return lab


def label_components(mask: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """8-connected components of a bool mask: labels [H, W] (0 = none, 1..n in raster order of
    their first pixel) and the size of each."""
    mask = np.asarray(mask, dtype=bool)
    label = np.zeros(mask.shape, dtype=np.int32)
    sizes: list[int] = []
    H, W = mask.shape
    for y0, x0 in zip(*np.nonzero(mask)):
        if label[y0, x0]:
            continue
        cur = len(sizes) + 1
        stack, n = [(y0, x0)], 0
        label[y0, x0] = cur
        while stack:
            y, x = stack.pop()
            n += 1
            for yy in range(max(y - 1, 0), min(y + 2, H)):
                for xx in range(max(x - 1, 0), min(x + 2, W)):
                    if mask[yy, xx] and not label[yy, xx]:
                        label[yy, xx] = cur
                        stack.append((yy, xx))
        sizes.append(n)
    return label, sizes


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a bool mask (ties: the first in raster order)."""
    label, sizes = label_components(mask)
    if not sizes:
        return np.zeros(np.shape(mask), dtype=bool)
    return label == int(np.argmax(sizes)) + 1


def shape_ious(component: np.ndarray) -> dict[str, float]:
    """IoU of a component with each prototype rendered into its tight box."""
    ys, xs = np.nonzero(component)
    box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    out = {}
    for s in SHAPES:
        t = render_shape(s, box, *component.shape)
        out[s] = float((t & component).sum() / (t | component).sum())
    return out


def describe_component(comp: np.ndarray, labels: np.ndarray) -> Region:
    """Colour and shape of one component (bool [H, W]) given the pixels' palette labels."""
    area = int(comp.sum())
    if area < MIN_AREA:
        return Region(None, None, area, mask=comp)
    counts = np.bincount(labels[comp], minlength=len(_NAMES))
    colour = _NAMES[int(counts.argmax())]
    ious = shape_ious(comp)
    shape = max(ious, key=ious.get)
    ys, xs = np.nonzero(comp)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    iou = ious[shape]
    if iou < MIN_IOU or max(h, w) / min(h, w) > MAX_ASPECT:
        shape = None
    return Region(colour, shape, area, iou, ious, float(counts.max() / area), comp)


def describe_region(image, region: np.ndarray | None = None) -> Region:
    """Colour and shape of the object in ``region`` (bool [H, W]; default: the whole image):
    the largest component of shape pixels there."""
    lab = colour_labels(image)
    fg = lab >= 0
    if region is not None:
        fg &= np.asarray(region, dtype=bool)
    return describe_component(largest_component(fg), lab)


def object_region(edit_mask: np.ndarray, original: np.ndarray, others: list[np.ndarray] = (), pad: int = 2) -> np.ndarray:
    """Where to look for the edited object: the edit mask and the original object's mask, grown by
    ``pad`` px (leftovers of the original outside an eroded mask count), minus the other
    objects grown by 1 px (scenes keep objects ≥ 4 px apart, so nothing else is inside)."""
    r = dilate_np(np.asarray(edit_mask, dtype=bool) | np.asarray(original, dtype=bool), pad)
    for m in others:
        r &= ~dilate_np(m, 1)
    return r


def judge(region: Region, target: str | Parsed, original: Obj) -> dict:
    """Target success (every attribute the target names is right) and preservation (every
    attribute it does not name kept the original's value; ``None`` when it names both)."""
    t = parse_text(target) if isinstance(target, str) else target
    seen = {"colour": region.colour, "shape": region.shape}
    success = all(seen[k] == v for k, v in t.named.items()) and not t.empty
    unnamed = [k for k in ("colour", "shape") if k not in t.named]
    preserved = all(seen[k] == getattr(original, k) for k in unnamed) if unnamed else None
    return {"success": bool(success), "preserved": preserved, "colour": region.colour, "shape": region.shape}


def _box(mask: np.ndarray | None) -> tuple[int, int, int, int] | None:
    if mask is None or not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def keeps(seen: Region, before: Region) -> dict:
    """Size and position of the edited object (``seen``) against the original as the oracle reads it
    in the unedited image (``before``): ``size_change`` (px, longer box side), ``shift`` (px, box
    centres), and whether each is within :data:`SIZE_TOL` / :data:`POS_TOL`. Nothing seen = not kept."""
    a, b = _box(seen.mask if seen.area >= MIN_AREA else None), _box(before.mask)
    if a is None or b is None:
        return {"size_change": float("nan"), "shift": float("nan"), "size_kept": False, "position_kept": False}
    side = lambda r: max(r[2] - r[0], r[3] - r[1])  # noqa: E731
    size_change = float(abs(side(a) - side(b)))
    shift = float(np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2))
    return {"size_change": size_change, "shift": shift, "size_kept": size_change <= SIZE_TOL, "position_kept": shift <= POS_TOL}


def rim_left(image, original: Obj, background) -> float:
    """The share (0–1) of the old object's outline left in ``image``: of the outline pixels of
    ``original`` (its mask minus its 1-px erosion), those whose RGB is closer to the object's colour
    (``original.rgb``) than to the clean ``background`` (HxWx3 uint8) at that pixel. 1.0 on the
    unedited scene, 0.0 on the clean background."""
    a = _as_uint8(image).astype(np.float64)
    bg = np.asarray(background, dtype=np.float64)
    if bg.shape != a.shape:
        raise ValueError(f"background shape {bg.shape} does not match the image's {a.shape}")
    rim = original.mask & ~erode_np(original.mask, 1)
    if not rim.any():
        raise ValueError(f"the original object ({original.colour} {original.shape}, box {original.box}) has an empty mask")
    p = a[rim]
    to_obj = np.linalg.norm(p - np.asarray(original.rgb, dtype=np.float64), axis=-1)
    to_bg = np.linalg.norm(p - bg[rim], axis=-1)
    return float((to_obj < to_bg).mean())


def removed(seen: Region, rim: float | None = None) -> bool:
    """The region shows no object at all (what an empty target should leave): fewer than
    :data:`MIN_AREA` shape pixels and, when ``rim`` (:func:`rim_left`) is given, less than
    :data:`RIM_MAX` of the old object's outline left."""
    if rim is not None and not 0.0 <= rim <= 1.0:
        raise ValueError(f"rim={rim!r} is not a share in [0, 1] (see rim_left)")
    return seen.area < MIN_AREA and (rim is None or rim < RIM_MAX)
