"""Notebook 05's exercises: the ×1.3 ranking crop and the order of the samples by CLIP distance."""
from __future__ import annotations

import math

import torch

from ...masks import enlarge_box
from .core import Exercise, Mistake, fresh_seed

# ----------------------------------------------------------------------------------------------
# 05.crop-box: the detected box enlarged x1.3 about its centre, clipped to the image
# ----------------------------------------------------------------------------------------------


def _box_cases(seed: int = 0):
    if seed:  # fresh boxes (an assignment's hidden tests): inside, on an edge, in a corner, of a random image size
        g = torch.Generator().manual_seed(fresh_seed(16, seed))
        out = []
        for _ in range(6):
            width, height = (int(v) for v in torch.randint(32, 300, (2,), generator=g))
            x = sorted(float(v) for v in torch.rand(2, generator=g) * width)
            y = sorted(float(v) for v in torch.rand(2, generator=g) * height)
            out.append(((round(x[0], 1), round(y[0], 1), round(x[1], 1), round(y[1], 1)), width, height))
        return out
    return [((100.0, 80.0, 140.0, 120.0), 256, 256),  # well inside
            ((0.0, 10.0, 50.0, 60.0), 256, 256),  # on the left edge
            ((200.0, 200.0, 256.0, 250.0), 256, 256),  # bottom-right corner
            ((30.0, 40.0, 90.0, 70.0), 128, 96),  # not square
            ((10.0, 10.0, 10.0, 30.0), 64, 64)]  # zero width


def crop_box(box, width, height):
    """(x0, y0, x1, y1) enlarged ×1.3 about its centre and clipped to [0, width] × [0, height]."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w, h = (x1 - x0) * 1.3, (y1 - y0) * 1.3
    return (max(0.0, cx - w / 2), max(0.0, cy - h / 2), float(min(width, cx + w / 2)), float(min(height, cy + h / 2)))


def _scaled(box, width, height, side, corner=False, clip=True):
    x0, y0, x1, y1 = box
    w, h = (x1 - x0) * side, (y1 - y0) * side
    cx, cy = ((x0 + w / 2, y0 + h / 2) if corner else ((x0 + x1) / 2, (y0 + y1) / 2))
    out = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    if clip:
        out = (max(0.0, out[0]), max(0.0, out[1]), min(width, out[2]), min(height, out[3]))
    return tuple(float(v) for v in out)


CROP_BOX = Exercise(
    id="05.crop-box", title="the ×1.3 ranking crop", function="crop_box", paper="§4.4 (localized ranking, ×1.3)",
    prompt="Write crop_box(box, width, height): the box (x0, y0, x1, y1) the localized ranking crops — the detected "
           "box with its width and height each ×1.3, about its centre, clipped to the image [0, width] × [0, height]. Return "
           "a tuple of four floats.",
    stub='''def crop_box(box, width, height):
    """The detected box enlarged x1.3 about its centre, clipped to the image."""
    x0, y0, x1, y1 = box
    cx, cy = ...  # TODO: the centre
    w, h = ...    # TODO: the enlarged sides
    return ...    # TODO: (x0, y0, x1, y1), clipped to [0, width] x [0, height]
''',
    reference=lambda b, w, h: enlarge_box(b, 1.3, w, h), solution=crop_box, cases=_box_cases,
    mistakes=(
        Mistake(lambda b, w, h: _scaled(b, w, h, 1.3, corner=True),
                "you scaled about the top-left corner: the box grew only to the right and down; enlarge it about its "
                "centre"),
        Mistake(lambda b, w, h: _scaled(b, w, h, math.sqrt(1.3)),
                "you enlarged the area ×1.3 (each side ×1.14); the paper enlarges each side ×1.3"),
        Mistake(lambda b, w, h: _scaled(b, w, h, 1.6),
                "you added 30 % of the side on each end, so the side grew ×1.6; ×1.3 in all is 15 % on each end"),
        Mistake(lambda b, w, h: _scaled(b, w, h, 1.3, clip=False),
                "the box leaves the image: clip it to [0, width] × [0, height]"),
    ),
    checks="the box against romlib.masks.enlarge_box(box, 1.3, W, H) inside, on edges, in a corner, non-square, "
           "zero width",
    hints=('§4.4 of the paper (localized ranking): the detected box enlarged ×1.3.',
           "Keep the box's centre, scale its width and height by 1.3, and clip to the image (0 … width, 0 … height)."),
    hint="centre ± 1.3 · side / 2 on each axis, then max(0, ·) and min(width or height, ·).",
)

# ----------------------------------------------------------------------------------------------
# 05.order: CLIP distances -> the samples, best first
# ----------------------------------------------------------------------------------------------


def _order_cases(seed: int = 0):
    g = torch.Generator().manual_seed(fresh_seed(9, seed))
    return [(torch.rand(n, generator=g) * 0.5 + 0.6,) for n in (8, 3, 24)] + [(torch.tensor([0.9, 0.7, 1.1, 0.8]),)]


def _order_reference(distances):
    d = [float(v) for v in distances]
    return tuple(sorted(range(len(d)), key=lambda i: (d[i], i)))  # as romlib.rank.rank_samples


def rank_order(distances):
    """Sample indices, best first: CLIP distance to the target, lower is better."""
    import torch

    return tuple(int(i) for i in torch.as_tensor(distances).argsort())


ORDER = Exercise(
    id="05.order", title="ordering the samples by CLIP distance", function="rank_order",
    paper="§4.4; the authors order by CLIP distance to c_target",
    prompt="Write rank_order(distances): distances[i] is sample i's CLIP distance to the target text (lower is "
           "better). Return the sample indices, best first.",
    stub='''import torch

def rank_order(distances):
    """Sample indices, best first (CLIP distance: lower is better)."""
    d = torch.as_tensor(distances)
    return ...  # TODO: indices, best first
''',
    reference=_order_reference, solution=rank_order, cases=_order_cases,
    mistakes=(
        Mistake(lambda d: tuple(int(i) for i in torch.as_tensor(d).argsort(descending=True)),
                "best first means the *lowest* distance first: you sorted as if it were a similarity (higher = better)"),
        Mistake(lambda d: tuple(int(i) for i in torch.as_tensor(d).argsort().argsort()),
                "you returned each sample's rank (rank of sample i); return the order: the index of the best sample "
                "first, then the second, ..."),
        Mistake(lambda d: tuple(float(v) for v in torch.as_tensor(d).sort().values),
                "you returned the sorted distances; return the sample indices in that order"),
    ),
    checks="the order against romlib.rank's (stable ascending distance) for 3, 4, 8 and 24 samples",
    hints=('§4.4 of the paper: samples are ordered by CLIP distance to c_target — is lower or higher better?',
           'The indices of the samples from the best to the worst: a sort of the indices by distance.'),
    hint="the indices that sort the distances ascending (argsort), as a list or tuple of ints.",
)

EXERCISES = (CROP_BOX, ORDER)
