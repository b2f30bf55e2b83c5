"""CLIPSeg as a referring segmenter (``segmenter="clipseg"``, ``--segmenter clipseg``).

``CLIPSegForImageSegmentation`` from transformers with the ``CIDAS/clipseg-rd64-refined`` weights (trained on
PhraseCut, MDETR's fine-tuning set): one text query → one 352×352 logit map of the whole image (squashed to a
square, as MDETR's mask logits). Through the :class:`~romlib.contracts.Segmenter` contract:

* ``mask``: sigmoid(logits) resized to the image > ``threshold`` (the same knob as MDETR's);
* ``score``: the peak probability; ``box``: the mask's bounding box;
* no pixel above ``threshold`` (or a peak below ``min_score``) raises :class:`~romlib.contracts.NoObjectFound`;
  ``best_anyway=True`` keeps the pixels above half the peak instead.

Used by the ``glide`` and ``sd`` backends (the ``sd`` backend's own segmenter) and notebooks 02 and 07.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import hub
from .contracts import NoObjectFound, Segmentation
from .io import quote
from .models.sd import link_layout, tiny_clip_tokenizer
from .models.tiny import randomize_

__all__ = ["ClipSegSegmenter", "load_clipseg", "tiny_clipseg", "DEFAULT_MIN_SCORE"]

DEFAULT_MIN_SCORE = 0.0  # the threshold already decides: no pixel above it → no object


class ClipSegSegmenter:
    """``segment(image, text, *, threshold=0.5, min_score=None, best_anyway=False) -> Segmentation``."""

    def __init__(self, model, processor):
        self.model, self.processor = model.eval().requires_grad_(False), processor

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def logits(self, image, text: str) -> torch.Tensor:
        """[h, w] mask logits of ``text`` on the whole image (the model's square input)."""
        n = self.model.config.text_config.max_position_embeddings  # a longer phrase is cut, as CLIP's 77 tokens
        inputs = self.processor(text=[text], images=[image.convert("RGB")], return_tensors="pt", padding="max_length",
                                truncation=True, max_length=n)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        out = self.model(**inputs).logits.float()
        return out.reshape(-1, *out.shape[-2:])[0].cpu()

    def segment(self, image, text: str, *, threshold: float = 0.5, min_score: float | None = None,
                best_anyway: bool = False) -> Segmentation:
        if not 0 < threshold < 1:
            raise ValueError(f"threshold={threshold!r} is out of range; accepted: a number in (0, 1)")
        if not (text or "").strip():
            raise ValueError("the referring text is empty: give a phrase such as 'the red car'")
        W, H = image.size
        logits = self.logits(image, text)
        prob = torch.sigmoid(F.interpolate(logits[None, None], size=(H, W), mode="bilinear", align_corners=False)[0, 0])
        score = float(prob.max())
        min_score = DEFAULT_MIN_SCORE if min_score is None else float(min_score)
        mask = prob > threshold
        if (not mask.any() or score < min_score) and not best_anyway:
            ys, xs = torch.nonzero(prob >= score * 0.5, as_tuple=True)
            best = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)) if len(xs) else None
            err = NoObjectFound(text, score, best, max(min_score, threshold))
            err.args = (f"no object found for {quote(text)}: CLIPSeg's peak probability is {score:.3f}, no pixel above "
                        f"threshold={threshold} (min_score={min_score}); lower threshold, pass best_anyway=True, or "
                        "give a mask yourself",)
            raise err
        if not mask.any() or score < min_score:  # best_anyway: the pixels above half the peak
            mask = prob >= score * 0.5
        ys, xs = torch.nonzero(mask, as_tuple=True)
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        return Segmentation(mask=mask, box=box, score=score, scores=torch.tensor([score]), boxes=torch.tensor([box]),
                            mask_logits=logits, index=0, text=text, extra={"segmenter": "clipseg"})


def load_clipseg(*, device="cpu", dtype: torch.dtype | None = None, progress: bool = True) -> ClipSegSegmenter:
    """CLIPSeg rd64-refined (about 600 MB), its files fetched once through :mod:`romlib.hub` and read by
    transformers' own ``from_pretrained`` from a folder in the official layout."""
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor


    paths = hub.ensure(hub.CLIPSEG, progress=progress)
    folder = link_layout(paths, "clipseg")
    model = CLIPSegForImageSegmentation.from_pretrained(folder, torch_dtype=dtype or torch.float32)
    return ClipSegSegmenter(model.to(device), CLIPSegProcessor.from_pretrained(folder))


def tiny_clipseg(seed: int = 0, device="cpu") -> ClipSegSegmenter:
    """A random tiny CLIPSeg of the same classes (tests, the tiny backends): 32×32 input, 2-layer encoders."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor, ViTImageProcessor


    text = dict(vocab_size=80, hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32,
                  patch_size=8)
    cfg = CLIPSegConfig(text_config=text, vision_config=vision, projection_dim=32, reduce_dim=16, extract_layers=[0, 1],
                        decoder_num_attention_heads=2, decoder_intermediate_size=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = randomize_(CLIPSegForImageSegmentation(cfg), seed=seed)
    images = ViTImageProcessor(do_resize=True, size={"height": 32, "width": 32}, image_mean=[0.485, 0.456, 0.406],
                               image_std=[0.229, 0.224, 0.225])
    return ClipSegSegmenter(model.to(device), CLIPSegProcessor(image_processor=images, tokenizer=tiny_clip_tokenizer()))
