"""Referring segmentation with MDETR (PhraseCut): which pixels does "the red car" refer to?

:func:`load_segmenter` downloads the official checkpoint and RoBERTa's tokenizer files once (through
:mod:`romlib.hub`) and loads the weights strictly into our :class:`romlib.models.mdetr.MDETRSegmentation`;
:meth:`MDETRSegmenter.segment` does what the authors' code does around the model:

* preprocessing: the whole image, shorter side resized to 800 (bilinear, as ``T.Resize(800)``),
  ImageNet normalisation;
* the chosen query: the highest score 1 − p(no-object) (softmax over the 256 logits);
* its box: (cx, cy, w, h) in [0, 1] → (x0, y0, x1, y1) in pixels of the input image;
* its mask: the stride-4 logits, bilinearly resized to the model input's size and then to the
  input image's (as MDETR's ``PostProcessSegm``), sigmoid > ``threshold``;
* **ambiguity** (romlib's, not the authors'): when another query scores within
  :data:`AMBIGUITY_MARGIN` of the best (and at least ``min_score``) while its box barely overlaps
  the best one's (IoU < :data:`AMBIGUITY_IOU`), the text fits two objects about equally:
  :class:`~romlib.contracts.AmbiguousReference` lists them, unless ``best_anyway`` (take the best,
  with a warning).

Used by :class:`romlib.pipeline.ROMPipeline` (stage 1) and the notebooks that show what MDETR sees.
"""
from __future__ import annotations

import logging
import warnings
from typing import Literal

import torch
import torch.nn.functional as F

from . import hub
from .checks import is_real
from .contracts import AmbiguousReference, NoObjectFound, Segmentation
from .io import load_image, quote
from .masks import box_iou
from .models.mdetr import LEGACY_KEYS, MDETRConfig, MDETRSegmentation, official_config

__all__ = ["MDETRSegmenter", "create_model", "load_segmenter", "build_from_state_dict", "roberta_tokenizer",
           "Segmentation", "NoObjectFound", "AmbiguousReference", "DEFAULT_MIN_SCORE", "MIN_SIDE", "AMBIGUITY_MARGIN",
           "AMBIGUITY_IOU", "ambiguous_queries"]

log = logging.getLogger(__name__)

