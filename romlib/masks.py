"""Masks and boxes between the segmenter and GLIDE.

Two conventions meet here, and this module is the one place that converts between them:

* an **edit mask** (what the segmenter returns, what users draw): 1 / True = the object to edit;
* a **keep mask** (what GLIDE takes as ``inpaint_mask``): 1 = keep the pixel, 0 = edit it.

:func:`to_keep_mask` / :func:`to_edit_mask` convert; every other function says which it takes.

The authors' recipe (``build_glide_input``): the mask logits are resized bilinearly to 64×64,
thresholded at 0.5 after the sigmoid, dilated by a k×k all-ones kernel (clamped to 1), and the
256×256 mask is the 64×64 one upsampled by nearest neighbour. The ranking box is the detected
box enlarged ×1.3 about its centre and clipped to the image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import check_dilation

__all__ = ["box_iou", "to_keep_mask", "to_edit_mask", "dilate", "resize_edit_mask", "logits_to_edit_mask", "prepare_masks",
           "enlarge_box", "box_to_pixels", "rank_crop", "feather", "chessboard_distance", "check_dilation", "erode"]


def to_keep_mask(edit_mask: torch.Tensor) -> torch.Tensor:
    """Edit mask (1 = edit) → GLIDE keep mask (1 = keep), as float."""
    return 1.0 - edit_mask.float()


def to_edit_mask(keep_mask: torch.Tensor) -> torch.Tensor:
    """GLIDE keep mask (1 = keep) → edit mask (1 = edit), as float."""
    return 1.0 - keep_mask.float()


def dilate(edit_mask: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Dilate an edit mask [..., H, W] by a k×k all-ones kernel, clamped to 1 (k odd; 1 = no-op)."""
    k = check_dilation(k)
    m = edit_mask.float()
    if k == 1:
        return m
    shape = m.shape
    m4 = m.reshape(-1, 1, *shape[-2:])
    kernel = torch.ones(1, 1, k, k, dtype=m.dtype, device=m.device)
    return F.conv2d(m4, kernel, padding=k // 2).clamp(0, 1).reshape(shape)


def erode(edit_mask: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Erode an edit mask [..., H, W] by a k×k window (k odd): a deliberately under-covering mask
    (notebook 03 and the ShapesWorld benchmark use it to show why dilation helps)."""
    k = check_dilation(k)
    return 1.0 - dilate(1.0 - edit_mask.float(), k)


def resize_edit_mask(edit_mask: torch.Tensor, size: int | tuple[int, int], threshold: float = 0.5) -> torch.Tensor:
    """Resize an edit mask (bool or [0, 1]) [..., H, W] to ``size`` bilinearly and threshold it."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    m = edit_mask.float()
    shape = m.shape
    m4 = F.interpolate(m.reshape(-1, 1, *shape[-2:]), size=size, mode="bilinear", align_corners=False)
    return (m4 > threshold).float().reshape(*shape[:-2], *size)


def logits_to_edit_mask(logits: torch.Tensor, size: int = 64, threshold: float = 0.5) -> torch.Tensor:
    """MDETR mask logits [..., h, w] → binary edit mask at ``size``: bilinear resize, then sigmoid > threshold."""
    shape = logits.shape
    l4 = F.interpolate(logits.float().reshape(-1, 1, *shape[-2:]), size=(size, size), mode="bilinear", align_corners=False)
    return (l4.sigmoid() > threshold).float().reshape(*shape[:-2], size, size)


def prepare_masks(edit_mask_64: torch.Tensor, dilation: int = 3, out_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary 64×64 edit mask → GLIDE keep masks ``(keep_64, keep_256)``, each [1, 1, S, S].

    The mask is dilated at 64×64; the 256×256 mask is its nearest-neighbour upsampling.
    Raises if nothing is left to edit.
    """
    m = edit_mask_64.float().reshape(1, 1, *edit_mask_64.shape[-2:])
    m = dilate(m, dilation)
    if m.sum() == 0:
        raise ValueError("the mask has nothing to edit (all pixels are kept)")
    keep_64 = to_keep_mask(m)
    keep_256 = F.interpolate(keep_64, size=(out_size, out_size), mode="nearest")
    return keep_64, keep_256


def box_iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes (tensors or sequences of numbers)."""
    a, b = [float(v) for v in a], [float(v) for v in b]
    iw, ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0])), max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def enlarge_box(box: tuple[float, float, float, float], scale: float = 1.3, width: float = 1.0, height: float = 1.0) -> tuple[float, float, float, float]:
    """Enlarge an (x0, y0, x1, y1) box ×``scale`` about its centre and clip it to [0, width]×[0, height]."""
    x0, y0, x1, y1 = box
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * scale, (y1 - y0) * scale
    return (max(0.0, cx - w / 2), max(0.0, cy - h / 2), min(float(width), cx + w / 2), min(float(height), cy + h / 2))


