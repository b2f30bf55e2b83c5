"""Blended Diffusion (Avrahami et al. 2022), the paper's strongest baseline ("Blend" in Table 1).

An *unconditional* 256×256 ADM model (:mod:`romlib.models.adm`) is steered towards the target text by
CLIP ViT-B/16, and the region outside the mask is replaced by the noised input at every step.
As the reference (``blended_diffusion/optimization/image_editor.py`` with the ROM authors'
``run.sh``): 100 respaced steps of the linear schedule, the first 25 skipped, starting from
x_t = q_sample(image, t = 74); batch B = 3, 8 CLIP views per sample, λ_clip = 1000, λ_range = 50;
no background-preservation loss (``--background_preservation_loss`` is off by default).

One reverse step (indices are the respaced t):

1. the model's x̂_0 (unclipped) and the mixture x_in = x̂_0 · √(1 − ᾱ_t) + x_t · (1 − √(1 − ᾱ_t));
2. views: x_in · m (m = edit mask, 1 = edit) average-pooled to 224, tiled 8 times; the first
   copy of each sample is kept as is, the 7 others get a random affine (±15°, ±10 % shift,
   p = 0.7, border padding) and a random perspective (distortion 0.7, p = 0.7, zero padding) —
   kornia 0.6.3's ``RandomAffine`` and ``RandomPerspective``, re-implemented here with a seedable
   ``torch.Generator`` (:class:`ImageAugmentations`);
3. loss = λ_clip · Σ_i mean_k d(CLIP(view_ik), CLIP(c_target)) + λ_range · Σ_i mean (x̂_0 − clip(x̂_0))²,
   with d(x, y) = 2 arcsin(‖x̂ − ŷ‖ / 2)² (:func:`romlib.rank.clip_distance`), CLIP's
   mean/std normalisation on the views in [0, 1];
4. μ̂ = μ + Σ · (−∇_{x_t} loss) (:meth:`~romlib.sampling.diffusion.SpacedDiffusion.condition_mean`),
   x_{t−1} = μ̂ + σ z;
5. background: x_{t−1} ← x_{t−1} · m + q_sample(image, t) · (1 − m).

The result is the last step's x̂_0 with the original background pasted back (the reference's
``enforce_background``). The samples are then ranked by CLIP on the masked image
(``rank="masked"``).

Randomness is per sample (:func:`romlib.sampling.diffusion.sample_generators`): the initial noise, every
step's noise, the augmentation parameters and the background noise of sample i come from its own
generator, so sample i is the same whatever the batch size. (The reference draws one background
noise for the whole batch; each sample's distribution is unchanged.)

Memory and time: the gradient goes through the 550 M-parameter ADM and CLIP at every step; load
the ADM with ``dtype=torch.float16`` and ``gradient_checkpointing=True`` (:func:`romlib.models.adm.load_model`).
Estimates (activations measured on the CPU at 32×32 with the full-width model and scaled by the
pixel count; FLOPs counted on the ``meta`` device; not measured on a GPU): the ADM keeps 3.5 GiB of
fp16 activations per 256×256 image for the backward pass, so B = 3 needs ≈ 10.5 GiB plus 1.1 GiB
of weights and CLIP (≈ 0.6 GiB weights, ≈ 1.7 GiB for 24 fp32 views) — too close to a T4's 15 GiB.
With checkpointing it keeps ≈ 0.6 GiB per image plus one block's recomputation (≈ 1.3 GiB for
B = 3): ≈ 6–7 GiB in all. Work per step at B = 3: 3 × 2.24 TFLOP for the sampler's forward pass,
the same again for the guidance forward, its backward (input gradients only) and, with
checkpointing, the recomputation, plus ≈ 1.1 TFLOP of CLIP: ≈ 2.1 PFLOP for the 75 steps, i.e.
roughly 1.5–2.5 minutes per batch of 3 on a T4 at 15–25 TFLOP/s sustained (the authors run 8
batches).
Masks: functions here take GLIDE's keep mask (1 = keep) like the rest of romlib and convert it
once with :func:`romlib.masks.to_edit_mask`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from ..sampling.diffusion import SpacedDiffusion, randn, sample_generators
from ..masks import to_edit_mask
from ..rank import ClipRanker, clip_distance

__all__ = ["AugmentParams", "ImageAugmentations", "range_loss", "BlendedGuidance", "BackgroundBlend",
           "blended_sample_progressive", "blended_sample", "guidance_clip"]


# ----------------------------------------------------------------------------- augmentations
@dataclass
class AugmentParams:
    """Parameters of the augmented views, in the reference's batch order (view k of sample i at
    row k·B + i). Pixel coordinates, kornia 0.6.3's conventions."""

    affine_on: torch.Tensor  # [N] bool
    angle: torch.Tensor  # [N] degrees
    translation: torch.Tensor  # [N, 2] pixels (x, y)
    perspective_on: torch.Tensor  # [N] bool
    end_points: torch.Tensor  # [N, 4, 2] where the corners (0,0), (W−1,0), (W−1,H−1), (0,H−1) go
    size: tuple[int, int]  # (H, W) the parameters were drawn for

    def __len__(self):
        return int(self.angle.shape[0])


