"""A referring segmenter for ShapesWorld: rules over the rendering (the MDETR of this world).

1. every 8-connected blob of saturated palette-coloured pixels is a candidate (a *query*);
2. each is named by colour and shape with the pixel rules of :mod:`romlib.shapes.oracle`;
3. the referring expression is parsed (:func:`romlib.shapes.scenes.parse_text`) and each
   candidate scored: × 1 for every named attribute it has, × 0.1 for every one it lacks; with
   a position ("on the left"), the extreme matching candidate keeps its score and the other
   matching ones get × 0.3 (as :func:`romlib.shapes.scenes.resolve` decides);
4. the best candidate is returned as a :class:`romlib.contracts.Segmentation` (its exact pixel
   mask, tight box, score; every candidate's score and box), or :class:`NoObjectFound` is raised
   when the best score is below ``min_score`` (default 0.5) and ``best_anyway`` is False;
5. **ambiguity**: when several candidates share the best score (``"the square"`` in a scene with
   three squares), :class:`AmbiguousReference` is raised listing them, unless ``best_anyway``,
   which takes the first in raster order with a warning.

Works at any resolution (a ShapesWorld scene upscaled to 256×256 segments the same way).
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..contracts import AmbiguousReference, NoObjectFound, Segmentation
from ..io import load_image, quote
from ..models.tokenizers import unrepresented, warn_text
from .oracle import MIN_AREA, colour_labels, describe_component, label_components
from .scenes import _WORD, parse_text, VOCAB

__all__ = ["ShapesSegmenter", "find_objects"]

log = logging.getLogger(__name__)


def _to_uint8(image) -> np.ndarray:
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3:
        return image
    return np.asarray(load_image(image))


def find_objects(image, min_area: int | None = None) -> list[dict]:
    """Every candidate object: ``{"colour", "shape", "mask" (bool [H, W]), "box" (x0, y0, x1, y1)}``,
    in raster order. ``min_area`` defaults to the oracle's, scaled with the image's area."""
    a = _to_uint8(image)
    H, W = a.shape[:2]
    min_area = min_area or max(MIN_AREA, int(MIN_AREA * H * W / 32 ** 2))
    lab = colour_labels(a)
    comps, sizes = label_components(lab >= 0)
    out = []
    for k, n in enumerate(sizes, start=1):
        if n < min_area:
            continue
        comp = comps == k
        r = describe_component(comp, lab)
        ys, xs = np.nonzero(comp)
        out.append({"colour": r.colour, "shape": r.shape, "mask": comp,
                    "box": (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))})
    return out


class ShapesSegmenter:
    """:class:`romlib.contracts.Segmenter` for ShapesWorld scenes (rule-based, exact on renders)."""

    default_min_score = 0.5

    def segment(self, image, text: str, *, threshold: float = 0.5, min_score: float | None = None,
                best_anyway: bool = False) -> Segmentation:
        """The object ``text`` refers to. ``threshold`` is accepted for the protocol (the masks are
        exact, there are no logits to threshold)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        parsed = parse_text(text)
        if parsed.empty and text.strip():
            raise ValueError(f"the referring text {quote(text)} has no word of ShapesWorld's vocabulary "
                             f"({', '.join(VOCAB[1:])}); say which shape, e.g. the red circle")
        if parsed.empty:
            raise ValueError("the referring text is empty; say which shape, e.g. 'the red circle'")
        kept = " ".join(_WORD.findall(text.lower()))  # the words the parser read
        warn_text(text, 0, 1, reader="ShapesWorld's segmenter", dropped=unrepresented(text, kept))
        min_score = self.default_min_score if min_score is None else float(min_score)
        objs = find_objects(image)
        if not objs:  # not even best_anyway can pick something
            raise NoObjectFound(text, 0.0, None, min_score)
        scores = []
        for o in objs:
            s = 1.0
            for k, v in parsed.named.items():
                s *= 1.0 if o[k] == v else 0.1
            scores.append(s)
        if parsed.position is not None:
            full = [i for i, s in enumerate(scores) if s == 1.0]
            if full:
                axis, sign = {"left": (0, 1), "right": (0, -1), "top": (1, 1), "bottom": (1, -1)}[parsed.position]
                centre = [((objs[i]["box"][axis] + objs[i]["box"][axis + 2]) / 2) * sign for i in full]
                best = full[int(np.argmin(centre))]
                for i in full:
                    if i != best:
                        scores[i] *= 0.3
        idx = int(np.argmax(scores))
        best_score = scores[idx]
        if best_score < min_score and not best_anyway:
            raise NoObjectFound(text, best_score, objs[idx]["box"], min_score)
        tied = [i for i, s in enumerate(scores) if s == best_score]
        if best_score < min_score:  # only with best_anyway: nothing matches, so no "matches N objects" either

            log.warning("no object matches %s (best score %.2f < min_score=%g); best_anyway: took the %s %s%s", quote(text),
                        best_score, min_score, objs[idx]["colour"], objs[idx]["shape"],
                        f" (the first of {len(tied)} tied)" if len(tied) > 1 else "")
        elif len(tied) > 1:
            err = AmbiguousReference(text, [(f"the {objs[i]['colour']} {objs[i]['shape']}", objs[i]["box"], scores[i])
                                            for i in tied])
            if not best_anyway:
                raise err
            log.warning("%s; best_anyway: took the first", err.summary)
        o = objs[idx]
        return Segmentation(
            mask=torch.from_numpy(o["mask"]), box=o["box"], score=float(best_score),
            scores=torch.tensor(scores, dtype=torch.float32), boxes=torch.tensor([c["box"] for c in objs], dtype=torch.float32),
            mask_logits=None, index=idx, text=text,
            extra={"candidates": [(c["colour"], c["shape"]) for c in objs], "parsed": parsed})
