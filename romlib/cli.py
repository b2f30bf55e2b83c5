"""The ``romlib`` command.

    romlib demo                                   # one ROM edit offline on the embedded ShapesWorld models
    romlib demo --backend world                   # the same on the 64 px world (its weights: $ROMLIB_WORLD_WEIGHTS)
    romlib example                                # ShapesWorld's example photo.png and mask.png, for romlib edit offline
    romlib edit photo.jpg --ref "the red car" --target "a blue truck" --out edits/
    romlib download                               # fetch the real weights into the cache (about 5.5 GB; --verify re-hashes them)
    romlib download --sd                          # the sd backend's files instead (SD 1.5 inpainting, CLIPSeg, CLIP; ~3.3 GB)
    romlib bench                                  # time the stages (tiny models on the CPU)
    romlib shapes-train / romlib shapes-bench     # retrain / benchmark the ShapesWorld backend
    romlib world-train --out DIR                  # train the world backend's four models (python -m romlib.world.train)
    romlib assignment --out DIR                   # otter-grader: student notebooks + autograder (hidden tests)
    romlib grade --key DIR/autograder submissions/*/08_write_the_loop.ipynb --csv scores.csv
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import time

from . import arguments

__all__ = ["main", "build_parser"]


def _check_device(device: str | None) -> None:
    """Refuse a device this machine does not have (or romlib cannot run on), before any model is loaded."""
    arguments.check_device(device)


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
    output's name and no output-named file its ``result.json`` does not record (a run killed while
    being replaced there is settled first); without, it holds no earlier run (unless
    ``run_folder``: a new folder is made inside it)."""
    import shutil
    import tempfile
    from pathlib import Path

    from .io import quote
    from .runs import OUTPUT_PATTERN, recover, refuse_broken_link, unrecorded_outputs

    folder = Path(folder)
    refuse_broken_link(folder)
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
        from .hub import human_size

        raise OSError(f"--out {quote(folder, 120)}: not enough free space for the outputs on {probe}: the run needs up "
                      f"to {human_size(need_bytes)} ({need_bytes} bytes), {human_size(free)} ({free} bytes) are free; "
                      "free some space there or choose an --out on another disk")
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
        recover(folder, refuse_busy=True)  # a run killed while being replaced there: settled first
        unrecorded = unrecorded_outputs(folder)  # also refuses a result.json of an unexpected shape
        if unrecorded:
            raise FileExistsError(f"--out {quote(folder, 120)} holds {', '.join(unrecorded[:3])}"
                                  f"{', ...' if len(unrecorded) > 3 else ''}, which no result.json there records; "
                                  "--overwrite replaces only a recorded run: move them or choose another --out")


def _need_bytes(width: int, height: int, samples: int, top: int, frame: int = 256) -> int:
    """The most a run's files can take: each PNG at most its raw RGB size (full-resolution edits, the
    mask, ``samples`` frames of at most ``frame`` px a side), the summary figure ((top + 2) panels of
    264x264 px at 120 dpi, counted at half their raw size: 0.3 MB measured on noise for top = 4) and
    64 kB for result.json."""
    panels = min(top, samples) + 2
    return (min(top, samples) + 1) * width * height * 3 + samples * frame * frame * 3 + panels * 264 * 264 * 3 // 2 \
        + 64_000


def _run_edit(args) -> int:
    import time as _time
    from pathlib import Path

    from .config import from_args
    from .guidance.methods import get
    from .pipeline import ROMPipeline
    from .runs import commits, committed, hold, new_run_dir, run_dir_name

    started = _time.time()
    cfg = from_args(args, mask=args.mask, progress=True).validate()  # every setting checked before any work
    get(cfg.guidance).check(cfg)
    if args.top < 1:
        raise ValueError(f"top={args.top} is out of range; accepted: an integer >= 1")
    W, H = _check_inputs(args)
    _check_device(args.device)
    from .backends import default_backend
    from .specs import backend_spec

    frame = backend_spec(args.backend or default_backend()).frame_size(cfg.upsample)
    _check_out(args.out, _need_bytes(W, H, cfg.samples, args.top, frame), overwrite=args.overwrite,
               inputs=(args.image, args.mask), run_folder=not args.overwrite)
    folder, before = Path(args.out), commits()
    try:
        with hold(args.out) if args.overwrite else contextlib.nullcontext():  # a second --overwrite: refused before work
            pipe = ROMPipeline.from_pretrained(args.backend, device=args.device,
                                               baselines=get(cfg.guidance).needs is not None, compile=args.compile,
                                               segmenter=cfg.segmenter)  # its files too, in one check
            result = pipe.edit(args.image, args.ref, args.target, cfg)
            try:
                if not args.overwrite:
                    folder = new_run_dir(args.out, run_dir_name(cfg.guidance, args.ref or args.target or "mask", started))
                written = result.save(folder, top=args.top, summary="summary.png", overwrite=args.overwrite)
            except BaseException:
                if not args.overwrite and committed(folder, before) is None:
                    try:
                        folder.rmdir()  # the new run folder, empty after a failed save: leave nothing behind
                    except OSError:
                        pass
                raise
        _summarise(result, folder, written)
    except KeyboardInterrupt as e:
        if committed(folder, before) is not None:  # at any moment after the commit (the swap's return, the lock's release, ...)
            e.kept = f"the new run, saved whole in {folder}"
        raise
    return 0


