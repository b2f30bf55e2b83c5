"""``romlib demo``: one ROM edit end to end on an embedded world, offline, on the CPU, in seconds.

The backend's example (:data:`LOCAL_EXAMPLES` by its spec's ``example``; ShapesWorld's: a benchmark-style case,
:func:`romlib.shapes.bench.make_cases`, whose target changes both colour and shape; the world's:
:func:`romlib.world.cases.example`) is written to ``out_dir/input.png``; then
``ROMPipeline.from_pretrained(backend)`` segments the referred object, inpaints it under CCF and ranks the
samples with the backend's tiny CLIP.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..pipeline import ROMPipeline
from ..runs import new_run_dir, run_dir_name
from ..specs import BACKENDS, backend_spec
from ..world import cases as world_cases
from .cases import CASE_KINDS, select_cases  # noqa: F401  (the notebooks' selection, re-exported)

__all__ = ["run", "write_example", "EXAMPLE_FILES", "demo_case", "select_case", "select_cases", "CASE_KINDS",
           "LOCAL_EXAMPLES", "DEMO_BACKENDS"]

DEMO_SCALE = None  # None: the pipeline's default CCF scale



def select_case(kind: str = "both", seed: int = 0):
    """The first case of :func:`select_cases` (the example every notebook shows for ``kind``)."""
    return select_cases(kind, 1, seed)[0]


def demo_case(seed: int = 0):
    """The first case (in the benchmark's stream for ``seed``) whose target names colour and shape."""
    return select_case("both", seed)


def shapes_example(index: int = 0) -> tuple:
    """ShapesWorld's example input ``(image PIL 32×32, ref, target)``: :func:`demo_case` ``(index)``."""
    case = demo_case(index)
    return case.scene.pil(), case.ref, case.target


#: the example inputs made offline, by :attr:`romlib.specs.BackendSpec.example` (the notebooks' ``EXAMPLES`` add the
#: downloaded photo and noise)
LOCAL_EXAMPLES = {"shapes": shapes_example, "world": world_cases.example}
#: the backends ``romlib demo --backend`` runs (:attr:`romlib.specs.BackendSpec.demo`)
DEMO_BACKENDS = tuple(n for n, s in BACKENDS.items() if s.demo)


def run(out_dir: str = "romlib_demo", seed: int = 0, samples: int = 8, progress: bool = True, device="cpu",
        guidance: str = "ccf", scale: float | None = DEMO_SCALE, *, overwrite: bool = False, with_files: bool = False,
        new_folder: bool = False, backend: str = "shapes"):
    """Run the demo edit; returns ``(EditResult, path of the input image)`` (and the written files
    with ``with_files=True``). Everything goes to ``out_dir`` through :meth:`EditResult.save`:
    ``input.png``, the ranked frames, the mask, the figure ``demo.png`` and ``result.json`` last;
    an earlier run there is refused unless ``overwrite=True``. ``new_folder=True`` (``romlib demo``):
    ``out_dir`` is a parent folder and the run goes into a new folder inside it, named
    time_method_text (:func:`romlib.runs.run_dir_name`), made once the edit is done. ``backend``: one of
    :data:`DEMO_BACKENDS`, on its own example (``seed`` picks it)."""
    spec = backend_spec(backend)
    if not spec.demo:
        raise ValueError(f"romlib demo runs on an embedded world; backend={backend!r} is not one; accepted: "
                         f"{', '.join(DEMO_BACKENDS)}")
    started = time.time()
    scene, ref, target = LOCAL_EXAMPLES[spec.example](seed)
    pipe = ROMPipeline.from_pretrained(backend, device=device)
    knobs = dict(spec.demo_knobs)
    if "upsample_top" in knobs:
        knobs["upsample_top"] = min(knobs["upsample_top"], samples)
    result = pipe.edit(scene, ref, target, guidance=guidance, scale=scale, samples=samples, seed=seed,
                       progress=progress, **knobs)
    out = new_run_dir(out_dir, run_dir_name(guidance, ref, started)) if new_folder else Path(out_dir)
    try:
        written = result.save(out, top=min(4, samples), summary="demo.png", overwrite=overwrite,
                              extra={"input.png": scene})
    except BaseException:
        if new_folder:
            try:
                out.rmdir()  # the new run folder, empty after a failed save: leave nothing behind
            except OSError:
                pass
        raise
    image_path = str(out / "input.png")
    return (result, image_path, written) if with_files else (result, image_path)


#: the files :func:`write_example` writes (``romlib example``): the photo and the mask of its referred object
EXAMPLE_FILES = ("photo.png", "mask.png")


def write_example(folder: str = ".", seed: int = 0, *, overwrite: bool = False) -> dict:
    """Write ShapesWorld's example — the scene of ``romlib demo`` (:func:`demo_case`) — into ``folder``:
    ``photo.png`` (32×32) and ``mask.png`` (white = the referred object, for ``romlib edit --mask``); returns
    ``{"photo", "mask", "ref", "target", "objects"}`` (paths, the case's texts, every object's description: the
    words the offline backend knows). Existing files are never replaced unless ``overwrite``."""
    import os

    from PIL import Image

    from ..io import quote

    out = Path(folder)
    paths = [out / name for name in EXAMPLE_FILES]
    taken = [str(p) for p in paths if os.path.lexists(p)]
    if taken and not overwrite:
        raise FileExistsError(f"{', '.join(taken)} exist(s); choose another --out or pass --overwrite to replace them")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {quote(out, 120)} is a file, not a folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    case = demo_case(seed)
    case.scene.pil().save(paths[0])
    Image.fromarray(case.original.mask.astype("uint8") * 255).save(paths[1])
    objects = [f"the {o.colour} {o.shape}" for o in case.scene.objects]
    return {"photo": str(paths[0]), "mask": str(paths[1]), "ref": case.ref, "target": case.target, "objects": objects}
