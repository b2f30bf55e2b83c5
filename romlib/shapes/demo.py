"""``romlib demo``: one ROM edit end to end on ShapesWorld, offline, on the CPU, in seconds.

A benchmark-style case (:func:`romlib.shapes.bench.make_cases`) whose target changes both colour
and shape is written to ``out_dir/input.png``; then ``ROMPipeline.from_pretrained("shapes")``
segments the referred shape, inpaints it under CCF and ranks the samples with the tiny CLIP.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["run", "demo_case"]

DEMO_SCALE = None  # None: the pipeline's default CCF scale


def demo_case(seed: int = 0):
    """The first case (in the benchmark's stream for ``seed``) whose target names colour and shape."""
    from .bench import make_cases
    from .scenes import parse_text

    n = 8
    while True:
        for case in make_cases(n, seed):
            if len(parse_text(case.target).named) == 2:
                return case
        n *= 2


def run(out_dir: str = "romlib_demo", seed: int = 0, samples: int = 8, progress: bool = True, device="cpu",
        guidance: str = "ccf", scale: float | None = DEMO_SCALE):
    """Run the demo edit; returns ``(EditResult, path of the input image)``. The result is saved
    in ``out_dir`` (ranked frames, the mask and ``result.json``)."""
    from ..pipeline import ROMPipeline

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    case = demo_case(seed)
    image_path = out / "input.png"
    case.scene.pil().save(image_path)
    pipe = ROMPipeline.from_pretrained("shapes", device=device)
    result = pipe.edit(str(image_path), case.ref, case.target, guidance=guidance, scale=scale, samples=samples, seed=seed,
                       progress=progress)
    result.save(out)
    return result, str(image_path)
