"""The guidance methods of ROM in one registry: ``METHODS[name]`` → a :class:`Method`, built from the plain-data
entries of :data:`romlib.specs.METHOD_SPECS` (where each method's name and defaults are stated, once).

Each entry knows what makes it differ from the others — its default scale, the frame it samples
at, its default ranking, the knobs it honours (others are refused with a clear error, never
ignored) and how it samples. Every other part of romlib (the pipeline, the CLI's choices, the
notebooks' widgets, the docs' tables, ``settings`` of a result) reads this registry, so a method
is named in exactly one place.

=================  ==========================================================  =====  =======
name               rule                                                        s      ranking
=================  ==========================================================  =====  =======
``ccf``            ε(x|c_ref) + s·(ε(x|c_tgt) − ε(x|c_ref)), original image      15     local
``cf``             ε(x|∅) + s·(ε(x|c_tgt) − ε(x|∅)), masked image                5      local
``ccf-direction``  CCF's base branch alone (c_ref), masked image                 15     local
``cf-original``    CCF's input alone (original image), ∅ base branch             5      local
``clip``           GLIDE + noised-CLIP gradient on the mean (eq. 4)              2      local
``blended``        Blended Diffusion: ADM 256×256 + CLIP loss, blended background  –    masked
=================  ==========================================================  =====  =======

The CF/CCF rule itself is the two lines of :mod:`romlib.guidance.cfg` (eq. 6 and 8).
"""
from __future__ import annotations

import dataclasses
import importlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from .. import masks as M
from ..config import SAMPLING_KNOBS, RankMode
from ..contracts import Samples
from ..io import to_tensor
from ..sampling.inpaint import prepare_base
from ..specs import EVERY_KNOB, METHOD_SPECS, MethodName, MethodSpec
from .cfg import RULES, GuidanceSpec
from .families import latent_steps, lowres, sampling_for

if TYPE_CHECKING:
    from ..config import EditConfig
    from ..contracts import Prepared

__all__ = ["Method", "ClassifierFree", "ClipGuided", "Blended", "Samples", "METHODS", "MethodName", "from_spec", "names",
           "available", "get", "SAMPLING_KNOBS", "latent_steps"]


