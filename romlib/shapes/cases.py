"""The benchmark's edit cases (a fixed stream of scenes, referring expressions and targets) and the
notebooks' documented selection of them (:func:`select_cases`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scenes import COLOURS, describe, make_scene, parse_text, referring_expressions, Scene, SHAPES

__all__ = ["Case", "make_cases", "select_cases", "table_cases", "CASE_KINDS"]

CASE_KINDS = ("both", "colour", "shape", "distractors")


@dataclass
class Case:
    """One edit: ``scene``, the referred object ``obj`` (index), its referring expression
    ``ref`` and the ``target`` text."""

    index: int
    scene: Scene
    obj: int
    ref: str
    target: str

    @property
    def original(self):
        return self.scene.objects[self.obj]

    @property
    def others(self) -> list[np.ndarray]:
        return [o.mask for j, o in enumerate(self.scene.objects) if j != self.obj]


def make_cases(n: int = 200, seed: int = 0) -> list[Case]:
    """``n`` edit cases, deterministic in ``seed`` (a stream apart from the training data's)."""
    rng = np.random.default_rng([seed, 2022])
    cases = []
    for i in range(n):
        refs: list[str] = []
        while not refs:  # the middle one of three identical shapes cannot be referred to
            scene = make_scene(rng)
            k = int(rng.integers(len(scene.objects)))
            refs = referring_expressions(scene, k)
        o = scene.objects[k]
        ref = str(rng.choice(refs))
        kind = rng.choice(["both", "shape", "colour"], p=[0.5, 0.25, 0.25])
        if kind == "both":
            pairs = [(c, s) for c in COLOURS for s in SHAPES if (c, s) != (o.colour, o.shape)]
            target = describe(pairs[int(rng.integers(len(pairs)))])
        elif kind == "shape":
            target = describe((None, str(rng.choice([s for s in SHAPES if s != o.shape]))), colour=False)
        else:
            target = describe((str(rng.choice([c for c in COLOURS if c != o.colour])), None), shape=False)
        cases.append(Case(i, scene, k, ref, target))
    return cases


def _is_kind(case, kind: str) -> bool:
    named = parse_text(case.target).named
    if kind == "both":
        return len(named) == 2
    if kind in ("colour", "shape"):
        return set(named) == {kind}
    o = case.original
    others = [x for j, x in enumerate(case.scene.objects) if j != case.obj]
    return len(others) == 2 and any(x.colour == o.colour or x.shape == o.shape for x in others)


def select_cases(kind: str, n: int, seed: int = 0) -> list:
    """The notebooks' fixed selection: the first ``n`` cases of the benchmark's stream
    (:func:`romlib.shapes.bench.make_cases` with ``seed``) of the given kind —

    * ``"both"``: the target names colour and shape ("a blue square");
    * ``"colour"`` / ``"shape"``: the target names only that attribute ("a blue shape", "a square"),
      so there is an unnamed attribute to keep (notebook 04);
    * ``"distractors"``: three objects, at least one sharing the referred object's colour or shape
      (the segmenter has to choose; notebook 02).
    """
    if kind not in CASE_KINDS:
        raise ValueError(f"unknown case kind {kind!r}; expected one of {CASE_KINDS}")
    m = max(8, 4 * n)
    while True:
        chosen = [c for c in make_cases(m, seed) if _is_kind(c, kind)]
        if len(chosen) >= n:
            return chosen[:n]
        m *= 2


def table_cases(spec) -> list[Case]:
    """The cases of a notebook table: ``("first", n)`` or pairs ``(kind, n, kind, n, ...)`` of
    :func:`romlib.shapes.demo.select_cases`."""
    if spec[0] == "first":
        return make_cases(spec[1], 0)
    out = []
    for kind, n in zip(spec[::2], spec[1::2]):
        out += select_cases(kind, n, 0)
    return out
