"""The scene description of the embedded world: what is where, as numbers a renderer and an oracle share.

A :class:`Scene` is a :class:`Background` (a horizon: a wall above, a floor below with a pattern), a
light direction and one to three :class:`Obj` standing on the floor. Every field is a plain number or
name, so a scene is hashable, printable and the ground truth of every measurement. ``make_scene(seed)``
is a pure function of its seed.

Objects (named attributes are said in words, free ones are only numbers):

==========  =============================================  ========================================
attribute   values                                         words
==========  =============================================  ========================================
shape       cube, sphere, cylinder, cone                   named
colour      red, green, blue, yellow, purple, cyan         named
material    matte, shiny (specular highlight), striped     named
size        14–18 px (small) or 22–30 px (large), cont.    "small" / "large" (classes); free within
angle       rotation in degrees (see :data:`SYMMETRY`)      free (never said)
position    centre ``x``, ``y`` in pixels of the 64 frame   relations only ("left of", "in front")
brightness  a ±8 % albedo jitter                           free
==========  =============================================  ========================================

Depth is the object's base line ``y + size / 2`` (its foot on the floor): a larger base is nearer and is
drawn over the others (occlusion). Sizes do not shrink with depth, so "larger" always means the size
attribute.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

__all__ = ["SIZE", "COLOURS", "SHAPES", "MATERIALS", "SIZE_WORDS", "SYMMETRY", "SMALL_RANGE", "LARGE_RANGE",
           "Obj", "Background", "Scene", "make_scene", "random_object", "size_word"]

SIZE = 64  # the frame every scene is described in (pixels); 32 px images are box-downsampled from it
COLOURS: dict[str, tuple[int, int, int]] = {  # albedo (the lit colour before shading); hues ≥ 40° apart
    "red": (215, 45, 40),
    "yellow": (225, 195, 35),
    "green": (45, 175, 60),
    "cyan": (40, 185, 200),
    "blue": (55, 80, 225),
    "purple": (160, 60, 210),
}
_COLOUR_NAMES = tuple(COLOURS)
SHAPES = ("cube", "sphere", "cylinder", "cone")
MATERIALS = ("matte", "shiny", "striped")
SIZE_WORDS = ("small", "large")
SMALL_RANGE, LARGE_RANGE = (14.0, 18.0), (22.0, 30.0)
SIZE_SPLIT = 20.0  # below: "small"
MIN_APART = 0.8  # centres at least this × the mean size apart
#: the angle period (degrees) after which a shape's silhouette repeats; None = no visible orientation
#: (a sphere's angle is only seen through its stripes, period 180)
SYMMETRY: dict[str, float | None] = {"cube": 90.0, "sphere": None, "cylinder": 180.0, "cone": 360.0}
ANGLE_RANGE = {"cube": (-45.0, 45.0), "sphere": (-90.0, 90.0), "cylinder": (-40.0, 40.0), "cone": (-35.0, 35.0)}


def size_word(size: float) -> str:
    """``"small"`` below :data:`SIZE_SPLIT` px, else ``"large"``."""
    return "small" if size < SIZE_SPLIT else "large"


@dataclass(frozen=True)
class Obj:
    """One object: named ``shape``/``colour``/``material``; free ``x``, ``y`` (centre, px of the 64 frame),
    ``size`` (its height in px), ``angle`` (degrees, counter-clockwise), ``brightness`` (albedo factor)."""

    shape: str
    colour: str
    material: str
    x: float
    y: float
    size: float
    angle: float = 0.0
    brightness: float = 1.0

    def __post_init__(self):
        for name, value, allowed in (("shape", self.shape, SHAPES), ("colour", self.colour, tuple(COLOURS)),
                                     ("material", self.material, MATERIALS)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {allowed}")

    @property
    def base(self) -> float:
        """The y of the object's foot on the floor: its depth (larger = nearer)."""
        return self.y + self.size / 2

    @property
    def size_word(self) -> str:
        return size_word(self.size)

    def attrs(self) -> dict:
        """The named attributes, as words: shape, colour, material, size."""
        return {"shape": self.shape, "colour": self.colour, "material": self.material, "size": self.size_word}


@dataclass(frozen=True)
class Background:
    """The room: a wall above ``horizon`` (px) shading from ``wall`` at the top to ``wall2`` at the horizon,
    with optional vertical stripes (``wall_stripes`` period px, 0 = none); a floor below in ``floor`` and
    ``floor2`` laid out as ``pattern`` (checker, tiles, stripes-x: lines receding to the horizon,
    stripes-z: bands across, plain: a gradient) of ``period`` floor units, seen in perspective or flat."""

    horizon: float
    wall: tuple[int, int, int]
    wall2: tuple[int, int, int]
    floor: tuple[int, int, int]
    floor2: tuple[int, int, int]
    pattern: str = "checker"
    period: float = 8.0
    perspective: bool = True
    wall_stripes: float = 0.0
    offset: float = 0.0  # the pattern's phase (floor units)


PATTERNS = ("checker", "tiles", "stripes-x", "stripes-z", "plain")