def _summarise(result, out_dir, written: dict) -> None:
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
    from pathlib import Path

    from .runs import commits, committed, hold
    from .shapes import demo
    from .specs import backend_spec

    t0, before = time.perf_counter(), commits()
    _check_out(args.out, _need_bytes(256, 256, args.samples, 4, frame=backend_spec(args.backend).frame),
               overwrite=args.overwrite, run_folder=not args.overwrite)
    try:
        with hold(args.out) if args.overwrite else contextlib.nullcontext():  # a second --overwrite: refused before work
            result, image_path, written = demo.run(out_dir=args.out, seed=args.seed, samples=args.samples,
                                                   progress=not args.quiet, overwrite=args.overwrite, with_files=True,
                                                   new_folder=not args.overwrite, backend=args.backend)
        _summarise_demo(result, image_path, written, Path(image_path).parent, time.perf_counter() - t0)
    except KeyboardInterrupt as e:
        folder = committed(args.out, before)  # the run this command committed, at whatever moment the signal came after it
        if folder is not None:
            e.kept = f"the new demo run, saved whole in {folder}"
        raise
    return 0


def _summarise_demo(result, image_path, written, folder, seconds) -> None:
    s = result.settings
    from .specs import backend_spec

    print(f"ROM demo on {backend_spec(s['backend']).summary.split(' (')[0]} ({s['backend']} backend): {s['ref']!r} -> "
          f"{s['target']!r}, "
          f"{s['guidance']} s={s['scale']:g}, B={s['samples']}, {seconds:.1f} s")
    print(f"  input image: {image_path}")
    print(f"  run folder: {folder}")
    print(f"  figure: {written['summary'][0]}")


def _run_example(args) -> int:
    from .shapes.demo import write_example

    ex = write_example(args.out, args.seed, overwrite=args.overwrite)
    print(f"ShapesWorld's example (the offline backend's scene of romlib demo --seed {args.seed}):")
    print(f"  photo: {ex['photo']}  (objects: {', '.join(ex['objects'])})")
    print(f"  mask:  {ex['mask']}  (white = {ex['ref']})")
    print(f"  try:   romlib edit {ex['photo']} --ref {_shell(ex['ref'])} --target {_shell(ex['target'])}")
    return 0


def _shell(text: str) -> str:
    import shlex

    return shlex.quote(text) if " " not in text or "'" in text else f'"{text}"'


