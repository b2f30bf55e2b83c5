"""Every fact of a backend, a guidance method and a sampler, once, as plain data: :data:`BACKENDS`,
:data:`METHOD_SPECS` and :data:`SAMPLERS`.

A backend is one :class:`BackendSpec`: its family (which sampling adapter runs it: ``"pixel"`` GLIDE-family UNets
or ``"latent"`` models), its frame, its files, its loader, its example image, its removal model, its default
guidance scales and whether an ambiguous reference takes the best object in the notebooks. Nothing outside this
module asks a backend's name: the pipeline, the guidance methods, the notebooks' helpers and the CLI read the spec.
A new backend is one entry here plus its model module (docs/extending.md); the files it alone downloads are on
its entry (``downloads``), and :mod:`romlib.hub` registers them from there.

A guidance method is one :class:`MethodSpec`: its name (stated only here), the :class:`romlib.guidance.methods.Method`
class that runs it (``"module:Class"``), its defaults, the knobs it refuses, the families it runs on and, for a
method with its own networks, the loader that builds them. :data:`romlib.guidance.methods.METHODS` is built from
these entries.

This module imports nothing heavy (no torch): the CLI's ``--help`` and the free-space estimate read it, and the
loaders are named as ``"module:function"`` strings, imported when a backend is loaded
(:func:`romlib.backends.load`).

>>> from romlib.specs import BACKENDS
>>> BACKENDS["sd"].family, BACKENDS["sd"].frame
('latent', 512)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["MethodName", "METHOD_NAMES", "MethodSpec", "METHOD_SPECS", "BackendSpec", "BACKENDS", "backend_spec",
           "SamplerSpec", "SAMPLERS", "SEGMENTERS", "FAMILIES", "EVERY_KNOB"]

#: the two sampling families (:mod:`romlib.guidance.families` holds one adapter for each)
FAMILIES = ("pixel", "latent")
#: the referring segmenters romlib wraps besides a backend's own (``segmenter=`` of an edit)
SEGMENTERS = ("mdetr", "clipseg")
#: the CCF-family scales the sd backends start from: diffusers' 7.5 for the ∅ base branch (the model's usual CF
#: scale); CCF and its direction-only ablation keep the paper's 15 (tuned on GLIDE, not on SD)
SD_SCALES = {"cf": 7.5, "cf-original": 7.5, "ccf": 15.0, "ccf-direction": 15.0}


@dataclass(frozen=True)
class BackendSpec:
    """One backend of :meth:`romlib.pipeline.ROMPipeline.from_pretrained`."""

    name: str
    family: Literal["pixel", "latent"]
    summary: str  # one line: what its models are (the CLI's help, the notebooks' first cell)
    loader: str  # "module:function" building its :class:`romlib.contracts.Backend` (romlib.backends.load)
    frame: int  # the largest frame (pixels per side) an edit returns per sample (the free-space estimate)
    base_frame: int  # the frame without the upsampler (--no-upsample)
    segmenter: str = "mdetr"  # its own referring segmenter (Backend.segmenter_name)
    segmenters: tuple[str, ...] = ()  # the others it can load on request (segmenter=)
    files: tuple[str, ...] = ()  # the romlib.hub file groups it downloads (names in romlib.hub, e.g. "GLIDE_BACKEND")
    baseline_files: tuple[str, ...] = ()  # the groups of the baselines' models (baselines=True)
    baselines: bool = False  # whether it can load the baselines' models (guidance clip, blended)
    variants: bool = False  # whether it ships variants of its model (variant=, romlib.shapes.VARIANTS)
    example: str = "noise"  # which example input the notebooks use (romlib.teach.nb.EXAMPLES)
    removal_variant: str | None = None  # the variant that removes objects for an empty target (None: the same model)
    default_scales: dict = field(default_factory=dict)  # guidance scales overriding the methods' (the paper's)
    best_anyway: bool = True  # in the notebooks, an ambiguous reference takes the best object (with a warning)
    real: bool = False  # trained weights (not random): what the notebooks show as results
    oracle: bool = False  # ShapesWorld's generated cases and exact oracle (romlib.shapes; the world has its own bench)
    demo: bool = False  # an embedded world `romlib demo --backend` runs offline on its own example
    stand_in: str | None = None  # the backend a notebook shows instead of this one when it is random (offline)
    size: str = ""  # what a first run downloads, for the log
    requires: tuple[str, ...] = ()  # optional packages checked before any download (romlib.backends.REQUIREMENTS)
    env: tuple[str, ...] = ()  # environment variables its loader reads (the process's pipeline cache keys on their values)
    #: the files only this backend downloads, each the keyword arguments of a :class:`romlib.hub.Checkpoint`
    #: (``name``, ``url``, ``approx_mb``, ``format``, ...): romlib.hub registers them, and the backend reads them
    #: with ``files`` (the groups it shares with others: segmenters, CLIP)
    downloads: tuple[dict, ...] = ()
    cpu_threads: int | None = None  # torch threads its models run fastest on under the explorer (None: torch's)
    #: knobs ``romlib demo`` adds on this backend to stay within its time budget (``upsample_top`` is capped at the
    #: demo's samples)
    demo_knobs: dict = field(default_factory=dict)

    def frame_size(self, upsample: bool = True) -> int:
        """The side of the frames an edit writes (``upsample=False``: without the upsampler)."""
        return self.frame if upsample else self.base_frame


BACKENDS: dict[str, BackendSpec] = {s.name: s for s in (
    BackendSpec("glide", "pixel", "real models: MDETR + GLIDE (filtered) + CLIP ViT-B/16, downloaded once (~5.5 GB)",
                "romlib.backends:load_glide", frame=256, base_frame=64, segmenter="mdetr", segmenters=("clipseg",),
                files=("GLIDE_BACKEND",), baseline_files=("BASELINES",), baselines=True, example="coco",
                real=True, size="about 5.5 GB"),
    BackendSpec("shapes", "pixel", "embedded ShapesWorld models (offline)", "romlib.shapes.backend:load_spec",
                frame=32, base_frame=32, segmenter="shapes", variants=True, example="shapes",
                removal_variant="removal", best_anyway=False, real=True, oracle=True, demo=True,
                cpu_threads=1),  # 32x32 UNet: one thread; two took 1.2 s -> 11 s of CPU per preview edit (spin-waits)
    BackendSpec("world", "pixel", "the embedded 64 px world (offline): 32 px GLIDE inpainting + 32->64 upsampler, "
                "learned referring segmenter, tiny CLIP (shipped weights, or $ROMLIB_WORLD_WEIGHTS)",
                "romlib.world.backend:load_spec", frame=64, base_frame=32, segmenter="world", example="world",
                best_anyway=True, real=True, demo=True, env=("ROMLIB_WORLD_WEIGHTS",),
                demo_knobs={"upsample_top": 4, "sampler": "dpmpp-2m", "steps": "20"}),  # within 10 s: the 4 it shows upsampled, the preview sampler
    BackendSpec("world-latent", "latent", "the embedded world's latent model (offline): SD's classes (a VAE ÷4 and a "
                "9-channel UNet with a CLIP text encoder) trained on the world, its segmenter and ranker (pip install "
                "romlib[sd])", "romlib.world.backend:load_latent_spec", frame=64, base_frame=64, segmenter="world",
                example="world", real=True, env=("ROMLIB_WORLD_WEIGHTS",), requires=("diffusers",)),
    BackendSpec("tiny", "pixel", "tiny random models (tests)", "romlib.backends:load_tiny", frame=256,
                base_frame=64, segmenter="mdetr", segmenters=("clipseg",), baselines=True, stand_in="shapes"),
    BackendSpec("sd", "latent", "Stable Diffusion 1.5 inpainting + CLIPSeg + CLIP ViT-B/16 (~3.3 GB, pip install "
                "romlib[sd])", "romlib.backends:load_sd", frame=512, base_frame=512, segmenter="clipseg",
                segmenters=("mdetr",), files=("SD_BACKEND", "CLIPSEG"), example="coco",
                default_scales=SD_SCALES, real=True, size="about 3.3 GB", requires=("diffusers",)),
    BackendSpec("tiny-sd", "latent", "random tiny models of the SD classes (tests)", "romlib.backends:load_tiny_sd",
                frame=64, base_frame=64, segmenter="mdetr", segmenters=("clipseg",), default_scales=SD_SCALES,
                stand_in="shapes", requires=("diffusers",)),
)}


#: ``refuses=EVERY_KNOB``: a method that reads none of the sampling knobs (romlib.config.SAMPLING_KNOBS)
EVERY_KNOB = ("*",)


@dataclass(frozen=True)
class MethodSpec:
    """One guidance method of :data:`romlib.guidance.methods.METHODS` (the edit's ``guidance=``)."""

    name: str
    kind: str  # "module:Class", the romlib.guidance.methods.Method subclass that runs it
    title: str  # how figures and tables name it
    summary: str  # one line for the CLI's help and the docs
    default_scale: float | None  # None: the method has no guidance scale
    default_rank: str = "local"  # its ranking (romlib.config.RANK_MODES)
    families: tuple[str, ...] = ("pixel",)  # the backend families it runs on (FAMILIES)
    refuses: tuple[str, ...] = ()  # the sampling knobs it does not read (EVERY_KNOB: none of them)
    needs: str | None = None  # the key of its networks in Backend.extras (None: it has none of its own)
    #: "module:function" building its networks, ``(spec, *, ranker, device, dtype, progress) -> object``, called by
    #: romlib.backends.load when a backend is loaded with ``baselines=True`` and has not built them itself
    loader: str | None = None
    downloads: tuple[dict, ...] = ()  # the files only its networks read (as BackendSpec.downloads)


#: the CCF-family methods run on both families
_BOTH = FAMILIES
_CF = "romlib.guidance.methods:ClassifierFree"

METHOD_SPECS: dict[str, MethodSpec] = {m.name: m for m in (
    MethodSpec("ccf", _CF, "CCF (ours)", "conditional classifier-free guidance, the paper's eq. 8: base branch c_ref, "
               "original image as input", 15.0, families=_BOTH),
    MethodSpec("cf", _CF, "CF (GLIDE)", "GLIDE's classifier-free guidance, eq. 6: base branch ∅, masked image", 5.0,
               families=_BOTH),
    MethodSpec("ccf-direction", _CF, "CCF direction only", "ablation: CCF's base branch c_ref with GLIDE's masked "
               "image", 15.0, families=_BOTH),
    MethodSpec("cf-original", _CF, "CF + original input", "ablation: GLIDE's ∅ base branch with CCF's original image",
               5.0, families=_BOTH),
    MethodSpec("clip", "romlib.guidance.methods:ClipGuided", "GLIDE CLIP-guided", "GLIDE guided by the noised CLIP's "
               "gradient (eq. 4), masked image", 2.0, needs="clip", loader="romlib.guidance.baselines:load_clip",
               refuses=("sampler", "eta")),  # the gradient shifts the ancestral step's mean
    MethodSpec("blended", "romlib.guidance.methods:Blended", "Blended Diffusion", "Blended Diffusion: unconditional "
               "ADM 256x256 + CLIP loss, background blended in at every step", None, default_rank="masked",
               needs="blended", loader="romlib.guidance.baselines:load_blended", refuses=EVERY_KNOB),
)}
#: the guidance methods' names, in the registry's order: plain data, so that ``romlib --help`` lists them without
#: loading torch
METHOD_NAMES: tuple[str, ...] = tuple(METHOD_SPECS)
#: a guidance method's name (one of :data:`METHOD_NAMES`)
MethodName = Literal[METHOD_NAMES]


def backend_spec(name) -> BackendSpec:
    """``BACKENDS[name]`` with an error that lists the accepted names."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return BACKENDS[name]


@dataclass(frozen=True)
class SamplerSpec:
    """One base sampler of the pixel family (:mod:`romlib.sampling.samplers`): its function, the extra knobs of
    :class:`romlib.config.EditConfig` it reads, and one line of help."""

    name: str
    function: str  # its name in romlib.sampling.samplers
    knobs: tuple[str, ...] = ()  # the EditConfig knobs only this sampler reads (e.g. DDIM's eta)
    help: str = ""


SAMPLERS: dict[str, SamplerSpec] = {s.name: s for s in (
    SamplerSpec("ancestral", "sample_ancestral", help="DDPM, the paper's"),
    SamplerSpec("ddim", "sample_ddim", knobs=("eta",), help="eta = 0: deterministic"),
    SamplerSpec("dpmpp-2m", "sample_dpmpp_2m", help="DPM-Solver++(2M), good in ~20 steps"),
)}
