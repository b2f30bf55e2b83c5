"""The ``romlib`` command.

    romlib demo                                   # one ROM edit offline on the embedded ShapesWorld models
    romlib edit photo.jpg --ref "the red car" --target "a blue truck" --out edits/
    romlib download                               # fetch the real weights into the cache (about 5.5 GB; --verify re-hashes them)
    romlib download --sd                          # the sd backend's files instead (SD 1.5 inpainting, CLIPSeg, CLIP; ~3.3 GB)
    romlib bench                                  # time the stages (tiny models on the CPU)
    romlib shapes-train / romlib shapes-bench     # retrain / benchmark the ShapesWorld backend
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

__all__ = ["main", "build_parser"]


def _add_edit_args(p: argparse.ArgumentParser) -> None:
    from .config import add_arguments
    from .guidance.methods import names

    p.add_argument("image", help="input image (any format PIL reads; EXIF orientation is honoured)")
    p.add_argument("--ref", default="", help="referring text: which object to edit, e.g. 'the red car'")
    p.add_argument("--target", default="", help="target text: what it should become, e.g. 'a blue truck' (empty = inpaint it away)")
    add_arguments(p, methods=names())  # every knob of romlib.config.EditConfig
    p.add_argument("--mask", default=None, help="a mask image to use instead of segmentation (white = edit; resized if needed)")
    from .backends import NAMES

    p.add_argument("--backend", choices=NAMES, default=None,
                   help="models: glide (real, downloads ~5.5 GB), shapes (embedded, offline), tiny (random, tests), "
                        "sd (Stable Diffusion 1.5 inpainting, ~3.3 GB, pip install romlib[sd]), tiny-sd (random, "
                        "tests); default: $ROMLIB_BACKEND, else glide on a GPU with internet, else shapes")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--compile", default="off", choices=["off", "auto", "default", "reduce-overhead", "max-autotune"],
                   help="torch.compile the UNets (off; auto = when the edit's work pays for the compilation)")
    p.add_argument("--out", default="romlib_out",
                   help="parent folder: each run writes into a new folder inside it, named time_method_text "
                        "(default romlib_out)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into --out itself, replacing the run recorded in its result.json (never an input)")
    p.add_argument("--top", type=int, default=4,
                   help="edits saved at full resolution and shown in the summary figure, >= 1 (default 4)")


def _check_device(device: str | None) -> None:
    """Refuse a device this machine does not have, before any model is loaded."""
    import torch

    if device is None:
        return
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device={device!r} is not a device; accepted: cpu, cuda, cuda:N, mps") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"device={device!r} is not available here ({torch.cuda.device_count()} CUDA devices); "
                         "use --device cpu")


def _check_inputs(args) -> tuple[int, int]:
    """The image and the mask file read from their headers (nothing decoded): exist, are images,
    within the pixel limit, the mask of the image's aspect ratio. Returns the image's (W, H)."""
    from .io import MASK_ASPECT_TOLERANCE, image_size

    W, H = image_size(args.image)
    if args.mask is not None:
        mw, mh = image_size(args.mask, what="mask")
        if abs((mw / mh) / (W / H) - 1) > MASK_ASPECT_TOLERANCE:
            raise ValueError(f"mask {args.mask} is {mw}x{mh} (aspect {mw / mh:.3f}) but the image is {W}x{H} "
                             f"(aspect {W / H:.3f}); a mask must have the image's aspect ratio (within 1 %)")
    return W, H


def _check_out(folder, need_bytes: int, *, overwrite: bool, inputs=(), run_folder: bool = False) -> None:
    """Before any model is loaded: ``folder`` (to be created if missing) is not a file, can be
    written, has room for about ``need_bytes``; with ``overwrite`` it holds no input under an
    output's name; without, it holds no earlier run (unless ``run_folder``: a new folder is made
    inside it)."""
    import shutil
    import tempfile
    from pathlib import Path

    from .io import quote
    from .result import OUTPUT_PATTERN

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"--out {quote(folder, 120)} is a file, not a folder; choose another --out")
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(f"--out {quote(folder, 120)}: {probe} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe, prefix=".romlib-probe-"):
            pass
    except OSError as e:
        raise PermissionError(f"--out {quote(folder, 120)} cannot be written ({probe}: {e.strerror or e}); "
                              "choose a writable --out") from None
    free = shutil.disk_usage(probe).free
    if free < need_bytes:
        raise OSError(f"--out {quote(folder, 120)}: not enough free space for the outputs "
                      f"(about {need_bytes / 1e6:.0f} MB needed, {free / 1e6:.0f} MB free on {probe})")
    if not overwrite and not run_folder and folder.is_dir():
        taken = sorted(p.name for p in folder.iterdir() if OUTPUT_PATTERN.match(p.name))
        if taken:
            raise FileExistsError(f"--out {quote(folder, 120)} already holds a run ({', '.join(taken[:3])}"
                                  f"{', ...' if len(taken) > 3 else ''}); choose another --out or pass --overwrite")
    if overwrite and folder.is_dir():
        for p in inputs:
            if p is not None and Path(p).parent.resolve() == folder.resolve() and OUTPUT_PATTERN.match(Path(p).name):
                raise FileExistsError(f"--overwrite would replace the input {p} (an output of a run has that name); "
                                      "move the input or choose another --out")


def _need_bytes(width: int, height: int, samples: int, top: int) -> int:
    """An upper bound of a run's files: PNGs at most raw size (+ the figure and result.json)."""
    return min(top, samples) * width * height * 3 + samples * 256 * 256 * 3 + 4_000_000


