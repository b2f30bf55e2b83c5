"""A learned referring segmenter for the embedded world: a small MDETR (Kamath et al. 2021).

**Model** (:class:`WorldSegmenterNet`, ≈ 0.4 M parameters at the shipped size):

* image: a CNN backbone (five 3×3 convolutions, GroupNorm, GELU) from 64×64 to 16×16 features,
  with a 32×32 skip; text: word embeddings over the world's closed vocabulary plus a learned
  position, one transformer layer;
* MDETR's joint encoder: the 256 image tokens (learned 2-D positions) and the text tokens in one
  sequence through ``enc_layers`` transformer layers, so each pixel feature can read the words;
* a transformer decoder with ``queries`` learned object queries attending to the fused sequence;
* three options (``film``, ``align``, ``attributes``; off by default, docs/world_training.md measures them):
  FiLM — coordinate channels, and the pooled text scaling and shifting the backbone's features (Perez et al.
  2018); the score as MDETR's contrastive alignment of a query's embedding with the pooled text's; and, for
  training, a head by which each matched query names its object's shape, colour, material and place;
* per query: a *referred* logit (the score, ``sigmoid`` = 1 − p(no-object) of MDETR's binary form),
  an auxiliary *object* logit, and a mask = dot(query embedding, pixel embeddings at 32×32),
  resized to the image and thresholded (sigmoid > ``threshold``).

**Training** (:func:`segmenter_loss`): every object of the scene is matched to one query
(Hungarian, on mask BCE + dice cost); matched queries learn their object's mask (BCE + dice, at
32×32) and "object"; the query matched to the *referred* object learns "referred", all others
"no-object" (negatives weighted :data:`NEG_WEIGHT`, as DETR's ``eos_coef``). Being small and trained
for minutes, it makes the mistakes a real one makes: rims and thin parts lost at 32×32, the wrong
look-alike sometimes, low scores on hard relations.

:class:`WorldSegmenter` wraps it in the :class:`romlib.contracts.Segmenter` contract, like
:class:`romlib.segment.MDETRSegmenter`: the best query, its box (the thresholded mask's tight box),
every query's score, box and mask for inspection, :class:`~romlib.contracts.NoObjectFound` below
``min_score`` and :class:`~romlib.contracts.AmbiguousReference` by MDETR's rule
(:func:`romlib.segment.ambiguous_queries`).
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..contracts import AmbiguousReference, NoObjectFound, Segmentation
from ..segment import DEFAULT_MIN_SCORE, _check_unit, ambiguous_queries
from .scene import COLOURS, MATERIALS, SHAPES

__all__ = ["WorldSegmenterNet", "WorldSegmenter", "load_segmenter", "segmenter_loss", "pooled_score", "assignment", "mask_boxes",
           "mask_iou", "NEG_WEIGHT"]

log = logging.getLogger(__name__)

#: weight of the "not referred" / "no object" targets in the score losses (DETR's eos_coef)
NEG_WEIGHT = 0.25
#: the named attributes the ``attributes`` option's head predicts for each matched query (then x, y, size / 64)
_ATTR_VALUES = {"shape": SHAPES, "colour": tuple(COLOURS), "material": MATERIALS}


def _conv(c_in, c_out, stride=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(8, c_out), nn.GELU())


def _layer(d, heads):
    return nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)


class WorldSegmenterNet(nn.Module):
    """``forward(image [B, 3, S, S] in [-1, 1], tokens [B, L], mask [B, L] bool)`` →
    ``{"ref_logits": [B, Q], "obj_logits": [B, Q], "mask_logits": [B, Q, S/2, S/2]}``."""

    def __init__(self, n_vocab: int, text_ctx: int = 16, width: int = 64, queries: int = 8, enc_layers: int = 2,
                 dec_layers: int = 2, heads: int = 4, image_size: int = 64, film: bool = False, align: bool = False,
                 attributes: bool = False, dense: bool = False):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {image_size}")
        if dense and align:
            raise ValueError("dense and align are two ways of scoring a query; choose one (dense=True, align=False)")
        d = width
        self.config = dict(n_vocab=n_vocab, text_ctx=text_ctx, width=width, queries=queries, enc_layers=enc_layers,
                           dec_layers=dec_layers, heads=heads, image_size=image_size, film=bool(film),
                           align=bool(align), attributes=bool(attributes), dense=bool(dense))
        self.image_size, self.text_ctx, self.film, self.align = image_size, text_ctx, bool(film), bool(align)
        self.dense = bool(dense)
        # film: two coordinate channels join the RGB input, and the pooled text scales and shifts the
        # backbone's features (FiLM, Perez et al. 2018) before the joint encoder
        self.stem = nn.Sequential(_conv(5 if film else 3, 32), _conv(32, 48, 2), _conv(48, 48))  # → S/2
        self.down = nn.Sequential(_conv(48, d, 2), _conv(d, d))  # → S/4
        n_pix = (image_size // 4) ** 2
        self.pix_pos = nn.Parameter(torch.randn(n_pix, d) * 0.02)
        self.token_embedding = nn.Embedding(n_vocab, d)
        self.text_pos = nn.Parameter(torch.randn(text_ctx, d) * 0.02)
        self.type_embedding = nn.Parameter(torch.zeros(2, d))  # image / text
        self.text_encoder = nn.TransformerEncoder(_layer(d, heads), 1, enable_nested_tensor=False)
        self.encoder = nn.TransformerEncoder(_layer(d, heads), enc_layers, enable_nested_tensor=False)
        self.query = nn.Parameter(torch.randn(queries, d) * 0.02)
        dec = nn.TransformerDecoderLayer(d, heads, 2 * d, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(dec, dec_layers, norm=nn.LayerNorm(d))
        if dense:  # the score read off a per-pixel "referred" map under each query's mask
            self.ref_pixel = nn.Conv2d(d, 1, 1)
        elif not align:
            self.ref_head = nn.Linear(d, 1)
        self.obj_head = nn.Linear(d, 1)
        self.mask_embed = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.skip = nn.Conv2d(48, d, 1)
        self.pixel_head = nn.Sequential(_conv(d, d), nn.Conv2d(d, d, 1))
        if attributes:  # training only: each matched query names its object's shape, colour, material and place
            self.attr_head = nn.Linear(d, sum(len(v) for v in _ATTR_VALUES.values()) + 3)
        if align:  # the score as MDETR's contrastive alignment: a query's embedding against the pooled text's
            self.align_q, self.align_t = nn.Linear(d, d), nn.Linear(d, d)
            self.align_bias = nn.Parameter(torch.zeros(()))
        if film:
            self.film_head = nn.Linear(d, 2 * (48 + d))
            nn.init.zeros_(self.film_head.weight), nn.init.zeros_(self.film_head.bias)

    def _text(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        txt = self.token_embedding(tokens) + self.text_pos[: tokens.shape[1]] + self.type_embedding[1]
        return self.text_encoder(txt, src_key_padding_mask=~mask)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> dict:
        mask = mask.clone()
        mask[:, 0] |= ~mask.any(1)  # an empty text reads its (end) token
        txt = self._text(tokens, mask)
        pooled = (txt * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # the text as one vector (film, align)
        if self.film:
            n = image.shape[-1]
            ramp = torch.linspace(-1, 1, n, device=image.device, dtype=image.dtype)
            coords = torch.stack([ramp.view(1, n).expand(n, n), ramp.view(n, 1).expand(n, n)])
            g2, b2, g4, b4 = self.film_head(pooled).split([48, 48, self.pix_pos.shape[1], self.pix_pos.shape[1]], 1)
            f2 = self.stem(torch.cat([image, coords.expand(image.shape[0], -1, -1, -1)], 1))
            f2 = f2 * (1 + g2[..., None, None]) + b2[..., None, None]
            f4 = self.down(f2)
            f4 = f4 * (1 + g4[..., None, None]) + b4[..., None, None]
        else:
            f2 = self.stem(image)  # [B, 48, S/2, S/2]
            f4 = self.down(f2)  # [B, d, S/4, S/4]
        b, d, h, w = f4.shape
        img = f4.flatten(2).transpose(1, 2) + self.pix_pos + self.type_embedding[0]
        pad = torch.cat([torch.zeros(b, img.shape[1], dtype=torch.bool, device=mask.device), ~mask], 1)
        mem = self.encoder(torch.cat([img, txt], 1), src_key_padding_mask=pad)
        q = self.decoder(self.query.expand(b, -1, -1), mem, memory_key_padding_mask=pad)  # [B, Q, d]
        fused = mem[:, : h * w].transpose(1, 2).reshape(b, d, h, w)
        pix = self.pixel_head(F.interpolate(fused, scale_factor=2, mode="bilinear", align_corners=False) + self.skip(f2))
        masks = torch.einsum("bqd,bdhw->bqhw", self.mask_embed(q), pix) / d ** 0.5
        out = {}
        if self.dense:
            ref_map = self.ref_pixel(pix)[:, 0]  # [B, S/2, S/2] logits: is this pixel the referred object's?
            ref = pooled_score(masks.detach(), ref_map)
            out["ref_map"] = ref_map
        elif self.align:
            ref = torch.einsum("bqd,bd->bq", self.align_q(q), self.align_t(pooled)) / d ** 0.5 + self.align_bias
        else:
            ref = self.ref_head(q)[..., 0]
        out.update(ref_logits=ref, obj_logits=self.obj_head(q)[..., 0], mask_logits=masks)
        if hasattr(self, "attr_head"):
            out["attr"] = self.attr_head(q)
        return out


#: the ``dense`` score's prior: a query's score is shrunk towards this logit with the weight of this many pixels
#: (at the mask's 32×32), so a query with an empty mask scores low instead of reading noise
PRIOR_LOGIT, PRIOR_PIXELS = -6.0, 4.0


def pooled_score(mask_logits: torch.Tensor, ref_map: torch.Tensor) -> torch.Tensor:
    """The ``dense`` option's score of each query (logits [B, Q]): the mean of the per-pixel referred logits
    ``ref_map`` [B, h, w] under the query's soft mask ``sigmoid(mask_logits)`` [B, Q, h, w], shrunk towards
    :data:`PRIOR_LOGIT` with the weight of :data:`PRIOR_PIXELS` pixels. Near-duplicate queries of one object
    read the same pixels and so get the same score: no query is taught "no" for an object another query
    already claims (the conflict that keeps a per-query score head at chance, docs/world_training.md)."""
    w = mask_logits.sigmoid()
    return ((w * ref_map[:, None]).sum((-1, -2)) + PRIOR_PIXELS * PRIOR_LOGIT) / (w.sum((-1, -2)) + PRIOR_PIXELS)


# ----------------------------------------------------------------------------- loss
def assignment(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost matching of a [R, C] cost matrix with R <= C (the Hungarian method, O(R²C)):
    ``(row, column)`` pairs, one per row."""
    n, m = cost.shape
    if n > m:
        raise ValueError(f"assignment needs rows <= columns, got a {n}x{m} cost matrix")
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    p, way = np.zeros(m + 1, dtype=int), np.zeros(m + 1, dtype=int)
    for i in range(1, n + 1):
        p[0], j0 = i, 0
        minv, used = np.full(m + 1, np.inf), np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0, delta, j1 = p[j0], np.inf, 0
            for j in range(1, m + 1):
                if not used[j]:
                    cur = cost[i0 - 1, j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(m + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    return sorted((int(p[j]) - 1, j - 1) for j in range(1, m + 1) if p[j])


def _dice(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − Dice over the last two dims."""
    inter = (prob * target).sum((-1, -2))
    return 1 - (2 * inter + 1) / (prob.sum((-1, -2)) + target.sum((-1, -2)) + 1)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boolean masks over the last two dims (0 where both are empty)."""
    inter = (a & b).sum((-1, -2)).float()
    union = (a | b).sum((-1, -2)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def _referred_index(mask: torch.Tensor, masks_all: torch.Tensor, n: int) -> int:
    """Which of the scene's object masks is the referred one (highest IoU with ``mask``)."""
    return int(mask_iou(masks_all[:n] > 0.5, (mask[0] > 0.5)[None]).argmax())


def segmenter_loss(net: WorldSegmenterNet, batch: dict, tokens: torch.Tensor, mask: torch.Tensor) -> dict:
    """MDETR-style loss on one batch (keys of ``segment_batch``): ``{"loss", "mask", "ref", "obj"}``."""
    out = net(batch["image"], tokens, mask)
    logits = out["mask_logits"]  # [B, Q, s, s]
    s = logits.shape[-1]
    targets = F.interpolate(batch["masks_all"].float(), size=(s, s), mode="area")  # soft targets at s×s
    ref_t = torch.zeros_like(out["ref_logits"])
    obj_t = torch.zeros_like(out["obj_logits"])
    pred_m, tgt_m, w_m, attr_pred, attr_obj = [], [], [], [], []
    for i in range(logits.shape[0]):
        n = int(batch["count"][i])
        if n == 0:
            continue
        with torch.no_grad():
            p = logits[i].sigmoid()  # [Q, s, s]
            t = targets[i, :n]  # [n, s, s]
            pairs_shape = (len(p), n, s, s)
            bce = F.binary_cross_entropy_with_logits(logits[i][:, None].expand(pairs_shape), t[None].expand(pairs_shape),
                                                     reduction="none").mean((-1, -2))
            cost = bce + _dice(p[:, None], t[None])  # [Q, n]
            pairs = assignment(cost.T.cpu().double().numpy())  # (object, query)
        ref_j = _referred_index(batch["mask"][i], batch["masks_all"][i], n)
        for j, q in pairs:
            if "attr" in out and batch.get("scenes") is not None:
                attr_pred.append(out["attr"][i, q])
                attr_obj.append(batch["scenes"][i].objects[j])
            obj_t[i, q] = 1
            pred_m.append(logits[i, q])
            tgt_m.append(targets[i, j])
            w_m.append(2.0 if j == ref_j else 1.0)
            if j == ref_j:
                ref_t[i, q] = 1
    if pred_m:
        pm, tm, wm = torch.stack(pred_m), torch.stack(tgt_m), torch.tensor(w_m, device=logits.device)
        per_mask = F.binary_cross_entropy_with_logits(pm, tm, reduction="none").mean((-1, -2)) + _dice(pm.sigmoid(), tm)
        l_mask = (per_mask * wm).sum() / wm.sum()
    else:  # no object in the whole batch: only the scores learn ("no object")
        l_mask = logits.sum() * 0

    def score_loss(lg, t, w=None):
        w = torch.where(t > 0, torch.ones_like(t), torch.full_like(t, NEG_WEIGHT)) if w is None else w
        return (F.binary_cross_entropy_with_logits(lg, t, reduction="none") * w).sum() / w.sum().clamp(min=1)

    l_obj = score_loss(out["obj_logits"], obj_t)
    if "ref_map" in out:
        # dense: each pixel learns whether it is the referred object's (soft targets at s×s), and only the
        # matched queries' pooled scores learn (referred or not): an unmatched duplicate is taught nothing
        ref_target = F.interpolate(batch["mask"].float(), size=(s, s), mode="area")[:, 0]
        l_ref = F.binary_cross_entropy_with_logits(out["ref_map"], ref_target) + score_loss(out["ref_logits"], ref_t, obj_t)
    else:
        l_ref = score_loss(out["ref_logits"], ref_t)
    losses = {"loss": l_mask + l_ref + 0.5 * l_obj, "mask": l_mask.detach(), "ref": l_ref.detach(), "obj": l_obj.detach()}
    if attr_pred:
        l_attr = _attribute_loss(torch.stack(attr_pred), attr_obj, batch["image"].shape[-1])
        losses["loss"] = losses["loss"] + 0.5 * l_attr
        losses["attr"] = l_attr.detach()
    return losses


def _attribute_loss(pred: torch.Tensor, objects: list, size: int) -> torch.Tensor:
    """Cross-entropy of each named attribute and the squared error of (x, y, size) / frame for matched queries."""
    loss, k = pred.new_zeros(()), 0
    for name, values in _ATTR_VALUES.items():
        target = torch.tensor([values.index(getattr(o, name)) for o in objects], device=pred.device)
        loss = loss + F.cross_entropy(pred[:, k:k + len(values)], target)
        k += len(values)
    place = torch.tensor([[o.x / size, o.y / size, o.size / size] for o in objects], device=pred.device, dtype=pred.dtype)
    return loss + 10 * F.mse_loss(pred[:, k:k + 3], place)


# ----------------------------------------------------------------------------- the contract
def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight (x0, y0, x1, y1) pixel boxes [N, 4] of boolean masks [N, H, W] ((0, 0, 0, 0) when empty)."""
    n, h, w = masks.shape
    rows, cols = masks.any(2), masks.any(1)
    ar_h, ar_w = torch.arange(h, device=masks.device), torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ar_h, h).min(1).values
    y1 = torch.where(rows, ar_h + 1, 0).max(1).values
    x0 = torch.where(cols, ar_w, w).min(1).values
    x1 = torch.where(cols, ar_w + 1, 0).max(1).values
    boxes = torch.stack([x0, y0, x1, y1], 1).float()
    return torch.where(masks.flatten(1).any(1)[:, None], boxes, torch.zeros_like(boxes))


class WorldSegmenter:
    """:class:`romlib.contracts.Segmenter` over a :class:`WorldSegmenterNet` and the world's tokenizer."""

    default_min_score = DEFAULT_MIN_SCORE

    def __init__(self, net: WorldSegmenterNet, tokenizer):
        self.net = net.eval().requires_grad_(False)
        self.tokenizer = tokenizer

    @torch.no_grad()
    def predict(self, images: torch.Tensor, texts: list[str]) -> dict:
        """The raw outputs for images [B, 3, S, S] in [-1, 1] (resized to the net's size)."""
        x = images.float()
        if x.shape[-1] != self.net.image_size or x.shape[-2] != self.net.image_size:
            x = F.interpolate(x, size=(self.net.image_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
        tokens, mask = self.tokenizer.batch(list(texts), self.net.text_ctx)
        return self.net(x, tokens, mask)

    def segment(self, image, text: str, *, threshold: float = 0.5, min_score: float | None = None,
                best_anyway: bool = False) -> Segmentation:
        """The object ``text`` refers to in ``image`` (path, PIL image, array or tensor, as
        :func:`romlib.io.load_image` reads them). ``extra["query_masks"]``: every query's mask
        probabilities [Q, H, W]; ``extra["object_scores"]``: each query's "is an object" score."""
        from ..io import load_image, quote

        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"text is empty ({text!r}); give a referring expression such as 'the red ball'")
        threshold = _check_unit("threshold", threshold, low_open=True)
        min_score = _check_unit("min_score", self.default_min_score if min_score is None else min_score, low_open=False)
        img = load_image(image)
        W, H = img.size
        x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
        out = self.predict(x, [text])
        scores = out["ref_logits"][0].sigmoid()
        logits = out["mask_logits"][0]  # [Q, s, s]
        probs = F.interpolate(logits[None], size=(H, W), mode="bilinear", align_corners=False)[0].sigmoid()
        masks = probs > threshold
        boxes = mask_boxes(masks)
        k = int(scores.argmax())
        score, box = float(scores[k]), tuple(float(v) for v in boxes[k])
        if score < min_score and not best_anyway:
            raise NoObjectFound(text, score, box, min_score)
        if score < min_score:
            log.warning("no query matches %s (best score %.2f < min_score=%g); best_anyway: took query %d", quote(text),
                        score, min_score, k)
        found = masks.flatten(1).any(1)  # a query without a mask is no second object
        others = ambiguous_queries(torch.where(found, scores, torch.full_like(scores, -1.0)), boxes, k, min_score)
        if others:
            err = AmbiguousReference(text, [(f"query {j}", tuple(boxes[j].tolist()), float(scores[j])) for j in [k, *others]])
            if not best_anyway:
                raise err
            log.warning("%s; best_anyway: took query %d", err.summary, k)
        if not masks[k].any():
            log.warning("the mask for %s is empty at threshold %.2f (score %.3f)", quote(text), threshold, score)
        return Segmentation(mask=masks[k].clone(), box=box, score=score, scores=scores, boxes=boxes,
                            mask_logits=logits[k].clone(), index=k, text=text,
                            extra={"query_masks": probs, "object_scores": out["obj_logits"][0].sigmoid()})


def load_segmenter(path, tokenizer, *, device="cpu") -> WorldSegmenter:
    """A :class:`WorldSegmenter` from a ``segmenter.pt`` written by :mod:`romlib.world.train`."""
    from ..shapes.backend import read_weights

    def build(c):
        net = WorldSegmenterNet(**c["config"])
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in c["state_dict"].items()}, strict=True)
        return net

    net = read_weights(path, build, advice="train it again (the world's trainer, --what segmenter)")
    return WorldSegmenter(net.to(device), tokenizer)
