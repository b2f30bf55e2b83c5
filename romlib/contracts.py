"""The contracts between pipeline stages, so that real models, tiny test models and the
embedded ShapesWorld models plug into the same :class:`romlib.pipeline.ROMPipeline`.

* a **segmenter** has ``segment(image, text, *, threshold=0.5, min_score=None, best_anyway=False) -> Segmentation``;
* a **ranker** (CLIP or a learned analogue) has ``image_size``, ``encode_image(images in [0, 1]) -> [B, D]``
  and ``encode_text(texts) -> [N, D]``;
* a **Backend** bundles them with the GLIDE-family models, their tokenizer and step counts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from .checks import quote

if TYPE_CHECKING:
    import torch

__all__ = ["Segmentation", "NoObjectFound", "AmbiguousReference", "Segmenter", "Ranker", "Backend", "Prepared", "Samples"]


@dataclass
class Segmentation:
    """The referred object, as a segmenter found it.

    ``mask``: bool [H, W] at the input image's resolution (True = the object, i.e. an *edit* mask).
    ``box``: (x0, y0, x1, y1) in pixels of the input image. ``score``: the chosen query's score
    (MDETR: 1 − p(no-object)). ``scores`` [Q] and ``boxes`` [Q, 4] (xyxy pixels): every query,
    for inspection. ``mask_logits``: the chosen query's low-resolution mask logits covering the
    whole image (the authors resize these to 64×64 before thresholding), or ``None``.
    """

    mask: torch.Tensor
    box: tuple[float, float, float, float]
    score: float
    scores: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    mask_logits: torch.Tensor | None = None
    index: int = 0
    text: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of the image the mask belongs to."""
        return int(self.mask.shape[-1]), int(self.mask.shape[-2])


class NoObjectFound(RuntimeError):
    """No query scored above ``min_score``; carries the best score and box."""

    def __init__(self, text: str, best_score: float, best_box, min_score: float):
        self.text, self.best_score, self.best_box, self.min_score = text, best_score, best_box, min_score
        box = tuple(round(float(v), 1) for v in best_box) if best_box is not None else None
        super().__init__(
            f"no object found for {quote(text)}: the best query scored {best_score:.3f} (box {box}), below "
            f"min_score={min_score}; lower min_score, pass best_anyway=True, or give a mask yourself"
        )


class AmbiguousReference(ValueError):
    """The referring text matches several objects equally well (each segmenter states its rule);
    carries ``candidates``: ``(name, box, score)`` of each. ``best_anyway=True`` takes the best
    one with a warning instead."""

    def __init__(self, text: str, candidates: list[tuple[str, tuple, float]]):
        self.text, self.candidates = text, candidates
        listed = "; ".join(f"{name} at {tuple(round(float(v)) for v in box)} (score {score:.2f})"
                           for name, box, score in candidates[:6]) + ("; ..." if len(candidates) > 6 else "")
        self.summary = f"{quote(text)} matches {len(candidates)} objects: {listed}"
        super().__init__(f"{self.summary}; say which one (by colour, shape or position, e.g. on the left), pass "
                         "best_anyway=True (--best-anyway) to take the best, or give a mask")


@runtime_checkable
class Segmenter(Protocol):
    def segment(self, image, text: str, *, threshold: float = 0.5, min_score: float | None = None,
                best_anyway: bool = False) -> Segmentation: ...


@runtime_checkable
class Ranker(Protocol):
    image_size: int

    def encode_image(self, images: torch.Tensor) -> torch.Tensor: ...

    def encode_text(self, texts: list[str]) -> torch.Tensor: ...


