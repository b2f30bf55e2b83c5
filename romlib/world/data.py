"""Training batches of the embedded world: inpainting (with paired sources and removals), referring
segmentation and ranking. Every batch is a pure function of the generator passed in.

**Inpainting** (:func:`inpaint_example`, :func:`inpaint_batch`): a scene, one object ``i``, a hole over it
(its visible mask dilated by a random k, with or without its shadow, or a bigger ellipse / rounded box
containing it, so the hole's outline does not tell the shape), never over another object's pixels. Each
example is one ``kind``:

=============  ========================================  =================================  ===========
kind           x0 (``image``)                            ``source`` under the hole          ``text``
=============  ========================================  =================================  ===========
``edit``       the scene                                 a counterfactual (``p_pair``) or    description
                                                         the blank hole (GLIDE)              or ref. exp.
``drop``       the scene                                 the object itself (``p_drop_        ``""``
                                                         source``) or the blank hole
``remove``     the scene without object i and its        the blank hole                     ``""``
               shadow (inside the hole)
``background`` the scene (the hole covers floor/wall     the blank hole                     ``""``
               only)
=============  ========================================  =================================  ===========

The counterfactual source keeps every attribute the caption does not name (pose, size, position,
material, brightness…) and changes each one it names with probability 3/4 (so it sometimes already
agrees). Outside the hole ``source`` equals ``image``.

**The empty caption is shared** by removal and by the unconditional branch ∅ that CF/CCF subtract. Over a
*blank* hole ∅ means what GLIDE's unconditional inpainting means: continue the background (the ``remove`` and
``background`` examples; a ``drop`` example always shows its object, ``p_drop_source`` = 1). Over a *shown*
object (CCF's ∅ sees the original under the hole) ∅ means "keep it" (the ``drop`` examples). So an empty target
yields floor or wall, and CF's direction ε(c) − ε(∅) is "this object versus nothing" while CCF's is "this
object versus the one that is there" — the paper's contrast. (Until 2026-12-07 the default was
``p_drop_source`` = ½: half the ``drop`` examples put "some object" under a blank ∅, and removals came out as
grey ghosts, half floor and half object: docs/world_training.md.)

**Sizes**: every image is rendered in the 64 px frame; ``size=32`` averages 2×2 blocks (the same scene),
holes are max-pooled (a 32 px hole pixel is any of its 2×2 block in the hole, so the hole still contains
the object and ``image == source`` outside it).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..rank import ranking_inputs
from .language import (ATTRS, VOCAB, WorldTokenizer, describe, needs_context, parse_text,
                       sample_expression)
from .render import SIZE, downsample, render_all, render_float, shadow_masks
from .scene import (COLOURS, LARGE_RANGE, MATERIALS, SHAPES, SIZE_SPLIT, SMALL_RANGE, Scene, make_scene)

__all__ = ["VOCAB", "tokenizer", "inpaint_example", "inpaint_batch", "segment_batch", "rank_batch", "dilate",
           "perturb", "counterfactual", "object_hole", "N_MAX"]

N_MAX = 3  # objects per scene at most (masks_all's second dimension)


def tokenizer() -> WorldTokenizer:
    """The world's one-word-per-token tokenizer (``TextTokenizer.batch(texts, TEXT_CTX)`` → ids, mask)."""
    return WorldTokenizer()


# ----------------------------------------------------------------------------- masks
def dilate(mask: np.ndarray, k: int = 1) -> np.ndarray:
    """Binary dilation by a (2k+1)² square (bool [H, W])."""
    m = np.asarray(mask, bool)
    for axis in (0, 1):
        out = m.copy()
        for s in range(1, k + 1):
            if axis == 0:
                out[s:] |= m[:-s]
                out[:-s] |= m[s:]
            else:
                out[:, s:] |= m[:, :-s]
                out[:, :-s] |= m[:, s:]
        m = out
    return m


def _pool_max(mask: np.ndarray, size: int) -> np.ndarray:
    if size == SIZE:
        return mask
    f = SIZE // size
    return mask.reshape(size, f, size, f).any(axis=(1, 3))


