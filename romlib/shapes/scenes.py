"""ShapesWorld scenes: coloured shapes on textured backgrounds, with exact masks and texts.

A scene is a 32×32 RGB image with one to three non-overlapping shapes (5 colours × 3 shapes,
8–12 px, axis-aligned, flat colour with a small per-object brightness jitter) on a muted,
non-flat background (gradient, stripes, checks or smooth noise). Everything is a pure function
of a seed: ``make_scene(seed)`` always returns the same scene.

The closed language (one word per token, :class:`WordTokenizer`):

=================  ==========================================================================
caption            ``a red circle and a blue square``
description        ``a red circle``, ``a circle``, ``a red shape`` (target texts; ≥ 1 attribute)
referring exp.     ``the red circle``, ``the circle on the left``, ``the shape at the top``
=================  ==========================================================================

Positions are relative: "the circle on the left" is the leftmost of the circles (by at least
:data:`POSITION_MARGIN` px), or the only circle when its centre lies left of the image's middle by 2 px or more.
Notebooks and :mod:`romlib.shapes.bench` use :func:`make_scene`, :func:`referring_expressions`
and :func:`describe`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..io import quote
from ..models.tokenizers import TextTokenizer

__all__ = ["SIZE", "COLOURS", "SHAPES", "POSITIONS", "VOCAB", "Obj", "Scene", "make_scene", "render_shape",
           "render_background", "describe", "referring_expressions", "parse_text", "Parsed", "matches",
           "WordTokenizer", "dilate_np", "erode_np"]

SIZE = 32
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 210, 40),
    "purple": (150, 50, 210),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS = {"left": ("on", "left"), "right": ("on", "right"), "top": ("at", "top"), "bottom": ("at", "bottom")}
MIN_SIDE, MAX_SIDE = 8, 12  # object bounding-box side in pixels
GAP = 4  # minimum distance in pixels between two objects' boxes
POSITION_MARGIN = 3  # px by which "the ... on the left" must beat the next candidate
COLOUR_JITTER = 10  # ± per-object brightness offset (the oracle still names it exactly)

VOCAB = ("<end>", "a", "the", *COLOURS, *SHAPES, "shape", "on", "at", "left", "right", "top", "bottom", "and")


# ----------------------------------------------------------------------------- rendering
def render_shape(shape: str, box: tuple[float, float, float, float], height: int = SIZE, width: int = SIZE) -> np.ndarray:
    """Bool mask [H, W] of ``shape`` filling ``box`` = (x0, y0, x1, y1) (pixel edges; a pixel is in
    when its centre is): the inscribed ellipse (circle), the box (square), or the triangle with
    its apex at the top middle and its base on the bottom edge (triangle)."""
    x0, y0, x1, y1 = box
    ys, xs = np.mgrid[0:height, 0:width]
    px, py = xs + 0.5, ys + 0.5
    inside = (px >= x0) & (px <= x1) & (py >= y0) & (py <= y1)
    if shape == "square":
        return inside
    cx, w, h = (x0 + x1) / 2, max(x1 - x0, 1e-6), max(y1 - y0, 1e-6)
    if shape == "circle":
        cy = (y0 + y1) / 2
        return ((px - cx) / (w / 2)) ** 2 + ((py - cy) / (h / 2)) ** 2 <= 1.0
    if shape == "triangle":
        return inside & (np.abs(px - cx) <= (py - y0) / h * w / 2)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render_background(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A muted (low-saturation), non-flat background [H, W, 3] uint8: a gradient, stripes,
    checks or smooth noise around a grey-ish base colour."""
    base = rng.uniform(70, 190) + rng.uniform(-18, 18, size=3)  # channel spread < 36: never a palette colour
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    kind = rng.integers(4)
    if kind == 0:  # linear gradient in a random direction
        a = rng.uniform(0, 2 * np.pi)
        pat = ((xs - size / 2) * np.cos(a) + (ys - size / 2) * np.sin(a)) / size * rng.uniform(25, 50)
    elif kind == 1:  # stripes
        a, period = rng.uniform(0, np.pi), rng.uniform(4, 9)
        pat = np.sin(2 * np.pi * (xs * np.cos(a) + ys * np.sin(a)) / period) * rng.uniform(8, 16)
    elif kind == 2:  # checks
        cell = int(rng.integers(3, 7))
        pat = (((xs // cell) + (ys // cell)) % 2 * 2 - 1) * rng.uniform(6, 13)
    else:  # smooth noise: a coarse random grid, bilinearly upsampled
        g = rng.normal(0, 1, size=(5, 5))
        t = np.linspace(0, 4, size)
        i0 = np.minimum(t.astype(int), 3)
        f = t - i0
        rows = g[i0] * (1 - f)[:, None] + g[i0 + 1] * f[:, None]
        pat = (rows[:, i0] * (1 - f)[None] + rows[:, i0 + 1] * f[None]) * rng.uniform(8, 14)
    img = base[None, None, :] + pat[..., None] * rng.uniform(0.8, 1.2, size=3)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def dilate_np(mask: np.ndarray, px: int = 1) -> np.ndarray:
    """Binary dilation by a (2·px+1)² square."""
    m = mask.astype(bool)
    for _ in range(px):
        p = np.pad(m, 1)
        m = p[1:-1, 1:-1] | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:] | p[:-2, :-2] | p[:-2, 2:] | p[2:, :-2] | p[2:, 2:]
    return m


def erode_np(mask: np.ndarray, px: int = 1) -> np.ndarray:
    """Binary erosion by a (2·px+1)² square (the image border does not erode)."""
    return ~dilate_np(~mask.astype(bool), px)


# ----------------------------------------------------------------------------- scenes
@dataclass
class Obj:
    """One shape: its colour and shape names, box (x0, y0, x1, y1) in pixel edges, exact mask."""

    colour: str
    shape: str
    box: tuple[int, int, int, int]
    mask: np.ndarray = field(repr=False)
    rgb: tuple[int, int, int] = (0, 0, 0)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2

    @property
    def side(self) -> int:
        return self.box[2] - self.box[0]


@dataclass
class Scene:
    """A rendered scene: ``image`` [H, W, 3] uint8, ``background`` (the same without shapes),
    ``objects`` (drawing order), and the ``seed`` it came from."""

    image: np.ndarray = field(repr=False)
    background: np.ndarray = field(repr=False)
    objects: list[Obj]
    seed: int | None = None

    @property
    def caption(self) -> str:
        parts = [describe(o) for o in self.objects]
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]

    def pil(self):
        from PIL import Image

        return Image.fromarray(self.image)

    def with_object(self, index: int, colour: str | None = None, shape: str | None = None, rng=None) -> "Scene":
        """The same scene with object ``index`` redrawn with another colour and/or shape in the
        same box (the counterfactual 'what the edit should look like')."""
        o = self.objects[index]
        new = Obj(colour or o.colour, shape or o.shape, o.box, render_shape(shape or o.shape, o.box, *self.image.shape[:2]),
                  _jitter(COLOURS[colour or o.colour], rng) if rng is not None else COLOURS[colour or o.colour])
        objs = list(self.objects)
        objs[index] = new
        return Scene(_compose(self.background, objs), self.background, objs, self.seed)

    def without_object(self, index: int) -> "Scene":
        """The same scene with object ``index`` removed: its pixels are the clean background (what an
        empty target should produce; the removal examples of ``romlib shapes-train --p-remove``)."""
        objs = [o for j, o in enumerate(self.objects) if j != index]
        return Scene(_compose(self.background, objs), self.background, objs, self.seed)


def _jitter(rgb, rng) -> tuple[int, int, int]:
    d = int(rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1))
    return tuple(int(np.clip(c + d, 0, 255)) for c in rgb)