def _run_download(args) -> int:
    from . import hub

    unknown = [n for n in args.names if n not in hub.REGISTRY and "://" not in n]
    if unknown:
        raise hub.UnknownCheckpoint(f"unknown file name(s) {', '.join(map(repr, unknown))}; valid names: "
                                    f"{', '.join(sorted(hub.REGISTRY))} (or an http(s):// address)")
    root = hub.check_cache()  # a file or an unreadable folder: a clear error, exit 2
    if args.verify:
        rows = hub.verify(args.names or None)
        print(f"cache: {root}" + ("" if rows else " (nothing cached)"))
        _table([(r["file"], "" if r["size"] is None else hub.human_size(r["size"]), r["status"]) for r in rows])
        bad = [r for r in rows if not r["ok"]]
        for r in bad:
            print(f"romlib download: {r['file']} is {r['status']}", file=sys.stderr)
        if bad:
            names = " ".join(r["name"] for r in bad)
            print(f"romlib download: {len(bad)} bad file(s); run `romlib download {names}` to fetch them again; if they "
                  f"are bad again, check the mirror or proxy that served them", file=sys.stderr)
        return 1 if bad else 0
    default = hub.SD_BACKEND + hub.CLIPSEG if args.sd else hub.GLIDE_BACKEND
    names = list(args.names) or list(default + hub.EXAMPLES)
    for flag, group in ((args.baselines, hub.BASELINES), (args.clipseg, hub.CLIPSEG)):
        if flag:
            names += [n for n in group if n not in names]
    again = " ".join(["romlib download", *args.names] + [f"--{f}" for f in ("sd", "baselines", "clipseg") if getattr(args, f)])
    if args.sha256 is not None and len(args.names) != 1:
        raise ValueError(f"--sha256 names the hash of one file; {len(args.names)} were named: name exactly one")
    before = {n for n in names if hub.cached(n) is not None}
    failed, error = {}, None
    try:
        if args.sha256 is not None:
            hub.download(names[0], sha256=args.sha256)
        else:
            hub.ensure(names, progress=True)
    except KeyboardInterrupt as e:
        e.kept = (f"the files downloaded whole so far, in {hub.cache_dir()} (a partial one stays a .part file); "
                  f"`{again}` again fetches the rest")
        raise
    except hub.CheckpointUnavailable as e:
        error = e
        failed = {c.name: why for c, _, why in e.missing}
    rows = []
    for n in names:
        ckpt = hub.REGISTRY.get(n) or hub.Checkpoint(n, n)
        path = hub.cached(n)
        size = hub.human_size(path.stat().st_size) if path else ckpt.size_text
        why = failed.get(n, "not fetched").split(". It was moved aside")
        why = why[0] + (" (moved aside; see below)" if len(why) > 1 else "")
        status = "cached" if n in before else "downloaded" if path else f"MISSING: {why}"
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
    from .bench import bench_command

    return bench_command(args)


def _checked(check, run):
    """``run`` after ``check`` (a :mod:`romlib.arguments` check): arguments are refused before any work."""
    def command(args):
        check(args)
        return run(args)

    command.__name__ = getattr(run, "__name__", "command")
    return command


def _run_shapes_train(args) -> int:
    from .shapes.train import train_command

    return train_command(args)


def _run_world_train(args) -> int:
    from .world.train import train_command

    return train_command(args)


def _run_shapes_bench(args) -> int:
    from .shapes.bench import bench_command

    return bench_command(args)


def _run_assignment(args) -> int:
    from .teach.assignment import run_release

    return run_release(args)


def _run_grade(args) -> int:
    from .teach.assignment import run_grade

    return run_grade(args)


