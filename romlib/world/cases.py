"""Edit cases of the embedded world: a scene, the object to edit, its referring expression and a target.

A case is a pure function of ``(seed, index)`` (its own generator, ``default_rng([seed, index])``), so a
held-out seed gives cases no table or tuning has seen, and case ``index`` is the same however many are made.
The target's **kind** cycles through :data:`KINDS` by index:

==============  =====================================  ==========================================
kind            target                                 what it leaves free (CCF should keep it)
==============  =====================================  ==========================================
``both``        ``a blue cone``: colour and shape       material, size, pose, position
``colour``      ``a blue one``                          shape, material, size, pose, position
``shape``       ``a cone``                              colour, material, size, pose, position
``material``    ``a striped one``                       colour, shape, size, pose, position
``remove``      ``""``: the empty target (removal)      — (the hole should become background)
==============  =====================================  ==========================================

Each named value differs from the object's own. :func:`example` is the backend's example input (the notebooks'
``example="world"``, ``romlib demo --backend world``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .language import describe, needs_context, sample_expression
from .render import render_all
from .scene import COLOURS, MATERIALS, SHAPES, Scene, make_scene

__all__ = ["KINDS", "CHOICES", "WorldCase", "make_case", "make_cases", "select_case", "missing_phrase", "example"]

KINDS = ("both", "colour", "shape", "material", "remove")
#: which attributes each kind's target names
NAMED = {"both": ("colour", "shape"), "colour": ("colour",), "shape": ("shape",), "material": ("material",), "remove": ()}
_VALUES = {"colour": tuple(COLOURS), "shape": SHAPES, "material": MATERIALS}


@dataclass(frozen=True)
class WorldCase:
    """One edit case: ``scene``, the edited object ``i``, ``ref`` (resolves to it), ``target``, ``kind``
    (:data:`KINDS`), ``context`` (the ref needs a relation: a look-alike shares its head), ``seed``, ``index``."""

    seed: int
    index: int
    scene: Scene
    i: int
    ref: str
    target: str
    kind: str
    context: bool

    @cached_property
    def _render(self):
        return render_all(self.scene)

    @property
    def image(self) -> np.ndarray:
        """The scene, uint8 [64, 64, 3]."""
        return np.clip(np.round(self._render[0]), 0, 255).astype(np.uint8)

    @property
    def mask(self) -> np.ndarray:
        """The edited object's visible mask, bool [64, 64] (what a perfect segmenter returns)."""
        return self._render[1][self.i] > 0.5

    @property
    def masks(self) -> np.ndarray:
        """Every object's visible mask, bool [N, 64, 64] (``masks[i]`` is :attr:`mask`)."""
        return self._render[1] > 0.5

    def pil(self):
        from PIL import Image

        return Image.fromarray(self.image)


def _target(rng: np.random.Generator, obj, kind: str) -> str:
    if kind == "remove":
        return ""
    attrs = obj.attrs()
    new = {k: [v for v in _VALUES[k] if v != attrs[k]][int(rng.integers(len(_VALUES[k]) - 1))] for k in NAMED[kind]}
    return describe(new, tuple(k for k in ("material", "colour", "shape") if k in new))


def make_case(seed: int, index: int, kind: str | None = None) -> WorldCase:
    """Case ``index`` of the stream for ``seed`` (``kind``: :data:`KINDS`, default ``KINDS[index % 5]``)."""
    kind = KINDS[index % len(KINDS)] if kind is None else kind
    if kind not in KINDS:
        raise ValueError(f"unknown case kind {kind!r}; expected one of {KINDS}")
    rng = np.random.default_rng([int(seed), int(index)])
    for _ in range(100):
        scene = make_scene(rng, lookalike=0.6)
        i = int(rng.integers(len(scene.objects)))
        ref = sample_expression(rng, scene, i, p_context=0.5)
        if ref is not None:
            return WorldCase(int(seed), int(index), scene, i, ref, _target(rng, scene.objects[i], kind), kind,
                             needs_context(scene, ref))
    raise RuntimeError(f"no referable object in 100 scenes for seed {seed}, case {index}")  # pragma: no cover


def make_cases(n: int, seed: int = 0, kinds=KINDS) -> list[WorldCase]:
    """The first ``n`` cases of the stream for ``seed`` whose kind is in ``kinds`` (indices keep their place)."""
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"unknown case kind(s) {bad}; expected some of {KINDS}")
    out, index = [], 0
    while len(out) < n:
        if KINDS[index % len(KINDS)] in kinds:
            out.append(make_case(seed, index))
        index += 1
    return out


#: the notebooks' example kinds (:func:`select_case`): the target kinds, plus ``"distractors"`` (three objects,
#: the expression needs a relation because a look-alike shares its head word) and ``"removal"`` (= ``"remove"``)
CHOICES = (*KINDS, "distractors", "removal")


def select_case(kind: str = "both", seed: int = 0, skip: int = 0) -> WorldCase:
    """The example a notebook shows for ``kind`` (:data:`CHOICES`), by a fixed rule, never by eye: the first
    case of the stream for ``seed`` of that kind (after ``skip`` of them); ``"distractors"``: the first case with
    three objects whose expression needs a relation (a look-alike shares its head)."""
    if kind not in CHOICES:
        raise ValueError(f"unknown example kind {kind!r}; expected one of {CHOICES}")
    kind = "remove" if kind == "removal" else kind
    if kind != "distractors":  # kinds cycle through KINDS by index
        return make_case(seed, KINDS.index(kind) + skip * len(KINDS))
    found = 0
    for index in range(10_000):
        case = make_case(seed, index)
        if case.context and len(case.scene.objects) == 3:
            if found == skip:
                return case
            found += 1
    raise RuntimeError(f"no {kind!r} case among the first 10000 of seed {seed}")  # pragma: no cover


def missing_phrase(image) -> str:
    """A referring expression that matches nothing in ``image`` (a world scene, PIL or uint8 array): "the <colour>
    <shape>" with the palette colour that the fewest of the image's saturated pixels are nearest to (so no object
    has it) and the first shape."""
    from .oracle import _PALETTE_HUE, hue

    h, s, v = hue(np.asarray(image, dtype=np.float32)[..., :3])
    vivid = h[(s >= 0.45) & (v >= 0.25)]
    names = list(_PALETTE_HUE)
    ref = np.array([_PALETTE_HUE[n] for n in names])
    nearest = np.abs((vivid[:, None] - ref[None] + 180) % 360 - 180).argmin(1)
    counts = np.bincount(nearest, minlength=len(names))
    return f"the {names[int(counts.argmin())]} {SHAPES[0]}"


def example(index: int = 0) -> tuple:
    """The backend's example input ``(image PIL 64×64, ref, target)``: case ``index`` of seed 0 whose target
    names colour and shape."""
    case = make_cases(index + 1, 0, kinds=("both",))[index]
    return case.pil(), case.ref, case.target
