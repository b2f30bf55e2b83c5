"""A tiny CLIP for ShapesWorld: a learned image–text dual encoder, the honest analogue of CLIP.

Two encoders map a crop and a text to the same 64-d space (Radford et al. 2021):

* **image**: five 3×3 convolutions (32→64→64→128→128 channels, three of stride 2, GELU)
  over a 32×32 crop in [0, 1], flattened at 4×4, then a linear layer;
* **text**: word embeddings of the :class:`~romlib.shapes.scenes.WordTokenizer` tokens, their
  masked mean, then a two-layer MLP.

It is trained contrastively (:func:`romlib.shapes.train.train_ranker`) on exactly the pixels the
ranking sees (:func:`romlib.rank.ranking_inputs`, local and masked crops, blurred and noised to
look like samples) against the object's description, with every text that describes the crop's
object counted as a positive (several crops in a batch can be "a circle"). It never calls the
oracle. It satisfies :class:`romlib.contracts.Ranker`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .scenes import WordTokenizer

__all__ = ["ShapesRanker", "TEXT_CTX"]

TEXT_CTX = 8


class ShapesRanker(nn.Module):
    """``encode_image(images [B, 3, S, S] in [0, 1]) -> [B, D]``, ``encode_text(texts) -> [N, D]``."""

    def __init__(self, image_size: int = 32, dim: int = 64, width: int = 64):
        super().__init__()
        if image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8, got {image_size}")
        self.image_size, self.dim = image_size, dim
        self.tokenizer = WordTokenizer()
        c = [3, 32, 64, 64, 128, 128]
        strides = [1, 2, 1, 2, 2]
        layers = []
        for i, s in enumerate(strides):
            layers += [nn.Conv2d(c[i], c[i + 1], 3, stride=s, padding=1), nn.GELU()]
        self.visual = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c[-1] * (image_size // 8) ** 2, dim))
        self.token_embedding = nn.Embedding(self.tokenizer.n_vocab, width)
        self.text_mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, dim))
        self.logit_scale = nn.Parameter(torch.tensor(2.659))  # log(1 / 0.07), as CLIP

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Crops [B, 3, S, S] in [0, 1] (resized to ``image_size`` if needed) → [B, D]."""
        x = images.to(self.device, torch.float32)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
        return self.visual(x * 2 - 1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Texts of the ShapesWorld language → [N, D] (the empty text embeds the end token)."""
        tokens, mask = self.tokenizer.batch(list(texts), TEXT_CTX, device=self.device)
        mask = mask.clone()
        mask[:, 0] |= ~mask.any(1)  # an empty text reads its (end) token
        emb = self.token_embedding(tokens) * mask[..., None]
        return self.text_mlp(emb.sum(1) / mask.sum(1, keepdim=True))

    def logits(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Scaled cosine similarities [B, N] (training and inspection)."""
        i = F.normalize(self.encode_image(images), dim=-1)
        t = F.normalize(self.encode_text(texts), dim=-1)
        return self.logit_scale.exp().clamp(max=100) * i @ t.T