def box_to_pixels(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """Integer pixel box as the authors index it: ``img[:, :, y0:y1 + 1, x0:x1 + 1]``."""
    return tuple(int(v) for v in box)  # type: ignore[return-value]


def rank_crop(box: tuple[float, float, float, float], width: float, height: float, scale: float = 1.3) -> tuple[int, int, int, int]:
    """The pixels the localized ranking crops (§4.4): the box enlarged ×``scale`` and clipped
    (:func:`enlarge_box`), truncated to integers as the authors index it (:func:`box_to_pixels`). The one rule
    for the crop box: the ranking, the figures and the notebooks all call this."""
    return box_to_pixels(enlarge_box(box, scale, width, height))


def chessboard_distance(edit_mask: torch.Tensor, limit: int | None = None) -> torch.Tensor:
    """For each pixel of an edit mask [H, W], the chessboard (L∞) distance to the nearest pixel
    outside the mask (1 on the mask's edge, 0 outside; the image border does not count as
    outside), capped at ``limit``. Exact, O(H·W): two raster passes of the 8-neighbour chamfer
    with unit weights, vectorised along each row (``cummin``)."""
    m = edit_mask.reshape(edit_mask.shape[-2:]) > 0.5
    H, W = m.shape
    big = H + W + 1 if limit is None else int(limit)
    d = torch.where(m, torch.tensor(big, dtype=torch.int32), torch.tensor(0, dtype=torch.int32))
    if not m.any() or m.all():
        return d.clamp(max=big)
    x = torch.arange(W, dtype=torch.int32)
    inf_col = torch.tensor([big], dtype=torch.int32)

    def sweep(rows, reverse: bool):
        prev = None
        for y in rows:
            c = d[y]
            if prev is not None:
                up = torch.minimum(prev, torch.minimum(torch.cat([inf_col, prev[:-1]]), torch.cat([prev[1:], inf_col])))
                c = torch.minimum(c, up + 1)
            # along the row: c[x] = min over x' on the swept side of c[x'] + |x - x'|
            if reverse:
                c = (torch.cummin((c + x).flip(0), 0).values.flip(0) - x)
            else:
                c = torch.cummin(c - x, 0).values + x
            c = c.clamp(max=big)
            d[y] = c
            prev = c

    sweep(range(H), reverse=False)
    sweep(range(H - 1, -1, -1), reverse=True)
    return d


def feather(edit_mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Soft edit mask in [0, 1]: 0 outside the mask, rising to 1 over ``radius`` pixels inside it:
    min(d, radius + 1) / (radius + 1) with d the chessboard distance to the outside (the same
    values as the mean of the mask and its 1..radius-fold 3×3 erosions, at O(pixels) cost
    whatever the radius), so blending with it never touches a pixel outside the mask. The image
    border does not erode the mask."""
    r = max(0, int(radius))
    if r == 0:
        return edit_mask.float()
    d = chessboard_distance(edit_mask.float(), limit=r + 1)
    return (d.float() / (r + 1)).reshape(edit_mask.shape)