def _run_edit(args) -> int:
    import time as _time

    from .config import from_args
    from .guidance.methods import get
    from .pipeline import ROMPipeline
    from .result import new_run_dir, run_dir_name

    started = _time.time()
    cfg = from_args(args, mask=args.mask, progress=True).validate()  # every setting checked before any work
    get(cfg.guidance).check(cfg)
    if args.top < 1:
        raise ValueError(f"top={args.top} is out of range; accepted: an integer >= 1")
    W, H = _check_inputs(args)
    _check_device(args.device)
    _check_out(args.out, _need_bytes(W, H, cfg.samples, args.top), overwrite=args.overwrite,
               inputs=(args.image, args.mask), run_folder=not args.overwrite)
    pipe = ROMPipeline.from_pretrained(args.backend, device=args.device, baselines=get(cfg.guidance).needs is not None,
                                       compile=args.compile)
    result = pipe.edit(args.image, args.ref, args.target, cfg)
    if args.overwrite:
        folder, made = args.out, False
    else:
        folder = new_run_dir(args.out, run_dir_name(cfg.guidance, args.ref or args.target or "mask", started))
        made = True
    try:
        _summarise(result, folder, args.top, overwrite=args.overwrite)
    except BaseException:
        if made:
            try:
                folder.rmdir()  # empty after a failed save: leave nothing behind
            except OSError:
                pass
        raise
    return 0


def _summarise(result, out_dir, top, *, overwrite: bool = False) -> None:
    written = result.save(out_dir, top=top, summary="summary.png", overwrite=overwrite)
    s = result.settings
    scale = f"s={s['scale']:g} " if s.get("scale") is not None else ""
    best = result.scores[0]
    print(f"ROM edit: ref={_short(s['ref'])} -> target={_short(s['target'])}  guidance={s['guidance']} {scale}"
          f"B={s['samples']} k={s['dilation']} rank={s['rank']} backend={s['backend']}")
    print(f"  best score {'unranked' if best != best else f'{best:.4f}'}  (time {result.timings['total']:.1f} s)")
    print(f"  run folder: {out_dir}")
    print(f"  wrote {len(written['frames'])} ranked frames and {len(written['full_res'])} full-resolution edits")
    print(f"  best edit: {written['full_res'][0]}")
    print(f"  figure: {written['summary'][0]}")
    print(f"  settings, scores and the list of files: {written['json'][0]}")


def _short(text) -> str:
    from .io import quote

    return quote(text)


def _run_demo(args) -> int:
    from .shapes import demo

    t0 = time.perf_counter()
    _check_out(args.out, _need_bytes(256, 256, args.samples, 4), overwrite=args.overwrite)
    result, image_path, written = demo.run(out_dir=args.out, seed=args.seed, samples=args.samples,
                                           progress=not args.quiet, overwrite=args.overwrite, with_files=True)
    s = result.settings
    print(f"ROM demo on ShapesWorld (offline, {s['backend']} backend): {s['ref']!r} -> {s['target']!r}, "
          f"{s['guidance']} s={s['scale']:g}, B={s['samples']}, {time.perf_counter() - t0:.1f} s")
    print(f"input image: {image_path}")
    print(f"run folder: {args.out}")
    print(written["summary"][0])
    return 0


