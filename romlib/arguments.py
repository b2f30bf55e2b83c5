"""Every ``romlib`` subcommand's arguments: defined (``add_<command>_args``) and checked before any work
(``check_<command>``: nothing loaded, nothing written).

This module and what it imports (:mod:`romlib.config`) load no torch, no numpy: ``romlib --help``, ``romlib CMD
--help`` and an argument error print in a blink; a command's implementation is imported only after its arguments
pass (:mod:`romlib.cli`). Each ``check_<command>(args)`` raises ``ValueError`` (or ``OSError`` for files) with the
flag as the user typed it, the bad value and what is accepted; :mod:`romlib.cli` runs it first and exits 2.
Ranges that :class:`romlib.config.EditConfig` already defines (samples, seed, scale, steps, dilation) are read
from there, so a range is written once. A check that needs a model's registry (``--device``, shapes-bench's
``--methods``) imports it then.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from .checks import MAX_DILATION, MIN_STEPS
from .config import (BACKEND_NAMES, MAX_SAMPLES, METHOD_NAMES, SAMPLER_NAMES, STEPS_ACCEPTED, EditConfig, add_arguments,
                     check_int, check_number, check_seed)
from .specs import BACKENDS
from .world.recipes import add_train_args as add_world_train_args

__all__ = ["add_edit_args", "add_assignment_args", "add_grade_args", "add_demo_args", "add_world_train_args", "check_world_train", "DEMO_BACKENDS", "add_example_args", "add_download_args", "add_bench_args", "add_shapes_train_args",
           "add_shapes_bench_args", "check_device", "check_demo", "check_example", "check_bench", "check_shapes_bench",
           "check_shapes_train", "parse_list", "BACKEND_FRAME", "DEMO_OUT", "EDIT_OUT", "SHAPES_BENCH_OUT",
           "SHAPES_TRAIN_OUT"]

#: the largest frame (pixels per side) each backend writes per sample; the free-space estimate reads it
#: (:attr:`romlib.specs.BackendSpec.frame`; ``BackendSpec.frame_size(upsample=False)`` without the upsampler)
BACKEND_FRAME = {name: spec.frame for name, spec in BACKENDS.items()}
#: the folders commands write into by default (in .gitignore: a run in a clone leaves git status clean)
EDIT_OUT, DEMO_OUT, SHAPES_BENCH_OUT, SHAPES_TRAIN_OUT = "romlib_out", "romlib_demo", "shapes_bench", "shapes_train"
#: the backends ``romlib demo`` runs offline (:attr:`romlib.specs.BackendSpec.demo`), the first the default
DEMO_BACKENDS = tuple(n for n, s in BACKENDS.items() if s.demo)


# ---------------------------------------------------------------------------------------------- definitions
def add_edit_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``romlib edit``: the image, the texts, every knob of :class:`romlib.config.EditConfig`, the rest."""
    p.add_argument("image", help="input image (any format PIL reads; EXIF orientation is honoured)")
    p.add_argument("--ref", default="", help="referring text: which object to edit, e.g. 'the red car'")
    p.add_argument("--target", default="", help="target text: what it should become, e.g. 'a blue truck' (empty = remove "
                                                 "it: inpaint the hole with background; on shapes with its 'removal' model)")
    add_arguments(p, methods=METHOD_NAMES)  # every knob of romlib.config.EditConfig
    p.add_argument("--mask", default=None,
                   help="a mask image to use instead of segmentation: a pixel is edited where any channel is >= 128 "
                        "(white, red, ...; black = keep) or, with transparency, where it is opaque; the image's aspect "
                        "ratio, resized if needed")
    p.add_argument("--backend", choices=BACKEND_NAMES, default=None,
                   help="models: " + "; ".join(f"{s.name} ({s.summary})" for s in BACKENDS.values())
                   + "; default: $ROMLIB_BACKEND, else glide on a GPU with internet, else shapes")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda if available)")
    p.add_argument("--compile", default="off", choices=["off", "auto", "default", "reduce-overhead", "max-autotune"],
                   help="torch.compile the UNets (off; auto = when the edit's work pays for the compilation)")
    p.add_argument("--out", default=EDIT_OUT,
                   help="parent folder: each run writes into a new folder inside it, named time_method_text "
                        f"(default {EDIT_OUT})")
    p.add_argument("--overwrite", action="store_true",
                   help="write into --out itself, replacing the run recorded in its result.json whole (the new run is "
                        "written complete first, then swapped in); never an input, never a file no result.json records")
    p.add_argument("--top", type=int, default=4,
                   help="edits saved at full resolution and shown in the summary figure, >= 1 (default 4)")


