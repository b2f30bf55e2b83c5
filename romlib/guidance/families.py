"""How each backend family samples: one adapter per family, so no other code asks a backend's family.

* :class:`PixelSampling` — GLIDE-family UNets in pixel space (:mod:`romlib.sampling.inpaint`): a guided base run at
  the model's size with one of :data:`romlib.sampling.samplers.SAMPLERS`, then the optional inpainting upsampler;
* :class:`LatentSampling` — a latent inpainting model (:mod:`romlib.sampling.latent`, e.g. Stable Diffusion): one
  guided run at the model's frame with diffusers' schedulers, no upsampler.

A guidance method (:mod:`romlib.guidance.methods`) says *what* the two branches are; the adapter of the backend's
family (:func:`sampling_for`, from :attr:`romlib.specs.BackendSpec.family`) says how they are sampled, which
settings it reads, the frame it returns and which networks' passes an edit counts. A new family is one class here.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from .. import masks as M
from ..checks import parse_latent_steps
from ..contracts import Samples
from ..perf.work import latent_gflop, latent_parts
from ..rank import rank_samples
from ..sampling.inpaint import auto_batch_size, sample_base, sample_upsample
from ..sampling.latent import prepare_latent, sample_latent
from ..specs import SAMPLERS

if TYPE_CHECKING:
    from ..config import EditConfig

__all__ = ["PixelSampling", "LatentSampling", "FAMILY_SAMPLING", "sampling_for", "latent_steps", "lowres"]


def latent_steps(config: "EditConfig", backend) -> str:
    """The schedule a latent backend runs: ``steps`` ('N' = DPM-Solver++(2M), 'ddimN' = DDIM), with
    ``sampler`` choosing between the two when set ('ddim' or 'dpmpp-2m'; 'ancestral', the default, keeps
    what ``steps`` says: diffusers' inpainting pipeline has no ancestral sampler romlib runs)."""
    steps = str(config.steps if config.steps is not None else backend.base_steps)
    n = steps[4:] if steps.startswith("ddim") else steps
    return {"ddim": "ddim" + n, "dpmpp-2m": n}.get(config.sampler, steps)


def lowres(frames: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``frames`` resized to the base size of ``like`` (the explorer's and the ranking's low-resolution copy)."""
    return torch.nn.functional.interpolate(frames, size=like.shape[-2:], mode="bilinear", antialias=True,
                                           align_corners=False)


class PixelSampling:
    """GLIDE's two stages: a guided base run (``method.base_setup``), then the inpainting upsampler."""

    name = "pixel"
    compiles = True  # torch.compile of its UNets (romlib.perf.accelerate_backend)
    traces = True  # every step's branches can be recorded (romlib.experiments.trace)
    staged = True  # base and upsampler are separate stages (the explorer caches each)

    def check(self, method, config: "EditConfig", backend) -> None:
        """Nothing beyond the method's own checks: every sampler and schedule runs on a pixel model."""

    def frame_size(self, method, backend, upsample: bool) -> int:
        up = backend.upsampler is not None and upsample and "upsample" in method.honours
        return backend.upsampler.cfg.image_size if up else backend.base_model.cfg.image_size

    def step_settings(self, method, config: "EditConfig", backend) -> dict:
        out = {}
        if "steps" in method.honours:
            out["steps"] = str(config.steps if config.steps is not None else backend.base_steps)
        if "sampler" in method.honours:
            out["sampler"] = config.sampler
            out.update({k: getattr(config, k) for k in _sampler_knobs(config.sampler)})
        return out

    def sample(self, method, pipe, p, ref, target, config, timings) -> Samples:
        base = self.sample_base(method, pipe, p, ref, target, config, timings)
        index = self.to_upsample(method, pipe, p, base, target, config)
        return self.upsample(method, pipe, p, base, index, target, config, timings)

    def sample_base(self, method, pipe, p, ref, target, config, timings) -> torch.Tensor:
        """The B guided base samples [B, 3, b, b] with ``config.sampler``."""
        b, dev = pipe.backend, pipe.device
        t0 = time.perf_counter()
        setup = method.base_setup(pipe, p, ref, target, method.scale(b, config.scale))
        bs = config.batch_size or auto_batch_size(b.base_model, config.samples, branches=2, device=dev)
        knobs = ({"sampler": config.sampler, **{k: getattr(config, k) for k in _sampler_knobs(config.sampler)}}
                 if "sampler" in method.honours else {})
        base = sample_base(setup, pipe.diffusion("base", config.steps), samples=config.samples, seed=config.seed,
                           batch_size=bs, device=dev, progress=config.progress, **knobs)
        timings["base"] = time.perf_counter() - t0
        return base

    def to_upsample(self, method, pipe, p, base, target, config) -> list[int] | None:
        """Which base samples the upsampler gets: all (None), or with ``upsample_top = n`` the n best, ranked at
        the base resolution in ``config.rank``'s mode (the preview budget)."""
        if config.upsample_top is None or not config.upsample or pipe.backend.upsampler is None:
            return None
        f = p.base_size / p.frame_size
        box = tuple(v * f for v in p.rank_box) if p.rank_box is not None else None
        ranking = rank_samples(pipe.backend.ranker, base, target, config.rank or method.default_rank, box=box,
                               edit_mask=M.to_edit_mask(p.keep_base))
        return list(ranking.order[:config.upsample_top])

    def upsample(self, method, pipe, p, base, index, target, config, timings) -> Samples:
        """The frames: ``base[index]`` (all when ``index`` is None) through the 64→256 upsampler, if any."""
        b, dev = pipe.backend, pipe.device
        frames = base
        if config.upsample and b.upsampler is not None:
            t0 = time.perf_counter()
            low = base if index is None else base[index]
            bs_up = config.batch_size or auto_batch_size(b.upsampler, len(low), device=dev)
            frames = sample_upsample(b.upsampler, pipe.diffusion("upsample", config.upsample_steps), b.tokenizer,
                                     low_res=low, image=p.image_frame, keep_mask=p.keep_frame, target=target,
                                     seed=config.seed, temperature=config.upsample_temperature, batch_size=bs_up,
                                     progress=config.progress, indices=index)
            timings["upsample"] = time.perf_counter() - t0
        return Samples(base=base, frames=frames, keep_frame=p.keep_frame, keep_paste=p.keep_base, index=index)

    def work_models(self, backend) -> dict:
        """The networks whose forward passes an edit counts (:func:`romlib.perf.work.count_passes`)."""
        return {"base": backend.base_model, "upsample": backend.upsampler}

    def gflop(self, backend) -> dict | None:
        """GFLOP per pass of each of :meth:`work_models` (None: counted from the GLIDE configs)."""
        return None


class LatentSampling:
    """A latent inpainting model: the same rule (``rule=method.name``) in one run at the model's frame."""

    name = "latent"
    compiles = False  # diffusers' UNet: romlib's compile path is for GLIDE-family UNets
    traces = False  # see romlib.sampling.latent.latent_loop's callback instead
    staged = False

    def check(self, method, config: "EditConfig", backend) -> None:
        """A latent model's steps are 'N' or 'ddimN'; its samplers are diffusers' (no ancestral run, DDIM at η = 0)."""
        if config.steps is not None:
            parse_latent_steps(config.steps)  # before any work
        if config.sampler == "ancestral" and "sampler" in config.given():
            raise ValueError(f"sampler='ancestral' does not run on the {backend.name!r} backend, a latent model sampled "
                             "with diffusers' schedulers: use sampler='dpmpp-2m' or 'ddim' (or leave it unset: steps "
                             "'N' is DPM-Solver++(2M), 'ddimN' DDIM)")
        if config.eta != 0:
            raise ValueError(f"eta={config.eta!r} is not read on the {backend.name!r} backend: its DDIM is diffusers' "
                             "DDIMScheduler at eta = 0; leave eta unset")

    def frame_size(self, method, backend, upsample: bool) -> int:
        return backend.base_model.cfg.frame_size

    def step_settings(self, method, config: "EditConfig", backend) -> dict:
        out = {}
        if "steps" in method.honours:
            out["steps"] = latent_steps(config, backend)
        if "sampler" in method.honours:  # the diffusers scheduler that ran
            out["sampler"] = "ddim" if latent_steps(config, backend).startswith("ddim") else "dpmpp-2m"
        return out

    def sample(self, method, pipe, p, ref, target, config, timings) -> Samples:
        """The rule on a latent model (:mod:`romlib.sampling.latent`): one frame, no upsampler."""
        b = pipe.backend
        t0 = time.perf_counter()
        setup = prepare_latent(b.base_model, image=p.image_frame, keep_mask=p.keep_frame, target=target, ref=ref,
                               rule=method.name, scale=method.scale(b, config.scale))
        bs = config.batch_size or min(config.samples, 4)
        frames = sample_latent(setup, latent_steps(config, b), samples=config.samples, seed=config.seed,
                               batch_size=bs, progress=config.progress)
        timings["base"] = time.perf_counter() - t0
        return Samples(base=lowres(frames, p.image_base), frames=frames, keep_frame=p.keep_frame,
                       keep_paste=p.keep_base)

    def work_models(self, backend) -> dict:
        return latent_parts(backend.base_model)

    def gflop(self, backend) -> dict | None:
        return latent_gflop(backend.base_model)


def _sampler_knobs(sampler: str) -> tuple[str, ...]:
    """The extra knobs ``sampler`` reads (:attr:`romlib.specs.SamplerSpec.knobs`, e.g. DDIM's eta)."""
    return SAMPLERS[sampler].knobs


#: the adapter of each family (:data:`romlib.specs.FAMILIES`)
FAMILY_SAMPLING = {"pixel": PixelSampling(), "latent": LatentSampling()}


def sampling_for(backend) -> PixelSampling | LatentSampling:
    """The sampling adapter of ``backend``'s family (a duck-typed backend without ``family`` is a pixel one)."""
    return FAMILY_SAMPLING[getattr(backend, "family", "pixel")]