def _corners(h: int, w: int) -> torch.Tensor:
    return torch.tensor([[0.0, 0.0], [w - 1.0, 0.0], [w - 1.0, h - 1.0], [0.0, h - 1.0]], dtype=torch.float64)


def _pixel_to_norm(h: int, w: int) -> torch.Tensor:
    """kornia's ``normal_transform_pixel``: x ↦ 2x/(W−1) − 1."""
    return torch.tensor([[2.0 / (w - 1), 0.0, -1.0], [0.0, 2.0 / (h - 1), -1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _affine_matrices(p: AugmentParams) -> torch.Tensor:
    """Source → destination pixel maps: rotation by ``angle`` about the centre, then the shift."""
    h, w = p.size
    a = torch.deg2rad(p.angle.double())
    cx, cy = w / 2 - 0.5, h / 2 - 0.5
    cos, sin = torch.cos(a), torch.sin(a)
    m = torch.zeros(len(p), 3, 3, dtype=torch.float64)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    m[:, 0, 2] = cx - cos * cx + sin * cy + p.translation[:, 0].double()
    m[:, 1, 2] = cy - sin * cx - cos * cy + p.translation[:, 1].double()
    m[:, 2, 2] = 1
    return m


def _homographies(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The 3×3 maps taking the 4 points ``src`` [N, 4, 2] to ``dst`` (direct linear transform)."""
    n = src.shape[0]
    a = torch.zeros(n, 8, 8, dtype=torch.float64)
    b = torch.zeros(n, 8, dtype=torch.float64)
    for i in range(4):
        x, y = src[:, i, 0], src[:, i, 1]
        u, v = dst[:, i, 0], dst[:, i, 1]
        a[:, 2 * i, 0], a[:, 2 * i, 1], a[:, 2 * i, 2] = x, y, 1
        a[:, 2 * i, 6], a[:, 2 * i, 7] = -x * u, -y * u
        a[:, 2 * i + 1, 3], a[:, 2 * i + 1, 4], a[:, 2 * i + 1, 5] = x, y, 1
        a[:, 2 * i + 1, 6], a[:, 2 * i + 1, 7] = -x * v, -y * v
        b[:, 2 * i], b[:, 2 * i + 1] = u, v
    h = torch.linalg.solve(a, b)
    return torch.cat([h, torch.ones(n, 1, dtype=torch.float64)], dim=1).view(n, 3, 3)


def _to_norm_inverse(m: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Destination → source map in [−1, 1] coordinates (what grid_sample needs)."""
    t = _pixel_to_norm(h, w)
    return torch.linalg.inv(t @ m @ torch.linalg.inv(t))


class ImageAugmentations:
    """Blended Diffusion's CLIP views: ``n`` copies per image at ``size``×``size``, the first one
    plain, the others randomly warped (affine, then perspective, each with probability ``p``).

    ``views = aug(images, generators)`` → [n·B, C, size, size] in the reference's order
    (all first copies, then all second copies, ...). ``generators``: one ``torch.Generator`` per
    image (or one for all, or ``None`` for the global generator). Differentiable in ``images``.
    """

    def __init__(self, size: int, n: int = 8, *, p: float = 0.7, degrees: float = 15.0, translate: float = 0.1,
                 distortion: float = 0.7):
        if n < 1:
            raise ValueError(f"the number of views must be >= 1, got {n}")
        if not 0 <= p <= 1 or not 0 <= distortion <= 1:
            raise ValueError(f"p and distortion must be in [0, 1], got p={p}, distortion={distortion}")
        self.size, self.n, self.p = int(size), int(n), float(p)
        self.degrees, self.translate, self.distortion = float(degrees), float(translate), float(distortion)

    def sample_params(self, batch: int, generators=None) -> AugmentParams:
        """Draw the parameters of the (n − 1)·B warped views; sample i uses only its own generator."""
        k, h, w = self.n - 1, self.size, self.size
        if not isinstance(generators, (list, tuple)):
            generators = [generators] * batch
        if len(generators) != batch:
            raise ValueError(f"{len(generators)} generators for a batch of {batch}")
        rows = []
        for g in generators:
            u = lambda *shape: torch.rand(shape, generator=g)  # noqa: E731
            rows.append(dict(affine_on=u(k) < self.p, angle=(u(k) * 2 - 1) * self.degrees,
                             translation=(u(k, 2) * 2 - 1) * self.translate * torch.tensor([w, h], dtype=torch.float32),
                             perspective_on=u(k) < self.p, rand=u(k, 4, 2)))

        def gather(key):  # [B, k, ...] → [k·B, ...], view-major like the reference's tiling
            return torch.stack([r[key] for r in rows], dim=1).flatten(0, 1)

        factor = torch.tensor([self.distortion * w / 2, self.distortion * h / 2], dtype=torch.float64)
        signs = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]], dtype=torch.float64)
        end_points = _corners(h, w) + factor * gather("rand").double() * signs
        return AugmentParams(gather("affine_on"), gather("angle"), gather("translation"), gather("perspective_on"),
                             end_points.float(), (h, w))

    def warp(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Apply the affine then the perspective warp where switched on (kornia 0.6.3's sampling:
        pixel maps normalised with (W − 1), bilinear ``grid_sample`` with ``align_corners=False``)."""
        n, c, h, w = images.shape
        if len(params) != n or params.size != (h, w):
            raise ValueError(f"parameters for {len(params)} images of {params.size}, got {n} of {(h, w)}")
        dev, dt = images.device, images.dtype
        out = images
        if params.affine_on.any():
            inv = _to_norm_inverse(_affine_matrices(params), h, w).to(dev, dt)
            grid = F.affine_grid(inv[:, :2], [n, c, h, w], align_corners=False)
            warped = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)
            out = torch.where(params.affine_on.to(dev).view(n, 1, 1, 1), warped, out)
        if params.perspective_on.any():
            m = _homographies(_corners(h, w).expand(n, 4, 2), params.end_points.double())
            inv = _to_norm_inverse(m, h, w).to(dev, dt)
            ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=dev, dtype=dt),
                                    torch.linspace(-1, 1, w, device=dev, dtype=dt), indexing="ij")
            pts = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).view(1, h * w, 3)
            src = pts @ inv.transpose(1, 2)  # [n, h·w, 3]
            z = src[..., 2:]
            grid = (src[..., :2] * torch.where(z.abs() > 1e-8, 1 / (z + 1e-8), torch.ones_like(z))).view(n, h, w, 2)
            warped = F.grid_sample(out, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            out = torch.where(params.perspective_on.to(dev).view(n, 1, 1, 1), warped, out)
        return out

    def __call__(self, images: torch.Tensor, generators=None, params: AugmentParams | None = None) -> torch.Tensor:
        b = images.shape[0]
        resized = F.adaptive_avg_pool2d(images, (self.size, self.size))
        if self.n == 1:
            return resized
        if params is None:
            params = self.sample_params(b, generators)
        tiled = resized.repeat(self.n - 1, 1, 1, 1)
        return torch.cat([resized, self.warp(tiled, params)])


def range_loss(x: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of (x − clip(x, −1, 1))²: how far x̂_0 leaves the valid pixel range."""
    return (x - x.clamp(-1, 1)).pow(2).mean(dim=(1, 2, 3))


def guidance_clip(clip) -> ClipRanker:
    """The CLIP used for guidance sees views normalised by CLIP's mean/std (the reference's
    ``clip_normalize``), unlike the ranking (raw [0, 1] crops): a normalising view of a
    :class:`~romlib.rank.ClipRanker`; other rankers are used as they are."""
    if isinstance(clip, ClipRanker) and not clip.normalize:
        return ClipRanker(clip.model, clip.tokenizer, image_size=clip.image_size, normalize=True)
    return clip


# ----------------------------------------------------------------------------- one step
class BlendedGuidance:
    """The reference's ``cond_fn``: −∇_{x_t} (λ_clip · CLIP loss + λ_range · range loss).

    ``clip``: a ranker-like CLIP (``encode_image`` of [0, 1] images, ``image_size``), normalising
    its inputs (:func:`guidance_clip`); ``text_emb``: [1, D] CLIP embedding of the target;
    ``edit_mask``: [1, 1, H, W], 1 = edit; ``generators``: one per batch row (augmentations).
    Set ``params`` to reuse fixed augmentation parameters (tests). The last call's losses are in
    :attr:`last`.
    """

    def __init__(self, model, diffusion: SpacedDiffusion, clip, *, text_emb: torch.Tensor, edit_mask: torch.Tensor,
                 generators=None, aug_num: int = 8, clip_lambda: float = 1000.0, range_lambda: float = 50.0):
        self.model, self.diffusion, self.clip = model, diffusion, clip
        self.text_emb, self.edit_mask, self.generators = text_emb, edit_mask, generators
        self.augment = ImageAugmentations(clip.image_size, aug_num)
        self.clip_lambda, self.range_lambda = float(clip_lambda), float(range_lambda)
        self.params: AugmentParams | None = None
        self.last: dict = {}

    def respaced_index(self, t: torch.Tensor) -> torch.Tensor:
        """Original timestep → respaced index (``condition_mean`` passes original timesteps)."""
        table = torch.tensor(self.diffusion.timestep_map, device=t.device)
        index = torch.searchsorted(table, t.long())
        if (index >= len(table)).any() or not torch.equal(table[index.clamp(max=len(table) - 1)], t.long()):
            raise ValueError(f"timesteps {t.tolist()} are not among this diffusion's kept steps")
        return index

    def loss(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """λ_clip · Σ_i mean_k d(view_ik, text) + λ_range · Σ_i range(x̂_0,i) at respaced ``index``."""
        out = self.diffusion.p_mean_variance(self.model, x, index, clip_denoised=False)
        fac = float(self.diffusion.sqrt_one_minus_alphas_cumprod[int(index[0])])
        x_in = out["pred_xstart"] * fac + x * (1 - fac)
        loss = x.new_zeros(())
        b = x.shape[0]
        if self.clip_lambda:
            views = self.augment(x_in * self.edit_mask, self.generators, params=self.params).add(1).div(2)
            dists = clip_distance(self.clip.encode_image(views), self.text_emb)
            clip_loss = dists.view(-1, b).mean(dim=0).sum() * self.clip_lambda  # mean over views, sum over samples
            loss = loss + clip_loss
            self.last["clip_loss"] = clip_loss.item()
        if self.range_lambda:
            r_loss = range_loss(out["pred_xstart"]).sum() * self.range_lambda
            loss = loss + r_loss
            self.last["range_loss"] = r_loss.item()
        return loss

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            loss = self.loss(x, self.respaced_index(t))
            return -torch.autograd.grad(loss, x)[0]


class BackgroundBlend:
    """``postprocess_fn``: x_{t−1} ← x_{t−1} · m + q_sample(image, t) · (1 − m), m = edit mask.

    The background noise comes from ``generators`` (one per row), or ``noise=`` (tests).
    """

    def __init__(self, diffusion: SpacedDiffusion, image: torch.Tensor, edit_mask: torch.Tensor, generators=None):
        self.diffusion, self.image, self.edit_mask, self.generators = diffusion, image, edit_mask, generators

    def __call__(self, out: dict, t: torch.Tensor, noise: torch.Tensor | None = None) -> dict:
        x = out["sample"]
        if noise is None:
            noise = randn(x.shape, self.generators, x.device, x.dtype)
        background = self.diffusion.q_sample(self.image.to(x).expand(x.shape), t, noise)
        out["sample"] = x * self.edit_mask + background * (1 - self.edit_mask)
        return out


# ----------------------------------------------------------------------------- sampling
def _text_embedding(clip, target: str | None, text_emb: torch.Tensor | None) -> torch.Tensor:
    if text_emb is not None:
        return text_emb
    if target is None:
        raise ValueError("pass target= (the text) or text_emb= (its CLIP embedding)")
    with torch.no_grad():
        return clip.encode_text([target]).float()


def _check(image, keep_mask):
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"image must be [1, 3, H, W] in [-1, 1], got {tuple(image.shape)}")
    if keep_mask.shape != (1, 1, *image.shape[2:]):
        raise ValueError(f"keep_mask must be [1, 1, {image.shape[2]}, {image.shape[3]}], got {tuple(keep_mask.shape)}")
    edit_mask = to_edit_mask(keep_mask).to(image)
    if edit_mask.sum() == 0:
        raise ValueError("the mask has nothing to edit (all pixels are kept)")
    return edit_mask


def blended_sample_progressive(model, diffusion: SpacedDiffusion, clip, *, image: torch.Tensor, keep_mask: torch.Tensor,
                               generators: list[torch.Generator], target: str | None = None,
                               text_emb: torch.Tensor | None = None, aug_num: int = 8, skip_timesteps: int = 25,
                               clip_lambda: float = 1000.0, range_lambda: float = 50.0,
                               progress: bool = False) -> Iterator[dict]:
    """Every step of one batch (one generator per sample): the loop's ``sample``, ``pred_xstart``,
    ``t`` plus ``clip_loss`` / ``range_loss`` (summed over the batch) and ``result`` (x̂_0 with the
    original background, what the reference saves).

    ``image``: [1, 3, S, S] in [−1, 1] at the ADM's size; ``keep_mask``: [1, 1, S, S], 1 = keep.
    """
    edit_mask = _check(image, keep_mask)
    clip = guidance_clip(clip)
    if text_emb is None and target is not None and not target.strip():
        clip_lambda = 0.0  # an empty target: no CLIP guidance at all, as the authors (plain blended inpainting)
    text_emb = _text_embedding(clip, target, text_emb) if clip_lambda else None
    if not 0 <= skip_timesteps < diffusion.num_timesteps:
        raise ValueError(f"skip_timesteps must be in [0, {diffusion.num_timesteps}), got {skip_timesteps}")
    guidance = BlendedGuidance(model, diffusion, clip, text_emb=text_emb, edit_mask=edit_mask, generators=generators,
                               aug_num=aug_num, clip_lambda=clip_lambda, range_lambda=range_lambda)
    blend = BackgroundBlend(diffusion, image, edit_mask, generators)
    shape = (len(generators), *image.shape[1:])
    for out in diffusion.p_sample_loop_progressive(model, shape, clip_denoised=False, cond_fn=guidance,
                                                   device=image.device, generator=generators, progress=progress,
                                                   skip_timesteps=skip_timesteps, init_image=image,
                                                   postprocess_fn=blend):
        out.update(guidance.last)
        out["result"] = (image * (1 - edit_mask) + out["pred_xstart"] * edit_mask).clamp(-1, 1)
        yield out


def blended_sample(model, diffusion: SpacedDiffusion, clip, *, image: torch.Tensor, keep_mask: torch.Tensor,
                   target: str, samples: int = 3, seed: int = 0, batch_size: int | None = 3, aug_num: int = 8,
                   skip_timesteps: int = 25, clip_lambda: float = 1000.0, range_lambda: float = 50.0,
                   progress: bool = False) -> torch.Tensor:
    """B Blended Diffusion edits [B, 3, S, S] in [−1, 1], in micro-batches of ``batch_size``.

    ``model``: the ADM (:func:`romlib.models.adm.load_model`); ``diffusion``:
    :func:`romlib.guidance.baselines.adm_diffusion` (100 steps); ``clip``: CLIP ViT-B/16 as a
    :class:`~romlib.rank.ClipRanker` (the ranker's model can be shared). ``image``: [1, 3, S, S]
    in [−1, 1]; ``keep_mask``: [1, 1, S, S], 1 = keep, 0 = edit. Sample i depends only on
    ``seed`` and i. An empty ``target`` means no CLIP guidance (the authors' behaviour): only the
    range loss and the background blending act.
    """
    clip = guidance_clip(clip)
    if not (target or "").strip():
        clip_lambda = 0.0  # an empty target: no CLIP guidance at all, as the authors (plain blended inpainting)
    text_emb = _text_embedding(clip, target, None) if clip_lambda else None
    gens = sample_generators(seed, samples, stream=0)
    size = samples if not batch_size else max(1, int(batch_size))
    results = []
    for start in range(0, samples, size):
        final = None
        for final in blended_sample_progressive(model, diffusion, clip, image=image, keep_mask=keep_mask,
                                                generators=gens[start:start + size], text_emb=text_emb,
                                                aug_num=aug_num, skip_timesteps=skip_timesteps,
                                                clip_lambda=clip_lambda, range_lambda=range_lambda,
                                                progress=progress):
            pass
        results.append(final["result"])
    return torch.cat(results)