def _compose(background: np.ndarray, objects: list[Obj]) -> np.ndarray:
    img = background.copy()
    for o in objects:
        img[o.mask] = o.rgb
    return img


def _boxes_apart(a, b, gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _layout(rng: np.random.Generator, n: int, size: int) -> list[tuple[int, int, int, int]]:
    """Boxes placed one after another by rejection sampling, at least :data:`GAP` px apart."""
    for _ in range(1000):
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(n):
            s = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
            for _ in range(30):
                x0, y0 = int(rng.integers(1, size - s)), int(rng.integers(1, size - s))
                box = (x0, y0, x0 + s, y0 + s)
                if all(_boxes_apart(box, b, GAP) for b in boxes):
                    boxes.append(box)
                    break
            else:
                break
        if len(boxes) == n:
            return boxes
    raise RuntimeError(f"could not place {n} objects in {size}x{size}")  # pragma: no cover


def make_scene(seed: int | np.random.Generator, n_objects: int | None = None, size: int = SIZE,
               colours: list[str] | None = None, shapes: list[str] | None = None) -> Scene:
    """A random scene, deterministic in ``seed``: ``n_objects`` (default 1–3) shapes with
    random colour, shape, size and position, at least :data:`GAP` px apart."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n = int(rng.integers(1, 4)) if n_objects is None else int(n_objects)
    if not 1 <= n <= 3:
        raise ValueError(f"n_objects must be 1, 2 or 3, got {n_objects!r}")
    background = render_background(rng, size)
    boxes = _layout(rng, n, size)
    objs = []
    for i, box in enumerate(boxes):
        c = colours[i] if colours else str(rng.choice(list(COLOURS)))
        s = shapes[i] if shapes else str(rng.choice(SHAPES))
        objs.append(Obj(c, s, box, render_shape(s, box, size, size), _jitter(COLOURS[c], rng)))
    return Scene(_compose(background, objs), background, objs, seed if isinstance(seed, int) else None)


# ----------------------------------------------------------------------------- language
def describe(obj_or_attrs, *, colour: bool = True, shape: bool = True, article: str = "a") -> str:
    """``a red circle`` / ``a circle`` / ``a red shape`` (``article="the"`` for references)."""
    c, s = (obj_or_attrs.colour, obj_or_attrs.shape) if isinstance(obj_or_attrs, Obj) else obj_or_attrs
    if not (colour or shape):
        return f"{article} shape"
    return " ".join([article] + ([c] if colour else []) + ([s] if shape else ["shape"]))


@dataclass(frozen=True)
class Parsed:
    """What a ShapesWorld text says: ``colour``/``shape`` (None = not named), ``position``
    (left/right/top/bottom or None), ``definite`` (``the`` vs ``a``); ``empty`` for ''."""

    colour: str | None = None
    shape: str | None = None
    position: str | None = None
    definite: bool = False
    empty: bool = False

    @property
    def named(self) -> dict:
        return {k: v for k, v in (("colour", self.colour), ("shape", self.shape)) if v is not None}


_WORD = re.compile(r"[a-z]+")


def _words(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    bad = [w for w in words if w not in VOCAB]
    if bad:
        raise ValueError(f"{quote(text)}: unknown word(s) {quote(' '.join(bad))} for ShapesWorld; its vocabulary is "
                         f"{list(VOCAB[1:])}")
    return words


def parse_text(text: str) -> Parsed:
    """Parse a description or referring expression of the ShapesWorld language (raises
    ``ValueError`` naming unknown words). Captions with several objects are not accepted."""
    words = _words(text)
    if not words:
        return Parsed(empty=True)
    colour = next((w for w in words if w in COLOURS), None)
    shape = next((w for w in words if w in SHAPES), None)
    position = next((w for w in words if w in POSITIONS), None)
    if sum(w in COLOURS for w in words) > 1 or sum(w in SHAPES for w in words) > 1 or "and" in words:
        raise ValueError(f"{quote(text)} names more than one object; describe one, e.g. 'the red circle'")
    return Parsed(colour, shape, position, definite=words[0] == "the")


def matches(obj: Obj, parsed: Parsed) -> bool:
    """Whether ``obj`` has every attribute ``parsed`` names (position aside)."""
    return all(getattr(obj, k) == v for k, v in parsed.named.items())


def _extreme(objs: list[Obj], position: str) -> tuple[int, float]:
    """Index of the extreme object in ``position`` and its margin over the runner-up (px)."""
    axis, sign = {"left": (0, 1), "right": (0, -1), "top": (1, 1), "bottom": (1, -1)}[position]
    keys = [sign * o.centre[axis] for o in objs]
    order = np.argsort(keys, kind="stable")
    margin = keys[order[1]] - keys[order[0]] if len(objs) > 1 else float("inf")
    return int(order[0]), float(margin)


def resolve(objects: list[Obj], parsed: Parsed, size: int = SIZE) -> tuple[int | None, str]:
    """Which object a referring expression picks, with the reason when none (ambiguous / absent)."""
    cands = [i for i, o in enumerate(objects) if matches(o, parsed)]
    if not cands:
        return None, "no object has these attributes"
    if parsed.position is None:
        return (cands[0], "") if len(cands) == 1 else (None, "ambiguous: several objects match")
    if len(cands) == 1:
        o = objects[cands[0]]
        axis = 0 if parsed.position in ("left", "right") else 1
        c = o.centre[axis]
        ok = c < size / 2 - 2 if parsed.position in ("left", "top") else c > size / 2 + 2
        return (cands[0], "") if ok else (None, f"the only match is not at the {parsed.position}")
    j, margin = _extreme([objects[i] for i in cands], parsed.position)
    return (cands[j], "") if margin >= POSITION_MARGIN else (None, "ambiguous position")


def referring_expressions(scene: Scene, index: int) -> list[str]:
    """Every unambiguous referring expression of object ``index`` in ``scene``, simplest first
    (none for the middle one of three identical shapes)."""
    o = scene.objects[index]
    out = []
    for pos in (None, *POSITIONS):
        for use_c, use_s in ((True, True), (False, True), (True, False), (False, False)):
            p = Parsed(o.colour if use_c else None, o.shape if use_s else None, pos, definite=True)
            if resolve(scene.objects, p, scene.image.shape[1])[0] == index:
                text = describe(o, colour=use_c, shape=use_s, article="the")
                if pos:
                    text += " " + " ".join((POSITIONS[pos][0], "the", pos))
                out.append(text)
    return out


# ----------------------------------------------------------------------------- tokenizer
class WordTokenizer(TextTokenizer):
    """One token per word of the closed ShapesWorld vocabulary (:data:`VOCAB`); ``<end>`` (0)
    pads. Unknown words raise ``ValueError`` naming them and the vocabulary."""

    end_token = 0
    n_vocab = len(VOCAB)

    def __init__(self):
        self.ids = {w: i for i, w in enumerate(VOCAB)}

    def encode(self, text: str) -> list[int]:
        return [self.ids[w] for w in _words(text)]

    def decode(self, tokens) -> str:
        return " ".join(VOCAB[int(t)] for t in tokens if int(t) != self.end_token)