ModelName = Literal["phrasecut-eb3", "phrasecut-r101"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ``min_score=None`` means this: a low bar that only catches clear misses (the authors always
#: take the best query, which ``best_anyway=True`` reproduces).
DEFAULT_MIN_SCORE = 0.1
#: A second query scoring at least (best score − this) ...
AMBIGUITY_MARGIN = 0.1
#: ... whose box overlaps the best query's by less than this IoU is a second object the text fits.
AMBIGUITY_IOU = 0.1
#: Smallest image side accepted, in pixels.
MIN_SIDE = 32
#: The longer side after resizing is capped at this many times the shorter one (extreme panoramas).
MAX_ASPECT = 4


def create_model(name: ModelName = "phrasecut-eb3", *, device="cpu") -> MDETRSegmentation:
    """An official-size model with random weights, in eval mode; ``device="meta"`` costs no memory."""
    with torch.device(device):
        model = MDETRSegmentation(official_config(name))
    return model.eval().requires_grad_(False)


def _fill_meta_buffers(model: torch.nn.Module, device) -> None:
    """Recreate the non-persistent buffers a meta-built model still lacks (RoBERTa's position and
    token-type ids), which no state dict holds."""
    for mod_name, mod in model.named_modules():
        for name in list(mod._non_persistent_buffers_set):
            buf = getattr(mod, name)
            if buf is None or buf.device.type != "meta":
                continue
            if name == "position_ids":
                new = torch.arange(buf.shape[-1], device=device).expand(buf.shape)
            elif name == "token_type_ids":
                new = torch.zeros(buf.shape, dtype=buf.dtype, device=device)
            else:
                raise RuntimeError(f"cannot rebuild the buffer {mod_name}.{name} of a meta-built model")
            setattr(mod, name, new)


def build_from_state_dict(cfg: MDETRConfig, state: dict, *, device="cpu") -> MDETRSegmentation:
    """Our model with exactly ``state``'s weights (``strict=True``); the legacy ``position_ids``
    entry of files saved with transformers < 4.31 is accepted and dropped."""
    state = dict(state)
    for key in LEGACY_KEYS:
        if state.pop(key, None) is not None:
            log.debug("dropped the legacy entry %s", key)
    with torch.device("meta"):
        model = MDETRSegmentation(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    model.float()
    _fill_meta_buffers(model, "cpu")
    return model.to(device).eval().requires_grad_(False)


def roberta_tokenizer(name: str = "roberta-base", *, progress: bool = True):
    """RoBERTa's BPE tokenizer. ``"roberta-base"`` (MDETR's) is read from its ``vocab.json`` and
    ``merges.txt``, fetched once through :mod:`romlib.hub` (cached in ``$ROMLIB_CACHE``, honours
    ``ROMLIB_MIRROR``, no Hugging Face access); any other name comes from the Hugging Face hub."""
    from transformers import RobertaTokenizer

    if name == "roberta-base":
        files = hub.ensure(["roberta/vocab", "roberta/merges"], progress=progress)
        return RobertaTokenizer(vocab=str(files["roberta/vocab"]), merges=str(files["roberta/merges"]))
    try:
        return RobertaTokenizer.from_pretrained(name)
    except OSError as e:
        raise RuntimeError(f"cannot load the {name!r} tokenizer from the Hugging Face hub ({e}); connect once, "
                           "or pass tokenizer= (any RobertaTokenizer) to load_segmenter") from e


def load_segmenter(name: ModelName = "phrasecut-eb3", *, device="cpu", progress: bool = True,
                   tokenizer=None) -> "MDETRSegmenter":
    """Fetch (once, through :mod:`romlib.hub`) the official PhraseCut checkpoint and RoBERTa's
    tokenizer files, load the weights strictly (memory-mapped) and wrap them (``tokenizer=`` to
    use another copy)."""
    cfg = official_config(name)  # checks the name before any download
    if tokenizer is None:
        tokenizer = roberta_tokenizer(progress=progress)
    state = hub.load_checkpoint(f"mdetr/{name}", allow=["argparse.Namespace"], key="model", progress=progress)
    model = build_from_state_dict(cfg, state, device=device)
    return MDETRSegmenter(model, tokenizer)


def _box_xyxy(boxes: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """(cx, cy, bw, bh) in [0, 1] → (x0, y0, x1, y1) in pixels of a w×h image."""
    cx, cy, bw, bh = boxes.unbind(-1)
    xyxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
    return xyxy * torch.tensor([w, h, w, h], dtype=xyxy.dtype, device=xyxy.device)


def ambiguous_queries(scores: torch.Tensor, boxes: torch.Tensor, best: int, min_score: float) -> list[int]:
    """The queries, other than ``best``, that score within :data:`AMBIGUITY_MARGIN` of it (and at
    least ``min_score``) on a box overlapping it, and each other, by IoU < :data:`AMBIGUITY_IOU`
    (one per object: duplicates of a listed box are skipped), highest score first."""
    bar = max(min_score, float(scores[best]) - AMBIGUITY_MARGIN)
    out: list[int] = []
    for j in torch.argsort(scores, descending=True).tolist():
        if j == best or float(scores[j]) < bar:
            continue
        if all(box_iou(boxes[j], boxes[i]) < AMBIGUITY_IOU for i in [best, *out]):
            out.append(j)
    return out


def _check_unit(name: str, value, low_open: bool) -> float:
    ok = is_real(value) and (0 < value < 1 if low_open else 0 <= value <= 1)
    if not ok:
        raise ValueError(f"{name} must be a number in {'(0, 1)' if low_open else '[0, 1]'}, got {value!r}")
    return float(value)


class MDETRSegmenter:
    """A :class:`romlib.contracts.Segmenter`: an MDETR segmentation model and its RoBERTa tokenizer.

    ``size``: the shorter image side the model sees (800, as the authors). The backbone runs in
    channels-last memory layout (about 25 % faster on the CPU; same numbers up to rounding).
    """

    def __init__(self, model: MDETRSegmentation, tokenizer, *, size: int = 800):
        self.model = model.eval()
        self.model.detr.backbone.to(memory_format=torch.channels_last)
        self.tokenizer = tokenizer
        self.size = int(size)
        te = model.cfg.text_encoder
        # RoBERTa numbers positions from pad_token_id + 1, so that many fewer tokens fit
        self.max_tokens = te["max_position_embeddings"] - te.get("pad_token_id", 1) - 1

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> "MDETRSegmenter":
        self.model.to(device)
        return self

    def preprocess(self, img) -> torch.Tensor:
        """RGB PIL image → [1, 3, h, w]: shorter side ``size`` (bilinear), ImageNet normalisation."""
        import numpy as np
        from PIL import Image

        w, h = img.size
        short, long = min(w, h), max(w, h)
        new_long = int(self.size * long / short)
        if new_long > MAX_ASPECT * self.size:
            log.warning("image %dx%d is very elongated; resizing its longer side to %d px", w, h, MAX_ASPECT * self.size)
            new_short, new_long = max(1, int(MAX_ASPECT * self.size * short / long)), MAX_ASPECT * self.size
        else:
            new_short = self.size
        size = (new_short, new_long) if w <= h else (new_long, new_short)
        if size != img.size:
            img = img.resize(size, resample=Image.BILINEAR)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
        std = torch.tensor(IMAGENET_STD)[:, None, None]
        x = ((x - mean) / std)[None].to(self.device)
        return x.contiguous(memory_format=torch.channels_last)

    def tokenize(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)`` [1, T] with ``<s>`` and ``</s>``; text past RoBERTa's
        ``max_tokens`` is truncated with a warning."""
        n = len(self.tokenizer(text, verbose=False)["input_ids"])
        if n > self.max_tokens:
            warnings.warn(f"the text has {n} tokens, more than the {self.max_tokens} RoBERTa reads; "
                          f"it was truncated to {self.max_tokens}", UserWarning, stacklevel=3)
        enc = self.tokenizer([text], return_tensors="pt", truncation=True, max_length=self.max_tokens)
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def segment(self, image, text: str, *, threshold: float = 0.5, min_score: float | None = None,
                best_anyway: bool = False) -> Segmentation:
        """Segment what ``text`` refers to in ``image`` (path, PIL image, array or tensor; any mode).

        Raises :class:`NoObjectFound` (with the best score and box) when the best query scores
        below ``min_score`` (default :data:`DEFAULT_MIN_SCORE`), unless ``best_anyway``.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"text is empty ({text!r}); give a referring phrase such as 'the red car'")
        threshold = _check_unit("threshold", threshold, low_open=True)
        min_score = _check_unit("min_score", DEFAULT_MIN_SCORE if min_score is None else min_score, low_open=False)
        img = load_image(image, min_size=MIN_SIDE)
        W, H = img.size

        x = self.preprocess(img)
        input_ids, attention_mask = self.tokenize(text)
        with torch.no_grad():  # (not inference_mode: callers may edit the returned tensors in place)
            out = self.model(x, input_ids, attention_mask, queries="best")
        scores = 1 - out["pred_logits"][0].float().softmax(-1)[:, -1]
        boxes = _box_xyxy(out["pred_boxes"][0].float(), W, H)
        k = int(out["mask_queries"][0, 0])
        score, box = float(scores[k]), tuple(float(v) for v in boxes[k])
        if score < min_score and not best_anyway:
            raise NoObjectFound(text, score, box, min_score)
        if score < min_score:
            log.warning("no query matches %s (best score %.2f < min_score=%g); best_anyway: took query %d", quote(text),
                        score, min_score, k)
        others = ambiguous_queries(scores, boxes, k, min_score)
        if others:
            err = AmbiguousReference(text, [(f"query {j}", tuple(boxes[j].tolist()), float(scores[j]))
                                            for j in [k, *others]])
            if not best_anyway:
                raise err
            log.warning("%s; best_anyway: took query %d", err.summary, k)

        logits = out["pred_masks"][0, 0].float()  # [h/4, w/4], the whole image
        up = F.interpolate(logits[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)
        up = F.interpolate(up, size=(H, W), mode="bilinear", align_corners=False)
        mask = (up.sigmoid() > threshold)[0, 0].cpu()
        if not mask.any():
            log.warning("the mask for %r is empty at threshold %.2f (score %.3f)", text, threshold, score)
        return Segmentation(mask=mask, box=box, score=score, scores=scores.cpu(), boxes=boxes.cpu(),
                            mask_logits=logits.cpu(), index=k, text=text,
                            extra={"model_input_size": tuple(x.shape[-2:]), "tokens": int(input_ids.shape[1])})
