"""Notebook 02's exercises: MDETR's chosen query and its mask at 64×64 (the authors' ``build_glide_input``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...masks import logits_to_edit_mask
from .core import Exercise, Mistake, fresh_seed

# ----------------------------------------------------------------------------------------------
# 02.best-query: the query with the highest 1 − p(no-object)
# ----------------------------------------------------------------------------------------------


def _query_cases(seed: int = 0):
    g = torch.Generator().manual_seed(fresh_seed(4, seed))
    out = [(torch.randn(q, k, generator=g) * s,) for q, k, s in ((6, 5, 3.0), (10, 8, 2.0), (4, 3, 4.0), (20, 6, 3.0),
                                                               (8, 12, 2.5), (1, 4, 1.0))]
    # a query whose no-object logit is not the lowest but whose object classes dominate
    out.append((torch.tensor([[0.0, 0.0, 0.0, -1.0], [4.0, -3.0, -3.0, 0.5], [1.0, 1.0, 1.0, 0.0]]),))
    return out


def _best_reference(pred_logits):
    """As romlib.segment (MDETRSegmenter.segment): score = 1 − softmax(logits)[..., no-object], best index."""
    return int((1 - pred_logits.float().softmax(-1)[:, -1]).argmax())


def best_query(pred_logits):
    """The query MDETR keeps: the highest 1 − p(no-object), the no-object class being the last logit."""
    p_no_object = pred_logits.softmax(-1)[:, -1]
    return int((1 - p_no_object).argmax())


BEST_QUERY = Exercise(
    id="02.best-query", title="which of MDETR's queries is the object", function="best_query",
    paper="§4.2 (MDETR); the authors' code keeps the query with the highest 1 − p(no-object)",
    prompt="Write best_query(pred_logits): pred_logits is [Q, K + 1], one row of class logits per query, the last "
           "column being 'no object'. Return the index (an int) of the query with the highest score "
           "1 − p(no-object), p from a softmax over the row.",
    stub='''def best_query(pred_logits):
    """Index of the query MDETR keeps. pred_logits: [Q, K + 1], last column = no object."""
    scores = ...  # TODO: 1 − p(no-object) for each query
    return int(scores.argmax())
''',
    reference=_best_reference, solution=best_query, cases=_query_cases,
    mistakes=(
        Mistake(lambda x: int(x.softmax(-1)[:, -1].argmax()),
                "you chose the query most likely to be *nothing*: the score is 1 − p(no-object), take its argmax "
                "(or the argmin of p(no-object))"),
        Mistake(lambda x: int(x[:, -1].argmin()),
                "you compared raw no-object logits: softmax each row first — 1 − p(no-object) depends on all of a "
                "query's logits, not only the last one"),
        Mistake(lambda x: int(x[:, :-1].softmax(-1).max(-1).values.argmax()) if x.shape[1] > 2 else -1,
                "you took the most confident single class among the object classes; the score is 1 − p(no-object), "
                "the probability of *any* object, from a softmax over the whole row"),
        Mistake(lambda x: float((1 - x.softmax(-1)[:, -1]).max()),
                "you returned the best score; return the index of the best query"),
    ),
    checks="the chosen index against 1 − softmax(logits)[:, −1] (romlib.segment) on random logits and a hand-made row "
           "where the lowest no-object logit is not the best query",
    hints=("§4.2 of the paper and notebook 02's candidates: each query has a probability of 'no object' — the last class.",
           'A softmax over each row (all K + 1 classes); a score per query from its last column; the index of the best score as an int.'),
    hint="softmax each row over all K + 1 logits; the score is 1 minus its last column; return int(argmax).",
)

# ----------------------------------------------------------------------------------------------
# 02.edit-mask: logits at MDETR's resolution -> binary 64x64 edit mask
# ----------------------------------------------------------------------------------------------


def _blob(h, w, cy, cx, r, g):
    y, x = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    return 3.0 * (r - ((y - cy) ** 2 + (x - cx) ** 2).sqrt()) / r * 4 + 0.5 * torch.randn(h, w, generator=g)


def _mask_cases(seed: int = 0):
    g = torch.Generator().manual_seed(fresh_seed(5, seed))
    return [(_blob(h, w, cy, cx, r, g),) for h, w, cy, cx, r in
            ((25, 25, 12, 10, 6), (100, 80, 30, 50, 20), (64, 64, 32, 20, 10), (37, 51, 5, 45, 9), (16, 20, 8, 8, 3))]


def edit_mask_64(logits):
    """MDETR mask logits [h, w] -> the binary 64×64 edit mask (1 = the object): bilinear resize, sigmoid > 0.5."""
    import torch.nn.functional as F

    up = F.interpolate(logits[None, None].float(), size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
    return (up.sigmoid() > 0.5).float()


def _resize(x, mode):
    kw = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(x[None, None].float(), size=(64, 64), mode=mode, **kw)[0, 0]


EDIT_MASK = Exercise(
    id="02.edit-mask", title="MDETR's mask at GLIDE's 64×64", function="edit_mask_64",
    paper="§4.2, §4.5; the authors' build_glide_input",
    prompt="Write edit_mask_64(logits): MDETR's mask logits [h, w] → the binary 64×64 edit mask (float, 1 = the "
           "object): resize the logits bilinearly to 64×64, then keep the pixels where sigmoid > 0.5.",
    stub='''import torch.nn.functional as F

def edit_mask_64(logits):
    """MDETR mask logits [h, w] -> binary 64x64 edit mask (float, 1 = the object)."""
    up = F.interpolate(logits[None, None], size=(64, 64), mode=..., align_corners=False)[0, 0]  # TODO: which mode?
    return ...  # TODO: threshold the probability at 0.5
''',
    reference=lambda x: logits_to_edit_mask(x, 64), solution=edit_mask_64, cases=_mask_cases,
    mistakes=(
        Mistake(lambda x: (_resize(x, "bilinear") > 0.5).float(),
                "you thresholded the logits at 0.5; the rule is sigmoid(logit) > 0.5, i.e. logit > 0"),
        Mistake(lambda x: (_resize(x, "bilinear").sigmoid() < 0.5).float(),
                "the mask is inverted: an edit mask is 1 on the object (GLIDE's keep mask, 1 = keep, comes later, "
                "in one place: romlib.masks.to_keep_mask)"),
        Mistake(lambda x: (_resize(x, "nearest").sigmoid() > 0.5).float(),
                "you resized by nearest neighbour; the authors resize the logits bilinearly (smoother edges)"),
        Mistake(lambda x: (_resize((x.sigmoid() > 0.5).float(), "bilinear") > 0.5).float(),
                "you thresholded first and resized the binary mask; resize the logits, then threshold"),
        Mistake(lambda x: _resize(x, "bilinear").sigmoid(),
                "not thresholded: you returned probabilities; the mask is binary (sigmoid > 0.5)"),
    ),
    checks="the 64×64 mask against romlib.masks.logits_to_edit_mask on noisy blobs at 16×20 to 100×80",
    hints=("§4.2 and §4.5 of the paper: MDETR's mask logits are resized to the diffusion model's size, then thresholded.",
           'Resize the logits (not the probabilities) bilinearly to 64×64, then sigmoid and a 0.5 threshold; return floats, 1 = edit.'),
    hint="F.interpolate(..., mode='bilinear', align_corners=False), then (sigmoid > 0.5).float().",
)

EXERCISES = (BEST_QUERY, EDIT_MASK)