def _run_download(args) -> int:
    from . import hub

    if args.verify:
        rows = hub.verify(args.names or None)
        _table([(r["file"], "" if r["size"] is None else hub.human_size(r["size"]), r["status"]) for r in rows])
        bad = [r["file"] for r in rows if not r["ok"]]
        if bad:
            print(f"romlib download: {len(bad)} damaged file(s): {', '.join(bad)}; delete them and run "
                  "`romlib download` again", file=sys.stderr)
        return 1 if bad else 0
    default = hub.SD_BACKEND + hub.CLIPSEG if args.sd else hub.GLIDE_BACKEND
    names = list(args.names) or list(default + hub.EXAMPLES)
    if args.baselines:
        names += [n for n in hub.BASELINES if n not in names]
    before = {n for n in names if hub.cached(n) is not None}
    failed, error = {}, None
    try:
        hub.ensure(names, progress=True)
    except hub.CheckpointUnavailable as e:
        error = e
        failed = {c.name: why for c, _, why in e.missing}
    rows = []
    for n in names:
        ckpt = hub.REGISTRY.get(n) or hub.Checkpoint(n, n)
        path = hub.cached(n)
        size = hub.human_size(path.stat().st_size) if path else ckpt.size_text
        status = "cached" if n in before else "downloaded" if path else f"MISSING: {failed.get(n, 'not fetched')}"
        rows.append((ckpt.filename, size, status))
    print(f"cache: {hub.cache_dir()}" + (f"   mirror: {hub.mirror()}" if hub.mirror() else ""))
    _table(rows)
    if error is not None:
        raise error
    return 0


def _table(rows) -> None:
    head = ("file", "size", "status")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(3)]
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())


def _run_bench(args) -> int:
    from .perf import bench_command

    return bench_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="romlib", description="Referring Object Manipulation (MDETR + GLIDE + CCF guidance).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("edit", help="edit the object a text refers to", description="Edit the object --ref refers to so it matches --target.")
    _add_edit_args(p)
    p.set_defaults(func=_run_edit)

    p = sub.add_parser("demo", help="one ROM edit offline on the embedded ShapesWorld models (CPU, seconds)")
    p.add_argument("--out", default="romlib_demo", help="output folder (default romlib_demo); an earlier demo's "
                                                         "files there are kept unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace the earlier demo run recorded in --out")
    p.add_argument("--seed", type=int, default=0, help="scene and sampling seed")
    p.add_argument("--samples", type=int, default=8, help="samples to draw and rank (default 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_demo)

    p = sub.add_parser("download", help="fetch every file of the glide backend into the cache ($ROMLIB_CACHE)",
                       description="Fetch the real models' files into $ROMLIB_CACHE (from $ROMLIB_MIRROR when set) "
                                   "and print a table: file, size, status.")
    p.add_argument("names", nargs="*", help="registry names (default: every file of the glide backend and the example "
                                            "photo; see romlib.hub.REGISTRY)")
    p.add_argument("--baselines", action="store_true", help="also the noised CLIP and ADM models of the baselines")
    p.add_argument("--sd", action="store_true", help="the sd backend's files instead of the glide backend's: Stable "
                                                     "Diffusion 1.5 inpainting (fp16; CreativeML OpenRAIL-M, accept it "
                                                     "first), CLIPSeg, CLIP ViT-B/16 (about 3.3 GB)")
    p.add_argument("--verify", action="store_true", help="fetch nothing: re-hash every cached file (or NAMES) against "
                                                         "the size and sha256 recorded at download; exit 1 if one is damaged")
    p.set_defaults(func=_run_download)

    from .perf import add_bench_args
    from .shapes.cli import add_bench_args as shapes_bench_args, add_train_args, bench_command, train_command

    p = sub.add_parser("bench", help="time segmentation, base sampling, upsampling and ranking")
    add_bench_args(p)
    p.set_defaults(func=_run_bench)
    p = sub.add_parser("shapes-train", help="train the ShapesWorld models from scratch (about 40 min on 2 CPU cores)")
    add_train_args(p)
    p.set_defaults(func=train_command)
    p = sub.add_parser("shapes-bench", help="the ShapesWorld guidance benchmark (target success, preservation, PSNR, seams)")
    shapes_bench_args(p)
    p.set_defaults(func=bench_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .contracts import NoObjectFound
    from .hub import CheckpointUnavailable, UnsafeCheckpoint

    def fail(message: str) -> int:
        import re

        # never echo a long text whole: any quoted part is cut to 80 characters
        message = re.sub(r"(['\"])([^'\"]{77})[^'\"]{4,}\1", lambda m: f"{m[1]}{m[2]}...{m[1]}", message)
        print(f"romlib {args.command}: error: {message}", file=sys.stderr)
        return 2

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"romlib {args.command}: interrupted, nothing written", file=sys.stderr)
        return 130
    except (ValueError, OSError, NoObjectFound, CheckpointUnavailable, UnsafeCheckpoint) as e:
        return fail(str(e))  # OSError: missing, unreadable or unwritable files, a full disk
    except ImportError as e:  # an optional extra that is not installed (diffusers for sd): the message says which
        return fail(str(e))
    except RuntimeError as e:  # out of memory, a missing device: say what to change
        text = str(e)
        if "out of memory" in text.lower():
            return fail(f"out of memory ({text.splitlines()[0][:120]}); lower --batch-size (or --samples)")
        if "cuda" in text.lower() or "device" in text.lower():
            return fail(f"{text.splitlines()[0][:200]}; check --device (cpu works everywhere)")
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