@dataclass(frozen=True)
class Method:
    """One guidance method: its defaults, the knobs it honours, and how it samples."""

    name: str
    title: str  # how figures and tables name it
    summary: str  # one line for the CLI's help and the docs
    default_scale: float | None  # None: the method has no guidance scale
    default_rank: RankMode = "local"
    needs: str | None = None  # the backend extra holding its models (``Backend.extras``), if any
    honours: frozenset = field(default_factory=lambda: frozenset(SAMPLING_KNOBS))
    #: the backend families it runs on (:attr:`romlib.contracts.Backend.family`): "pixel" (GLIDE), "latent" (SD)
    families: frozenset = frozenset({"pixel"})
    loader: str | None = None  # "module:function" building its networks (romlib.specs.MethodSpec.loader)

    def available(self, backend) -> bool:
        """Whether ``backend`` is of a family this method runs on and has loaded its models."""
        return sampling_for(backend).name in self.families and (self.needs is None or self.needs in backend.extras)

    def check(self, config: "EditConfig", backend=None) -> None:
        """Refuse knobs set away from their default that this method does not read, and (when
        ``backend`` is given) a backend it cannot run on or without this method's models."""
        family = sampling_for(backend).name if backend is not None else None
        if backend is not None and family not in self.families:
            runs = [n for n, m in METHODS.items() if family in m.families]
            raise ValueError(f"guidance={self.name!r} runs on {'/'.join(sorted(self.families))} backends only; the "
                             f"{backend.name!r} backend is a {family} model: use one of {', '.join(runs)}")
        if backend is not None:
            sampling_for(backend).check(self, config, backend)
        if backend is not None and config.upsample_top is not None and (backend.upsampler is None
                                                                         or not config.upsample):
            why = (f"the {backend.name!r} backend has no upsampler" if backend.upsampler is None
                   else "upsample=False (--no-upsample) skips the upsampler")
            raise ValueError(f"upsample_top={config.upsample_top!r} is not read: {why}; every sample is ranked at the "
                             "model's own resolution: leave upsample_top unset")
        if backend is not None and not self.available(backend):
            raise ValueError(f"guidance={self.name!r} needs the baseline models, which the {backend.name!r} backend has "
                             "not loaded (ROMPipeline.from_pretrained(..., baselines=True); on the command line the "
                             "glide backend loads them for --guidance clip/blended)")
        defaults = {f.name: f.default for f in dataclasses.fields(config)}
        for knob in SAMPLING_KNOBS:
            if knob == "upsample" and not config.upsample:
                continue  # "no upsampler" holds trivially for a method that never upsamples
            if knob not in self.honours and getattr(config, knob) != defaults[knob]:
                raise ValueError(f"guidance={self.name!r} does not use {knob}={getattr(config, knob)!r} "
                                 f"(it reads {', '.join(sorted(self.honours)) or 'none of ' + ', '.join(SAMPLING_KNOBS)}); "
                                 f"leave {knob} unset")

    def unused_knobs(self) -> tuple[str, ...]:
        """The sampling knobs this method does not read (it refuses them when set)."""
        return tuple(k for k in SAMPLING_KNOBS if k not in self.honours)

    def scale(self, backend, scale: float | None = None) -> float | None:
        """``scale`` if given, else the backend's tuned default, else this method's (the paper's)."""
        if self.default_scale is None:
            return None
        if scale is not None:
            return float(scale)
        return float(backend.default_scales.get(self.name, self.default_scale))

    def frame_size(self, backend, upsample: bool) -> int:
        """The side of the square frame this method's results have."""
        return sampling_for(backend).frame_size(self, backend, upsample)

    def settings(self, config: "EditConfig", backend) -> dict:
        """The knobs this method read, resolved (for ``EditResult.settings``)."""
        out = {"guidance": self.name}
        if "scale" in self.honours:
            out["scale"] = self.scale(backend, config.scale)
        out.update(sampling_for(backend).step_settings(self, config, backend))
        up = "upsample" in self.honours and config.upsample and backend.upsampler is not None
        out["upsample"] = bool(up)
        if up:
            out["upsample_steps"] = str(config.upsample_steps if config.upsample_steps is not None else backend.upsample_steps)
            out["upsample_temperature"] = config.upsample_temperature
            out["upsample_top"] = config.upsample_top
        return out

    def sample(self, pipe, p: "Prepared", ref: str, target: str, config: "EditConfig",
               timings: dict) -> Samples:
        raise NotImplementedError


@dataclass(frozen=True)
class _TwoBranchMethod(Method):
    """A method whose base run is a :meth:`base_setup` (the model function of its guidance), sampled by the backend
    family's adapter (:mod:`romlib.guidance.families`: GLIDE's base + upsampler, or one latent run)."""

    def base_setup(self, pipe, p, ref, target, scale):
        raise NotImplementedError

    def sample(self, pipe, p, ref, target, config, timings) -> Samples:
        return sampling_for(pipe.backend).sample(self, pipe, p, ref, target, config, timings)


@dataclass(frozen=True)
class ClassifierFree(_TwoBranchMethod):
    """CF, CCF and CCF's two changes taken apart: a :class:`~romlib.guidance.cfg.GuidanceSpec`
    (base branch ∅ or c_ref; masked or original input) under ε̂ = ε_base + s·(ε_cond − ε_base)."""

    @property
    def spec(self) -> GuidanceSpec:
        return RULES[self.name]

    def base_setup(self, pipe, p, ref, target, scale, record: bool = False):
        b = pipe.backend
        return prepare_base(b.base_model, b.tokenizer, image=p.image_base, keep_mask=p.keep_base, target=target, ref=ref,
                            rule=self.name, scale=scale, record=record)