def build_parser() -> argparse.ArgumentParser:
    """The ``romlib`` parser, built from :mod:`romlib.arguments` alone (no torch, no numpy: help and argument errors
    print in a blink); each command's implementation is imported by its ``_run_*`` function, after its arguments
    passed their check."""
    parser = argparse.ArgumentParser(prog="romlib", description="Referring Object Manipulation (MDETR + GLIDE + CCF guidance).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("edit", help="edit the object a text refers to", description="Edit the object --ref refers to so it matches --target.")
    arguments.add_edit_args(p)
    p.set_defaults(func=_run_edit)

    p = sub.add_parser("demo", help="one ROM edit offline on the embedded ShapesWorld models (CPU, seconds)",
                       description="One ROM edit offline on an embedded world's models (ShapesWorld unless --backend): "
                                   "each run writes a new folder inside --out and prints where its figure is.")
    arguments.add_demo_args(p)
    p.set_defaults(func=_checked(arguments.check_demo, _run_demo))

    p = sub.add_parser("example", help="write ShapesWorld's example photo and a mask (the offline backend's words)",
                       description="Write photo.png (ShapesWorld's example scene, that of romlib demo) and mask.png "
                                   "(its referred object, white) for romlib edit on the offline backend, and print the "
                                   "texts it knows.")
    arguments.add_example_args(p)
    p.set_defaults(func=_checked(arguments.check_example, _run_example))

    p = sub.add_parser("download", help="fetch every file of the glide backend into the cache ($ROMLIB_CACHE)",
                       description="Fetch the real models' files into $ROMLIB_CACHE (from $ROMLIB_MIRROR when set) "
                                   "and print a table: file, size, status.")
    arguments.add_download_args(p)
    p.set_defaults(func=_run_download)

    p = sub.add_parser("bench", help="time segmentation, base sampling, upsampling and ranking")
    arguments.add_bench_args(p)
    p.set_defaults(func=_checked(arguments.check_bench, _run_bench))
    p = sub.add_parser("shapes-train", help="train the ShapesWorld models from scratch (about 40 min on 2 CPU cores)")
    arguments.add_shapes_train_args(p)
    p.set_defaults(func=_checked(arguments.check_shapes_train, _run_shapes_train))
    p = sub.add_parser("shapes-bench", help="the ShapesWorld guidance benchmark (target success, preservation, PSNR, seams)")
    arguments.add_shapes_bench_args(p)
    p.set_defaults(func=_checked(arguments.check_shapes_bench, _run_shapes_bench))
    p = sub.add_parser("world-train", help="train the world backend's models from scratch (python -m romlib.world.train)",
                       description="Train the embedded world's base, upsampler, segmenter and ranker (--what) into --out, "
                                   "resumable; point $ROMLIB_WORLD_WEIGHTS at --out to use them (romlib edit --backend "
                                   "world).")
    arguments.add_world_train_args(p)
    p.set_defaults(func=_checked(arguments.check_world_train, _run_world_train))
    p = sub.add_parser("assignment", help="write the student notebooks and the otter-grader autograder (hidden tests)",
                       description="Write an otter-assign master notebook per notebook with exercises (--out/master) and "
                                   "run otter assign: --out/student/*.ipynb (exercise stubs kept, solutions and outputs "
                                   "removed: hand these out) and --out/autograder/<notebook>.zip (public and hidden "
                                   "tests: keep them).")
    arguments.add_assignment_args(p)
    p.set_defaults(func=_run_assignment)
    p = sub.add_parser("grade", help="grade submitted notebooks with otter run (public and hidden tests), no Docker",
                       description="Run otter run -a <notebook>.zip on each submitted notebook (a fresh kernel runs it, "
                                   "then every test): an exercise scores its points when its public and hidden tests "
                                   "pass. Prints each total; --csv writes one row per submission.")
    arguments.add_grade_args(p)
    p.set_defaults(func=_run_grade)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``romlib`` command; returns its exit status: 0, 2 for a clear error, 130 / 143 when
    interrupted by SIGINT / SIGTERM (the message says what was kept). The interrupt handlers come
    first, before any heavy import. Called as the program (``argv`` None) they stay installed to the
    end and a signal that arrives after the work is done is ignored; called in-process (``argv``
    given) they are restored on return."""
    from . import interrupts

    command = next((a for a in (sys.argv[1:] if argv is None else argv) if not str(a).startswith("-")), "")
    old_handlers = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    try:  # installed inside the try: a signal right after the handlers are in place is caught like any other
        interrupts.install()
        return _main(argv, command)
    except KeyboardInterrupt as e:  # also during imports and argument parsing
        status, kept = interrupts.exit_status(e), getattr(e, "kept", None)
        what = f"; kept: {kept}" if kept else ", nothing written"
        name = f"romlib {command}" if command else "romlib"
        with interrupts.deferred(ignore=True):  # a second Ctrl-C does not cut the report short
            print(f"{name}: interrupted{what} ({interrupts.signal_name(e)}, exit status {status})", file=sys.stderr)
        return status
    finally:
        if argv is not None:
            interrupts.restore(old_handlers)
        else:  # the program ends now: nothing left to interrupt
            interrupts.restore({s: signal.SIG_IGN for s in interrupts.SIGNALS})


def _main(argv, command: str) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def fail(message: str) -> int:
        import re

        # never echo a long text whole: any quoted part is cut to 80 characters
        message = re.sub(r"(['\"])([^'\"]{77})[^'\"]{4,}\1", lambda m: f"{m[1]}{m[2]}...{m[1]}", message)
        print(f"romlib {args.command}: error: {message}", file=sys.stderr)
        return 2

    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as e:  # a bad argument (its check: nothing heavy imported yet), missing, unreadable
        return fail(str(e))             # or unwritable files, a full disk
    except ImportError as e:  # an optional extra that is not installed (diffusers for sd): the message says which
        return fail(str(e))
    except RuntimeError as e:  # no object, a missing checkpoint, out of memory, a missing device: say what to change
        from .contracts import NoObjectFound  # the work ran, so these are loaded already
        from .hub import CheckpointUnavailable, UnsafeCheckpoint

        if isinstance(e, (NoObjectFound, CheckpointUnavailable, UnsafeCheckpoint)):
            return fail(str(e))
        text = str(e)
        if "out of memory" in text.lower():
            return fail(f"out of memory ({text.splitlines()[0][:120]}); lower --batch-size (or --samples)")
        if "cuda" in text.lower() or "device" in text.lower():
            return fail(f"{text.splitlines()[0][:200]}; check --device (cpu works everywhere)")
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