def add_demo_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``romlib demo``."""
    p.add_argument("--out", default=DEMO_OUT,
                   help="parent folder: each demo writes into a new folder inside it, named time_ccf_text, so the demo "
                        f"runs again and again (default {DEMO_OUT})")
    p.add_argument("--overwrite", action="store_true",
                   help="write into --out itself, replacing the demo run recorded in its result.json whole (as romlib "
                        "edit --overwrite)")
    p.add_argument("--seed", type=int, default=0, help="scene and sampling seed in [0, 2**63) (default 0)")
    p.add_argument("--samples", type=int, default=8, help=f"samples to draw and rank, 1..{MAX_SAMPLES} (default 8)")
    p.add_argument("--backend", choices=DEMO_BACKENDS, default=DEMO_BACKENDS[0],
                   help="which embedded world: " + "; ".join(f"{n} ({BACKENDS[n].summary})" for n in DEMO_BACKENDS)
                   + f" (default {DEMO_BACKENDS[0]})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_example_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``romlib example``."""
    p.add_argument("--out", default=".", help="folder to write photo.png and mask.png into (default: this folder)")
    p.add_argument("--seed", type=int, default=0, help="which scene: romlib demo's for the same seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace photo.png and mask.png if they exist")


def check_example(args) -> None:
    """``romlib example``."""
    check_seed("--seed", args.seed)


def add_download_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``romlib download``."""
    p.add_argument("names", nargs="*", help="registry names (default: every file of the glide backend and the example "
                                            "photo; see romlib.hub.REGISTRY)")
    p.add_argument("--baselines", action="store_true", help="also the noised CLIP and ADM models of the baselines")
    p.add_argument("--clipseg", action="store_true",
                   help="also CLIPSeg's files (about 600 MB), for --segmenter clipseg on the glide backend (--sd has them)")
    p.add_argument("--sd", action="store_true", help="the sd backend's files instead of the glide backend's: Stable "
                                                     "Diffusion 1.5 inpainting (fp16; CreativeML OpenRAIL-M, accept it "
                                                     "first), CLIPSeg, CLIP ViT-B/16 (about 3.3 GB)")
    p.add_argument("--verify", action="store_true", help="fetch nothing: re-check every cached file (or NAMES): size, "
                                                         "format, manifest (names, shapes, dtypes), values (finite) and "
                                                         "the sha256 recorded at download; a bad file is moved aside and "
                                                         "named, exit 1")
    p.add_argument("--sha256", default=None, metavar="HEX",
                   help="the SHA-256 the one file named must have (for an address whose server states no length)")


def add_bench_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``romlib bench`` (:func:`romlib.bench.bench_command`)."""
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--batch", type=int, nargs="+", default=None, help="sample counts B, each 1..256 (default: 4 24 on a GPU, 2 4 on the CPU)")
    p.add_argument("--dtype", choices=["fp16", "fp32"], default=None,
                   help="precision (default: fp16 on a GPU; fp32 on the CPU, where half is an emulated slow path)")
    p.add_argument("--steps", type=int, default=None, help="base steps, 2..1000 (default: 100 on a GPU, 10 on the CPU)")
    p.add_argument("--upsample-steps", default=None, help="upsampler respacing (default: fast27 on a GPU, 3 on the CPU)")
    p.add_argument("--sampler", choices=SAMPLER_NAMES, default="ancestral",
                   help="the base model's sampler: ancestral (the paper's), ddim, dpmpp-2m (the preview's) (default: ancestral)")
    p.add_argument("--full", action="store_true", help="official model sizes (random weights) even on the CPU (slow)")
    p.add_argument("--paths", nargs="+", default=None, metavar="PATH",
                   help="what to time: plain (the plain eager path), eager (the fast eager path), "
                        "compile:default, compile:reduce-overhead, compile:max-autotune (default: eager)")
    p.add_argument("--compile", choices=["off", "default", "reduce-overhead", "max-autotune"], default=None,
                   help="shorthand for --paths compile:MODE")
    p.add_argument("--micro-batch", type=int, default=None, help="micro-batch size >= 1 (default: the pipeline's own choice)")
    p.add_argument("--reference", default=None, metavar="PATH",
                   help="a glide-text2im checkout: also time its own sampling loop in this process")
    p.add_argument("--cache-dir", default=None, help="compiled-artifact cache (default: $ROMLIB_CACHE/torch-compile)")
    p.add_argument("--no-rank", action="store_true", help="skip the ranking stage")
    p.add_argument("--fast-vs-plain", action="store_true",
                   help="instead of timing: compare one forward pass of both UNets, fast vs plain path, in the bench dtype")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--json", default=None, metavar="FILE", help="append the rows to FILE as JSON lines")


