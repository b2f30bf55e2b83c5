"""Notebook 03's exercises: the k×k dilation in GLIDE's mask convention, and the rim and over-coverage it trades."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...masks import dilate, to_keep_mask
from .core import Exercise, Mistake, fresh_seed

# ----------------------------------------------------------------------------------------------
# 03.dilate-keep: edit mask -> GLIDE keep mask with the edit region dilated k x k
# ----------------------------------------------------------------------------------------------


def _dilate_cases(seed: int = 0):
    g = torch.Generator().manual_seed(fresh_seed(6, seed))
    dot = torch.zeros(16, 16)
    dot[7, 9] = 1
    blob = (torch.rand(20, 20, generator=g) > 0.8).float()
    corner = torch.zeros(12, 12)
    corner[:3, :4] = 1  # touches the image border
    square = torch.zeros(24, 24)
    square[8:14, 6:16] = 1
    return [(dot, 3), (blob, 5), (corner, 3), (square, 1), (square, 7), (dot, 5)]


def keep_mask(edit_mask, k):
    """Dilate the edit region (1 = object) by a k×k all-ones kernel, clamp to 1, return GLIDE's keep mask (1 = keep)."""
    import torch
    import torch.nn.functional as F

    m = edit_mask.float()[None, None]
    grown = F.conv2d(m, torch.ones(1, 1, k, k), padding=k // 2).clamp(max=1)[0, 0]
    return 1 - grown


def _conv(m, kernel):
    k = kernel.shape[-1]
    return F.conv2d(m.float()[None, None], kernel[None, None], padding=k // 2)[0, 0]


def _cross(k):
    c = torch.zeros(k, k)
    c[k // 2, :] = 1
    c[:, k // 2] = 1
    return c


DILATE_KEEP = Exercise(
    id="03.dilate-keep", title="the k×k dilation in GLIDE's mask convention", function="keep_mask",
    paper="§4.5 (dilated mask prediction); GLIDE's inpaint_mask: 1 = keep, 0 = edit",
    prompt="Write keep_mask(edit_mask, k): edit_mask is [H, W], 1 on the object. Grow the object by a k×k all-ones "
           "kernel (a pixel is edited when any pixel of its k×k neighbourhood is on the object), then return the mask "
           "GLIDE takes: 1 = keep, 0 = edit (float, [H, W]). k is odd; k = 1 changes nothing.",
    stub='''import torch
import torch.nn.functional as F

def keep_mask(edit_mask, k):
    """edit_mask [H, W] (1 = object) -> GLIDE keep mask [H, W] (1 = keep), the object grown k x k."""
    m = edit_mask.float()[None, None]
    grown = ...  # TODO: a k x k all-ones convolution (padding k // 2), clamped to 1
    return ...   # TODO: GLIDE's convention
''',
    reference=lambda m, k: to_keep_mask(dilate(m, k)), solution=keep_mask, cases=_dilate_cases,
    mistakes=(
        Mistake(lambda m, k: dilate(m, k),
                "the mask convention is inverted: GLIDE's 1 = keep, 0 = edit — you returned the dilated edit mask; "
                "return 1 − it (romlib.masks.to_keep_mask)"),
        Mistake(lambda m, k: dilate(1 - m.float(), k),
                "you dilated the keep mask instead of the edit region: the region to edit shrank (an erosion of the "
                "object, notebook 03's under-covering mask); dilate the edit mask, then convert"),
        Mistake(lambda m, k: 1 - _conv(m, torch.ones(k, k)),
                "not clamped: the convolution counts object pixels (up to k²), so 1 − count goes negative; clamp the "
                "dilated mask to 1 before converting"),
        Mistake(lambda m, k: to_keep_mask(dilate(m, 2 * k + 1)),
                "your kernel reaches k pixels from the object; a k×k kernel reaches k // 2 (k = 3: one pixel), "
                "i.e. padding k // 2 and kernel size k"),
        Mistake(lambda m, k: to_keep_mask(_conv(m, _cross(k)).clamp(max=1)),
                "a cross-shaped (4-neighbour) kernel: the paper's dilation is a k×k all-ones square, so diagonal "
                "neighbours are edited too"),
        Mistake(lambda m, k: to_keep_mask(m),
                "the convention is right but nothing was dilated: grow the edit region by the k×k kernel first "
                "(k = 1 is the only case where that changes nothing)"),
        Mistake(lambda m, k: to_keep_mask(dilate(m, 3)),
                "the dilation size k is ignored: you always dilate by 3"),
    ),
    checks="the keep mask against romlib.masks.to_keep_mask(dilate(m, k)) for k = 1, 3, 5, 7 on a dot, a square, "
           "random pixels and a mask touching the border",
    hints=("§4.5 of the paper (dilated mask prediction) and GLIDE's mask convention (1 = keep) in notebook 03.",
           "Dilate the edit region with a k×k all-ones convolution (clamped to 1), then turn 'edit' into 'keep'; the result is [H, W]."),
    hint="1 − clamp(conv2d(edit, ones(k, k), padding=k // 2), max=1), as [H, W].",
)

# ----------------------------------------------------------------------------------------------
# 03.rim-over: what a mask at the base model's resolution leaves of the object, and what it takes in
# ----------------------------------------------------------------------------------------------


def _rim_cases(seed: int = 0):
    g = torch.Generator().manual_seed(fresh_seed(7, seed))
    out = []
    for h, f in ((8, 2), (6, 4), (16, 2), (5, 3)):
        keep = (torch.rand(h, h, generator=g) > 0.35).float()
        truth = torch.rand(h * f, h * f, generator=g) > 0.7
        out.append((keep, truth))
    keep = torch.ones(4, 4)
    keep[1:3, 1:3] = 0  # a square hole over a square object: the hole covers it exactly
    truth = torch.zeros(8, 8, dtype=torch.bool)
    truth[2:6, 2:6] = True
    out.append((keep, truth))
    return out


def rim_and_over(keep_base, truth):
    """(object pixels outside the hole, hole pixels off the object), counted at the frame's resolution."""
    f = truth.shape[-1] // keep_base.shape[-1]
    hole = (keep_base < 0.5).repeat_interleave(f, 0).repeat_interleave(f, 1)
    return int((truth & ~hole).sum()), int((hole & ~truth).sum())


def _no_upsample(keep, truth):  # the truth shrunk to the base resolution instead: counts of base pixels
    f = truth.shape[-1] // keep.shape[-1]
    small = truth.reshape(keep.shape[0], f, keep.shape[1], f).any(3).any(1)
    hole = keep < 0.5
    return int((small & ~hole).sum()), int((hole & ~small).sum())


RIM_OVER = Exercise(
    id="03.rim-over", title="the rim and the over-coverage of a mask", function="rim_and_over",
    paper="§4.5 (dilated mask prediction: under- against over-coverage); Fig. 8",
    prompt="Write rim_and_over(keep_base, truth): keep_base is the pipeline's mask at the base model's resolution "
           "[h, w] in GLIDE's convention (1 = keep, 0 = edit); truth is the object's mask at the frame's resolution "
           "[H, W] (bool), H an integer multiple of h. Return (rim, over), two ints counted at the frame's "
           "resolution: rim = object pixels outside the hole (what the edit cannot change), over = hole pixels off "
           "the object (background the model must redraw). Each base pixel covers an (H/h)×(H/h) block.",
    stub='''def rim_and_over(keep_base, truth):
    """keep_base [h, w] (1 = keep, 0 = edit), truth [H, W] bool -> (rim, over) at H x W."""
    hole = ...  # TODO: the edited pixels, at the frame's resolution
    return ...  # TODO: (rim, over) as two ints
''',
    reference=rim_and_over, solution=rim_and_over, cases=_rim_cases,
    mistakes=(
        Mistake(lambda keep, truth: rim_and_over(1 - keep, truth),
                "the mask convention is inverted: GLIDE's keep mask is 1 where the image is kept, so the hole is "
                "where keep_base = 0"),
        Mistake(lambda keep, truth: tuple(reversed(rim_and_over(keep, truth))),
                "rim and over are swapped: the rim is the object outside the hole, over the hole outside the object"),
        Mistake(_no_upsample,
                "you counted at the base model's resolution: bring the hole up to the frame's (each base pixel is a "
                "block of the frame) and count frame pixels"),
    ),
    checks="(rim, over) against romlib's count on random masks at upsampling factors 2, 3 and 4, and on a hole that "
           "covers its object exactly",
    hints=("§4.5 of the paper: under-coverage leaves the object's rim, over-coverage takes in background. Which pixels "
           "are 'the hole', and at which resolution is each mask?",
           "Make the hole a boolean [H, W] (repeat each base pixel along both axes), then count truth AND NOT hole, "
           "and hole AND NOT truth."),
    hint="hole = (keep_base < 0.5).repeat_interleave(f, 0).repeat_interleave(f, 1); rim = (truth & ~hole).sum(); "
         "over = (hole & ~truth).sum()",
)

EXERCISES = (DILATE_KEEP, RIM_OVER)