@dataclass(frozen=True)
class ClipGuided(_TwoBranchMethod):
    """GLIDE without classifier-free guidance, its mean shifted by the noised CLIP's gradient."""

    def base_setup(self, pipe, p, ref, target, scale):
        b = pipe.backend
        return b.extras[self.needs].prepare(b.base_model, b.tokenizer, image=p.image_base, keep_mask=p.keep_base,
                                            target=target, ref=ref, scale=scale)


@dataclass(frozen=True)
class Blended(Method):
    """Blended Diffusion on its own 256×256 ADM, as the authors ran it: the mask at 256 (the
    segmentation resized to 256, thresholded, dilated k×k at 256), the frame resized with LANCZOS,
    no CLIP guidance for an empty target; its own 100-step schedule with 25 skipped."""

    def frame_size(self, backend, upsample: bool) -> int:
        return backend.extras[self.needs].image_size

    def keep_mask(self, p: "Prepared", config: "EditConfig") -> torch.Tensor:
        """[1, 1, S, S] keep mask (1 = keep) at the ADM's size, dilated there (not at 64×64)."""
        seg, (x0, y0, x1, y1), size = p.segmentation, p.region, p.frame_size
        if seg.mask_logits is not None and config.frame == "full":
            edit = M.logits_to_edit_mask(seg.mask_logits, size, config.threshold)
        else:
            edit = M.resize_edit_mask(seg.mask[y0:y1, x0:x1], size)
        return M.to_keep_mask(M.dilate(edit[None, None].float(), config.dilation)).to(p.keep_frame)

    def sample(self, pipe, p, ref, target, config, timings) -> Samples:
        t0 = time.perf_counter()
        keep = self.keep_mask(p, config)
        image = to_tensor(p.frame_image, p.frame_size, resample="lanczos").to(pipe.device)
        frames = pipe.backend.extras[self.needs].sample(image=image, keep_mask=keep, target=target, samples=config.samples,
                                                        seed=config.seed, batch_size=config.batch_size,
                                                        progress=config.progress)
        timings["base"] = time.perf_counter() - t0
        return Samples(base=lowres(frames, p.image_base), frames=frames, keep_frame=keep, keep_paste=keep)


def from_spec(spec: MethodSpec) -> Method:
    """The :class:`Method` of one :data:`romlib.specs.METHOD_SPECS` entry (its class imported from ``spec.kind``)."""
    unknown = set(spec.refuses) - set(SAMPLING_KNOBS) - set(EVERY_KNOB)
    if unknown:
        raise ValueError(f"method {spec.name!r} refuses unknown knob(s) {sorted(unknown)}; accepted: "
                         f"{', '.join(SAMPLING_KNOBS)} (or romlib.specs.EVERY_KNOB)")
    module, _, name = spec.kind.partition(":")
    kind = getattr(importlib.import_module(module), name)
    honours = frozenset() if spec.refuses == EVERY_KNOB else frozenset(SAMPLING_KNOBS) - set(spec.refuses)
    return kind(spec.name, spec.title, spec.summary, spec.default_scale, default_rank=spec.default_rank,
                needs=spec.needs, honours=honours, families=frozenset(spec.families), loader=spec.loader)


METHODS: dict[str, Method] = {name: from_spec(spec) for name, spec in METHOD_SPECS.items()}


def names() -> tuple[str, ...]:
    """Every method's name, in the registry's order (the CLI's choices)."""
    return tuple(METHODS)


def available(backend) -> tuple[str, ...]:
    """The methods ``backend`` can run (the baselines need their models loaded)."""
    return tuple(n for n, m in METHODS.items() if m.available(backend))


def get(name: Any) -> Method:
    """``METHODS[name]`` with an error that lists the accepted names."""
    if name not in METHODS:
        raise ValueError(f"guidance={name!r} is not a method; accepted: {', '.join(METHODS)}")
    return METHODS[name]
