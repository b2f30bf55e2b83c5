"""Notebook 03's exercises: the k×k dilation in GLIDE's mask convention, and the known-region step."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...guidance.cfg import known_region_fn
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
# 03.known-region: force the known pixels of x̂_0 at every step (GLIDE's denoised_fn)
# ----------------------------------------------------------------------------------------------


def _known_cases(seed: int = 0):
    g = torch.Generator().manual_seed(fresh_seed(7, seed))
    out = []
    for b, s in ((2, 8), (1, 4), (3, 6)):
        keep = torch.ones(1, 1, s, s)
        keep[..., s // 4: s - 1, 1: s // 2 + 1] = 0
        out.append((torch.randn(b, 3, s, s, generator=g), torch.rand(1, 3, s, s, generator=g) * 2 - 1, keep))
    out.append((torch.randn(2, 3, 4, 4, generator=g), torch.rand(1, 3, 4, 4, generator=g), torch.zeros(1, 1, 4, 4)))
    out.append((torch.randn(1, 3, 4, 4, generator=g), torch.rand(1, 3, 4, 4, generator=g), torch.ones(1, 1, 4, 4)))
    return out


def known_region(x0_pred, image, keep_mask):
    """The known pixels of x̂_0 replaced by the image's: x̂_0·(1 − m) + image·m (m = keep_mask, 1 = keep)."""
    return x0_pred * (1 - keep_mask) + image * keep_mask


KNOWN_REGION = Exercise(
    id="03.known-region", title="the known-region step", function="known_region",
    paper="§4.2 (GLIDE inpainting); the authors' denoised_fn",
    prompt="Write known_region(x0_pred, image, keep_mask): at every sampling step the predicted clean image x̂_0 "
           "[B, 3, H, W] gets the original image's pixels wherever the mask says keep. keep_mask is [1, 1, H, W] in "
           "GLIDE's convention (1 = keep, 0 = edit); image is [1, 3, H, W].",
    stub='''def known_region(x0_pred, image, keep_mask):
    """x̂_0 with the known pixels forced to the image's (keep_mask: 1 = keep, 0 = edit)."""
    return ...  # TODO: one expression in x0_pred, image and keep_mask
''',
    reference=lambda x0, im, m: known_region_fn(im, m)(x0), solution=known_region, cases=_known_cases,
    mistakes=(
        Mistake(lambda x0, im, m: x0 * m + im * (1 - m),
                "the mask convention is inverted: GLIDE's 1 = keep, so the image's pixels go where keep_mask = 1 "
                "and the prediction where it is 0"),
        Mistake(lambda x0, im, m: x0 + im * m,
                "the prediction is not removed where the image is known: x̂_0·(1 − m) + image·m, not x̂_0 + image·m"),
        Mistake(lambda x0, im, m: (im * m).expand_as(x0),
                "the edit region is blank: you dropped the model's prediction x̂_0·(1 − m)"),
        Mistake(lambda x0, im, m: x0,
                "you returned x̂_0 unchanged: the known region is never forced, so the kept background drifts"),
    ),
    checks="x̂_0 against romlib.guidance.cfg.known_region_fn on batches of 1–3, an all-keep and an all-edit mask",
    hints=("§4.2 of the paper (GLIDE's inpainting) and the authors' denoised_fn: which pixels of x̂_0 are replaced, and by what?",
           'A blend of x0_pred and image with keep_mask and its complement; keep_mask is 1 where the image is kept.'),
    hint="x0_pred · (1 − keep_mask) + image · keep_mask.",
)

EXERCISES = (DILATE_KEEP, KNOWN_REGION)
