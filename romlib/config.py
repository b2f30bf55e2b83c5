"""Every knob of one edit in one place: :class:`EditConfig` (default, accepted range, help text).

``ROMPipeline.edit(..., **knobs)``, the ``romlib edit`` flags (generated from this class by
:func:`add_arguments`), the notebooks' widgets and ``EditResult.settings`` all come from here, so a
default or a range is written once.

>>> from romlib.config import EditConfig
>>> EditConfig(guidance="cf", scale=5).validate()
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .checks import (DILATION_ACCEPTED, MAX_DILATION, MAX_SEED, STEPS_ACCEPTED, check_int, check_number, check_seed,
                     is_int, is_real, need as _need, steps_ok as _steps_ok)
from .contracts import Segmentation
from .specs import BACKENDS, METHOD_NAMES, SAMPLERS, SEGMENTERS

__all__ = ["EditConfig", "PRESETS", "METHOD_NAMES", "SAMPLER_NAMES", "BACKEND_NAMES", "add_arguments", "from_args",
           "MAX_SAMPLES", "WARN_SAMPLES", "MAX_SEED", "check_seed", "check_int", "check_number", "is_int", "is_real",
           "SAMPLING_KNOBS", "RANK_MODES", "FRAMES", "RankMode", "Frame", "SCORED_RANK_MODES", "SEGMENTERS",
           "STEPS_ACCEPTED"]

MAX_SAMPLES = 256  # B above this is refused
WARN_SAMPLES = 64  # B above this logs the expected time

Frame = Literal["full", "crop"]
FRAMES: tuple[str, ...] = get_args(Frame)  # what frame= accepts (the flag's choices, the checks, the widgets)

#: the named budgets of ``EditConfig.preset``: the knobs each sets (a knob left at its default takes the preset's
#: value; a knob a method does not read is left alone). "preview" is chosen from the ShapesWorld measurement of
#: the samplers (docs/performance.md): DPM-Solver++(2M) at 20 steps.
PRESETS: dict[str, dict] = {
    "paper": {},
    "preview": {"samples": 4, "sampler": "dpmpp-2m", "steps": "20", "upsample_top": 1},
}
RankMode = Literal["local", "masked", "none"]
RANK_MODES: tuple[str, ...] = get_args(RankMode)  # the ranking crops (romlib.rank.rank_samples reads them)
SCORED_RANK_MODES = tuple(m for m in RANK_MODES if m != "none")  # the modes that score the samples with CLIP
#: knobs of :class:`EditConfig` that only some guidance methods read (``Method.honours``; the others refuse them)
SAMPLING_KNOBS = ("scale", "steps", "sampler", "eta", "upsample", "upsample_top", "upsample_steps", "upsample_temperature")
#: the names the command line offers, read without torch (``romlib --help`` in a blink, romlib.arguments): the
#: guidance methods, samplers and backends of :mod:`romlib.specs`
SAMPLER_NAMES = tuple(SAMPLERS)
BACKEND_NAMES = tuple(BACKENDS)


def _knob(default, help: str, *, flag: str | None = None, type=None, choices=None, cli: bool = True, metavar=None):
    """A dataclass field whose metadata builds its command-line flag."""
    return field(default=default, metadata=dict(help=help, flag=flag, type=type, choices=choices, cli=cli,
                                                metavar=metavar))


@dataclass
class EditConfig:
    """The settings of one :meth:`romlib.pipeline.ROMPipeline.edit` call.

    ``None`` means "the method's or the backend's default" (resolved values are recorded in
    ``EditResult.settings``). Call :meth:`validate` before any work; it raises ``ValueError``
    naming the bad value and what is accepted.
    """

    preset: str = _knob("paper", "budget: paper (the paper's settings, every default below) or preview (PRESETS: "
                        "4 samples, 20 DPM-Solver++(2M) steps, ranked at the base resolution, only the best upsampled: "
                        "~1/27 of the paper's work with GLIDE); knobs you set win over the preset's",
                        choices=tuple(PRESETS))
    guidance: str = _knob("ccf", "guidance method (romlib.guidance.METHODS): {choices}", choices="methods")
    scale: float | None = _knob(None, "guidance scale s > 0 (default: the method's, e.g. 15 ccf, 5 cf, 2 clip; "
                                "ShapesWorld's tuned scales on the shapes backend)", type=float)
    samples: int = _knob(24, f"number of samples B to draw and rank, 1..{MAX_SAMPLES} (default 24, the paper's)", type=int)
    dilation: int = _knob(3, f"mask dilation kernel k ({DILATION_ACCEPTED}) at 64x64 (at 256x256 for blended) "
                          "(default 3)", type=int)
    rank: RankMode | None = _knob(None, "ranking crop: local (box x1.3, the paper), masked (Blended's), none "
                                  "(default: the method's: local; masked for blended)", choices=RANK_MODES)
    steps: str | None = _knob(None, "base sampling steps, e.g. 100, 50, ddim25 (default: the backend's, 100 for GLIDE)")
    sampler: str = _knob("ancestral", "base sampler: " + ", ".join(f"{s.name} ({s.help})" for s in SAMPLERS.values())
                         + " (default ancestral)", choices=tuple(SAMPLERS))
    eta: float = _knob(0.0, "DDIM's eta in [0, 1] (0: deterministic; 1: the posterior's variance); read by "
                       "--sampler " + "/".join(s.name for s in SAMPLERS.values() if "eta" in s.knobs) + " only "
                       "(default 0)", type=float)
    upsample: bool = _knob(True, "skip the 64->256 upsampler: results stay at the base model's 64x64 (default: "
                           "upsample when the backend has an upsampler)", flag="--no-upsample")
    upsample_top: int | None = _knob(None, "upsample only the N best base samples, ranked at the base resolution "
                                     "(default: all, the paper's)", type=int)
    upsample_steps: str | None = _knob(None, "upsampler sampling steps, e.g. fast27, 10 (default: the backend's, "
                                       "fast27 for GLIDE)")
    upsample_temperature: float = _knob(0.997, "noise temperature of the upsampler's first sample (default 0.997)",
                                        type=float)
    seed: int = _knob(0, "random seed in [0, 2**63); sample i always gets the same noise (default 0)", type=int)
    frame: Frame = _knob("full", "edit the whole image squashed to the model's frame (full, the paper) or a square "
                         "crop around the object (crop)", choices=FRAMES)
    segmenter: str | None = _knob(None, "referring segmenter: mdetr (the paper's) or clipseg (default: the backend's: "
                                  + ", ".join(f"{s.segmenter} on {s.name}" for s in BACKENDS.values() if s.real
                                              and s.segmenter in SEGMENTERS) + ")", choices=SEGMENTERS)
    threshold: float = _knob(0.5, "mask threshold on the segmenter's sigmoid, in (0, 1) (default 0.5)", type=float)
    min_score: float | None = _knob(None, "minimum segmentation score in [0, 1] (default: the segmenter's)", type=float)
    best_anyway: bool = _knob(False, "use the best query even below --min-score or when the text fits several objects "
                              "(the authors' behaviour; a warning names the others)")
    batch_size: int | None = _knob(None, "micro-batch size >= 1 (default: chosen from free memory)", type=int)
    mask: Any = _knob(None, "a mask image used instead of segmentation (white = edit)", cli=False)
    progress: bool = _knob(True, "progress bars", cli=False)

    # ------------------------------------------------------------------------------------------
    def given(self) -> frozenset:
        """The knobs the user named (keywords or a dict through :meth:`from_kwargs`, flags typed on the command
        line through :func:`from_args`; a knob given as ``None`` counts as unset); empty for an ``EditConfig(...)``
        built directly."""
        return getattr(self, "_given", frozenset())

    def with_preset(self, reads=None) -> "EditConfig":
        """The preset's values (:data:`PRESETS`) for the knobs the user did not name (:meth:`given`) and that are
        still at their defaults — a knob you set wins, even when you set it to its default (``samples=24``,
        ``sampler="ancestral"``); ``reads``: the knobs the method reads (``Method.honours``; a knob of the preset
        outside it is left at its default)."""
        if self.preset not in PRESETS:
            raise ValueError(f"preset={self.preset!r} is out of range; accepted: {', '.join(map(repr, PRESETS))}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        values = {k: v for k, v in PRESETS[self.preset].items() if getattr(self, k) == defaults[k]
                  and k not in self.given() and (reads is None or k not in SAMPLING_KNOBS or k in reads)}
        out = dataclasses.replace(self, **values)
        out._given = self.given()
        return out

    @classmethod
    def knobs(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_kwargs(cls, config: "EditConfig | Mapping | None" = None, **kwargs) -> "EditConfig":
        """``config`` (an :class:`EditConfig`, a dict of its fields, or ``None`` for the defaults)
        updated with ``kwargs``; unknown names are refused."""
        if isinstance(config, Mapping):
            bad = [k for k in config if not isinstance(k, str)]
            if bad:
                raise TypeError(f"config keys must be setting names (strings), got {bad[0]!r}")
            kwargs, config = {**config, **kwargs}, None
        elif config is not None and not isinstance(config, cls):
            raise TypeError(f"config must be an EditConfig or a dict of its settings, got {type(config).__name__}; "
                            "e.g. edit(image, ref, target, samples=8) or edit(image, ref, target, {'samples': 8})")
        unknown = sorted(set(kwargs) - set(cls.knobs()))
        if unknown:
            raise TypeError(f"unknown edit setting(s) {', '.join(unknown)}; accepted: {', '.join(cls.knobs())}")
        base = config if config is not None else cls()
        out = dataclasses.replace(base, **kwargs)
        # what the preset may not override (with_preset); None reads as unset ("the method's or the backend's")
        out._given = base.given() | frozenset(k for k, v in kwargs.items() if v is not None)
        return out

    def validate(self) -> "EditConfig":
        """Check every knob's type and range; returns self. Raises ``ValueError`` with one line per
        value: the name, the value and what is accepted. (Which methods exist is the registry's to
        say: :func:`romlib.guidance.methods.get`.) numpy scalars are accepted where Python numbers
        are, and stored as Python numbers; ``True``/``False`` are not numbers here."""
        for f in dataclasses.fields(self):  # np.int64(3) -> 3, np.float32(0.5) -> 0.5, np.bool_ -> bool
            v = getattr(self, f.name)
            if f.name != "mask" and type(v).__module__ == "numpy" and getattr(v, "shape", None) == ():
                setattr(self, f.name, v.item())
        _need(isinstance(self.guidance, str), "guidance", self.guidance, "a method name of romlib.guidance.METHODS")
        if self.scale is not None:
            _need(is_real(self.scale) and 0 < self.scale < 1e4, "scale", self.scale, "a finite number in (0, 10000)")
        _need(is_int(self.samples) and 1 <= self.samples <= MAX_SAMPLES, "samples", self.samples,
              f"an integer in 1..{MAX_SAMPLES}")
        _need(is_int(self.dilation) and 1 <= self.dilation <= MAX_DILATION and self.dilation % 2 == 1, "dilation",
              self.dilation, DILATION_ACCEPTED)
        _need(self.rank is None or self.rank in RANK_MODES, "rank", self.rank, ", ".join(map(repr, RANK_MODES)))
        _need(self.frame in FRAMES, "frame", self.frame, ", ".join(map(repr, FRAMES)))
        _need(self.segmenter is None or self.segmenter in SEGMENTERS, "segmenter", self.segmenter,
              ", ".join(repr(s) for s in SEGMENTERS) + " or None (the backend's)")
        _need(self.segmenter is None or self.mask is None or isinstance(self.mask, Segmentation), "segmenter",
              self.segmenter, "None with a mask given (a mask replaces segmentation: no segmenter runs)")
        for name in ("steps", "upsample_steps"):
            v = getattr(self, name)
            if v is not None:
                _need(_steps_ok(v), name, v, STEPS_ACCEPTED)
        _need(isinstance(self.preset, str) and self.preset in PRESETS, "preset", self.preset,
              ", ".join(repr(c) for c in PRESETS))  # a list is refused by name, not by a TypeError of `in`
        if self.upsample_top is not None:
            _need(is_int(self.upsample_top) and 1 <= self.upsample_top <= self.samples, "upsample_top", self.upsample_top,
                  f"an integer in 1..samples ({self.samples}), or None for all")
        _need(isinstance(self.sampler, str) and self.sampler in SAMPLERS, "sampler", self.sampler, ", ".join(repr(c) for c in SAMPLERS))
        _need(is_real(self.eta) and 0 <= self.eta <= 1, "eta", self.eta, "a number in [0, 1]")
        eta_readers = [s.name for s in SAMPLERS.values() if "eta" in s.knobs]
        _need(self.eta == 0 or "eta" in SAMPLERS[self.sampler].knobs, "eta", self.eta, f"0 with sampler="
              f"{self.sampler!r} (eta is read by sampler={' or '.join(map(repr, eta_readers))} only)")
        _need(is_real(self.upsample_temperature) and 0 < self.upsample_temperature <= 2, "upsample_temperature",
              self.upsample_temperature, "a number in (0, 2]")
        check_seed("seed", self.seed)
        _need(is_real(self.threshold) and 0 < self.threshold < 1, "threshold", self.threshold, "a number in (0, 1)")
        if self.min_score is not None:
            _need(is_real(self.min_score) and 0 <= self.min_score <= 1, "min_score", self.min_score, "a number in [0, 1]")
        if self.batch_size is not None:
            _need(is_int(self.batch_size) and self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        _need(isinstance(self.upsample, bool), "upsample", self.upsample, "True or False")
        _need(isinstance(self.best_anyway, bool), "best_anyway", self.best_anyway, "True or False")
        _need(isinstance(self.progress, bool), "progress", self.progress, "True or False")
        return self


# ---------------------------------------------------------------------------------------------- the CLI
def add_arguments(parser: argparse.ArgumentParser, *, methods: tuple[str, ...]) -> None:
    """One flag per knob of :class:`EditConfig` (``--scale``, ``--no-upsample``, ...), with its
    default and help; values are checked by :meth:`EditConfig.validate` before any work.
    ``methods``: the choices of ``--guidance`` (the registry's names)."""
    for f in dataclasses.fields(EditConfig):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        choices = methods if meta.get("choices") == "methods" else meta.get("choices")
        help_text = meta["help"].format(choices=", ".join(choices) if choices else "")
        if isinstance(f.default, bool):
            action = _GIVEN["store_false" if f.default else "store_true"]
            parser.add_argument(flag, dest=f.name, action=action, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, default=f.default, type=meta.get("type") or str, choices=choices,
                                help=help_text, action=_GIVEN["store"])


def _recording(action: type) -> type:
    """``action`` that also notes its knob in ``namespace._given`` (the flags typed: :meth:`EditConfig.given`)."""
    class Recording(action):
        def __call__(self, parser, namespace, values, option_string=None):
            super().__call__(parser, namespace, values, option_string)
            namespace.__dict__.setdefault("_given", set()).add(self.dest)
    return Recording


_GIVEN = {"store": _recording(argparse._StoreAction), "store_true": _recording(argparse._StoreTrueAction),
          "store_false": _recording(argparse._StoreFalseAction)}


def from_args(args: argparse.Namespace, **extra) -> EditConfig:
    """The :class:`EditConfig` of parsed ``args`` (as built by :func:`add_arguments`)."""
    values = {name: getattr(args, name) for name in EditConfig.knobs() if hasattr(args, name)}
    cfg = EditConfig.from_kwargs(**{**values, **extra})
    cfg._given = frozenset(getattr(args, "_given", ())) | frozenset(extra)  # the flags typed, not argparse's defaults
    return cfg