def add_shapes_bench_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``romlib shapes-bench`` (:func:`romlib.shapes.bench.bench_command`). ``--scales`` and
    ``--methods`` default to ``None``: the benchmark's own (:data:`romlib.shapes.bench.DEFAULT_SCALES`,
    :data:`romlib.shapes.bench.METHODS`; the help says them, tests/test_cli.py checks it)."""
    p.add_argument("--cases", type=int, default=200, help="number of edit cases >= 1 (default 200)")
    p.add_argument("--samples", type=int, default=2, help="samples per case and method, 1..256 (default 2)")
    p.add_argument("--scales", default=None, help="guidance scales, comma-separated, each in (0, 10000) "
                                                  "(default 1,3,5,10,15)")
    p.add_argument("--methods", default=None, help="comma-separated subset of inpaint (plain inpainting) and the "
                                                   "classifier-free methods ccf,cf,ccf-direction,cf-original (default: all)")
    p.add_argument("--steps", default=None, help="sampling steps (default: the backend's)")
    p.add_argument("--dilations", default="1,3,5", help="dilations k (odd) of the eroded-mask ablation, comma-separated (default 1,3,5; '' to skip)")
    p.add_argument("--seed", type=int, default=0, help="case and noise seed (default 0)")
    p.add_argument("--weights", default=None, help="folder with inpaint.pt and ranker.pt, as romlib shapes-train writes (without a ranker.pt, the shipped "
                        "ranker, with a warning; default: the shipped weights)")
    p.add_argument("--out", default=SHAPES_BENCH_OUT,
                   help="parent folder: each run writes results.json, table.md and benchmark.png into a new folder "
                        f"inside it, named time_bench_cases-seed (default {SHAPES_BENCH_OUT}); nothing is replaced")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch, >= 1 (default: torch's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_shapes_train_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``romlib shapes-train`` (:func:`romlib.shapes.train.train_command`)."""
    p.add_argument("--out", default=SHAPES_TRAIN_OUT,
                   help="output folder for weights, checkpoints and loss curves; a folder that holds a run is refused "
                        f"unless --resume or --overwrite (default {SHAPES_TRAIN_OUT})")
    p.add_argument("--what", choices=["all", "inpaint", "ranker"], default="all", help="which model(s) to train")
    p.add_argument("--steps", type=int, default=4500, help="inpainting training steps (default 4500)")
    p.add_argument("--minutes", type=float, default=38.0, help="stop inpainting training after this many minutes (default 38)")
    p.add_argument("--batch-size", type=int, default=32, help="inpainting batch size (default 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--inpaint-input", choices=["masked", "pairs"], default="pairs",
                   help="pairs: a share (--p-source) of the examples show a counterfactual source object under the "
                        "hole (default, the shipped model); masked: GLIDE's recipe, the hole is always blanked")
    p.add_argument("--p-remove", type=float, default=0.0,
                   help="share of object holes taught as removal: empty caption, clean background as the answer "
                        "(default 0, the default model; the shipped 'removal' model used 0.1 with --p-partial 0.4; with it, an empty "
                        "caption over a blanked hole always means 'nothing here')")
    p.add_argument("--p-partial", type=float, default=0.2,
                   help="share of non-empty captions naming one attribute ('a circle', 'a red shape'): the examples "
                        "that teach keeping what a target leaves free (default 0.2)")
    p.add_argument("--p-source", type=float, default=0.5,
                   help="pairs: share of examples showing a source object under the hole instead of a blank (default 0.5)")
    p.add_argument("--ranker-steps", type=int, default=1200, help="ranker training steps (default 1200)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--save-every", type=int, default=250,
                   help="write the resumable checkpoint (and loss log) every this many inpainting steps (default 250)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its OUT/inpaint_checkpoint.pt (an error when there is none); "
                        "the ranker, with --what all, is trained again")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the files of the earlier run in --out (of the models trained) and train from scratch")
    p.add_argument("--install", action="store_true", help="copy the trained weights into the package (romlib/shapes/weights)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


# ---------------------------------------------------------------------------------------------- checks
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


def check_world_train(args) -> None:
    """``romlib world-train``: every number and the device, before any data is made."""
    from .world.recipes import MODELS

    for m in MODELS:
        check_int(f"--{m}-steps", getattr(args, f"{m}_steps"), 1)
    if args.minutes is not None:
        check_number("--minutes", args.minutes, 0)
    if args.batch_size is not None:
        check_int("--batch-size", args.batch_size, 1, 4096)
    check_int("--save-every", args.save_every, 1)
    check_device(args.device)
    _threads(args.threads)
    check_seed("--seed", args.seed)


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
    scales = parse_list("--scales", args.scales, float) if args.scales is not None else ()
    for s in scales:
        if not (math.isfinite(s) and 0 < s < 1e4):
            raise ValueError(f"--scales={args.scales!r}: {s:g} is out of range; accepted: finite numbers in (0, 10000)")
    methods = parse_list("--methods", args.methods, str) if args.methods is not None else ()
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


def add_assignment_args(p) -> None:
    """romlib assignment: the release of an assignment with otter-grader (romlib.teach.assignment.release)."""
    p.add_argument("--out", required=True, help="folder for student/ (hand these out), autograder/ and master/ (keep these)")
    p.add_argument("--notebooks", nargs="*", default=None, help="numbers or names (default: every notebook with exercises)")
    p.add_argument("--points", type=float, default=1.0, help="points per exercise (default 1)")
    p.add_argument("--hidden-seeds", type=int, default=2, help="hidden tests (fresh-input draws) per exercise (default 2)")
    p.add_argument("--seed", type=int, default=None, help="fix the hidden seeds (default: drawn at random)")
    p.add_argument("--no-run-tests", action="store_true",
                   help="skip otter's check that the solutions pass every test (it runs each notebook once)")


def add_grade_args(p) -> None:
    """romlib grade: grading submitted notebooks with otter run (romlib.teach.assignment.grade)."""
    p.add_argument("submissions", nargs="+", help="the students' notebooks (named as handed out)")
    p.add_argument("--key", "--autograder", dest="key", required=True,
                   help="the release's autograder/ folder (or one of its <notebook>.zip)")
    p.add_argument("--csv", default=None, help="write the scores here (one row per submission, one column per exercise)")
    p.add_argument("--jobs", type=int, default=1, help="submissions graded at a time (default 1)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds one submission may take (default 1800)")