@dataclass(frozen=True)
class Scene:
    """A whole scene: ``background``, ``objects`` (any order; depth comes from each base), ``light``
    (the light's direction in degrees from straight above, positive = from the right), ``seed``."""

    background: Background
    objects: tuple[Obj, ...]
    light: float = -30.0
    seed: int | None = None

    def replace_object(self, index: int, **changes) -> "Scene":
        """The same scene with object ``index``'s fields changed (``shape="cone"``, ``colour=…``)."""
        objs = list(self.objects)
        objs[index] = replace(objs[index], **changes)
        return replace(self, objects=tuple(objs))

    def without(self, index: int) -> "Scene":
        """The same scene with object ``index`` (and its shadow) taken away."""
        return replace(self, objects=tuple(o for j, o in enumerate(self.objects) if j != index))

    def depth_order(self) -> list[int]:
        """Object indices far to near (the drawing order; ties: listing order)."""
        return sorted(range(len(self.objects)), key=lambda j: (self.objects[j].base, j))


def _muted(rng: np.random.Generator, lo: float, hi: float, tint: float = 14.0) -> np.ndarray:
    return rng.uniform(lo, hi) + rng.uniform(-tint, tint, size=3)


def _rgb(a) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.round(a), 0, 255))


def random_background(rng: np.random.Generator) -> Background:
    """A muted room (channel spread < 40, never a palette colour) with a random floor pattern."""
    horizon = float(rng.uniform(14, 28))
    wall = _muted(rng, 120, 200)
    wall2 = wall + rng.uniform(-35, 25)
    floor = _muted(rng, 80, 170)
    contrast = rng.uniform(28, 60) * rng.choice([-1, 1])
    floor2 = floor + contrast + rng.uniform(-6, 6, size=3)
    pattern = str(rng.choice(PATTERNS, p=[0.3, 0.2, 0.15, 0.15, 0.2]))
    perspective = bool(rng.random() < 0.75)
    period = float(rng.uniform(8, 13) if perspective else rng.uniform(5, 10))
    return Background(horizon, _rgb(wall), _rgb(wall2), _rgb(floor), _rgb(floor2), pattern, period, perspective,
                      float(rng.uniform(4, 9)) if rng.random() < 0.3 else 0.0, float(rng.uniform(0, 2)))


def random_object(rng: np.random.Generator, *, shape: str | None = None, colour: str | None = None,
                  material: str | None = None, small: bool | None = None) -> Obj:
    """An object at the frame's centre with random (or the given) attributes; place it with ``replace``."""
    shape = shape or SHAPES[int(rng.integers(len(SHAPES)))]
    small = bool(rng.random() < 0.3) if small is None else small
    size = float(rng.uniform(*(SMALL_RANGE if small else LARGE_RANGE)))
    material = material or MATERIALS[int(np.searchsorted([0.4, 0.7], rng.random()))]
    return Obj(shape, colour or _COLOUR_NAMES[int(rng.integers(len(_COLOUR_NAMES)))], material,
               SIZE / 2, SIZE / 2, size, float(rng.uniform(*ANGLE_RANGE[shape])), float(rng.uniform(0.92, 1.08)))


def _place(rng: np.random.Generator, objs: list[Obj], horizon: float) -> list[Obj] | None:
    """Positions by rejection sampling: the foot below the horizon, the object inside the frame, centres at
    least :data:`MIN_APART` × the mean of two sizes apart (they may overlap: at most about a quarter of
    the farther one is hidden), and two feet never level where the objects overlap (a clear depth order)."""
    placed: list[Obj] = []
    for o in objs:
        h = o.size / 2
        for _ in range(40):
            x = float(rng.uniform(0.6 * o.size + 1, SIZE - 0.6 * o.size - 1))  # a turned cube reaches 0.59·size
            base = float(rng.uniform(max(horizon + 8, o.size + 1), SIZE - 1))
            cand = replace(o, x=x, y=base - h)
            if all(np.hypot(cand.x - p.x, cand.y - p.y) >= MIN_APART * (cand.size + p.size) / 2
                   and (abs(cand.base - p.base) >= 3 or abs(cand.x - p.x) >= (cand.size + p.size) / 2) for p in placed):
                placed.append(cand)
                break
        else:
            return None
    return placed


def make_scene(seed: int | np.random.Generator, n_objects: int | None = None, *, lookalike: float = 0.5,
               objects: list[dict] | None = None) -> Scene:
    """A random scene, deterministic in ``seed``: 1–3 objects (mostly 2–3), with probability ``lookalike``
    a second object that shares the first's shape or colour (or both, in another size or material: the
    distractor a referring expression must tell apart). ``objects``: per-object attribute overrides
    (``[{"shape": "cube", "colour": "red"}, …]``)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n = int(rng.choice([1, 2, 3], p=[0.15, 0.45, 0.4])) if n_objects is None else int(n_objects)
    if not 1 <= n <= 3:
        raise ValueError(f"n_objects must be 1, 2 or 3, got {n_objects!r}")
    background = random_background(rng)
    light = float(rng.uniform(-60, 60))
    for _ in range(100):
        objs = [random_object(rng, **((objects or [{}] * n)[i] if objects else {})) for i in range(n)]
        if n >= 2 and not objects and rng.random() < lookalike:
            keep = rng.integers(3)  # 0: same shape, 1: same colour, 2: both (then differ in size or material)
            o0 = objs[0]
            fields = {"shape": o0.shape} if keep == 0 else {"colour": o0.colour} if keep == 1 else \
                {"shape": o0.shape, "colour": o0.colour, "small": not o0.size < SIZE_SPLIT}
            objs[1] = random_object(rng, **fields)
        placed = _place(rng, objs, background.horizon)
        if placed is not None:
            return Scene(background, tuple(placed), light, seed if isinstance(seed, (int, np.integer)) else None)
    raise RuntimeError(f"could not place {n} objects")  # pragma: no cover
