"""A stand-in for ``romlib.world.data`` (the real renderer lands from another branch): the same
names and batch keys, drawn from simple random rectangles and ellipses on gradient backgrounds.

It exists so that the world's trainers (:mod:`romlib.world.train`) and the learned segmenter can be
built and tested before the real data generator is merged; ``romlib.world.train._default_batches``
is the one place that chooses it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from romlib.models.tokenizers import TextTokenizer

COLOURS = {"red": (220, 50, 40), "green": (50, 170, 70), "blue": (50, 80, 220), "yellow": (230, 200, 50)}
SHAPES = ("box", "ball")
SIZES = ("small", "large")
VOCAB = ("<end>", "a", "the", *COLOURS, *SHAPES, *SIZES, "left", "right", "of", "object")
N_MAX = 4


class StubTokenizer(TextTokenizer):
    """One token per word of :data:`VOCAB`; unknown words raise ValueError naming them."""

    end_token = 0
    n_vocab = len(VOCAB)

    def __init__(self):
        self.ids = {w: i for i, w in enumerate(VOCAB)}

    def encode(self, text: str) -> list[int]:
        words = text.lower().split()
        bad = [w for w in words if w not in self.ids]
        if bad:
            raise ValueError(f"unknown word(s) {bad} in {text!r}; vocabulary: {', '.join(VOCAB[1:])}")
        return [self.ids[w] for w in words]

    def decode(self, tokens) -> str:
        return " ".join(VOCAB[int(t)] for t in tokens if int(t) != self.end_token)


def tokenizer() -> StubTokenizer:
    return StubTokenizer()


def _background(rng, size):
    a, b = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
    t = np.linspace(0, 1, size)[:, None, None] if rng.random() < 0.5 else np.linspace(0, 1, size)[None, :, None]
    return np.broadcast_to(a + (b - a) * t, (size, size, 3)).copy()


def _object_mask(rng, size, shape, large):
    side = rng.uniform(0.3, 0.45) * size if large else rng.uniform(0.16, 0.26) * size
    cx, cy = rng.uniform(side / 2, size - side / 2, 2)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    if shape == "box":
        m = (np.abs(xs - cx) <= side / 2) & (np.abs(ys - cy) <= side / 2)
    else:
        m = (xs - cx) ** 2 + (ys - cy) ** 2 <= (side / 2) ** 2
    return m, cx


def _scene(rng, size=64):
    img = _background(rng, size)
    n = int(rng.integers(1, N_MAX + 1))
    objs = []
    for _ in range(n):
        colour = str(rng.choice(list(COLOURS)))
        shape = str(rng.choice(SHAPES))
        large = bool(rng.random() < 0.5)
        m, cx = _object_mask(rng, size, shape, large)
        shade = np.asarray(COLOURS[colour]) * rng.uniform(0.85, 1.1)
        img[m] = shade
        for o in objs:  # later objects occlude earlier ones
            o["mask"] &= ~m
        objs.append({"mask": m, "colour": colour, "shape": shape, "size": "large" if large else "small", "cx": cx})
    objs = [o for o in objs if o["mask"].sum() >= 4]
    return np.clip(img, 0, 255), objs


def _to_tensor(img):
    return torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1


def _resize(x, size):
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="area")


def _refer(rng, objs, i):
    o = objs[i]
    same = [j for j, p in enumerate(objs) if p["colour"] == o["colour"] and p["shape"] == o["shape"]]
    text = f"the {o['colour']} {o['shape']}"
    if len(same) > 1:
        side = "left" if o["cx"] == min(objs[j]["cx"] for j in same) else "right"
        text = f"the {side} {o['colour']} {o['shape']}"
    return text


def _box(m):
    ys, xs = np.nonzero(m)
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)) if len(xs) else (0.0, 0.0, 0.0, 0.0)


def inpaint_batch(rng: np.random.Generator, batch_size: int, *, size: int = 64, **recipe) -> dict:
    """``image``, ``source``, ``keep`` (1 = keep), ``text`` as romlib.world.data promises."""
    images, sources, keeps, texts = [], [], [], []
    for _ in range(batch_size):
        img, objs = _scene(rng)
        o = objs[int(rng.integers(len(objs)))] if objs else None
        hole = np.zeros((64, 64), bool)
        if o is not None:
            ys, xs = np.nonzero(o["mask"])
            pad = int(rng.integers(1, 4))
            hole[max(0, ys.min() - pad):ys.max() + pad + 1, max(0, xs.min() - pad):xs.max() + pad + 1] = True
        x = _to_tensor(img)
        src = x * torch.from_numpy(~hole).float()
        images.append(x)
        sources.append(src)
        keeps.append(torch.from_numpy(~hole).float()[None])
        texts.append("" if o is None or rng.random() < 0.2 else f"a {o['colour']} {o['shape']}")
    out = {"image": torch.stack(images), "source": torch.stack(sources), "keep": torch.stack(keeps), "text": texts}
    if size != 64:
        out["image"], out["source"] = _resize(out["image"], size), _resize(out["source"], size)
        out["keep"] = (_resize(out["keep"], size) > 0.999).float()
    return out


def segment_batch(rng: np.random.Generator, batch_size: int, *, size: int = 64) -> dict:
    """``image``, ``text``, ``mask`` (the referred object), ``masks_all`` [B, N_MAX, H, W], ``n_objects``, ``boxes``."""
    images, texts, masks, alls, ns, boxes = [], [], [], [], [], []
    while len(images) < batch_size:
        img, objs = _scene(rng)
        if not objs:
            continue
        i = int(rng.integers(len(objs)))
        images.append(_to_tensor(img))
        texts.append(_refer(rng, objs, i))
        masks.append(torch.from_numpy(objs[i]["mask"]).float()[None])
        a = torch.zeros(N_MAX, 64, 64)
        for j, o in enumerate(objs):
            a[j] = torch.from_numpy(o["mask"]).float()
        alls.append(a)
        ns.append(len(objs))
        boxes.append(torch.tensor([_box(o["mask"]) for o in objs] + [(0.0,) * 4] * (N_MAX - len(objs))))
    return {"image": torch.stack(images), "text": texts, "mask": torch.stack(masks), "masks_all": torch.stack(alls),
            "n_objects": torch.tensor(ns), "boxes": torch.stack(boxes)}


def rank_batch(rng: np.random.Generator, batch_size: int, *, size: int = 64) -> tuple[torch.Tensor, list[str]]:
    """Crops in [0, 1] around one object each and that object's description."""
    images, texts = [], []
    while len(images) < batch_size:
        img, objs = _scene(rng)
        if not objs:
            continue
        o = objs[int(rng.integers(len(objs)))]
        x0, y0, x1, y1 = _box(o["mask"])
        c = ((x0 + x1) / 2, (y0 + y1) / 2)
        h = max(x1 - x0, y1 - y0) * 0.65 + 1
        lo = [int(max(0, min(64 - 2, v - h))) for v in c]
        hi = [int(min(64, max(lo[k] + 2, c[k] + h))) for k in range(2)]
        crop = (_to_tensor(img)[None, :, lo[1]:hi[1], lo[0]:hi[0]] + 1) / 2
        images.append(F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)[0])
        texts.append(f"a {o['size']} {o['colour']} {o['shape']}")
    return torch.stack(images), texts
