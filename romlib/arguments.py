"""Every ``romlib`` subcommand's arguments checked before any work (nothing loaded, nothing written).

Each ``check_<command>(args)`` raises ``ValueError`` (or ``OSError`` for files) with the flag as the
user typed it, the bad value and what is accepted; :mod:`romlib.cli` runs it first and exits 2.
Ranges that :class:`romlib.config.EditConfig` already defines (samples, seed, scale, steps,
dilation) are read from there, so a range is written once.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from .checks import MAX_DILATION, MIN_STEPS
from .config import MAX_SAMPLES, STEPS_ACCEPTED, EditConfig, check_int, check_number, check_seed
from .specs import BACKENDS

__all__ = ["check_device", "check_demo", "check_bench", "check_shapes_bench", "check_shapes_train", "parse_list",
           "BACKEND_FRAME"]

#: the largest frame (pixels per side) each backend writes per sample; the free-space estimate reads it
#: (:attr:`romlib.specs.BackendSpec.frame`; ``BackendSpec.frame_size(upsample=False)`` without the upsampler)
BACKEND_FRAME = {name: spec.frame for name, spec in BACKENDS.items()}


def check_device(device: str | None, flag: str = "--device") -> None:
    """Refuse a device romlib cannot run on, or this machine does not have, before any model is loaded."""
    import torch

    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{flag}={device!r} is not a device; accepted: cpu, cuda, cuda:N, mps") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{flag}={device!r} cannot run romlib's models; accepted: cpu, cuda, cuda:N, mps")
    if dev.type == "cpu" and dev.index not in (None, 0):  # torch would run on the one CPU device without a word
        raise ValueError(f"{flag}={device!r}: there is one CPU device; accepted: cpu, cuda, cuda:N, mps")
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"{flag}={device!r} is not available here ({torch.cuda.device_count()} CUDA devices); "
                         f"use {flag} cpu")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{flag}={device!r} is not available here (no Apple GPU); use {flag} cpu")


def _threads(value) -> None:
    if value is not None:
        check_int("--threads", value, 1, 1024)


def _steps(flag: str, value) -> None:
    if value is not None:
        try:
            EditConfig(steps=str(value)).validate()
        except ValueError:
            raise ValueError(f"{flag}={value!r} is out of range; accepted: {STEPS_ACCEPTED}") from None


def parse_list(flag: str, text: str, convert, *, allow_empty: bool = False) -> list:
    """A comma-separated flag value → a list (``convert`` each item); refuses garbage and, unless
    ``allow_empty``, an empty list."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items and not allow_empty:
        raise ValueError(f"{flag}={text!r} is empty; accepted: a comma-separated list")
    out = []
    for t in items:
        try:
            out.append(convert(t))
        except ValueError:
            raise ValueError(f"{flag}={text!r}: {t!r} is not a {convert.__name__}; accepted: a comma-separated "
                             f"list of {convert.__name__}s") from None
    return out


def check_demo(args) -> None:
    """``romlib demo``."""
    check_seed("--seed", args.seed)
    check_int("--samples", args.samples, 1, MAX_SAMPLES)


def check_bench(args) -> None:
    """``romlib bench``: sample counts, steps, micro-batch, paths, device, files."""
    check_device(args.device)
    for b in args.batch or ():
        check_int("--batch", b, 1, MAX_SAMPLES)
    if args.steps is not None:
        check_int("--steps", args.steps, MIN_STEPS, 1000)
    _steps("--upsample-steps", args.upsample_steps)
    if args.micro_batch is not None:
        check_int("--micro-batch", args.micro_batch, 1, MAX_SAMPLES)
    paths = ("plain", "eager", "compile:default", "compile:reduce-overhead", "compile:max-autotune")
    bad = [p for p in args.paths or () if p not in paths]
    if bad:
        raise ValueError(f"--paths {' '.join(bad)}: unknown; accepted: {', '.join(paths)}")
    if args.reference is not None:
        from .perf.reference import import_reference

        import_reference(args.reference)  # names what a wrong checkout lacks
    if args.json is not None:  # appended to after the run: a folder, a FIFO (blocks forever), no folder: refused now
        json_path = Path(args.json)
        if json_path.is_dir():
            raise IsADirectoryError(f"--json {args.json} is a folder; give a file to append the rows to")
        if os.path.lexists(json_path):
            from .io import check_file

            check_file(json_path, "--json file")
        elif not json_path.parent.is_dir():
            raise FileNotFoundError(f"--json {args.json}: no folder {json_path.parent} to write it in; make it first or "
                                    "give another file")
    if args.cache_dir is not None and Path(args.cache_dir).exists() and not Path(args.cache_dir).is_dir():
        raise NotADirectoryError(f"--cache-dir {args.cache_dir} is a file, not a folder; give a folder (or none)")


def check_shapes_bench(args) -> None:
    """``romlib shapes-bench``: every number, list and file, before the weights are read."""
    from .shapes.bench import METHODS

    check_int("--cases", args.cases, 1, 100_000)
    check_int("--samples", args.samples, 1, MAX_SAMPLES)
    scales = parse_list("--scales", args.scales, float)
    for s in scales:
        if not (math.isfinite(s) and 0 < s < 1e4):
            raise ValueError(f"--scales={args.scales!r}: {s:g} is out of range; accepted: finite numbers in (0, 10000)")
    methods = parse_list("--methods", args.methods, str)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"--methods={args.methods!r}: unknown {', '.join(map(repr, bad))}; accepted: "
                         f"{', '.join(METHODS)}")
    _steps("--steps", args.steps)
    for k in parse_list("--dilations", args.dilations, int, allow_empty=True):
        try:
            EditConfig(dilation=k).validate()
        except ValueError:
            raise ValueError(f"--dilations={args.dilations!r}: {k} is out of range; accepted: odd integers in "
                             f"1..{MAX_DILATION} ('' to skip the ablation)") from None
    check_seed("--seed", args.seed)
    _threads(args.threads)
    if args.weights is not None:
        from .io import check_file

        folder = Path(args.weights)
        if not folder.is_dir():
            raise FileNotFoundError(f"--weights {folder}: no such folder (it holds inpaint.pt and ranker.pt)")
        check_file(folder / "inpaint.pt", "--weights file")
        from .shapes import load_backend

        load_backend("cpu", folder)  # tiny files (a second): damaged, mis-shaped or NaN weights are named now


def check_shapes_train(args) -> None:
    """``romlib shapes-train``: every number and the device, before any data is made."""
    check_int("--steps", args.steps, 1)
    check_number("--minutes", args.minutes, 0, open_low=True)
    check_int("--batch-size", args.batch_size, 1, 4096)
    check_number("--lr", args.lr, 0, 1, open_low=True)
    for flag in ("p_remove", "p_partial", "p_source"):
        check_number("--" + flag.replace("_", "-"), getattr(args, flag), 0, 1)
    check_int("--ranker-steps", args.ranker_steps, 1)
    check_device(args.device)
    _threads(args.threads)
    check_seed("--seed", args.seed)
