"""The world's closed language: descriptions (edit targets), referring expressions, a parser and a resolver.

One word per token (:class:`WorldTokenizer`, the contract of ShapesWorld's ``WordTokenizer``: ``encode``,
``end_token`` = 0 pads, ``n_vocab``; ``TextTokenizer.batch`` gives GLIDE's token ids and mask).

=====================  =====================================================================
description (target)   ``a blue cube``, ``a large striped sphere``, ``a cube``, ``a red one``
noun phrase (NP)       size? material? colour? (shape | ``one``), adjectives in that order
referring expression   ``the NP`` · ``the NP on the left/right`` · ``the NP in front`` ·
                       ``the NP at the back`` · ``the NP left of / right of / in front of the NP`` ·
                       ``the NP behind the NP`` · ``the larger/smaller of the two NPs``
=====================  =====================================================================

Meaning (:func:`resolve`): an NP matches the objects that have every attribute it names ("small"/"large"
are the size classes of :func:`romlib.world.scene.size_word`). A referring expression picks one object
only with a clear margin, else it is ambiguous (None): positions by :data:`POS_MARGIN` px between centres,
depth (the foot's y) by :data:`DEPTH_MARGIN` px, "larger/smaller of the two" by a size ratio
:data:`SIZE_RATIO`. "on the left" of a single match means its centre lies left of the middle by
:data:`POS_MARGIN` px. :func:`referring_expressions` generates only expressions that resolve to their object.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations

from ..models.tokenizers import TextTokenizer
from .scene import COLOURS, MATERIALS, SHAPES, SIZE, SIZE_WORDS, Obj, Scene

__all__ = ["VOCAB", "TEXT_CTX", "POS_MARGIN", "DEPTH_MARGIN", "SIZE_RATIO", "NP", "Parsed", "parse_text", "describe",
           "resolve", "referring_expressions", "sample_expression", "needs_context", "WorldTokenizer", "tokenizer"]

PLURALS = {s: s + "s" for s in SHAPES}
VOCAB = ("<end>", "a", "the", *COLOURS, *SHAPES, *PLURALS.values(), "one", "ones", *SIZE_WORDS, "smaller", "larger",
         *MATERIALS, "left", "right", "of", "on", "in", "front", "at", "back", "behind", "two")
TEXT_CTX = 12  # the longest generated expression has 11 words
POS_MARGIN = 6.0
DEPTH_MARGIN = 4.0
SIZE_RATIO = 1.2
ATTRS = ("size", "material", "colour", "shape")  # the adjective order of a noun phrase


@dataclass(frozen=True)
class NP:
    """A noun phrase: the attributes it names (None = not named)."""

    size: str | None = None
    material: str | None = None
    colour: str | None = None
    shape: str | None = None

    def matches(self, o: Obj) -> bool:
        return ((self.shape is None or self.shape == o.shape) and (self.colour is None or self.colour == o.colour)
                and (self.material is None or self.material == o.material)
                and (self.size is None or self.size == o.size_word))

    def named(self) -> dict:
        return {k: getattr(self, k) for k in ATTRS if getattr(self, k) is not None}

    def words(self, plural: bool = False) -> list[str]:
        adj = [getattr(self, k) for k in ATTRS[:3] if getattr(self, k) is not None]
        noun = (PLURALS[self.shape] if plural else self.shape) if self.shape else ("ones" if plural else "one")
        return adj + [noun]


@dataclass(frozen=True)
class Parsed:
    """A parsed text: its ``np``; ``definite`` ("the"); ``position`` (left/right/front/back: "on the left",
    "in front", "at the back"); ``relation`` (left/right/front/behind) to an ``anchor`` NP;
    ``comparative`` (larger/smaller "of the two"); ``empty`` for ""."""

    np: NP = NP()
    definite: bool = False
    position: str | None = None
    relation: str | None = None
    anchor: NP | None = None
    comparative: str | None = None
    empty: bool = False

    @property
    def named(self) -> dict:
        """The attributes the head noun phrase names (what an edit target asks for)."""
        return self.np.named()

    def text(self) -> str:
        if self.empty:
            return ""
        if self.comparative:
            return " ".join(["the", self.comparative, "of", "the", "two", *self.np.words(plural=True)])
        words = ["the" if self.definite else "a", *self.np.words()]
        if self.position:
            words += {"left": ["on", "the", "left"], "right": ["on", "the", "right"], "front": ["in", "front"],
                      "back": ["at", "the", "back"]}[self.position]
        if self.relation:
            words += {"left": ["left", "of"], "right": ["right", "of"], "front": ["in", "front", "of"],
                      "behind": ["behind"]}[self.relation] + ["the", *self.anchor.words()]
        return " ".join(words)


_WORD = re.compile(r"[a-z]+")
_ATTR_OF = {**{c: "colour" for c in COLOURS}, **{m: "material" for m in MATERIALS}, **{s: "size" for s in SIZE_WORDS}}


def _bad(text: str, why: str) -> ValueError:
    return ValueError(f"{text!r}: {why}. Accepted: 'a blue cube', 'the red one on the left', 'the cube left of the "
                      f"red sphere', 'the larger of the two green ones'; vocabulary {list(VOCAB[1:])}")


def _np(words: list[str], i: int, text: str, plural: bool = False) -> tuple[NP, int]:
    """Parse adjectives then a noun from ``words[i:]``; returns the NP and the index after the noun."""
    attrs: dict = {}
    while i < len(words) and words[i] in _ATTR_OF:
        k = _ATTR_OF[words[i]]
        if k in attrs:
            raise _bad(text, f"two {k} words")
        attrs[k] = words[i]
        i += 1
    nouns = {v: k for k, v in PLURALS.items()} if plural else {s: s for s in SHAPES}
    if i >= len(words) or words[i] not in (*nouns, "ones" if plural else "one"):
        raise _bad(text, "a noun phrase must end in a shape or 'one'" + (" (plural)" if plural else ""))
    if words[i] in nouns:
        attrs["shape"] = nouns[words[i]]
    return NP(**attrs), i + 1


def parse_text(text: str) -> Parsed:
    """Parse a description or referring expression (``ValueError`` naming unknown words or a bad form)."""
    words = _WORD.findall(text.lower())
    bad = [w for w in words if w not in VOCAB]
    if bad:
        raise _bad(text, f"unknown word(s) {' '.join(bad)}")
    if not words:
        return Parsed(empty=True)
    if words[0] not in ("a", "the"):
        raise _bad(text, "start with 'a' or 'the'")
    definite = words[0] == "the"
    if len(words) > 4 and words[1] in ("larger", "smaller") and words[2:5] == ["of", "the", "two"] and definite:
        np_, i = _np(words, 5, text, plural=True)
        if i != len(words) or np_.size:
            raise _bad(text, "'the larger of the two …' takes one plural noun phrase without a size")
        return Parsed(np_, True, comparative=words[1])
    np_, i = _np(words, 1, text)
    tail = words[i:]
    positions = {("on", "the", "left"): "left", ("on", "the", "right"): "right", ("in", "front"): "front",
                 ("at", "the", "back"): "back"}
    if not tail:
        return Parsed(np_, definite)
    if tuple(tail) in positions:
        return Parsed(np_, definite, position=positions[tuple(tail)])
    for head, rel in ((("left", "of", "the"), "left"), (("right", "of", "the"), "right"),
                      (("in", "front", "of", "the"), "front"), (("behind", "the"), "behind")):
        if tuple(tail[:len(head)]) == head:
            anchor, j = _np(tail, len(head), text)
            if j != len(tail):
                raise _bad(text, "words after the anchor's noun")
            return Parsed(np_, definite, relation=rel, anchor=anchor)
    raise _bad(text, f"cannot read {' '.join(tail)!r} after the noun phrase")


def describe(o: Obj | dict, attrs=ATTRS, article: str = "a") -> str:
    """``a large shiny red cube`` naming the attributes in ``attrs`` (``a red one`` without a shape)."""
    a = o.attrs() if isinstance(o, Obj) else o
    return " ".join([article, *NP(**{k: a.get(k) for k in attrs}).words()])


# ----------------------------------------------------------------------------- meaning
def _key(o: Obj, what: str) -> float:
    return {"left": -o.x, "right": o.x, "front": o.base, "back": -o.base}[what]


def _key_of_x(x: float, what: str) -> float:
    return -x if what == "left" else x


def _holds(a: Obj, rel: str, b: Obj) -> int:
    """+1 when ``a rel b`` holds with margin, −1 when it clearly does not, 0 when borderline."""
    d = {"left": b.x - a.x, "right": a.x - b.x, "front": a.base - b.base, "behind": b.base - a.base}[rel]
    m = POS_MARGIN if rel in ("left", "right") else DEPTH_MARGIN
    return 1 if d >= m else (-1 if d <= -m else 0)


def resolve(scene: Scene | list[Obj] | tuple, text: str | Parsed) -> tuple[int | None, str]:
    """The index of the object ``text`` refers to, or (None, why): absent, ambiguous or a borderline margin."""
    objs = list(scene.objects if isinstance(scene, Scene) else scene)
    p = parse_text(text) if isinstance(text, str) else text
    if p.empty:
        return None, "an empty text refers to nothing"
    cands = [j for j, o in enumerate(objs) if p.np.matches(o)]
    if not cands:
        return None, "no object matches"
    if p.comparative:
        if len(cands) != 2:
            return None, f"'of the two' needs exactly two matches, found {len(cands)}"
        a, b = cands
        big, small = (a, b) if objs[a].size >= objs[b].size else (b, a)
        if objs[big].size < SIZE_RATIO * objs[small].size:
            return None, "the two sizes are too close"
        return (big if p.comparative == "larger" else small), ""
    if p.relation:
        anchor, why = resolve(objs, Parsed(p.anchor, True))
        if anchor is None:
            return None, f"the anchor is unclear ({why})"
        cands = [j for j in cands if j != anchor]
        verdicts = [_holds(objs[j], p.relation, objs[anchor]) for j in cands]
        if 0 in verdicts:
            return None, "a borderline relation"
        hits = [j for j, v in zip(cands, verdicts) if v == 1]
        return (hits[0], "") if len(hits) == 1 else (None, f"{len(hits)} objects satisfy the relation")
    if p.position:
        if len(cands) == 1:
            o = objs[cands[0]]
            if p.position in ("left", "right") and _key(o, p.position) - _key_of_x(SIZE / 2, p.position) >= POS_MARGIN:
                return cands[0], ""
            return None, f"the only match is not clearly at the {p.position}"
        keys = sorted(((_key(objs[j], p.position), j) for j in cands), reverse=True)
        margin = POS_MARGIN if p.position in ("left", "right") else DEPTH_MARGIN
        return (keys[0][1], "") if keys[0][0] - keys[1][0] >= margin else (None, "ambiguous position")
    return (cands[0], "") if len(cands) == 1 else (None, f"ambiguous: {len(cands)} objects match")


def _nps(o: Obj, max_attrs: int = 3) -> list[NP]:
    a = o.attrs()
    return [NP(**{k: a[k] for k in ks}) for n in range(1, max_attrs + 1) for ks in combinations(ATTRS, n)]


def referring_expressions(scene: Scene, index: int, *, max_attrs: int = 3) -> list[str]:
    """Every expression (of the forms above) that resolves to object ``index``, shortest first. Heads name
    at most ``max_attrs`` attributes (2 with a relation, whose anchor is a shortest unique NP)."""
    objs = scene.objects
    o = objs[index]
    out: set[str] = set()
    anchors = {j: _anchors(objs, j) for j in range(len(objs)) if j != index}
    for np_ in _nps(o, max_attrs):
        forms = [Parsed(np_, True)] + [Parsed(np_, True, position=p) for p in ("left", "right", "front", "back")]
        if not np_.size:
            forms += [Parsed(np_, True, comparative=c) for c in ("larger", "smaller")]
        if len(np_.named()) <= 2:
            forms += [Parsed(np_, True, relation=r, anchor=a) for r in ("left", "right", "front", "behind")
                      for j in anchors for a in anchors[j]]
        out.update(p.text() for p in forms if resolve(objs, p)[0] == index)
    return sorted(out, key=lambda t: (len(t.split()), t))


def _anchors(objs, j: int) -> list[NP]:
    """The shortest noun phrases (≤ 2 attributes, naming the shape where one can) that pick object ``j``."""
    unique = [a for a in _nps(objs[j], 2) if sum(a.matches(x) for x in objs) == 1]
    with_shape = [a for a in unique if a.shape] or unique
    return [a for a in with_shape if len(a.named()) == len(with_shape[0].named())] if with_shape else []


def sample_expression(rng, scene: Scene, index: int, *, p_context: float = 0.6) -> str | None:
    """One random expression that resolves to object ``index`` (None if there is none), drawn without
    enumerating them all (fast, for training batches): with probability ``p_context`` one whose head alone
    would match a look-alike (a position, depth, relation or comparison is needed), when one exists."""
    objs = scene.objects
    o = objs[index]
    heads = _nps(o, 3)
    lookalike = [h for h in heads if sum(h.matches(x) for x in objs) > 1]
    if lookalike and rng.random() < p_context:
        others = [j for j in range(len(objs)) if j != index]
        forms = []
        for h in lookalike:
            forms += [Parsed(h, True, position=p) for p in ("left", "right", "front", "back")]
            if not h.size:
                forms += [Parsed(h, True, comparative=c) for c in ("larger", "smaller")]
            if len(h.named()) <= 2:
                for j in others:
                    for a in _anchors(objs, j):
                        forms += [Parsed(h, True, relation=r, anchor=a) for r in ("left", "right", "front", "behind")]
        for k in rng.permutation(len(forms)):
            if resolve(objs, forms[k])[0] == index:
                return forms[k].text()
    unique = [h for h in heads if h not in lookalike]
    plain = [Parsed(h, True) for h in unique] + [Parsed(h, True, position=p) for h in heads for p in ("left", "right")]
    for k in rng.permutation(len(plain)):
        if resolve(objs, plain[k])[0] == index:
            return plain[k].text()
    refs = referring_expressions(scene, index)
    return str(refs[int(rng.integers(len(refs)))]) if refs else None


def needs_context(scene: Scene, text: str) -> bool:
    """Whether the expression's head noun phrase alone matches several objects (look-alike distractors:
    only the relation, position or comparison tells them apart)."""
    p = parse_text(text)
    return sum(p.np.matches(o) for o in scene.objects) > 1


# ----------------------------------------------------------------------------- tokenizer
class WorldTokenizer(TextTokenizer):
    """One token per word of :data:`VOCAB`; ``<end>`` (0) pads. Unknown words raise ``ValueError``."""

    end_token = 0
    n_vocab = len(VOCAB)

    def __init__(self):
        self.ids = {w: i for i, w in enumerate(VOCAB)}

    def encode(self, text: str) -> list[int]:
        words = _WORD.findall(text.lower())
        bad = [w for w in words if w not in self.ids]
        if bad:
            raise _bad(text, f"unknown word(s) {' '.join(bad)}")
        return [self.ids[w] for w in words]

    def decode(self, tokens) -> str:
        return " ".join(VOCAB[int(t)] for t in tokens if int(t) != self.end_token)


def tokenizer() -> WorldTokenizer:
    """The world's tokenizer (stateless)."""
    return WorldTokenizer()

