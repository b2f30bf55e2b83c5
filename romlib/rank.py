"""Ranking the B samples with CLIP against the target text (paper §4.4, Fig. 7).

* ``rank="local"`` (the paper): crop the detected box enlarged ×1.3 from the full-size frame,
  resize it to CLIP's input (224), and encode it — the object *with its context*;
* ``rank="masked"`` (Blended Diffusion's ranking): the frame with everything outside the edit
  mask set to 0, resized to 224;
* ``rank="none"``: keep the sampling order.

Samples are ordered by the spherical CLIP distance to the target text, lower is better:
d(x, y) = 2 · arcsin(‖x̂ − ŷ‖ / 2)², with x̂, ŷ the unit-normalised embeddings.

As in the authors' code, the crops are fed in [0, 1] without CLIP's mean/std normalisation
(:class:`ClipRanker` ``normalize=False``; pass ``True`` for the textbook preprocessing).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import hub
from .config import RANK_MODES, RankMode
from .masks import rank_crop
from .models.tokenizers import warn_text

__all__ = ["RankMode", "clip_distance", "ranking_inputs", "rank_samples", "Ranking", "ClipRanker", "load_clip_ranker",
           "CLIP_FILES"]

def clip_distance(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """Spherical distance 2·arcsin(‖x̂ − ŷ‖/2)² between rows of ``image_emb`` and one text embedding."""
    x = F.normalize(image_emb.float(), dim=-1)
    y = F.normalize(text_emb.float(), dim=-1)
    return (x - y).norm(dim=-1).div(2).arcsin().pow(2).mul(2)


def ranking_inputs(images: torch.Tensor, mode: RankMode, *, box: tuple[float, float, float, float] | None = None,
                   edit_mask: torch.Tensor | None = None, size: int = 224, enlarge: float = 1.3) -> torch.Tensor:
    """Exactly the pixels the ranker sees, [B, 3, size, size] in [0, 1].

    ``images``: [B, 3, S, S] frames in [-1, 1]; ``box``: (x0, y0, x1, y1) in *frame* pixels
    (it is enlarged ×``enlarge`` and clipped here); ``edit_mask``: [1 or B, 1, S, S], 1 = edited.
    """
    x = images.float().add(1).div(2).clamp(0, 1)
    s_h, s_w = x.shape[-2:]
    if mode == "local":
        if box is None:
            raise ValueError("rank='local' needs the object's box")
        x0, y0, x1, y1 = rank_crop(box, s_w, s_h, enlarge)
        x = x[:, :, y0:y1 + 1, x0:x1 + 1]
    elif mode == "masked":
        if edit_mask is None:
            raise ValueError("rank='masked' needs the edit mask")
        x = edit_mask.to(x) * x
    else:
        raise ValueError(f"rank mode {mode!r} has no inputs; expected 'local' or 'masked'")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


@dataclass
class Ranking:
    order: list[int]  # sample indices, best first
    scores: list[float]  # distance of each sample (sample order); lower is better
    mode: str

    @property
    def ranked_scores(self) -> list[float]:
        return [self.scores[i] for i in self.order]


def rank_samples(ranker, images: torch.Tensor, target: str, mode: RankMode = "local", *, box=None, edit_mask=None,
                 batch_size: int = 32, enlarge: float = 1.3) -> Ranking:
    """Score every sample against ``target`` and order them (stable: ties keep sampling order); ``enlarge``: the
    local ranking's crop factor (the paper's ×1.3; :func:`ranking_inputs`)."""
    if mode not in RANK_MODES:
        raise ValueError(f"rank must be one of {', '.join(map(repr, RANK_MODES))}, got {mode!r}")
    n = images.shape[0]
    if mode == "none" or ranker is None:
        return Ranking(order=list(range(n)), scores=[float("nan")] * n, mode="none")
    with torch.no_grad():
        text_emb = ranker.encode_text([target])
        scores = []
        for i in range(0, n, batch_size):
            inputs = ranking_inputs(images[i:i + batch_size], mode, box=box, edit_mask=edit_mask, size=ranker.image_size,
                                    enlarge=enlarge)
            scores.append(clip_distance(ranker.encode_image(inputs), text_emb).cpu())
    scores = torch.cat(scores)
    order = sorted(range(n), key=lambda i: (scores[i].item(), i))
    return Ranking(order=order, scores=scores.tolist(), mode=mode)


class ClipRanker:
    """An open_clip model as a :class:`romlib.contracts.Ranker`."""

    MEAN = (0.48145466, 0.4578275, 0.40821073)
    STD = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, model, tokenizer, image_size: int = 224, normalize: bool = False):
        self.model, self.tokenizer, self.image_size, self.normalize = model, tokenizer, image_size, normalize

    @property
    def device(self):
        return next(self.model.parameters()).device

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device)
        if self.normalize:
            mean = torch.tensor(self.MEAN, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(self.STD, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        dtype = next(self.model.visual.parameters()).dtype
        return self.model.encode_image(x.to(dtype)).float()

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        ctx = getattr(self.tokenizer, "context_length", 77)
        encode = getattr(self.tokenizer, "encode", None)
        for t in texts:  # CLIP reads 77 tokens with its start and end tokens; open_clip truncates silently
            if callable(encode):
                warn_text(t, len(encode(t)) + 2, ctx, reader="CLIP")
        return self.model.encode_text(self.tokenizer(texts).to(self.device)).float()


#: (open_clip model name, pretrained tag) -> the romlib.hub file holding those weights.
CLIP_FILES = {("ViT-B-16", "openai"): "clip/vit-b-16-openai"}


def load_clip_ranker(device="cpu", model_name: str = "ViT-B-16", pretrained: str = "openai", normalize: bool = False,
                     *, progress: bool = True) -> ClipRanker:
    """CLIP ViT-B/16 with OpenAI's weights (about 600 MB), fetched once through :mod:`romlib.hub`
    (``$ROMLIB_CACHE``, ``ROMLIB_MIRROR``) and handed to open_clip as a local file, so open_clip
    never downloads anything itself. ``pretrained`` may also be the path of a local weights file
    for ``model_name``; other tags are refused (open_clip would fetch them on its own)."""
    import os

    import open_clip


    key = (model_name, pretrained)
    if key in CLIP_FILES:
        path = str(hub.fetch_checked(CLIP_FILES[key], progress=progress))
        quick_gelu = True  # OpenAI's CLIP was trained with QuickGELU
    elif os.path.isfile(pretrained):
        path, quick_gelu = pretrained, False
    else:
        raise ValueError(f"CLIP weights {model_name!r}/{pretrained!r} are not registered in romlib.hub "
                         f"(known: {', '.join('/'.join(k) for k in CLIP_FILES)}); pass pretrained=<a local weights file>")
    model = open_clip.create_model(model_name, pretrained=path, device=device, force_quick_gelu=quick_gelu,
                                   require_pretrained=True)
    model = model.eval().requires_grad_(False)
    size = model.visual.image_size
    return ClipRanker(model, open_clip.get_tokenizer(model_name),
                      image_size=size[0] if isinstance(size, (tuple, list)) else size, normalize=normalize)
