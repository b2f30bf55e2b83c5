"""``romlib demo``: one ROM edit end to end on ShapesWorld, offline, on the CPU, in seconds.

A benchmark-style case (:func:`romlib.shapes.bench.make_cases`) whose target changes both colour
and shape is written to ``out_dir/input.png``; then ``ROMPipeline.from_pretrained("shapes")``
segments the referred shape, inpaints it under CCF and ranks the samples with the tiny CLIP.
"""
from __future__ import annotations

from pathlib import Path

from ..pipeline import ROMPipeline
from .cases import CASE_KINDS, select_cases  # noqa: F401  (the notebooks' selection, re-exported)

__all__ = ["run", "demo_case", "select_case", "select_cases", "CASE_KINDS"]

DEMO_SCALE = None  # None: the pipeline's default CCF scale



def select_case(kind: str = "both", seed: int = 0):
    """The first case of :func:`select_cases` (the example every notebook shows for ``kind``)."""
    return select_cases(kind, 1, seed)[0]


def demo_case(seed: int = 0):
    """The first case (in the benchmark's stream for ``seed``) whose target names colour and shape."""
    return select_case("both", seed)


def run(out_dir: str = "romlib_demo", seed: int = 0, samples: int = 8, progress: bool = True, device="cpu",
        guidance: str = "ccf", scale: float | None = DEMO_SCALE, *, overwrite: bool = False, with_files: bool = False):
    """Run the demo edit; returns ``(EditResult, path of the input image)`` (and the written files
    with ``with_files=True``). Everything goes to ``out_dir`` through :meth:`EditResult.save`:
    ``input.png``, the ranked frames, the mask, the figure ``demo.png`` and ``result.json`` last;
    an earlier run there is refused unless ``overwrite=True``."""
    out = Path(out_dir)
    case = demo_case(seed)
    scene = case.scene.pil()
    pipe = ROMPipeline.from_pretrained("shapes", device=device)
    result = pipe.edit(scene, case.ref, case.target, guidance=guidance, scale=scale, samples=samples, seed=seed,
                       progress=progress)
    written = result.save(out, top=min(4, samples), summary="demo.png", overwrite=overwrite, extra={"input.png": scene})
    image_path = str(out / "input.png")
    return (result, image_path, written) if with_files else (result, image_path)