_YS, _XS = np.mgrid[0:SIZE, 0:SIZE] + 0.5


def _container(rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    """A random ellipse or rounded box that contains ``region`` (bool [64, 64]), 5–30 % larger than its box."""
    ys, xs = np.nonzero(region)
    cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
    hw, hh = (xs.max() + 1 - xs.min()) / 2, (ys.max() + 1 - ys.min()) / 2
    grow = rng.uniform(1.05, 1.3)
    cx, cy = cx + rng.uniform(-0.1, 0.1) * hw, cy + rng.uniform(-0.1, 0.1) * hh
    u, v = np.abs(_XS - cx), np.abs(_YS - cy)
    for f in np.arange(grow, grow + 1.5, 0.1):
        if rng.random() < 0.5:
            m = (u / (hw * f * 1.25)) ** 2 + (v / (hh * f * 1.25)) ** 2 <= 1
        else:
            r = min(hw, hh) * f * 0.4
            qx, qy = np.maximum(u - hw * f + r, 0), np.maximum(v - hh * f + r, 0)
            m = (u <= hw * f) & (v <= hh * f) & (qx ** 2 + qy ** 2 <= r ** 2)
        if not (region & ~m).any():
            return m
    return dilate(region, 2)


def object_hole(rng: np.random.Generator, scene: Scene, i: int, visible: np.ndarray, style: str = "any") -> np.ndarray:
    """The training hole for object ``i`` (bool [64, 64], True = edit): its visible mask (∪ its shadow,
    half the time) dilated by k ∈ 1..4 (``style="mask"``; 30 % of ``"any"``), or a containing ellipse /
    rounded box (``"container"``; 70 % of ``"any"``); minus the other objects' visible pixels (dilated
    1 px), plus every pixel object ``i`` tints."""
    if style not in ("any", "mask", "container"):
        raise ValueError(f"hole style must be 'any', 'mask' or 'container', got {style!r}")
    own = visible[i] > 0.02  # every pixel the object tints, anti-aliased rim included
    region = own | (shadow_masks(scene)[i] > 0.3 if rng.random() < 0.5 else False)
    if style == "mask" or (style == "any" and rng.random() < 0.3):
        hole = dilate(region, int(rng.integers(1, 5)))
    else:
        hole = _container(rng, region)
    for j in range(len(scene.objects)):
        if j != i:
            hole &= ~dilate(visible[j] > 0.5, 1)
    return hole | own


def _background_hole(rng: np.random.Generator, scene: Scene, visible: np.ndarray) -> np.ndarray | None:
    """An ellipse (12–28 px) over floor or wall only, clear of every object and shadow, or None."""
    taken = dilate((visible.max(0) > 0.02) | (shadow_masks(scene).max(0) > 0.05), 2) if len(visible) else \
        np.zeros((SIZE, SIZE), bool)
    for _ in range(10):
        a, b = rng.uniform(6, 14, size=2)
        cx, cy = rng.uniform(a, SIZE - a), rng.uniform(b, SIZE - b)
        m = ((_XS - cx) / a) ** 2 + ((_YS - cy) / b) ** 2 <= 1
        if not (m & taken).any():
            return m
    return None


# ----------------------------------------------------------------------------- captions and sources
def _caption(rng: np.random.Generator, scene: Scene, i: int, p_drop: float, p_partial: float, p_ref: float) -> str:
    """"" (``p_drop``), else a referring expression (``p_ref``), a partial description naming 1–2 attributes
    (``p_partial``) or a full one ("a large shiny red cube")."""
    if rng.random() < p_drop:
        return ""
    o = scene.objects[i]
    r = rng.random()
    if r < p_ref:
        ref = sample_expression(rng, scene, i)
        if ref is not None:
            return ref
    if r < p_ref + p_partial:
        n = int(rng.integers(1, 3))
        keep = sorted(rng.choice(len(ATTRS), size=n, replace=False))
        return describe(o, tuple(ATTRS[k] for k in keep))
    return describe(o)


def _other(rng: np.random.Generator, values, current):
    choices = [v for v in values if v != current]
    return choices[int(rng.integers(len(choices)))]


def counterfactual(rng: np.random.Generator, scene: Scene, i: int, text: str, p_change: float = 0.75) -> Scene:
    """The scene with object ``i`` turned into a *source*: each attribute ``text``'s head names changes
    (probability ``p_change``) to another value; every other field (angle, size, position, brightness and
    the unnamed attributes) stays. A changed size class keeps the foot on the floor where it was."""
    o = scene.objects[i]
    named = parse_text(text).named if text else {}
    changes: dict = {}
    for key, values in (("shape", SHAPES), ("colour", tuple(COLOURS)), ("material", MATERIALS)):
        if key in named and rng.random() < p_change:
            changes[key] = _other(rng, values, getattr(o, key))
    if "size" in named and rng.random() < p_change:
        size = float(rng.uniform(*(LARGE_RANGE if o.size < SIZE_SPLIT else SMALL_RANGE)))
        changes.update(size=size, y=o.base - size / 2)
    return scene.replace_object(i, **changes) if changes else scene


# ----------------------------------------------------------------------------- inpainting
def inpaint_example(rng: np.random.Generator, *, size: int = 64, p_drop: float = 0.2, p_pair: float = 0.5,
                    p_remove: float = 0.1, p_background: float = 0.15, p_drop_source: float = 1.0,
                    p_partial: float = 0.3, p_ref: float = 0.25, remove_hole: str = "any", edit_hole: str = "target",
                    scene: Scene | None = None) -> dict:
    """One inpainting example (numpy): ``image`` and ``source`` float32 [size, size, 3] in 0–255,
    ``keep`` bool [size, size] (True = keep), ``text``, ``kind`` (edit/drop/remove/background), ``index``
    (the object, −1 for background), ``scene``, ``size``, ``source_scene`` (the counterfactual whose outline an
    edit's hole follows, else None). See the module docstring for the recipes;
    ``remove_hole``: the hole style of removal examples (:func:`object_hole`; "mask" = only dilated masks,
    the holes a segmenter and a dilation give at inference). ``edit_hole``: whose outline an ``edit`` example's
    hole follows — ``"target"`` (the target object's own, the shipped base's recipe: a dilated-mask hole then
    tells the model the shape to draw, which a segmenter's mask of the *old* object never does at inference) or
    ``"source"`` (the counterfactual's, the object that is there at inference, ∪ the target's pixels, whether or
    not the source is shown; tested 7 Dec without changing the drawn shapes, docs/world_training.md)."""
    if edit_hole not in ("source", "target"):
        raise ValueError(f"edit_hole must be 'source' or 'target', got {edit_hole!r}")
    scene = make_scene(rng) if scene is None else scene
    img, vis, _ = render_all(scene)
    out = {"scene": scene, "size": size}
    hole, kind, i, text = None, None, -1, ""
    if rng.random() < p_background:
        hole = _background_hole(rng, scene, vis)
        kind = "background" if hole is not None else None
    source, cf = None, None  # None = the blank hole (GLIDE's masked image)
    if hole is None:
        i = int(rng.integers(len(scene.objects)))
        if rng.random() < p_remove:
            kind = "remove"
            hole = object_hole(rng, scene, i, vis, remove_hole)
            img = np.where(hole[..., None], render_float(scene.without(i)), img)
        else:
            text = _caption(rng, scene, i, p_drop, p_partial, p_ref)
            kind = "edit" if text else "drop"
            if kind == "edit" and edit_hole == "source":  # the hole of the object that is there, holding the target
                cf = counterfactual(rng, scene, i, text)
                cf_img, cf_vis, _ = render_all(cf)
                hole = object_hole(rng, cf, i, cf_vis)
                for j in range(len(scene.objects)):
                    if j != i:
                        hole &= ~dilate(vis[j] > 0.5, 1)
                hole |= vis[i] > 0.02  # every pixel the target tints
                if rng.random() < p_pair:
                    source = np.where(hole[..., None], cf_img, img)
            else:
                hole = object_hole(rng, scene, i, vis)
                if kind == "drop" and rng.random() < p_drop_source:
                    source = img
                elif kind == "edit" and rng.random() < p_pair:
                    source = np.where(hole[..., None], render_float(counterfactual(rng, scene, i, text)), img)
    hole_s = _pool_max(hole, size)
    image = downsample(img, size).astype(np.float32, copy=False)
    blank = np.where(hole_s[..., None], 127.5, image).astype(np.float32, copy=False)  # 0 in [−1, 1]
    out.update(image=image, source=blank if source is None else downsample(source, size).astype(np.float32, copy=False),
               keep=~hole_s, text=text, kind=kind, index=i, paired=source is not None, source_scene=cf)
    return out


def _to_tensor(images) -> torch.Tensor:
    """[H, W, 3] arrays in 0–255 → [B, 3, H, W] float32 in [−1, 1]."""
    x = np.stack(images).astype(np.float32, copy=False).transpose(0, 3, 1, 2) * np.float32(1 / 127.5) - np.float32(1)
    return torch.from_numpy(np.ascontiguousarray(x))


def inpaint_batch(rng: np.random.Generator, batch_size: int, *, size: int = 64, **recipe) -> dict:
    """A batch of :func:`inpaint_example` s as tensors: ``image`` (x0) and ``source`` [B, 3, size, size] in
    [−1, 1]; ``keep`` [B, 1, size, size] float {0, 1} (1 = keep, GLIDE's convention); ``text`` list[str];
    ``size`` int; also ``kind`` list[str], ``index`` list[int], ``paired`` bool [B], ``scenes`` list[Scene]."""
    ex = [inpaint_example(rng, size=size, **recipe) for _ in range(batch_size)]
    return {"image": _to_tensor([e["image"] for e in ex]), "source": _to_tensor([e["source"] for e in ex]),
            "keep": torch.from_numpy(np.stack([e["keep"] for e in ex]))[:, None].float(),
            "text": [e["text"] for e in ex], "size": size, "kind": [e["kind"] for e in ex],
            "index": [e["index"] for e in ex], "paired": torch.tensor([e["paired"] for e in ex]),
            "scenes": [e["scene"] for e in ex]}


# ----------------------------------------------------------------------------- segmentation
def segment_batch(rng: np.random.Generator, batch_size: int, *, size: int = 64, p_context: float = 0.6,
                  lookalike: float = 0.7) -> dict:
    """Referring segmentation: ``image`` [B, 3, size, size] in [−1, 1]; ``text`` (referring expressions;
    ``p_context`` of them need a relation/position/comparison because a look-alike matches the head);
    ``mask`` [B, 1, size, size] {0, 1} the referred object's visible mask; ``masks_all`` [B, N_MAX, size,
    size] every object's visible mask (zeros past ``count``); ``count`` long [B]; ``boxes`` [B, N_MAX, 4]
    (x0, y0, x1, y1) / size of each visible mask; ``index`` long [B] (the referred one in masks_all);
    ``context`` bool [B]; ``scenes``."""
    images, texts, masks_all, counts, index, context, scenes = [], [], [], [], [], [], []
    while len(texts) < batch_size:
        scene = make_scene(rng, lookalike=lookalike)
        i = int(rng.integers(len(scene.objects)))
        text = sample_expression(rng, scene, i, p_context=p_context)
        if text is None:
            continue
        img, vis, _ = render_all(scene, size)
        m = np.zeros((N_MAX, size, size), np.float32)
        m[:len(vis)] = vis > 0.5
        images.append(img), texts.append(text), masks_all.append(m), counts.append(len(vis)), index.append(i)
        context.append(needs_context(scene, text)), scenes.append(scene)
    masks_all = torch.from_numpy(np.stack(masks_all))
    idx = torch.tensor(index)
    ys, xs = torch.arange(size).view(1, 1, -1, 1), torch.arange(size).view(1, 1, 1, -1)
    on = masks_all > 0
    big = size + 1
    boxes = torch.stack([torch.where(on, xs, big).amin((2, 3)), torch.where(on, ys, big).amin((2, 3)),
                         torch.where(on, xs + 1, -1).amax((2, 3)), torch.where(on, ys + 1, -1).amax((2, 3))], -1)
    boxes = torch.where(on.any((2, 3))[..., None], boxes.float() / size, torch.zeros(()))
    return {"image": _to_tensor(images), "text": texts, "mask": masks_all[torch.arange(len(idx)), idx][:, None],
            "masks_all": masks_all, "count": torch.tensor(counts), "boxes": boxes, "index": idx,
            "context": torch.tensor(context), "scenes": scenes}


# ----------------------------------------------------------------------------- ranking
def perturb(rng: np.random.Generator, image: np.ndarray, *, blur: float = 1.0, noise: float = 8.0,
            jitter: float = 12.0) -> np.ndarray:
    """What a sample model's output looks like: the image (float or uint8 [H, W, 3], 0–255) blurred by a
    Gaussian of σ ~ U(0, ``blur``) px, a per-channel offset ~ U(±``jitter``) and pixel noise of σ ~
    U(0, ``noise``) levels. Returns float32 0–255."""
    x = np.asarray(image, np.float32)
    sigma = rng.uniform(0, blur)
    if sigma > 0.1:  # a separable 7-tap Gaussian, edges replicated
        r = np.arange(-3, 4, dtype=np.float32)
        k = np.exp(-r ** 2 / (2 * sigma ** 2))
        k = k / k.sum()
        p = np.pad(x, ((3, 3), (0, 0), (0, 0)), mode="edge")
        x = sum(k[j] * p[j:j + x.shape[0]] for j in range(7))
        p = np.pad(x, ((0, 0), (3, 3), (0, 0)), mode="edge")
        x = sum(k[j] * p[:, j:j + x.shape[1]] for j in range(7))
    out = x + rng.uniform(-jitter, jitter, size=3).astype(np.float32)
    out = out + rng.standard_normal(out.shape, dtype=np.float32) * np.float32(rng.uniform(0, noise))
    return np.clip(out, 0, 255).astype(np.float32, copy=False)


def rank_batch(rng: np.random.Generator, batch_size: int, *, size: int = 64, crop: int = 32
               ) -> tuple[torch.Tensor, list[str]]:
    """``(images [B, 3, crop, crop] in [0, 1], texts)`` for a tiny CLIP ranker: each image is exactly what
    :func:`romlib.rank.ranking_inputs` shows (the object's box ×1.3, or the masked frame) of a ``size`` px
    scene, perturbed like a sample (:func:`perturb`); its text is the object's full description
    ("a large shiny red cube"; ``parse_text(t).named`` gives its attributes for multi-positive losses)."""
    crops, texts = [], []
    for _ in range(batch_size):
        scene = make_scene(rng)
        i = int(rng.integers(len(scene.objects)))
        img, vis, _ = render_all(scene)
        x = _to_tensor([perturb(rng, img)])
        x = F.interpolate(x, size=(size, size), mode="area") if size != SIZE else x
        m = vis[i] > 0.5
        if rng.random() < 0.5:
            ys, xs = np.nonzero(m)
            s = size / SIZE
            box = tuple(float(v) * s + rng.uniform(-1, 1) for v in (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
            crops.append(ranking_inputs(x, "local", box=box, size=crop))
        else:
            hole = torch.from_numpy(_pool_max(dilate(m, int(rng.integers(0, 3))), size) if size != SIZE else
                                    dilate(m, int(rng.integers(0, 3))))[None, None].float()
            crops.append(ranking_inputs(x, "masked", edit_mask=hole, size=crop))
        texts.append(describe(scene.objects[i]))
    return torch.cat(crops), texts