@dataclass
class Backend:
    """Everything :class:`~romlib.pipeline.ROMPipeline` needs.

    ``base_model`` is a GLIDE-family inpainting UNet (:class:`romlib.models.glide.GlideUNet`) at
    ``base_model.cfg.image_size``; ``upsampler`` the optional super-resolution inpainting UNet;
    ``tokenizer`` a :class:`romlib.models.tokenizers.TextTokenizer` for both. ``base_schedule`` and
    ``upsample_schedule`` are ``(noise_schedule, diffusion_steps)`` of the trained models,
    ``base_steps`` / ``upsample_steps`` the default respacing. ``default_scales`` overrides
    :attr:`Method.default_scale <romlib.guidance.methods.Method>` (the paper's, tuned for GLIDE) for models trained
    elsewhere, e.g. ShapesWorld's best scales from its benchmark.

    ``family``: ``"pixel"`` (GLIDE-family UNets sampled by :mod:`romlib.sampling.diffusion`) or ``"latent"``
    (a :class:`romlib.models.sd.LatentInpainter`, sampled by :mod:`romlib.sampling.latent` with diffusers'
    schedulers; ``base_model.cfg.image_size`` is then the latent grid, ``cfg.frame_size`` the pixel frame).
    ``segmenter`` is the backend's own (``segmenter_name``); ``segmenters`` maps other names
    (``"mdetr"``, ``"clipseg"``) to a segmenter or to a zero-argument loader, called on first use
    (:meth:`segmenter_for`).
    """

    name: str
    segmenter: Any
    base_model: Any
    tokenizer: Any
    ranker: Any = None
    upsampler: Any = None
    base_schedule: tuple[str, int] = ("squaredcos_cap_v2", 1000)
    upsample_schedule: tuple[str, int] = ("linear", 1000)
    base_steps: str = "100"
    upsample_steps: str = "fast27"
    extras: dict = field(default_factory=dict)  # e.g. noised CLIP, ADM for the baselines
    default_scales: dict = field(default_factory=dict)
    family: Literal["pixel", "latent"] = "pixel"
    segmenter_name: str = "mdetr"
    segmenters: dict = field(default_factory=dict)

    def segmenter_for(self, name: str | None = None):
        """The segmenter called ``name`` (``None``: the backend's own), loaded on first use."""
        if name is None or name == self.segmenter_name:
            return self.segmenter
        if name not in self.segmenters:
            have = ", ".join(dict.fromkeys([self.segmenter_name, *self.segmenters]))
            raise ValueError(f"segmenter={name!r} is not available on the {self.name!r} backend; it has: {have}")
        seg = self.segmenters[name]
        if not isinstance(seg, Segmenter):  # a loader
            seg = self.segmenters[name] = seg()
        return seg


@dataclass
class Prepared:
    """An input made ready for the diffusion models: the frame, its masks and the ranking box."""

    image: Any  # the input (PIL RGB)
    segmentation: Segmentation
    region: tuple[int, int, int, int]  # the frame's pixels in the input
    frame_image: Any  # PIL crop of the region (the whole image for frame="full")
    base_size: int
    frame_size: int
    keep_base: torch.Tensor  # [1, 1, base, base], 1 = keep (GLIDE's convention), dilated
    keep_frame: torch.Tensor  # [1, 1, frame, frame]
    image_base: torch.Tensor  # [1, 3, base, base] in [-1, 1]
    image_frame: torch.Tensor  # [1, 3, frame, frame]
    rank_box: tuple  # the object's box in frame pixels


@dataclass
class Samples:
    """What a guidance method's ``sample`` returns.

    ``base``: [B, 3, b, b] the low-resolution samples; ``frames``: [B, 3, S, S] the results at the
    frame size; ``keep_frame``: [1, 1, S, S] the mask (1 = keep) the frames were made under (used by
    the masked ranking); ``keep_paste``: the mask pasted back at full resolution (1 = keep)."""

    base: torch.Tensor
    frames: torch.Tensor
    keep_frame: torch.Tensor
    keep_paste: torch.Tensor
    index: list[int] | None = None  # which base sample each frame is (``upsample_top``); None: frame i = sample i
